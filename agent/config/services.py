"""Specs of supervised services (the ``services:`` map of the agent's settings).

Policy:
- a service is an argv (never a shell string), its environment, working folder and user,
  a health check, a restart policy, a stop policy and its place among other services
  (``depends_on``, ``required_for_ready``);
- every field has a default that suits a daemon such as dockerd, so a spec can be one
  line: ``dockerd: {preset: dockerd}`` (see :mod:`agent.config.presets`);
- a spec is validated whole: an unknown key, a bad duration, a dependency on a service
  that does not exist or a dependency cycle is an error naming the bad value and what
  was expected, positioned in the file like every other setting;
- names are short DNS-label-like words: they appear in metric labels, log fields and
  API paths, so they must be safe in all three.
"""

from __future__ import annotations

import signal
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from agent.config import healthchecks, presets
from agent.config.fields import AbsolutePath, Seconds

NAME_PATTERN = r"^[a-z][a-z0-9-]{0,62}$"
ServiceName = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]


def _signal_name(value: Any) -> Any:
    # Accept TERM, SIGTERM, sigterm or 15; store the canonical SIGTERM.
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return signal.Signals(value).name
        except ValueError:
            raise ValueError(f"{value} is not a signal number") from None
    if isinstance(value, str):
        name = value.strip().upper()
        name = name if name.startswith("SIG") else f"SIG{name}"
        if name in signal.Signals.__members__:
            return name
    raise ValueError("expected a signal name such as SIGTERM, SIGINT or SIGQUIT")


SignalName = Annotated[str, BeforeValidator(_signal_name)]
Argv = healthchecks.Argv


class _Spec(BaseModel):
    # Deferred, like agent.config.fields.Section: built inside Settings on first use.
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


# Health checks live in their own module; callers meet them here.
HttpHealth = healthchecks.HttpHealth
TcpHealth = healthchecks.TcpHealth
ExecHealth = healthchecks.ExecHealth
Health = healthchecks.Health


class RestartPolicy(_Spec):
    """When and how soon a stopped service is started again."""

    policy: Literal["always", "on-failure", "never"] = Field(
        default="always",
        description=(
            "`always`: restart after any exit; `on-failure`: after a non-zero exit, a "
            "signal or a failed health check; `never`: leave it down. Default always."
        ),
    )
    backoff_initial_seconds: Seconds = Field(
        default=1.0,
        ge=0,
        le=3600,
        description=(
            "Delay before the first restart after a fault. Default 1 s. "
            "Range 0-3600 s; start_limit_burst bounds how often a zero delay restarts."
        ),
    )
    backoff_max_seconds: Seconds = Field(
        default=30.0,
        ge=0,
        le=86400,
        description=(
            "Cap of the delay, which doubles after each fault. Default 30 s. Range 0 s-1 day."
        ),
    )
    backoff_multiplier: float = Field(
        default=2.0,
        ge=1,
        le=10,
        description=(
            "Growth of the delay per fault. Default 2. Range 1-10: below 1 the delay would shrink."
        ),
    )
    jitter: float = Field(
        default=0.2,
        ge=0,
        le=1,
        description=(
            "Fraction of each delay taken off at random (delay x (1 - jitter x U[0,1))), so "
            "agents restarted together do not retry in lockstep. Default 0.2. "
            "Range 0-1: a fraction of the delay."
        ),
    )
    reset_after_seconds: Seconds = Field(
        default=60.0,
        ge=0,
        le=86400,
        description=(
            "Seconds of healthy running after which the next fault starts the backoff from "
            "the initial delay again. Default 60 s. "
            "Range 0 s-1 day."
        ),
    )
    start_limit_burst: int = Field(
        default=5,
        ge=1,
        le=1000,
        description=(
            "Starts allowed within start_limit_window_seconds; one more and the service is "
            "`failed`, left down until an operator starts it or the config changes "
            "(systemd's StartLimitBurst). Default 5. "
            "Range 1-1000 starts."
        ),
    )
    start_limit_window_seconds: Seconds = Field(
        default=120.0,
        ge=1,
        le=86400,
        description=(
            "The window of start_limit_burst, in seconds. Default 120 s. Range 1 s-1 day."
        ),
    )

    @model_validator(mode="after")
    def _ordered(self) -> RestartPolicy:
        if self.backoff_max_seconds < self.backoff_initial_seconds:
            raise ValueError(
                f"backoff_max_seconds ({self.backoff_max_seconds:g}) is below "
                f"backoff_initial_seconds ({self.backoff_initial_seconds:g}); expected max >= "
                "initial"
            )
        return self


class StopPolicy(_Spec):
    """How a service is stopped."""

    signal: SignalName = Field(
        default="SIGTERM", description="Signal asking it to stop. Default SIGTERM."
    )
    grace_seconds: Seconds = Field(
        default=10.0,
        ge=0,
        le=3600,
        description=(
            "Seconds between the stop signal and SIGKILL; at agent shutdown also bounded by "
            "what is left of server.shutdown_grace_seconds. Default 10 s. "
            "Range 0-3600 s: 0 kills at once."
        ),
    )
    kill_group: bool = Field(
        default=True,
        description=(
            "Signal the whole process group, and SIGKILL what is left of it once the main "
            "process is gone, so no grandchild outlives the service. Default true."
        ),
    )
    gate: bool = Field(
        default=False,
        description=(
            "At agent shutdown, wait for the stop gate (closed while the runner finishes a "
            "job) before stopping this service, for at most gate_max_wait_seconds. Default "
            "false; the dockerd preset sets true, so dockerd outlives the job."
        ),
    )
    gate_max_wait_seconds: Seconds = Field(
        default=300.0,
        ge=0,
        le=86400,
        description=(
            "Longest wait for the stop gate, in seconds, on top of the shutdown grace; a "
            "pod's terminationGracePeriodSeconds must cover both. Default 300 s. "
            "Range 0 s-1 day: no job holds a pod's stop longer."
        ),
    )


class PreStart(_Spec):
    """Stale files of a killed previous run, removed before each start."""

    pid_files: list[AbsolutePath] = Field(
        default_factory=list,
        description=(
            "Pid files removed before a start ONLY when the process they name is gone (or a "
            "zombie, or another program reusing the pid): a live daemon's file is never "
            "touched. Default none."
        ),
    )
    sockets: list[AbsolutePath] = Field(
        default_factory=list,
        description=(
            "Unix sockets removed before a start ONLY when nothing accepts connections on "
            "them. Default none."
        ),
    )
    process_names: list[str] = Field(
        default_factory=list,
        description=(
            "Programs a pid file may name (their /proc comm, e.g. dockerd): a live process "
            "by another name is reusing a stale pid. Default none: any live process counts."
        ),
    )


class OutputPolicy(_Spec):
    """Where the child's stdout and stderr go: the agent's log and a ring buffer."""

    lines_per_second: float = Field(
        default=50.0,
        ge=0.1,
        le=100_000,
        description=(
            "Lines per second forwarded to the agent log (a token bucket); more are "
            "dropped from the log and counted, so a chatty child cannot flood it. Default 50. "
            "Range 0.1-100000 lines/s: more floods the agent's own log."
        ),
    )
    burst: int = Field(
        default=200,
        ge=1,
        le=100_000,
        description="Lines forwarded at once before the rate applies. Range 1-100000 lines.",
    )
    buffer_lines: int = Field(
        default=1000,
        ge=1,
        le=100_000,
        description=(
            "Last lines kept for GET /v1/services/{name}/logs, every one. Default 1000. "
            "Range 1-100000 lines: the buffer is held in memory."
        ),
    )
    max_line_bytes: int = Field(
        default=8192,
        ge=80,
        le=1024 * 1024,
        description=(
            "Longer lines are cut (and marked) so one line cannot take the memory. "
            "Range 80 B-1 MiB: a line is held in memory."
        ),
    )


class ServiceSpec(_Spec):
    """One supervised service."""

    preset: Literal["dockerd"] | None = Field(
        default=None,
        description=(
            "Fill command, health, pre_start and stop from a preset: `dockerd` (see params). "
            "Fields set here win over the preset's."
        ),
    )
    params: presets.DockerdParams | None = Field(
        default=None,
        description=(
            "Parameters of the preset (dockerd: socket, group, pidfile, data_root, "
            "exec_root, mtu, extra_args). Default: the preset's defaults."
        ),
    )
    command: Argv = Field(description="argv of the service; the first item is looked up in PATH.")
    env: dict[str, str] = Field(
        default_factory=dict,
        description="Environment variables added to the agent's own for this service.",
    )
    cwd: AbsolutePath | None = Field(
        default=None, description="Working folder. Default: the agent's."
    )
    user: int | str | None = Field(
        default=None,
        description="User (uid or name) to run as; needs a root agent. Default: the agent's.",
    )
    health: Health | None = Field(
        default=None,
        description=(
            "Health check. None: the service counts as up while its process runs (prefer "
            "a real check: a hung daemon is alive)."
        ),
    )
    restart: RestartPolicy = Field(
        default_factory=RestartPolicy, description="Restart policy, backoff and start limit."
    )
    stop: StopPolicy = Field(default_factory=StopPolicy, description="Stop signal and grace.")
    pre_start: PreStart = Field(
        default_factory=PreStart, description="Stale pid files and sockets cleaned before start."
    )
    output: OutputPolicy = Field(
        default_factory=OutputPolicy, description="Log forwarding rate limit and ring buffer."
    )
    required_for_ready: bool = Field(
        default=True,
        description="/readyz is false until this service is healthy, and while it is not.",
    )
    depends_on: list[ServiceName] = Field(
        default_factory=list,
        description=(
            "Services that must be healthy before this one starts; at shutdown this one "
            "stops first."
        ),
    )

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("preset") == "dockerd":
            return presets.dockerd(data)
        return data

    @model_validator(mode="after")
    def _params_need_a_preset(self) -> ServiceSpec:
        if self.preset is None and self.params is not None:
            raise ValueError("params apply to a preset; set preset: dockerd, or remove params")
        return self


def check_graph(services: dict[str, ServiceSpec]) -> None:
    """Raise ``ValueError`` on a dependency that names no service, or on a cycle."""
    for name, spec in services.items():
        for dep in spec.depends_on:
            if dep == name:
                raise ValueError(f"service {name!r} depends on itself; remove it from depends_on")
            if dep not in services:
                known = ", ".join(sorted(services)) or "none"
                raise ValueError(
                    f"service {name!r} depends on {dep!r}, which is not a service; "
                    f"expected one of: {known}"
                )
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = [*path[path.index(name) :], name]
            raise ValueError(
                f"depends_on has a cycle: {' -> '.join(cycle)}; expected a dependency order"
            )
        state[name] = 1
        for dep in services[name].depends_on:
            visit(dep, [*path, name])
        state[name] = 2

    for name in sorted(services):
        visit(name, [])


def start_order(services: dict[str, ServiceSpec]) -> list[list[str]]:
    """Levels of services: each level's dependencies are all in earlier levels."""
    levels: list[list[str]] = []
    placed: set[str] = set()
    left = set(services)
    while left:
        level = sorted(n for n in left if set(services[n].depends_on) <= placed)
        if not level:  # a cycle; check_graph refuses these at load
            level = sorted(left)
        levels.append(level)
        placed |= set(level)
        left -= set(level)
    return levels
