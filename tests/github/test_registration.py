"""Runner registration tokens from the stub, which answers with GitHub's published
example (fixtures/create-registration-token.json), through the real client."""

from __future__ import annotations

import pytest

from agent.github import errors, registration
from tests.github.conftest import MakeClient
from tests.github.stub import Failure, Stub, fixture


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("https://github.com/octo-org", "/orgs/octo-org/actions/runners/registration-token"),
        (
            "https://github.com/octo-org/hello.world/",
            "/repos/octo-org/hello.world/actions/runners/registration-token",
        ),
        (
            "https://ghes.example.internal/enterprises/acme",
            "/enterprises/acme/actions/runners/registration-token",
        ),
    ],
)
async def test_a_token_is_minted_for_each_scope(
    stub: Stub, make_client: MakeClient, url: str, path: str
) -> None:
    minted = await registration.mint(make_client(), url)
    published = fixture("create-registration-token.json")
    assert minted == registration.RegistrationToken(published["token"], published["expires_at"])
    assert stub.requests[path] == 1


async def test_an_app_mints_through_its_installation_token(
    stub: Stub, make_client: MakeClient
) -> None:
    minted = await registration.mint(make_client(app=True), "https://github.com/octo-org")
    assert minted.token == fixture("create-registration-token.json")["token"]
    assert len(stub.jwts) == 1


@pytest.mark.parametrize(
    "url",
    [
        "github.com/octo-org",
        "ftp://github.com/octo-org",
        "https://github.com/",
        "https://github.com/a/b/c",
        "https://github.com/enterprises",
        "https://github.com/octo/../admin",
        "https://github.com/octo?x=1",
        "https://user:pw@github.com/octo",
        "https://github.com/oc to",
    ],
)
def test_a_url_config_sh_would_not_take_is_refused_by_name(url: str) -> None:
    with pytest.raises(registration.BadRunnerUrl) as caught:
        registration.scope_of(url)
    assert repr(url) in str(caught.value)
    assert "https://HOST/ORG" in str(caught.value)


def test_a_server_url_at_github_com_s_api_is_refused_with_the_api_url_to_set() -> None:
    with pytest.raises(registration.BadRunnerUrl) as caught:
        registration.check_api_for("https://ghe.example.test/octo", "https://api.github.com")
    assert "set github.api_url" in str(caught.value)
    assert "https://ghe.example.test/api/v3" in str(caught.value)
    registration.check_api_for("https://github.com/octo", "https://api.github.com")
    registration.check_api_for("https://ghe.example.test/octo", "https://ghe.example.test/api/v3")


async def test_a_missing_permission_is_named(stub: Stub, make_client: MakeClient) -> None:
    stub.fail(
        "/orgs/octo-org/actions/runners/registration-token",
        Failure(403, b'{"message": "Resource not accessible by integration"}'),
    )
    with pytest.raises(errors.PermissionDenied) as caught:
        await registration.mint(make_client(), "https://github.com/octo-org")
    assert "organization self-hosted runners: write" in str(caught.value)


@pytest.mark.parametrize(
    "body",
    [
        b"{}",
        b'{"token": "", "expires_at": "2020-01-22T12:13:35Z"}',
        b'{"token": "a b", "expires_at": "2020-01-22T12:13:35Z"}',
        b'{"token": "abc"}',
        b"[]",
    ],
)
async def test_an_answer_without_a_usable_token_is_refused(
    stub: Stub, make_client: MakeClient, body: bytes
) -> None:
    stub.fail("/orgs/octo-org/actions/runners/registration-token", Failure(201, body))
    with pytest.raises(errors.BadAnswer) as caught:
        await registration.mint(make_client(), "https://github.com/octo-org")
    assert "a b" not in str(caught.value)


async def test_a_5xx_is_retried(stub: Stub, make_client: MakeClient) -> None:
    path = "/orgs/octo-org/actions/runners/registration-token"
    stub.fail(path, Failure(502))
    minted = await registration.mint(make_client(), "https://github.com/octo-org")
    assert minted.token
    assert stub.requests[path] == 2
