"""The agent's settings, as nested pydantic models.

Every field documents its unit, default and why. Fields that cannot change while the
agent runs (a listen address, the store root) carry ``x-restart-required`` in their
JSON Schema; a reload that changes them keeps the running value and reports the field
as needing a restart.

Group names reserved for later features, so nothing else may take them: ``runner``,
``gpu`` and ``github``. ``services`` holds supervised services (:mod:`agent.config.services`).
"""

from __future__ import annotations

import ipaddress
import re
import urllib.parse
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ByteSize,
    ConfigDict,
    Field,
    model_validator,
)
from pydantic.config import JsonDict

from agent.config import services as services_specs

RESTART: JsonDict = {"x-restart-required": True}
_HOST_RE = re.compile(r"(?a:[A-Za-z0-9]([A-Za-z0-9.-]{0,252}[A-Za-z0-9])?)")


def split_address(value: str) -> tuple[str, int]:
    """Split ``host:port`` (``[v6]:port`` for IPv6) into its parts.

    Raises ``ValueError`` with the expected form when ``value`` is not such an address.
    """
    expected = "expected host:port, e.g. 127.0.0.1:9102, 0.0.0.0:9102 or [::1]:9102"
    host, sep, port_text = value.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ValueError(expected)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{host!r} is not an IPv6 address; {expected}") from None
    elif ":" in host:
        raise ValueError(f"IPv6 hosts need brackets; {expected}")
    if not host.startswith("[") and ":" not in host and not _HOST_RE.fullmatch(host):
        raise ValueError(f"host {host!r} is not an IP address or host name; {expected}")
    port = int(port_text)
    if not 0 < port < 65536:
        raise ValueError(f"port {port} is out of range 1-65535; {expected}")
    return host, port


def _check_address(value: str) -> str:
    split_address(value)
    return value


def _check_absolute(value: Path) -> Path:
    if not value.is_absolute():
        raise ValueError("expected an absolute path")
    return value


def _check_size(value: Any) -> Any:
    # ByteSize alone says "could not parse value and unit" for -5: say what is wanted.
    negative = (isinstance(value, (int, float)) and not isinstance(value, bool) and value <= 0) or (
        isinstance(value, str) and value.strip().startswith(("-", "0 "))
    )
    if negative:
        raise ValueError("expected a size above 0: bytes, or with a unit such as 64KiB or 50GiB")
    return value


def _no_bool(value: Any) -> Any:
    # pydantic's lax mode reads true as 1: a grace of "true" seconds is a mistake to show.
    if isinstance(value, bool):
        raise ValueError("expected a number, not true/false")
    return value


def _group(value: Any) -> Any:
    # Environment values are strings: "123" is a gid, not a group named "123".
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if isinstance(value, bool) or (isinstance(value, int) and value < 0):
        raise ValueError("expected a group id (0 or more) or a group name")
    return value


Address = Annotated[str, AfterValidator(_check_address)]
Seconds = Annotated[float, BeforeValidator(_no_bool)]
Group = Annotated[int | str, BeforeValidator(_group)]
Size = Annotated[ByteSize, BeforeValidator(_check_size)]
AbsolutePath = Annotated[Path, AfterValidator(_check_absolute)]


class _Group(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class ServerSettings(_Group):
    """Listeners: the read-only probe/metrics port and the API (unix socket, optional TCP)."""

    metrics_address: Address = Field(
        default="127.0.0.1:9102",
        description=(
            "host:port of the read-only probe and metrics listener (/healthz, /readyz, "
            "/metrics). Loopback by default so a host install exposes nothing; pods set "
            "0.0.0.0:9102 so the kubelet and Prometheus can reach it."
        ),
        json_schema_extra=RESTART,
    )
    socket_path: AbsolutePath = Field(
        default=Path("/run/runner-agent/api.sock"),
        description=(
            "Path of the API unix socket (mode 0660). Also read from RUNNER_AGENT_SOCKET, "
            "which the job hook uses too, so both sides agree from one variable. In a pod "
            "it lives on a volume shared with the runner container."
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
        gt=0,
        description=(
            "Largest API request body accepted, in bytes (units such as 64KiB allowed). "
            "Default 1 MiB: API bodies are small JSON documents; larger ones get 413."
        ),
    )
    shutdown_grace_seconds: Seconds = Field(
        default=20.0,
        gt=0,
        le=3600,
        description=(
            "Seconds to drain in-flight requests and stop tasks after the first SIGTERM "
            "or SIGINT. Default 20 s, below the pod's default 30 s termination grace, so "
            "the agent exits on its own before the kubelet's SIGKILL."
        ),
        json_schema_extra=RESTART,
    )
    config_poll_seconds: Seconds = Field(
        default=2.0,
        gt=0,
        le=3600,
        description=(
            "How often, in seconds, the config file is checked for changes (following "
            "symlinks, as Kubernetes ConfigMap mounts swap a symlink). Default 2 s: a "
            "stat() per poll costs nothing and ConfigMap updates take ~60 s anyway."
        ),
    )

    @model_validator(mode="after")
    def _tcp_needs_a_token(self) -> ServerSettings:
        if self.api_tcp_address and not (self.job_token_file or self.admin_token_file):
            raise ValueError(
                "api_tcp_address is set but no token file is: over TCP every request needs "
                "a bearer token, so set job_token_file and/or admin_token_file"
            )
        return self


class CacheSettings(_Group):
    """The shared tool store on a volume many runner pods share."""

    root: AbsolutePath = Field(
        default=Path("/var/lib/runner-agent/store"),
        description=(
            "Root of the shared store, laid out as the actions/setup-* tool cache "
            "(<name>/<version>/<arch>/ plus <arch>.complete). Writable by the agent alone."
        ),
        json_schema_extra=RESTART,
    )
    size_budget: Size = Field(
        default=ByteSize(50 * 1024**3),
        gt=0,
        description=(
            "Size budget for the store, in bytes (units such as 50GiB allowed). Default "
            "50 GiB: room for several toolchains and a CUDA toolkit; least recently used "
            "entries beyond it are evicted."
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
        gt=0,
        le=3600,
        description=(
            "With the lease backend: how long a lease lives without a heartbeat before a "
            "waiter may take it over, in seconds. Default 30 s; holders heartbeat every "
            "third of it."
        ),
    )
    janitor_interval_seconds: Seconds = Field(
        default=600.0,
        gt=0,
        le=86400,
        description=(
            "How often the agent's janitor collects garbage (staging folders of dead "
            "installs, stale partial downloads, lapsed in-use leases) and evicts least "
            "recently used entries down to size_budget, in seconds. Default 600 s (10 min). "
            "One janitor at a time runs across all agents sharing the volume; the others "
            "skip that round."
        ),
    )


class CatalogSettings(_Group):
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


class LoggingSettings(_Group):
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


class ProfileFeature(_Group):
    """A feature request written as a mapping (full version ranges allowed)."""

    id: str = Field(description="The feature id, e.g. python.")
    version: str | None = Field(
        default=None, description="A spec such as 3.12 or >=3.10,<3.13; quote it in YAML."
    )
    options: dict[str, str | bool | int] = Field(
        default_factory=dict, description="Option values, e.g. {pip: true}."
    )


class Profile(_Group):
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


class FeaturesSettings(_Group):
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


def _check_proxy(value: str | None) -> str | None:
    if value is None or value == "":
        return value
    parsed = urllib.parse.urlsplit(value)
    if (
        parsed.scheme not in ("http", "https")
        or not parsed.hostname
        or parsed.path not in ("", "/")
    ):
        raise ValueError(
            f"{value!r} is not a proxy URL: expected http://host:port or https://host:port "
            "(user:password@ allowed), or '' for no proxy"
        )
    try:
        parsed.port  # noqa: B018 - raises on a port that is not a number in range
    except ValueError as exc:
        raise ValueError(f"{value!r} has a bad port: {exc}") from None
    return value


ProxyURL = Annotated[str | None, AfterValidator(_check_proxy)]


def _check_index(value: str | None) -> str | None:
    if value is None:
        return value
    parsed = urllib.parse.urlsplit(value)
    if parsed.scheme not in ("http", "https") or not parsed.hostname or " " in value:
        raise ValueError(f"{value!r} is not an index URL: expected http(s)://host/path")
    return value


IndexURL = Annotated[str | None, AfterValidator(_check_index)]


class InstallerSettings(_Group):
    """How the agent downloads and installs into the store."""

    mirrors: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "URL prefix rewrites, first match wins, e.g. {'https://nodejs.org/dist/': "
            "'https://artifactory.example.com/nodejs-dist/'}: point any feature (a prefix "
            "specific to its upstream) or everything at an internal mirror. Default none."
        ),
    )
    lock_timeout_seconds: Seconds = Field(
        default=900.0,
        gt=0,
        description=(
            "How long an install waits for another agent installing the same entry, in "
            "seconds. Default 15 min: a CUDA toolkit takes minutes on a slow link."
        ),
    )
    download_attempts: int = Field(
        default=4,
        ge=1,
        le=20,
        description="Tries per download on transient errors (resets, 5xx, stalls). Default 4.",
    )
    stall_timeout_seconds: Seconds = Field(
        default=30.0,
        gt=0,
        description=(
            "Seconds without a byte before a download counts as stalled and is retried. "
            "Default 30 s."
        ),
    )
    http_proxy: ProxyURL = Field(
        default=None,
        description=(
            "Proxy for http:// downloads, by the agent and by the pip and npm it runs. "
            "Default: the http_proxy environment variable; '' means none."
        ),
    )
    https_proxy: ProxyURL = Field(
        default=None,
        description=(
            "Proxy for https:// downloads (archives, pip, npm). Default: the https_proxy "
            "environment variable; '' means none."
        ),
    )
    no_proxy: str | None = Field(
        default=None,
        description=(
            "Comma-separated hosts and domains reached directly, as in no_proxy "
            "(e.g. 'localhost,.internal'). Default: the no_proxy environment variable."
        ),
    )
    pip_index_url: IndexURL = Field(
        default=None,
        description=(
            "The package index pip installs from (PIP_INDEX_URL), e.g. an internal "
            "mirror's /simple URL. Default: pip's own configuration."
        ),
    )
    npm_registry: IndexURL = Field(
        default=None,
        description=(
            "The registry npm installs from (npm_config_registry). Default: npm's own "
            "configuration."
        ),
    )
    connect_timeout_seconds: Seconds = Field(
        default=10.0,
        gt=0,
        description="Seconds to open a download's connection (TLS included). Default 10 s.",
    )
    ca_bundle: AbsolutePath | None = Field(
        default=None,
        description=(
            "A PEM file of extra CA certificates (a TLS-inspecting proxy's root), added to "
            "the system's trust for archives, pip and npm, never replacing it. Default none."
        ),
    )
    parallelism: int = Field(
        default=2,
        ge=1,
        le=16,
        description=(
            "Features installed at once when they do not depend on each other. Default 2: "
            "installs are network- and disk-bound, and the runner shares the node."
        ),
    )
    step_timeout_seconds: Seconds = Field(
        default=900.0,
        gt=0,
        description=(
            "Seconds one install command (pip, npm, a script, a package manager) may run "
            "before its process group is killed. Default 15 min."
        ),
    )
    script_isolation: Literal["sandbox", "none"] = Field(
        default="sandbox",
        description=(
            "How feature scripts run. sandbox (default): as script_user in a private mount "
            "namespace, able to write only into their PREFIX; needs the agent to run as "
            "root. none: as the agent's own user, unconfined."
        ),
    )
    script_user: str = Field(
        default="nobody",
        min_length=1,
        description="The unprivileged user sandboxed scripts run as. Default nobody.",
    )
    script_remote_user: str = Field(
        default="runner",
        min_length=1,
        description=(
            "The job's user, given to scripts as _REMOTE_USER and _CONTAINER_USER (the Dev "
            "Container Features contract); its home is /home/<user>. Default runner."
        ),
    )
    system_packages: Literal["runner", "host"] = Field(
        default="runner",
        description=(
            "Who installs OS packages (the system method). runner (default, the sidecar): "
            "the agent hands the plan's steps back for the runner's hook to run in the job's "
            "container. host: the agent runs on the job's machine and installs them itself."
        ),
    )
    package_cache: AbsolutePath | None = Field(
        default=None,
        description=(
            "Where OS package managers keep downloaded packages (apt's archives, dnf's "
            "cache, apk's cache), shared by every host on the volume so no package is "
            "fetched twice. Default <cache.root>/.runner-agent/packages."
        ),
    )
    index_refresh_seconds: Seconds = Field(
        default=3600.0,
        ge=0,
        description=(
            "Run the package index refresh (apt-get update) at most this often per host. "
            "A new repository from a feature always refreshes. Default 1 h; 0 = always."
        ),
    )
    package_lock_timeout_seconds: int = Field(
        default=300,
        ge=0,
        le=86400,
        description=(
            "Seconds to wait for another package manager run on the host to release its "
            "lock (printed while waiting) before the install fails. Default 5 min."
        ),
    )


class Settings(_Group):
    """Everything the agent itself is configured with."""

    server: ServerSettings = Field(default_factory=ServerSettings)
    cache: CacheSettings = Field(default_factory=CacheSettings)
    catalog: CatalogSettings = Field(default_factory=CatalogSettings)
    features: FeaturesSettings = Field(default_factory=FeaturesSettings)
    installer: InstallerSettings = Field(default_factory=InstallerSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
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
