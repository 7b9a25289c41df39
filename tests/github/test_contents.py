"""The team config at a job's commit: found, missing, bad, cached."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agent.github import contents, errors
from agent.store import layout, locks, notes
from tests.github.conftest import MakeClient
from tests.github.stub import SHA, Failure, Stub

PATH = "/repos/octo/app/contents/.github/runner-config.yml"
CONFIG = "extends: [base]\nfeatures:\n  - node@20\n  - python@3.12\n"


async def test_found_then_cached(stub: Stub, make_client: MakeClient) -> None:
    stub.files[("octo/app", SHA, ".github/runner-config.yml")] = CONFIG
    configs = contents.TeamConfigs(make_client())
    assert await configs.get("octo/app", SHA) == CONFIG
    assert await configs.get("octo/app", SHA) == CONFIG  # a second job at the same sha
    assert stub.requests[PATH] == 1


async def test_missing_is_no_config_and_cached(stub: Stub, make_client: MakeClient) -> None:
    configs = contents.TeamConfigs(make_client())
    assert await configs.get("octo/app", SHA) is None
    assert await configs.get("octo/app", SHA) is None
    assert stub.requests[PATH] == 1


async def test_concurrent_legs_share_one_request(stub: Stub, make_client: MakeClient) -> None:
    stub.files[("octo/app", SHA, ".github/runner-config.yml")] = CONFIG
    stub.fail(PATH, Failure(502, delay=0.3))  # slow enough that all 20 wait together
    configs = contents.TeamConfigs(make_client())
    found = await asyncio.gather(*(configs.get("octo/app", SHA) for _ in range(20)))
    assert found == [CONFIG] * 20
    assert stub.requests[PATH] == 2  # the 502, then the one that answered


async def test_another_sha_is_another_file(stub: Stub, make_client: MakeClient) -> None:
    other = "b" * 40
    stub.files[("octo/app", SHA, ".github/runner-config.yml")] = CONFIG
    stub.files[("octo/app", other, ".github/runner-config.yml")] = "features: [go@1.22]\n"
    configs = contents.TeamConfigs(make_client())
    assert await configs.get("octo/app", other) == "features: [go@1.22]\n"
    assert await configs.get("octo/app", SHA) == CONFIG


@pytest.mark.parametrize(
    ("repository", "sha", "expected"),
    [("octo", SHA, "is not owner/name"), ("../x", SHA, "is not owner/name"),
     ("octo/app", "main", "is not a commit sha"), ("octo/app", "A" * 40, "is not a commit sha")],
)  # fmt: skip
async def test_bad_names_are_refused_before_any_request(
    stub: Stub, make_client: MakeClient, repository: str, sha: str, expected: str
) -> None:
    with pytest.raises(errors.GitHubError, match=expected):
        await contents.TeamConfigs(make_client()).get(repository, sha)
    assert sum(stub.requests.values()) == 0


async def test_a_folder_or_a_huge_file_is_named(stub: Stub, make_client: MakeClient) -> None:
    stub.fail(PATH, Failure(200, body=b'[{"type": "file", "name": "a"}]'))
    configs = contents.TeamConfigs(make_client())
    with pytest.raises(errors.BadAnswer, match="is a list, not a file"):
        await configs.get("octo/app", SHA)
    stub.files[("octo/app", SHA, ".github/runner-config.yml")] = "#" * (300 * 1024)
    with pytest.raises(errors.BadAnswer, match="is over 262144 bytes"):
        await configs.get("octo/app", SHA)


async def test_no_permission_is_an_error_not_a_missing_file(
    stub: Stub, make_client: MakeClient
) -> None:
    stub.fail(PATH, Failure(403, body=b'{"message": "Resource not accessible by integration"}'))
    with pytest.raises(errors.PermissionDenied, match="grant contents: read"):
        await contents.TeamConfigs(make_client()).get("octo/app", SHA)


async def test_agents_sharing_a_store_fetch_a_commits_file_once(
    stub: Stub, make_client: MakeClient, tmp_path: Path
) -> None:
    stub.files[("octo/app", SHA, ".github/runner-config.yml")] = CONFIG
    stub.fail(PATH, Failure(502, delay=0.3))  # slow: every agent asks while it is out

    def agent() -> contents.TeamConfigs:
        shelf = notes.Notes(layout.Store(tmp_path), locks.PosixLocks())
        return contents.TeamConfigs(make_client(), shelf)

    agents = [agent() for _ in range(6)]
    found = await asyncio.gather(*(a.get("octo/app", SHA) for a in agents for _ in range(4)))
    assert found == [CONFIG] * 24
    assert stub.requests[PATH] == 2  # the 502, then the one answer every agent read
    # A missing file is noted too, for MISSING_SECONDS.
    other = "0" * 40
    assert [await a.get("octo/app", other) for a in agents] == [None] * 6
    assert stub.requests[f"{PATH}"] == 3


async def test_a_missing_file_is_shared_only_with_agents_of_the_same_credentials(
    stub: Stub, make_client: MakeClient, tmp_path: Path
) -> None:
    # 404 is "missing" or "not yours to see": an App that cannot see the repository must
    # not make it missing for a token that can.
    def agent(app: bool) -> contents.TeamConfigs:
        shelf = notes.Notes(layout.Store(tmp_path), locks.PosixLocks())
        return contents.TeamConfigs(make_client(app=app), shelf)

    assert await agent(app=True).get("octo/app", SHA) is None
    stub.files[("octo/app", SHA, ".github/runner-config.yml")] = CONFIG
    assert await agent(app=False).get("octo/app", SHA) == CONFIG
    assert stub.requests[PATH] == 2
    assert await agent(app=False).get("octo/app", SHA) == CONFIG  # its own: shared
    assert stub.requests[PATH] == 2
