"""A GitHub App's JWT exchange against the stub, which checks the JWT with the test's own
public key, its ``iss``, ``iat`` and ``exp``, as GitHub does; and the token file."""

from __future__ import annotations

import os
import time
from pathlib import Path

import jwt
import pytest

from agent.github import credentials, errors
from tests.github.conftest import MakeClient
from tests.github.stub import SHA, Stub

CONTENTS = "/repos/octo/app/contents/.github/runner-config.yml"


async def test_the_app_exchanges_a_valid_jwt_once(stub: Stub, make_client: MakeClient) -> None:
    stub.files[("octo/app", SHA, ".github/runner-config.yml")] = "features: [node@20]\n"
    api = make_client(app=True)
    for _ in range(3):
        answer = await api.request("GET", CONTENTS, params={"ref": SHA}, need="contents: read")
        assert answer.status == 200
    [claims] = stub.jwts  # one exchange: the installation token is cached
    now = time.time()
    assert claims["iss"] == stub.app_id
    assert now - 70 <= claims["iat"] <= now - 50  # 60 s in the past
    assert claims["exp"] - claims["iat"] <= 600  # at most 10 minutes in all
    app = api.credentials()
    assert isinstance(app, credentials.App)
    assert app.exchanges == 1


async def test_a_token_near_its_expiry_is_replaced(stub: Stub, make_client: MakeClient) -> None:
    stub.files[("octo/app", SHA, ".github/runner-config.yml")] = "{}\n"
    api = make_client(app=True)
    await api.request("GET", CONTENTS, params={"ref": SHA}, need="contents: read")
    app = api.credentials()
    assert isinstance(app, credentials.App)
    app._expires = time.time() + credentials.REFRESH_BEFORE - 1  # about to expire
    await api.request("GET", CONTENTS, params={"ref": SHA}, need="contents: read")
    assert app.exchanges == 2


async def test_a_wrong_app_id_is_refused_by_github(stub: Stub, make_client: MakeClient) -> None:
    api = make_client(app=True)
    stub.app_id = "999"  # the stub's App is another one now
    with pytest.raises(errors.BadCredentials, match="Integration not found"):
        await api.request("GET", CONTENTS, need="contents: read")


async def test_a_key_that_is_not_a_key_is_named_without_its_text(
    stub: Stub, make_client: MakeClient, tmp_path: Path
) -> None:
    api = make_client(app=True)
    (tmp_path / "app.pem").write_text("-----BEGIN PRIVATE KEY-----\nsecret-ish\n")
    with pytest.raises(errors.BadCredentials) as info:
        await api.request("GET", CONTENTS, need="contents: read")
    assert "github.private_key_file is not an RSA private key" in str(info.value)
    assert "secret-ish" not in str(info.value)


def test_the_jwt_is_rs256_with_githubs_claims(stub: Stub) -> None:
    token = credentials.mint_jwt("Iv23abc", stub.key_pem(), now=1_700_000_000)
    header = jwt.get_unverified_header(token)
    claims = jwt.decode(
        token, stub.key.public_key(), algorithms=["RS256"], options={"verify_exp": False}
    )
    assert header["alg"] == "RS256"
    assert claims == {"iat": 1_699_999_940, "exp": 1_700_000_540, "iss": "Iv23abc"}


@pytest.mark.parametrize(
    ("content", "expected"),
    [(b"", "is empty"), (b"a" * 20000, "is over 16384 bytes"),
     (b"abc\ndef", "holds more than one printable line")],
)  # fmt: skip
async def test_a_bad_token_file_is_named(tmp_path: Path, content: bytes, expected: str) -> None:
    path = tmp_path / "token"
    path.write_bytes(content)
    with pytest.raises(errors.BadCredentials, match=expected):
        await credentials.TokenFile(path).authorization()


async def test_a_fifo_is_not_waited_on(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "token")
    with pytest.raises(errors.BadCredentials, match="is not a regular file"):
        await credentials.TokenFile(tmp_path / "token").authorization()
