"""The job's context, gathered from the environment the runner gives its job hook.

Policy:
- the runner sets ``RUNNER_NAME``, ``GITHUB_RUN_ID``, ``GITHUB_RUN_ATTEMPT`` and
  ``GITHUB_JOB`` for every job: each is required, and a missing or malformed one is an
  error naming the variable; the others (``GITHUB_REPOSITORY``, ``GITHUB_WORKFLOW``,
  ``GITHUB_WORKFLOW_REF``,
  ``GITHUB_SHA``, the event name) are sent when present and valid, else ``null``;
- the event name is ``GITHUB_EVENT_NAME`` (the runner sets it beside
  ``GITHUB_EVENT_PATH``). The event file holds the webhook payload, which carries no
  name, so it is never parsed: when the name is unset the file is only looked at to
  say, in a warning, why the name is unknown. A missing or unreadable file is never fatal;
- the runner's platform comes from :func:`agent.platform.detect.detect`; a machine it
  cannot describe is sent as ``null`` with a warning (the agent then plans for its own);
- ``NVIDIA_VISIBLE_DEVICES`` is read in every form the NVIDIA container runtime takes:
  unset, ``all``, ``none`` (no GPU, driver
  libraries still mounted), ``void`` and the empty string (both mean, to the runtime,
  what an unset variable means to runc: nothing NVIDIA at all, so both are ``void``), or
  a comma list of device indices (``0,1``), GPU UUIDs (``GPU-...``) and MIG devices
  (``MIG-...`` or ``GPU:MIG`` indices ``0:1``). Anything else is an error that names the
  value and the forms expected. Unset is ``unset`` (devices injected some other way: CDI,
  a privileged container, a host runner) only where a GPU device node
  (``/dev/nvidiaN``) is there; without one the job sees no GPU, so it is ``void``, and
  a runner without a GPU beside an agent that sees the node's GPUs is never scoped to
  them.
"""

from __future__ import annotations

import os
import re
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from agent.hook import errors

_MAX_VALUE = 1000
_DIGITS = re.compile(r"[0-9]{1,20}")
_RUNNER_NAME = re.compile(r"[\x20-\x7e]{1,200}")
_REPOSITORY = re.compile(r"[A-Za-z0-9_.-]{1,100}/[A-Za-z0-9_.-]{1,100}")
_SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_EVENT_NAME = re.compile(r"[a-z_]{1,64}")
_GPU_INDEX = re.compile(r"[0-9]{1,4}")
_MIG_INDEX = re.compile(r"[0-9]{1,4}:[0-9]{1,4}")
_GPU_UUID = re.compile(r"GPU-[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}")
# MIG-<uuid> (R470+) or MIG-GPU-<uuid>/<gi>/<ci> (R450).
_MIG_UUID = re.compile(
    r"MIG-(GPU-)?[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}(/[0-9]{1,4}/[0-9]{1,4})?"
)
_DEVICE_NODE = re.compile(r"nvidia[0-9]{1,4}")
_GPU_FORMS = (
    "unset, all, none, void, or a comma list of indices (0,1), GPU UUIDs (GPU-...), "
    "MIG devices (MIG-... or 0:1)"
)

# typing's spelling: the alias is evaluated at import, and Python 3.8 has no abc generics.
Warn = typing.Callable[[str], None]


class ContextError(errors.BadInput):
    """An environment value the runner should have set is missing or malformed."""


@dataclass(frozen=True)
class Gpus:
    """What ``NVIDIA_VISIBLE_DEVICES`` says: a kind, and for ``list`` the devices."""

    kind: str
    devices: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        """The ``gpus`` value of ``POST /v1/jobs``."""
        return {"kind": self.kind, "devices": list(self.devices)}


@dataclass(frozen=True)
class JobContext:
    """Everything ``POST /v1/jobs`` says about the job, validated."""

    runner_name: str
    run_id: str
    run_attempt: int
    job: str
    repository: str | None
    workflow: str | None
    workflow_ref: str | None
    sha: str | None
    event_name: str | None
    platform: dict[str, object] | None
    gpus: Gpus

    def to_json(self) -> dict[str, object]:
        """The job's part of the ``POST /v1/jobs`` body (no claim, requests, supersede)."""
        return {
            "runner_name": self.runner_name,
            "run_id": self.run_id,
            "run_attempt": self.run_attempt,
            "job": self.job,
            "repository": self.repository,
            "workflow": self.workflow,
            "workflow_ref": self.workflow_ref,
            "sha": self.sha,
            "event_name": self.event_name,
            "platform": self.platform,
            "gpus": self.gpus.to_json(),
        }


def has_gpu_nodes(dev: str = "/dev") -> bool:
    """Whether ``dev`` holds a GPU device node (``nvidia0``...); True when it cannot be
    listed (unknown is not "no GPU")."""
    try:
        names = os.listdir(dev)
    except OSError:
        return True
    return any(_DEVICE_NODE.fullmatch(name) for name in names)


def parse_gpus(value: str | None, *, gpu_nodes: Callable[[], bool] = has_gpu_nodes) -> Gpus:
    """``NVIDIA_VISIBLE_DEVICES`` (``None``: unset) as :class:`Gpus`; see the module."""
    if value is None:
        return Gpus("unset") if gpu_nodes() else Gpus("void")
    text = value.strip()
    if text in ("", "void"):
        return Gpus("void")
    if text in ("all", "none"):
        return Gpus(text)
    devices: list[str] = []
    for item in (part.strip() for part in text.split(",")):
        known = any(
            pattern.fullmatch(item) for pattern in (_GPU_INDEX, _MIG_INDEX, _GPU_UUID, _MIG_UUID)
        )
        if not known:
            raise ContextError(
                f"NVIDIA_VISIBLE_DEVICES={value!r}: {item!r} is not a GPU; expected {_GPU_FORMS}"
            )
        if item not in devices:
            devices.append(item)
    return Gpus("list", devices)


def _required(env: Mapping[str, str], name: str, pattern: re.Pattern[str], what: str) -> str:
    value = env.get(name)
    if value is None or value == "":
        raise ContextError(
            f"{name} is not set; the runner sets it for every job: run the hook as the "
            "runner's job hook (ACTIONS_RUNNER_HOOK_JOB_STARTED) or in a workflow step"
        )
    if not pattern.fullmatch(value):
        raise ContextError(f"{name}={value!r} is not {what}")
    return value


def _optional(
    env: Mapping[str, str], name: str, pattern: re.Pattern[str] | None, what: str, warn: Warn
) -> str | None:
    # A bad optional value is the runner's odd version, not the user's fault: warn, send null.
    value = env.get(name)
    if not value:
        return None
    ok = len(value) <= _MAX_VALUE and value.isprintable()
    if not ok or (pattern is not None and not pattern.fullmatch(value)):
        warn(f"{name}={value[:80]!r} is not {what}; the agent gets no {name}")
        return None
    return value


def _event_name(env: Mapping[str, str], warn: Warn) -> str | None:
    name = _optional(env, "GITHUB_EVENT_NAME", _EVENT_NAME, "an event name (push, ...)", warn)
    if name is not None:
        return name
    path = env.get("GITHUB_EVENT_PATH")
    if not path:
        warn("GITHUB_EVENT_NAME and GITHUB_EVENT_PATH are unset: the job's event is unknown")
        return None
    try:
        os.stat(path)
    except OSError as exc:
        warn(
            f"GITHUB_EVENT_PATH names {path}, which cannot be read ({exc.strerror}), and "
            "GITHUB_EVENT_NAME is unset: the job's event is unknown"
        )
        return None
    warn("GITHUB_EVENT_NAME is unset (the event file carries no name): the event is unknown")
    return None


def platform_of_runner(warn: Warn) -> dict[str, object] | None:
    from agent.platform import detect, model

    try:
        found = detect.detect()
    except (model.PlatformError, OSError) as exc:
        warn(f"cannot describe this runner's platform ({exc}); the agent plans for its own")
        return None
    return {
        "os": found.os,
        "arch": found.arch,
        "libc": found.libc,
        "package_manager": found.package_manager,
        "cuda_driver": found.cuda_driver,
    }


def gather(
    env: Mapping[str, str],
    warn: Warn,
    *,
    platform: Callable[[Warn], dict[str, object] | None] | None = None,
    gpu_nodes: Callable[[], bool] = has_gpu_nodes,
) -> JobContext:
    """The job's context from ``env`` (the hook's environment); ``warn`` prints a note."""
    attempt = _required(env, "GITHUB_RUN_ATTEMPT", _DIGITS, "a run attempt (1, 2, ...)")
    if int(attempt) < 1:
        raise ContextError(f"GITHUB_RUN_ATTEMPT={attempt!r} is not a run attempt (1, 2, ...)")
    job = _required(env, "GITHUB_JOB", _RUNNER_NAME, "a job id (printable, at most 200)")
    return JobContext(
        runner_name=_required(
            env, "RUNNER_NAME", _RUNNER_NAME, "a runner name (printable, at most 200 characters)"
        ),
        run_id=_required(env, "GITHUB_RUN_ID", _DIGITS, "a run id (digits)"),
        run_attempt=int(attempt),
        job=job,
        repository=_optional(env, "GITHUB_REPOSITORY", _REPOSITORY, "owner/name", warn),
        workflow=_optional(env, "GITHUB_WORKFLOW", None, "a workflow name", warn),
        workflow_ref=_optional(env, "GITHUB_WORKFLOW_REF", None, "a workflow ref", warn),
        sha=_optional(env, "GITHUB_SHA", _SHA, "a commit SHA (hex)", warn),
        event_name=_event_name(env, warn),
        platform=(platform or platform_of_runner)(warn),
        gpus=parse_gpus(env.get("NVIDIA_VISIBLE_DEVICES"), gpu_nodes=gpu_nodes),
    )
