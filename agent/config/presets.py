"""Service presets: ready-made specs that users enable with one line.

``dockerd`` runs Docker's daemon as ARC's dind sidecar does
(``dockerd --host=unix:///var/run/docker.sock --group=123``), health-checked with
``GET /_ping`` on its socket (healthy on ``200 OK``), with its stale pid files and socket
cleaned before a start only when the dockerd (or containerd) they name is dead, and a
stop gate so dockerd outlives the runner's current job.

Policy: a preset fills only what the user's spec leaves out; the paths are parameters
with dockerd's own defaults, so a test (or a second agent) runs a private dockerd that
never collides with the machine's. ``extra_args`` passes any other flag through, but a
flag that a parameter owns is refused, naming the parameter to set instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from agent.config.fields import AbsolutePath

# Flags the parameters own: passing them in extra_args would fight the preset's own.
_OWNED = {
    "-H": "socket",
    "--host": "socket",
    "-G": "group",
    "--group": "group",
    "-p": "pidfile",
    "--pidfile": "pidfile",
    "--data-root": "data_root",
    "-g": "data_root",
    "--graph": "data_root",
    "--exec-root": "exec_root",
    "--mtu": "mtu",
}


def _extra_args(value: list[str]) -> list[str]:
    for arg in value:
        flag = arg.split("=", 1)[0]
        if flag in _OWNED:
            raise ValueError(
                f"{arg!r} is set by the preset; set params.{_OWNED[flag]} instead of passing "
                f"{flag} in extra_args"
            )
        if not arg.startswith("-"):
            raise ValueError(
                f"{arg!r} is not a flag; expected flags such as --iptables=false (write a "
                "flag's value after '=')"
            )
    return value


class DockerdParams(BaseModel):
    """Parameters of the dockerd preset (ignored by other services)."""

    # Deferred, like agent.config.fields.Section: built when a preset is first expanded.
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    socket: AbsolutePath = Field(
        default=Path("/var/run/docker.sock"),
        description="dockerd's API socket (--host=unix://...). Default /var/run/docker.sock.",
    )
    group: int | str = Field(
        default=123,
        description=(
            "Group owning the socket (--group): 123 is the docker group of ARC's runner "
            "image, so the runner user can reach it. Default 123."
        ),
    )
    pidfile: AbsolutePath = Field(
        default=Path("/var/run/docker.pid"),
        description="dockerd's pid file (--pidfile). Default /var/run/docker.pid.",
    )
    data_root: AbsolutePath = Field(
        default=Path("/var/lib/docker"),
        description="Images, containers and volumes (--data-root). Default /var/lib/docker.",
    )
    exec_root: AbsolutePath = Field(
        default=Path("/var/run/docker"),
        description=(
            "Runtime state, including the managed containerd's socket and pid file "
            "(--exec-root). Default /var/run/docker."
        ),
    )
    mtu: int | None = Field(
        default=None,
        ge=68,
        le=65535,
        description=(
            "MTU of the default bridge (--mtu) AND of networks created later "
            "(--default-network-opt=bridge=com.docker.network.driver.mtu=N), e.g. 1400 "
            "on an overlay network with a smaller MTU. Default: dockerd's (1500). "
            "Range 68-65535: what IPv4 and Linux allow."
        ),
    )
    mtu_default_network_opt: bool = Field(
        default=True,
        description=(
            "With mtu, also pass --default-network-opt (dockerd 24 or newer, as in dind "
            "images); set false for an older dockerd such as Debian 12's 20.10. Default true."
        ),
    )
    extra_args: Annotated[list[str], AfterValidator(_extra_args)] = Field(
        default_factory=list,
        description=(
            "More dockerd flags, appended, e.g. [--iptables=false, --ip6tables=false, "
            "--bridge=none] where the kernel has no iptables (as on the development "
            "machine), or [--registry-mirror=https://mirror.example]. Flags owned by the "
            "other parameters are refused."
        ),
    )

    def argv(self) -> list[str]:
        """dockerd's command line for these parameters."""
        argv = [
            "dockerd",
            f"--host=unix://{self.socket}",
            f"--group={self.group}",
            f"--pidfile={self.pidfile}",
            f"--data-root={self.data_root}",
            f"--exec-root={self.exec_root}",
        ]
        if self.mtu is not None:
            argv.append(f"--mtu={self.mtu}")
            if self.mtu_default_network_opt:
                argv.append(
                    f"--default-network-opt=bridge=com.docker.network.driver.mtu={self.mtu}"
                )
        return argv + list(self.extra_args)


def dockerd(data: dict[str, Any]) -> dict[str, Any]:
    """Fill a service spec's missing fields from the dockerd preset.

    Invalid parameters are left for the spec's own validation to report (with their
    position); the preset then fills nothing that depends on them.
    """
    from pydantic import ValidationError

    out = dict(data)
    raw = out.get("params") or {}
    try:
        params = DockerdParams.model_validate(raw)
    except ValidationError:
        # Reported with its position by the spec's own validation; a stand-in command
        # keeps "command is required" from burying it.
        out.setdefault("command", ["dockerd"])
        return out
    out.setdefault("command", params.argv())
    health = {
        "kind": "http",
        "socket": str(params.socket),
        "method": "GET",
        "path": "/_ping",
        "expect_status": 200,
        "expect_body": "OK",
        "interval_seconds": 2.0,
        "timeout_seconds": 2.0,
        "failure_threshold": 3,
        "start_period_seconds": 120.0,
    }
    given = out.get("health")
    if given is None:
        out["health"] = health
    elif isinstance(given, dict) and "kind" not in given:
        # Timings alone (interval_seconds: 1) tune the preset's /_ping check; a shorter
        # interval shortens the preset's timeout with it.
        interval = given.get("interval_seconds")
        if isinstance(interval, (int, float)) and "timeout_seconds" not in given:
            health["timeout_seconds"] = min(2.0, float(interval))
        out["health"] = {**health, **given}
    out.setdefault(
        "pre_start",
        {
            # dockerd refuses to start over a pid file that names a live process, and
            # waits ~30 s on a containerd pid file that names a zombie: both are cleaned
            # only when the process they name is gone.
            "pid_files": [str(params.pidfile), str(params.exec_root / "containerd/containerd.pid")],
            "sockets": [str(params.socket)],
            "process_names": ["dockerd", "containerd"],
        },
    )
    stop = dict(out.get("stop") or {})
    stop.setdefault("gate", True)
    stop.setdefault("grace_seconds", 15.0)  # dockerd stops its containers within ~10 s
    out["stop"] = stop
    return out
