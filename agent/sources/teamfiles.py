"""Team files for a job: a YAML body's, and the one at the job's commit on GitHub.

Policy: a team file with errors fails the request with each problem quoted with its
source and line (the catalog engine's parser); at a job's start the file is read from
GitHub at the job's commit when github credentials are set, a missing one being no team
file, and a GitHub error failing the job with what to fix
(:class:`errors.GitHubUnavailable`): a job must not silently run without the features its
repository asks for. The job GitHub shows running on this runner is looked up here too;
when GitHub cannot say, the job runs on the runner's menu with a warning instead.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Protocol

from agent.catalog import lockfile
from agent.config import loading as config_loading
from agent.github import contents, joblabels
from agent.github import errors as github_errors
from agent.platform import plans as wire
from agent.sources import errors, resolution

_FULL_SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")


def team_from_yaml(text: str, source: str = "team_yaml") -> wire.JsonObject:
    """The team document in ``text``; :class:`errors.InvalidTeam` quotes each problem with
    ``source`` and its line."""
    try:
        data, _ = config_loading.parse_yaml(text, source=source)
    except config_loading.ConfigError as exc:
        raise errors.InvalidTeam(
            f"{source} is not a valid team file: {exc}",
            details={"problems": [str(p) for p in exc.problems]},
        ) from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise errors.InvalidTeam(
            f"{source} must hold a mapping (features:, extends:, ...), not a {type(data).__name__}"
        )
    return data


async def _at_commit(
    configs: contents.TeamConfigs, repository: str, sha: str, path: str, seconds: float
) -> tuple[str, str] | None:
    """(text, source) of ``path`` in ``repository`` at ``sha`` on GitHub, or ``None``
    when the commit has none (or no full sha was given: nothing can be read at a short
    one); a GitHub error is :class:`errors.GitHubUnavailable`."""
    if not _FULL_SHA.fullmatch(sha):
        return None
    deadline = asyncio.get_running_loop().time() + seconds
    try:
        text = await configs.get(repository, sha, path=path, deadline=deadline)
    except github_errors.GitHubError as exc:
        raise errors.GitHubUnavailable(
            f"cannot read {path} of {repository} at {sha[:12]} from GitHub: {exc}"
        ) from exc
    return None if text is None else (text, f"{repository}@{sha[:12]}:{path}")


async def at_commit(
    configs: contents.TeamConfigs, repository: str, sha: str, *, seconds: float
) -> wire.JsonObject | None:
    """The team document of ``repository`` at ``sha`` on GitHub, or ``None`` when the
    commit has none."""
    found = await _at_commit(configs, repository, sha, contents.TEAM_CONFIG, seconds)
    return None if found is None else await asyncio.to_thread(team_from_yaml, *found)


async def lock_at_commit(
    configs: contents.TeamConfigs, repository: str, sha: str, *, seconds: float
) -> lockfile.Lock | None:
    """The lock file of ``repository`` at ``sha`` (:data:`lockfile.PATH`, beside the team
    file), or ``None`` when the commit has none; one with errors fails the job
    (:class:`errors.InvalidLock`): a lock that cannot be read must not be ignored."""
    found = await _at_commit(configs, repository, sha, lockfile.PATH, seconds)
    return None if found is None else await asyncio.to_thread(_parse_lock, *found)


def _parse_lock(text: str, source: str) -> lockfile.Lock:
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise errors.InvalidLock(
            f"{source} is not JSON ({str(exc)[:200]}); run runner-agent features lock"
        ) from exc
    lock = resolution.lock_from(data, source)
    assert lock is not None
    return lock


class _JobStart(Protocol):
    repository: str | None
    run_id: str
    run_attempt: int
    runner_name: str


async def running_job(
    labels: joblabels.JobLabels, body: _JobStart, *, seconds: float, warn: list[str]
) -> joblabels.RunningJob | None:
    """The job GitHub says this runner runs now; ``None`` (with a warning in ``warn``)
    when GitHub lists none or cannot say in time: the runner's menu applies then, and
    policy does not trust the repository the hook named."""
    assert body.repository is not None
    deadline = asyncio.get_running_loop().time() + seconds
    try:
        found = await labels.running(
            body.repository, body.run_id, body.run_attempt, body.runner_name, deadline=deadline
        )
    except github_errors.GitHubError as exc:
        warn.append(
            f"the job's labels could not be read from GitHub ({exc}); the runner's menu applies"
        )
        return None
    if found is None:
        warn.append(
            f"GitHub lists no job of run {body.run_id} in progress on runner "
            f"{body.runner_name}; the runner's menu applies, and {body.repository}'s "
            "policy rule does not"
        )
    return found
