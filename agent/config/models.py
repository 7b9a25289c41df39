"""The agent's settings, as nested pydantic models.

Every field documents its unit, default and why. Fields that cannot change while the
agent runs (a listen address, the store root) carry ``x-restart-required`` in their
JSON Schema; a reload that changes them keeps the running value and reports the field
as needing a restart.

``runner`` is :mod:`agent.config.runner`, ``upstream`` :mod:`agent.config.upstream`,
``github`` :mod:`agent.config.github`, ``gpu`` :mod:`agent.config.gpu`, ``kubernetes``
:mod:`agent.config.kubernetes`; ``services`` holds supervised services
(:mod:`agent.config.services`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ByteSize,
    Field,
    model_validator,
)

from agent.config import fields
from agent.config import services as services_specs
from agent.config.fields import (
    RESTART,
    AbsolutePath,
    Address,
    Group,
    Seconds,
    Section,
    Size,
    SocketPath,
    split_address,
)
from agent.config.github import GitHubSettings
from agent.config.gpu import GpuSettings
from agent.config.installer import InstallerSettings
from agent.config.kubernetes import KubernetesSettings
from agent.config.runner import RunnerSettings
from agent.config.upstream import UpstreamSettings

__all__ = [
    "GitHubSettings",
    "InstallerSettings",
    "KubernetesSettings",
    "RunnerSettings",
    "UpstreamSettings",
    "split_address",
]


class ServerSettings(Section):
    """Listeners: the read-only probe/metrics port and the API (unix socket, optional TCP)."""

    role: Literal["full", "services"] = Field(
        default="full",
        description=(
            "`full`: the whole agent (features, the store, jobs, services). `services`: "
            "the supervisor alone, for the Docker engine container: no catalog, no store, "
            "no installs and no jobs, and an API of service status and the stop gate only, "
            "so the container job code can reach through Docker holds nothing more (see "
            "upstream.socket_path for its stop gate). Default full."
        ),
        json_schema_extra=RESTART,
    )

    metrics_address: Address = Field(
        default="127.0.0.1:9102",
        description=(
            "host:port of the read-only probe and metrics listener (/healthz, /readyz, "
            "/metrics). Loopback by default so a host install exposes nothing; pods set "
            "0.0.0.0:9102 so the kubelet and Prometheus can reach it."
        ),
        json_schema_extra=RESTART,
    )
    socket_path: SocketPath = Field(
        default=Path("/run/runner-agent/api.sock"),
        description=(
            "Path of the API unix socket (mode 0660). Also read from RUNNER_AGENT_SOCKET, "
            "which the job hook uses too, so both sides agree from one variable. In a pod "
            "it lives on a volume shared with the runner container. Without root the "
            "default is per-user: $XDG_RUNTIME_DIR/runner-agent/api.sock, else "
            "~/.local/state/runner-agent/api.sock (folder mode 0700)."
        ),
        json_schema_extra=RESTART,
    )
    socket_group: Group | None = Field(
        default=None,
        description=(
            "Group (gid or name) to own the API socket, so the runner container's user "
            "can connect through mode 0660. Default: the agent's own group. In ARC pods "
            "set it to the runner's gid."
        ),
        json_schema_extra=RESTART,
    )
    api_tcp_address: Address | None = Field(
        default=None,
        description=(
            "Optional host:port for the API over TCP. Off by default: the unix socket is "
            "the safer channel. Over TCP every request needs a bearer token, so at least "
            "one token file must be set."
        ),
        json_schema_extra=RESTART,
    )
    webhook_address: Address | None = Field(
        default=None,
        description=(
            "Optional host:port of a listener for GitHub webhooks alone "
            "(POST /v1/webhooks/github, signed with github.webhook_secret_file): queued "
            "workflow_job deliveries pre-warm the store. Off by default."
        ),
        json_schema_extra=RESTART,
    )
    job_token_file: AbsolutePath | None = Field(
        default=None,
        description=(
            "File holding the bearer token for the `job` scope (what a job's hook may "
            "call). Unset: job endpoints are open on the unix socket only (its file mode "
            "is the access control) and closed over TCP. Re-read on reload."
        ),
    )
    admin_token_file: AbsolutePath | None = Field(
        default=None,
        description=(
            "File holding the bearer token for the `admin` scope (reload, restart or stop "
            "a service, evict). Never mount it into the runner container, so job code "
            "cannot restart dockerd or wipe the cache. Unset: admin endpoints are open on "
            "the unix socket only. Re-read on reload."
        ),
    )
    max_request_bytes: Size = Field(
        default=ByteSize(1024 * 1024),
        ge=256,
        le=64 * 1024 * 1024,
        description=(
            "Largest API request body accepted, in bytes (units such as 64KiB allowed). "
            "Default 1 MiB: API bodies are small JSON documents; larger ones get 413. "
            "Range 256 B-64 MiB: a body is read into memory before it is parsed."
        ),
    )
    shutdown_grace_seconds: Seconds = Field(
        default=20.0,
        ge=1,
        le=3600,
        description=(
            "Seconds to drain in-flight requests and stop tasks after the first SIGTERM "
            "or SIGINT. Default 20 s, below the pod's default 30 s termination grace, so "
            "the agent exits on its own before the kubelet's SIGKILL. "
            "Range 1-3600 s: under 1 s nothing drains; an hour outlasts any pod's grace."
        ),
        json_schema_extra=RESTART,
    )
    config_poll_seconds: Seconds = Field(
        default=2.0,
        ge=0.1,
        le=3600,
        description=(
            "How often, in seconds, the config file is checked for changes (following "
            "symlinks, as Kubernetes ConfigMap mounts swap a symlink). Default 2 s: a "
            "stat() per poll costs nothing and ConfigMap updates take ~60 s anyway. "
            "Range 0.1-3600 s: a shorter poll spins a core for nothing."
        ),
    )
    idle_timeout_seconds: Seconds = Field(
        default=60.0,
        ge=1,
        le=3600,
        description=(
            "Seconds a connection may stay open with no request, on every listener (also "
            "from connect to the first byte). Default 60 s: Prometheus and the hook "
            "reconnect at no cost. Range 1-3600 s: shorter cuts healthy keep-alive "
            "clients, longer lets idle sockets pile up."
        ),
        json_schema_extra=RESTART,
    )
    header_timeout_seconds: Seconds = Field(
        default=10.0,
        ge=0.5,
        le=300,
        description=(
            "Seconds from a request's first byte to the end of its headers before the "
            "connection is closed, so a client that trickles headers (slowloris) holds "
            "nothing for long. Default 10 s. Range 0.5-300 s."
        ),
        json_schema_extra=RESTART,
    )
    body_timeout_seconds: Seconds = Field(
        default=30.0,
        ge=1,
        le=3600,
        description=(
            "Seconds to receive a whole API request body; slower gets 408. Default 30 s "
            "for bodies of at most server.max_request_bytes. Range 1-3600 s."
        ),
    )
    max_connections: int = Field(
        default=1024,
        ge=16,
        le=1_000_000,
        description=(
            "Connections each listener (probe, API socket, API TCP) holds at most. Past it "
            "a new connection is still accepted and the one idle longest is closed, so a "
            "flood of idle sockets never blocks /healthz. Lowered at startup if the "
            "open-files limit cannot hold every listener's cap plus server.fd_reserve. "
            "Range 16-1000000."
        ),
        json_schema_extra=RESTART,
    )
    fd_reserve: int = Field(
        default=256,
        ge=64,
        le=65536,
        description=(
            "File descriptors kept out of the listeners' reach for the agent's own work "
            "(the store, install workers, services, the janitor). Default 256. Range "
            "64-65536."
        ),
        json_schema_extra=RESTART,
    )

    @model_validator(mode="after")
    def _tcp_needs_a_token(self) -> ServerSettings:
        if self.api_tcp_address and not (self.job_token_file or self.admin_token_file):
            raise ValueError(
                "api_tcp_address is set but no token file is: over TCP every request needs "
                "a bearer token, so set job_token_file and/or admin_token_file"
            )
        return self


class CacheSettings(Section):
    """The shared tool store on a volume many runner pods share."""

    root: AbsolutePath = Field(
        default=Path("/var/lib/runner-agent/store"),
        description=(
            "Root of the shared store, laid out as the actions/setup-* tool cache "
            "(<name>/<version>/<arch>/ plus <arch>.complete). Writable by the agent alone. "
            "Without root the default is per-user: $XDG_DATA_HOME/runner-agent/store, else "
            "~/.local/share/runner-agent/store."
        ),
        json_schema_extra=RESTART,
    )
    size_budget: Size = Field(
        default=ByteSize(50 * 1024**3),
        ge=1,
        le=1024**5,
        description=(
            "Size budget for the store, in bytes (units such as 50GiB allowed). Default "
            "50 GiB: room for several toolchains and a CUDA toolkit; least recently used "
            "entries beyond it are evicted. "
            "Range 1 B-1 PiB: 1 B evicts every entry not in use."
        ),
    )
    min_free_bytes: Size = Field(
        default=ByteSize(1024**3),
        ge=1,
        le=1024**4,
        description=(
            "Free space the store's volume must keep for the agent to be ready (the "
            "`store` condition of /readyz): an install that fills the volume fails every "
            "job that needs it. Default 1 GiB. Range 1 B-1 TiB."
        ),
    )
    lock_backend: Literal["posix", "lease"] = Field(
        default="posix",
        description=(
            "How installs into the shared store exclude each other. `posix`: fcntl record "
            "locks (OFD locks where the kernel has them), which work on local disks and on "
            "NFSv3/v4 with lockd. `lease`: lease files with heartbeats, for volumes without "
            "cross-client locks (object-store FUSE mounts); a dead holder delays others by "
            "up to lease_seconds. Every agent sharing a volume must use the same one."
        ),
        json_schema_extra=RESTART,
    )
    lease_seconds: Seconds = Field(
        default=30.0,
        ge=3,
        le=3600,
        description=(
            "With the lease backend: how long a lease lives without a heartbeat before a "
            "waiter may take it over, in seconds. Default 30 s; holders heartbeat every "
            "third of it. "
            "Range 3-3600 s: a lease needs room for three heartbeats; longer delays "
            "waiters after a crash."
        ),
    )
    janitor_interval_seconds: Seconds = Field(
        default=600.0,
        ge=1,
        le=86400,
        description=(
            "How often the agent's janitor collects garbage (staging folders of dead "
            "installs, stale partial downloads, lapsed in-use leases) and evicts least "
            "recently used entries down to size_budget, in seconds. Default 600 s (10 min). "
            "One janitor at a time runs across all agents sharing the volume; the others "
            "skip that round. "
            "Range 1 s-1 day: a pass walks the whole store and reads its receipts, so "
            "intervals under a minute suit only tests."
        ),
    )


class CatalogSettings(Section):
    """Where feature manifests come from."""

    bundled: bool = Field(
        default=True,
        description=(
            "Load the catalog shipped with the agent first. Default true; turn off only to "
            "run a fully custom catalog."
        ),
    )
    paths: tuple[AbsolutePath, ...] = Field(
        default=(),
        description=(
            "Extra folders of feature manifests (<folder>/<id>/feature.yaml), loaded after "
            "the bundled catalog in this order; a later folder overrides an earlier one by "
            "feature id. Default none."
        ),
    )


class LoggingSettings(Section):
    """Log format and level; both change live on reload."""

    format: Literal["json", "text"] = Field(
        default="json",
        description=(
            "`json`: one object per line for log collectors (the default, as the agent "
            "runs in pods); `text`: for humans at a terminal."
        ),
    )
    level: Literal["debug", "info", "warning", "error"] = Field(
        default="info",
        description="Lowest level logged. Default info: lifecycle events, not per-request.",
    )


class ProfileFeature(Section):
    """A feature request written as a mapping (full version ranges allowed)."""

    id: str = Field(description="The feature id, e.g. python.")
    version: str | None = Field(
        default=None, description="A spec such as 3.12 or >=3.10,<3.13; quote it in YAML."
    )
    options: dict[str, str | bool | int] = Field(
        default_factory=dict, description="Option values, e.g. {pip: true}."
    )


class Profile(Section):
    """A named set of features that team configurations can extend."""

    extends: tuple[str, ...] = Field(
        default=(), description="Other profiles this one starts from, applied first."
    )
    features: tuple[str | ProfileFeature, ...] = Field(
        default=(),
        description=(
            "Feature requests: the label grammar without the feature: prefix (node@20), or "
            "{id, version, options} mappings, where full version ranges are allowed."
        ),
    )


class FeaturesSettings(Section):
    """Which features this agent offers by default and how teams build on them."""

    profiles: dict[str, Profile] = Field(
        default_factory=dict,
        description=(
            "Named feature sets that a repository's .github/runner-config.yml can extend. "
            "Default none."
        ),
    )
    environment: str | None = Field(
        default=None,
        description=(
            "Which environments.<name> block of team configurations applies on this "
            "runner (e.g. staging). Default none: the blocks are ignored."
        ),
    )
    preinstall: list[str] = Field(
        default_factory=list,
        max_length=64,
        description=(
            "Requests installed at startup, before /readyz turns true (its preinstall "
            "condition), e.g. ['node@20', 'python@3.12']. Default none."
        ),
    )


class Settings(Section):
    """Everything the agent itself is configured with."""

    server: ServerSettings = Field(default_factory=ServerSettings)
    cache: CacheSettings = Field(default_factory=CacheSettings)
    catalog: CatalogSettings = Field(default_factory=CatalogSettings)
    features: FeaturesSettings = Field(default_factory=FeaturesSettings)
    installer: InstallerSettings = Field(default_factory=InstallerSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    runner: RunnerSettings = Field(default_factory=RunnerSettings)
    upstream: UpstreamSettings = Field(default_factory=UpstreamSettings)
    github: GitHubSettings = Field(default_factory=GitHubSettings)
    gpu: GpuSettings = Field(default_factory=GpuSettings)
    kubernetes: KubernetesSettings = Field(default_factory=KubernetesSettings)
    services: Annotated[
        dict[services_specs.ServiceName, services_specs.ServiceSpec],
        AfterValidator(_check_services),
    ] = Field(
        default_factory=dict,
        description=(
            "Supervised services by name, e.g. {dockerd: {preset: dockerd}}: started in "
            "depends_on order, health-checked, restarted with backoff, stopped in reverse "
            "order at shutdown. A changed spec restarts that service on reload. Default none."
        ),
    )

    def shown(self) -> dict[str, Any]:
        """The settings as JSON data for people to read (``config show``, /v1/config):
        the credentials of any URL that carries them (a proxy's, an index's: a password,
        or a token given as the user name) replaced by ``[redacted]``."""
        shown: dict[str, Any] = _hide_passwords(self.model_dump(mode="json"))
        return shown

    @model_validator(mode="after")
    def _services_role_installs_nothing(self) -> Settings:
        if self.server.role == "services" and self.features.preinstall:
            raise ValueError(
                "features.preinstall is set but server.role is services, which installs "
                "nothing: move the preinstall list to the sidecar agent (role full)"
            )
        return self


def _hide_passwords(value: Any) -> Any:
    if isinstance(value, str):
        return fields.hide_password(value)
    if isinstance(value, dict):
        # Keys too: installer.mirrors maps an upstream's URL prefix, which may carry them.
        return {_hide_passwords(k): _hide_passwords(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_hide_passwords(v) for v in value]
    return value


def _check_services(
    value: dict[str, services_specs.ServiceSpec],
) -> dict[str, services_specs.ServiceSpec]:
    services_specs.check_graph(value)
    return value


def restart_required_paths(model: type[BaseModel] = Settings, prefix: str = "") -> list[str]:
    """Dotted paths of every field marked ``x-restart-required``."""
    paths: list[str] = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        extra = field.json_schema_extra
        if isinstance(extra, dict) and extra.get("x-restart-required"):
            paths.append(path)
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            paths.extend(restart_required_paths(annotation, prefix=f"{path}."))
    return paths


def get_path(data: Any, path: str) -> Any:
    """Read a dotted ``path`` from nested models."""
    for part in path.split("."):
        data = getattr(data, part)
    return data
