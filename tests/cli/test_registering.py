"""``runner-agent github registration-token`` as a real process against the GitHub stub
(which answers with GitHub's published example)."""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml

from tests.github.stub import Failure, Stub, fixture, serve
from tests.support.agentproc import PYTHON

PUBLISHED = fixture("create-registration-token.json")


@pytest.fixture
async def github_stub() -> AsyncIterator[Stub]:
    async with serve(Stub()) as served:
        yield served


async def mint(*args: str, config: Path | None = None) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNNER_AGENT_")}
    given = ["--config", str(config)] if config else []
    proc = await asyncio.create_subprocess_exec(
        PYTHON,
        "-m",
        "agent",
        "github",
        "registration-token",
        *args,
        *given,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def config_for(stub: Stub, folder: Path, *, app: bool = False) -> Path:
    path = folder / "agent.yaml"
    github = {"api_url": stub.url, **stub.credentials(folder, app=app)}
    path.write_text(yaml.safe_dump({"github": github}))
    return path


async def test_the_token_is_written_whole_and_never_printed(
    github_stub: Stub, tmp_path: Path
) -> None:
    out = tmp_path / "registration" / "token"
    out.parent.mkdir()
    config = config_for(github_stub, tmp_path, app=True)
    code, stdout, stderr = await mint(
        "--url", "https://github.com/octo-org", "--out", str(out), config=config
    )
    assert code == 0, stderr
    assert out.read_text() == PUBLISHED["token"] + "\n"
    assert stat.S_IMODE(out.stat().st_mode) == 0o640
    assert PUBLISHED["token"] not in stdout + stderr
    assert PUBLISHED["expires_at"] in stdout
    assert list(out.parent.iterdir()) == [out]  # no temporary file left


async def test_a_link_planted_at_the_output_is_replaced_not_followed(
    github_stub: Stub, tmp_path: Path
) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep me\n")
    (tmp_path / "registration").mkdir()
    out = tmp_path / "registration" / "token"
    out.symlink_to(victim)
    config = config_for(github_stub, tmp_path)
    code, _, stderr = await mint(
        "--url", "https://github.com/octo-org/repo", "--out", str(out), config=config
    )
    assert code == 0, stderr
    assert victim.read_text() == "keep me\n"
    assert not out.is_symlink()
    assert out.read_text().strip() == PUBLISHED["token"]


async def test_refusals_exit_with_what_to_fix(github_stub: Stub, tmp_path: Path) -> None:
    out = tmp_path / "registration-token"
    config = config_for(github_stub, tmp_path)
    code, _, stderr = await mint("--url", "github.com/octo", "--out", str(out), config=config)
    assert code == 2
    assert "runner URL 'github.com/octo' is not an http(s) URL" in stderr
    bare = tmp_path / "bare.yaml"
    bare.write_text(yaml.safe_dump({"github": {"api_url": github_stub.url}}))
    code, _, stderr = await mint("--url", "https://github.com/o", "--out", str(out), config=bare)
    assert code == 2
    assert "set github.token_file" in stderr
    code, _, stderr = await mint(
        "--url", "https://github.com/o", "--out", str(tmp_path / "nowhere" / "t"), config=config
    )
    assert code == 2
    assert "its folder does not exist" in stderr
    github_stub.fail(
        "/orgs/o/actions/runners/registration-token",
        Failure(403, b'{"message": "Resource not accessible by integration"}'),
    )
    code, _, stderr = await mint("--url", "https://github.com/o", "--out", str(out), config=config)
    assert code == 1
    assert "organization self-hosted runners: write" in stderr
    assert not out.exists()
