"""The ``installer`` settings group: downloads, proxies and trust, indexes, parallelism,
timeouts, the script sandbox and OS packages."""

from __future__ import annotations

import urllib.parse
from typing import Annotated, Literal

from pydantic import AfterValidator, ByteSize, Field, StringConstraints

from agent.config.fields import AbsolutePath, Seconds, Section, Size, hide_password
from agent.kits import urls

MAX_PARALLELISM = 16
"""The most installs ``installer.parallelism`` may allow at once."""


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
            f"{hide_password(value)!r} is not a proxy URL: expected http://host:port or "
            "https://host:port (user:password@ allowed), or '' for no proxy"
        )
    try:
        parsed.port  # noqa: B018 - raises on a port that is not a number in range
    except ValueError as exc:
        raise ValueError(f"{hide_password(value)!r} has a bad port: {exc}") from None
    return value


ProxyURL = Annotated[str | None, AfterValidator(_check_proxy)]


def _check_index(value: str | None) -> str | None:
    if value is None:
        return value
    parsed = urllib.parse.urlsplit(value)
    if parsed.scheme not in ("http", "https") or not parsed.hostname or " " in value:
        raise ValueError(
            f"{hide_password(value)!r} is not an index URL: expected http(s)://host/path"
        )
    if problem := urls.authority_problem(value):
        raise ValueError(f"{hide_password(value)!r}: {problem}")
    return value


def _check_mirror(value: str) -> str:
    parsed = urllib.parse.urlsplit(value)
    if parsed.scheme not in ("http", "https") or " " in value:
        raise ValueError(
            f"{hide_password(value)!r} is not a mirror URL: expected http(s)://host/path "
            "(user:password@ allowed)"
        )
    if problem := urls.authority_problem(value):
        raise ValueError(f"{hide_password(value)!r}: {problem}")
    if not parsed.hostname:
        raise ValueError(f"{hide_password(value)!r} is not a mirror URL: it names no host")
    return value


MirrorURL = Annotated[str, AfterValidator(_check_mirror)]


def _check_prefix(value: str) -> str:
    _check_mirror(value)
    if not value.endswith("/"):
        # "https://mirror.corp" would also match "https://mirror.corp.evil.example/".
        raise ValueError(f"{hide_password(value)!r} must end in '/': it is a URL prefix")
    return value


URLPrefix = Annotated[str, AfterValidator(_check_prefix)]


def _check_named_index(value: str) -> str:
    _check_index(value)
    if "?" in value or "#" in value:
        # A feature's path is appended to a named index's URL: after a query it would
        # land in the query, not the path (after a bare "?" too, which urlsplit calls no
        # query). pip_index_url and npm_registry are used as given, so a query there (a
        # mirror's access key, a repository selector) is fine.
        raise ValueError(
            f"{hide_password(value)!r} has a query or fragment; a named index's URL is "
            "http(s)://host/path (the feature appends its path)"
        )
    return value


IndexURL = Annotated[str | None, AfterValidator(_check_index)]
NamedIndexURL = Annotated[str, AfterValidator(_check_named_index)]
IndexName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9-]{0,31}$")]


def _check_uid_range(value: str) -> str:
    first, sep, last = value.partition("-")
    if not (sep and first.isdigit() and last.isdigit()):
        raise ValueError(f"{value!r} is not a uid range such as 2000000000-2000065535")
    if not 1000 <= int(first) <= int(last) <= 2**32 - 2:
        raise ValueError(f"{value!r}: give first-last, lowest first, between 1000 and 4294967294")
    return value


UidRange = Annotated[str, AfterValidator(_check_uid_range)]


class InstallerSettings(Section):
    """How the agent downloads and installs into the store."""

    mirrors: dict[str, MirrorURL] = Field(
        default_factory=dict,
        description=(
            "URL prefix rewrites, first match wins, e.g. {'https://nodejs.org/dist/': "
            "'https://artifactory.example.com/nodejs-dist/'}: point any feature (a prefix "
            "specific to its upstream) or everything at an internal mirror. Default none."
        ),
    )
    lock_timeout_seconds: Seconds = Field(
        default=900.0,
        ge=1,
        le=86400,
        description=(
            "How long an install waits for another agent installing the same entry, in "
            "seconds. Default 15 min: a CUDA toolkit takes minutes on a slow link. "
            "Range 1 s-1 day: no install takes a day; a longer wait only hides a stuck holder."
        ),
    )
    download_attempts: int = Field(
        default=4,
        ge=1,
        le=20,
        description=(
            "Tries per download on transient errors (resets, 5xx, stalls). Default 4. "
            "Range 1-20: more only multiplies the wait on a dead upstream."
        ),
    )
    stall_timeout_seconds: Seconds = Field(
        default=30.0,
        ge=1,
        le=3600,
        description=(
            "Seconds without a byte before a download counts as stalled and is retried. "
            "Default 30 s. "
            "Range 1-3600 s: shorter aborts healthy slow links; longer hides a dead one."
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
    pip_indexes: dict[IndexName, NamedIndexURL] = Field(
        default_factory=dict,
        max_length=32,
        description=(
            "Named package indexes that features' pip methods ask for by name (index.name), "
            "e.g. pytorch: the base URL of PyTorch's wheel index (as on pytorch.org's Get "
            "Started page) or of a mirror of it; the feature appends its path (a build "
            "variant such as cu128). Default none: such a feature fails with the name to "
            "set. Range: at most 32 names."
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
        ge=0.5,
        le=600,
        description=(
            "Seconds to open a download's connection (TLS included). Default 10 s. "
            "Range 0.5-600 s: a TLS handshake needs some room; ten minutes is an outage."
        ),
    )
    mirror_headers: dict[URLPrefix, AbsolutePath] = Field(
        default_factory=dict,
        max_length=32,
        description=(
            "URL prefix -> a file holding one header line, 'Name: value' (e.g. "
            "'Authorization: Bearer <token>', 'X-JFrog-Art-Api: <key>'), sent with every "
            "archive, checksum and manifest download whose URL (after the mirror rewrite) "
            "starts with the prefix, the longest prefix winning, unless the URL carries "
            "user:password@. Read at each download, so a mounted Kubernetes secret rotates; "
            "never logged or shown. Default none. pip and npm take their own credentials."
        ),
    )
    version_index_ttl_seconds: Seconds = Field(
        default=3600.0,
        ge=60,
        le=604800,
        description=(
            "How long a feature's version index (node's index.json, go's release list), "
            "fetched for a version the catalog does not list, is kept on the store before "
            "it is fetched again, in seconds. Default 1 h. Range 1 min-7 days: shorter "
            "only adds fetches; longer hides new releases for as long."
        ),
    )
    netrc: AbsolutePath | None = Field(
        default=None,
        description=(
            "A netrc file ('machine <host> login <user> password <secret>' entries) whose "
            "credentials the agent's downloads send as Basic auth to each host it names (its "
            "'default' entry to any other host), where neither the URL nor mirror_headers "
            "gives any. Read at each download; never logged or shown. Default none."
        ),
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
        le=MAX_PARALLELISM,
        description=(
            "Features installed at once when they do not depend on each other. Default 2: "
            "installs are network- and disk-bound, and the runner shares the node. "
            "Range 1-16: each install runs in a worker process, and more than 16 at once "
            "only thrash the disk and the link."
        ),
    )
    step_timeout_seconds: Seconds = Field(
        default=900.0,
        ge=1,
        le=86400,
        description=(
            "Seconds one install command (pip, npm, a script, a package manager) may run "
            "before its process group is killed. Default 15 min. "
            "Range 1 s-1 day: an install step that runs a day is hung."
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
    script_user: str | None = Field(
        default=None,
        min_length=1,
        description=(
            "A fixed unprivileged user every sandboxed script runs as (e.g. nobody). Default "
            "none: each sandbox gets a uid of its own from script_uid_range, so parallel "
            "sandboxes cannot touch each other's files and script_max_processes counts one "
            "sandbox only (with a fixed user it counts every process of that user)."
        ),
    )
    script_uid_range: UidRange = Field(
        default="2000000000-2000065535",
        description=(
            "The uids sandboxes take one each, as first-last; none may belong to an account "
            "or another service. Default 2000000000-2000065535, in the block systemd leaves "
            "unused. Agents on one host that share neither the store volume nor /run must "
            "be given disjoint ranges."
        ),
    )
    script_max_processes: int = Field(
        default=1024,
        ge=8,
        le=1_000_000,
        description=(
            "The most processes and threads one sandbox (a script, npm's install and its "
            "lifecycle scripts, a check) may have at once (RLIMIT_NPROC of its uid). "
            "Default 1024. Range 8-1000000: a build needs a shell, its tools and their "
            "threads; the ceiling is the kernel's own order of magnitude."
        ),
    )
    script_network: Literal["host", "none"] = Field(
        default="host",
        description=(
            "The network of feature scripts and checks. host (default): whatever the agent "
            "can reach, the cloud's metadata endpoint included. none: a network namespace "
            "with only loopback. npm's install keeps host (it needs its registry); a "
            "manifest that declares network: none always gets none."
        ),
    )
    max_entry_bytes: Size = Field(
        default=ByteSize(32 * 1024**3),
        ge=1024**2,
        le=1024**5,
        description=(
            "The most one install step (pip, npm, a script) may put in its staging folder, "
            "in bytes (units such as 32GiB allowed); past it the step is killed. A manifest "
            "may give its own max_entry_bytes. Default 32 GiB: a CUDA toolkit or PyTorch "
            "takes several. Range 1 MiB-1 PiB."
        ),
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
        le=7 * 86400,
        description=(
            "Run the package index refresh (apt-get update) at most this often per host. "
            "A new repository from a feature always refreshes. Default 1 h; 0 = always. "
            "Range 0 s-7 days: indexes older than a week miss security updates."
        ),
    )
    package_lock_timeout_seconds: int = Field(
        default=300,
        ge=0,
        le=86400,
        description=(
            "Seconds to wait for another package manager run on the host to release its "
            "lock (printed while waiting) before the install fails. Default 5 min. "
            "Range 0 s-1 day: 0 fails at once when another package manager run holds the lock."
        ),
    )
