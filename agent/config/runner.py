"""The ``runner`` settings: what the agent knows of the runner it serves and its jobs.

Policy: the runner's ``runs-on`` labels never reach the agent (the runner gives its
hook none), so ``runner.labels`` is what the agent installs for every job: a mirror of
the feature labels the runner was registered with, or simply the menu of a scale set.
A job's other requests come from explicit ``ensure`` steps and the team file.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated

from pydantic import AfterValidator, Field

from agent.config.fields import Seconds, Section

_LABEL_MAX = 200


def _printable(what: str, example: str) -> Callable[[str], str]:
    """A check of one printable word (a label, a runner's name) that names ``what``."""

    def check(value: str) -> str:
        if (
            not value
            or len(value) > _LABEL_MAX
            or not value.isprintable()
            or value != value.strip()
        ):
            raise ValueError(
                f"{value!r} is not {what}: expected 1 to {_LABEL_MAX} printable characters "
                f"without surrounding spaces, e.g. {example}"
            )
        return value

    return check


Label = Annotated[str, AfterValidator(_printable("a runner label", "feature:node@20"))]
_FEATURE_RE = re.compile(r"\*|[a-z0-9][a-z0-9._-]{0,63}")
_GLOB_RE = re.compile(r"[A-Za-z0-9_.*?\[\]!-]{1,100}/[A-Za-z0-9_.*?\[\]!-]{1,100}")


def _feature(value: str) -> str:
    if not _FEATURE_RE.fullmatch(value):
        raise ValueError(f"{value!r} is not a feature id (such as node or python) or *")
    return value


def _glob(value: str) -> str:
    if not _GLOB_RE.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a repository glob: expected owner/name with * ? [...], "
            "e.g. octo/* or */infra-*"
        )
    return value


PolicyFeature = Annotated[str, AfterValidator(_feature)]
RepositoryGlob = Annotated[str, AfterValidator(_glob)]
RunnerName = Annotated[
    str, AfterValidator(_printable("a runner name (its RUNNER_NAME)", "build-host-1"))
]


class PolicyRule(Section):
    """One rule of runner.policy: these repositories may request these features."""

    repositories: list[RepositoryGlob] = Field(
        min_length=1,
        max_length=64,
        description="Repository globs, e.g. [octo/infra-*]. Range 1 to 64 globs.",
    )
    features: list[PolicyFeature] = Field(
        max_length=256,
        description=(
            "Feature ids they may request, e.g. [terraform, kubectl]; * for any. Range 0 to 256."
        ),
    )


class RunnerSettings(Section):
    """The runner this agent serves, and the life of its jobs."""

    labels: list[Label] = Field(
        default_factory=list,
        max_length=64,
        description=(
            "The runner's labels; the feature: ones (feature:node@20) are installed for "
            "every job at its start, before its first step. Mirror the labels the runner "
            "was registered with, or list a scale set's menu. Others are ignored. Range "
            "0 to 64 labels. Default none."
        ),
    )
    names: list[RunnerName] = Field(
        default_factory=list,
        max_length=256,
        description=(
            "The runners (their RUNNER_NAME) this agent serves; others are refused a job. "
            "A runner's name is what its hook says, not a proof: on a host agent serving "
            "several runners, list them, so job code cannot open jobs for made-up runners. "
            "Range 0 to 256 names. Default none: any name."
        ),
    )
    max_open_jobs: int = Field(
        default=64,
        ge=1,
        le=1024,
        description=(
            "Open jobs at most (one per runner): a sidecar serves one runner, a host a "
            "few. A job start beyond it is refused (503 too_many_jobs). Range 1 to 1024. "
            "Default 64."
        ),
    )
    job_max_seconds: Seconds = Field(
        default=6 * 3600.0,
        ge=60,
        le=5 * 86400,
        description=(
            "A job the agent never hears the end of (its job-completed hook did not run) "
            "is completed after this long: its leases are released and the stop gate "
            "opens. Range 60 to 432000 s (GitHub's own limit for a self-hosted job is 5 "
            "days). Default 21600 (6 h, a job's default timeout)."
        ),
    )
    history: int = Field(
        default=100,
        ge=1,
        le=10000,
        description=(
            "How many completed jobs the agent remembers, so a repeated job-completed call "
            "is answered as done. Range 1 to 10000. Default 100."
        ),
    )
    policy: list[PolicyRule] = Field(
        default_factory=list,
        max_length=256,
        description=(
            "Which features each repository may request: rules of repository globs "
            "(octo/*, */infra-*; case-insensitive, as GitHub's names) and feature ids (* "
            "for any). The first rule, in order, with a glob that matches a job's "
            "repository decides; a repository no rule matches gets allowed_features. "
            "Enforced on every path (the job's start, its explicit steps, a direct "
            "/v1/ensure); an admin token bypasses it. Range 0 to 256 rules. Default none."
        ),
    )
    allowed_features: Annotated[list[PolicyFeature], Field(max_length=256)] | None = Field(
        default=None,
        description=(
            "The features a repository that matches no runner.policy glob may request "
            "(and a request that names no repository). Default none: any feature; with "
            "both unset nothing is restricted. Set [] to allow only what policy lists. "
            "Range 0 to 256 features."
        ),
    )
    shutdown_wait_seconds: Seconds = Field(
        default=300.0,
        ge=0,
        le=86400,
        description=(
            "At agent shutdown, while a job is open, the API keeps serving for up to this "
            "long so the job's completed hook still reaches the agent (and an engine "
            "container following this agent's jobs through upstream.socket_path sees the "
            "job end before it stops dockerd). No new job opens meanwhile. An agent with "
            "gated services waits for its stop gate instead (jobs hold it), bounded by "
            "their stop.gate_max_wait_seconds. On top of server.shutdown_grace_seconds: a "
            "pod's terminationGracePeriodSeconds must cover both. Range 0 s-1 day. "
            "Default 300 s, as stop.gate_max_wait_seconds."
        ),
    )
