"""Plans as types: the plan, its steps and their actions, the platform inside a plan,
the events of an ensure (progress and the ``result``) and the report of a system step.

Policy:
- these types describe a wire format, they do not define one: the JSON of ``POST
  /v1/plan``, the NDJSON lines of ``POST /v1/ensure`` and ``runner-agent ensure
  --format json``. The resolver builds the data, the install engine runs it, the API
  sends it as it is; renaming, adding or dropping a key is a change of that API, not of
  these types (``tests/catalog/test_plan_wire.py`` pins every key set);
- TypedDicts, not classes: a plan stays the plain data it always was (pickled to the
  install workers, dumped to JSON unchanged), and typing it costs nothing at run time
  (a warm ensure takes ~0.05 ms and must stay so);
- keys a value may lack live in a ``total=False`` subclass, never ``NotRequired``, and
  the aliases spell ``typing.Union``: like the rest of :mod:`agent.platform` this module
  is standard library only and stays importable on Python 3.8 (the job hook);
- a value that is genuinely open (a team document, a JSON body of someone else's) is a
  :data:`JsonObject`, never ``Any``.
"""

from __future__ import annotations

# Dict and Union, not dict[...] and X | Y, where the alias is evaluated at import: Python 3.8.
from typing import Dict, Literal, TypedDict, Union  # noqa: UP035

from agent.platform import model

JsonObject = Dict[str, object]  # noqa: UP006
"""A JSON object nobody here promises anything about (a team document, an error body)."""

Method = Literal["system", "archive", "pip", "npm", "script"]
ToolMethod = Literal["archive", "pip", "npm", "script"]
"""The methods that install into the store (everything but ``system``)."""

Ready = Literal["hit", "installed", "present", "left"]
"""How a step that worked ended: found in the store, installed, already on this host
(``system``), or left for the runner to run (``system`` outside host mode)."""
Settled = Literal["hit", "installed", "present", "left", "failed", "skipped"]
"""How a feature of an ensure ended: :data:`Ready`, failed, or skipped (an earlier round
failed)."""


class PlatformData(TypedDict):
    """The target platform in a plan: :meth:`agent.platform.model.Platform.to_json`."""

    arch: model.Arch
    cuda_driver: str | None
    distro: str | None
    distro_like: list[str]
    distro_version: str | None
    libc: model.Libc | None
    os: model.OS
    package_manager: model.PackageManager | None


# --- actions ------------------------------------------------------------------------------


class _DownloadRequired(TypedDict):
    action: Literal["download"]
    url: str
    file: str


class DownloadAction(_DownloadRequired, total=False):
    """Fetch ``url`` into the download cache as ``file`` (an archive step), verified
    against ``sha256`` or, when the manifest pins none, the checksum file at
    ``checksum_url``: one of the two is set, both only with ``locked`` (then both must
    agree)."""

    sha256: str
    checksum_url: str
    size: int
    """The byte count the lock recorded (with ``locked``)."""
    locked: bool
    """``sha256`` and ``size`` come from the lock file: a mismatch says so."""


class _ExtractRequired(TypedDict):
    action: Literal["extract"]
    file: str
    format: str
    """tar.gz, tar.xz, tar.zst, tar.bz2, zip, or binary (a lone executable)."""
    dest: str
    strip_components: int


class ExtractAction(_ExtractRequired, total=False):
    """Unpack the downloaded ``file`` into ``dest`` (the step's prefix)."""

    name: str
    """A lone executable's name in the prefix (else ``file``)."""
    merge: list[str]
    """Component folders whose contents are merged into the prefix (Rust's installers)."""


class _ComponentsRequired(TypedDict):
    action: Literal["components"]
    manifest_url: str
    base_url: str
    platform: str
    names: list[str]
    optional: list[str]
    dest: str
    strip_components: int


class ComponentsAction(_ComponentsRequired, total=False):
    """Fetch the JSON manifest at ``manifest_url`` (NVIDIA's redistrib form), then
    download each listed component's archive for ``platform`` from ``base_url`` plus its
    ``relative_path``, verify it against the manifest's sha256 and size, and lay it
    into ``dest`` after stripping ``strip_components``. ``names`` must all be listed;
    ``optional`` ones are taken where listed."""

    links: dict[str, str]
    """Symbolic links made once all are laid in: path -> target (relative to the link's
    folder), both inside ``dest``."""
    manifest_sha256: str
    """The manifest's sha256 as the lock file recorded it: the manifest must match."""


class _RunRequired(TypedDict):
    action: Literal["run"]
    argv: list[str]
    env: dict[str, str]


class PipIndexRef(TypedDict):
    """A pip step's named index: installer.pip_indexes[name], then ``path``."""

    name: str
    path: str


class RunAction(_RunRequired, total=False):
    """A pip, npm or script step's command: an argv list (``python3`` and ``npm`` name
    the tools) and the variables it adds to the clean environment."""

    interpreter: str
    """pip for a runtime Python: that Python's ``bin/python3`` (the ``python`` entry)."""
    max_entry_bytes: int
    """The manifest's own limit on what the step may stage (else the agent's setting)."""
    network: Literal["none"]
    """A script whose manifest declares it needs no network: it runs with loopback only."""
    index: PipIndexRef
    """pip from a named index instead of the default one."""


ToolAction = Union[DownloadAction, ExtractAction, ComponentsAction, RunAction]  # noqa: UP007
"""An action of a step that installs into the store (archive, pip, npm, script)."""


class _SystemActionRequired(TypedDict):
    action: Literal["download", "write_file", "run"]


class SystemAction(_SystemActionRequired, total=False):
    """An action of a ``system`` step; ``action`` says which keys it has:

    - ``download``: ``url``, ``dest``: an extra repository's signing key, under
      ``/etc/apt/keyrings``;
    - ``write_file``: ``path``, ``content``: a deb822 sources file or a .repo file;
    - ``run``: ``argv``, ``env``, ``purpose`` (``refresh`` the index, or ``install``),
      ``manager``, and for ``install`` the ``packages``.

    One type for the three rather than a union: the host executor reads them by the
    ``action`` it was given, and these are the steps a sidecar hands to the runner
    (``steps_left``) as they are.
    """

    url: str
    dest: str
    path: str
    content: str
    argv: list[str]
    env: dict[str, str]
    purpose: Literal["refresh", "install"]
    manager: model.PackageManager
    packages: list[str]


# --- steps and the plan -------------------------------------------------------------------


class StepEnv(TypedDict):
    """What a ready entry exports: absolute PATH entries under the prefix, variables."""

    path: list[str]
    vars: dict[str, str]


class Check(TypedDict):
    """A command that proves the install works, and what its output must contain."""

    argv: list[str]
    expect: str


class StepBase(TypedDict):
    """The keys every step has."""

    id: str
    name: str
    version: str
    """``system`` for a system step: the distribution's version."""
    round: int
    """Steps of one round install concurrently, after every earlier round."""
    toolcache_name: str | None
    requested_by: list[str]
    options: dict[str, str]
    """The feature's options as environment variables (``FLAVOUR``: ``big``)."""
    env: StepEnv
    check: Check | None


class _ToolStepRequired(StepBase):
    method: ToolMethod
    prefix: str
    """The entry's folder in the store (the tool cache's ``<name>/<version>/<arch>``)."""
    actions: list[ToolAction]


class ToolStep(_ToolStepRequired, total=False):
    """A step that installs an entry into the store."""

    platform: PlatformData
    """Set by the coordinator on the step it hands to an install (the receipt keeps it);
    never in a plan."""


class SystemStep(StepBase):
    """A step that installs OS packages: on this host (host mode) or by the runner."""

    method: Literal["system"]
    prefix: None
    actions: list[SystemAction]


Step = Union[ToolStep, SystemStep]  # noqa: UP007
"""One feature of a plan (``method`` tells which)."""


class Plan(TypedDict):
    """An install plan: :meth:`agent.catalog.resolver.Plan.to_data`."""

    platform: PlatformData
    features: list[Step]
    """In install order: by round, then by id."""
    warnings: list[str]


# --- the events of an ensure --------------------------------------------------------------


class PlanEntry(TypedDict):
    """One feature of the ``plan`` event."""

    id: str
    version: str
    method: Method
    round: int


class PlanEvent(TypedDict):
    """The first event of an ensure: what it is going to do."""

    event: Literal["plan"]
    features: list[PlanEntry]


class FeatureEvent(TypedDict):
    """``queued``: the feature's round started; ``skipped``: an earlier round failed."""

    event: Literal["queued", "skipped"]
    feature: str


class DoneEvent(TypedDict):
    """A feature is ready."""

    event: Literal["done"]
    feature: str
    result: Ready
    seconds: float


class FailedEvent(TypedDict):
    """A feature failed; ``step`` names the install step where it did, when known."""

    event: Literal["failed"]
    feature: str
    step: str | None
    error: str


class _ProgressRequired(TypedDict):
    event: Literal["waiting-for-lock", "downloading", "extracting", "running", "checking", "output"]
    feature: str


class ProgressEvent(_ProgressRequired, total=False):
    """What an install reports on its way (:mod:`agent.kits.progress`), tagged with its
    feature: ``waiting-for-lock`` [holder, waited], ``downloading`` [url, bytes, total],
    ``running`` [method], ``output`` [line] (a system step's), ``extracting``,
    ``checking``."""

    holder: str
    waited: float
    url: str
    bytes: int
    total: int | None
    method: str
    line: str


class _FeatureResultRequired(TypedDict):
    id: str
    version: str
    method: Method
    result: Settled


class FeatureResult(_FeatureResultRequired, total=False):
    """One feature of the ``result`` event.

    - ``error``: it failed; ``seconds``: it did not (nor was skipped);
    - ``entry``, ``path``, ``env``: its entry in the store, and what that exports here;
    - ``steps_left``: a system step for the runner to run (result ``left``);
    - ``manager``, ``already_present``, ``refreshed``, ``check``: a system step that ran
      on this host (:class:`SystemReport`).
    """

    error: str
    seconds: float
    entry: str
    path: list[str]
    env: dict[str, str]
    steps_left: list[SystemAction]
    manager: str
    already_present: bool
    refreshed: bool
    check: str


class _ResultRequired(TypedDict):
    event: Literal["result"]
    ok: bool
    """Every feature is ready (:data:`Ready`)."""
    features: list[FeatureResult]
    path: list[str]
    env: dict[str, str]


class ResultEvent(_ResultRequired, total=False):
    """The last event of an ensure: per feature its outcome, then the merged PATH entries
    and variables to export."""

    seconds: float
    """``POST /v1/ensure``: the server's time for the whole request."""


Event = Union[PlanEvent, FeatureEvent, DoneEvent, FailedEvent, ProgressEvent, ResultEvent]  # noqa: UP007
"""One line of an ensure's stream (``event`` tells which)."""


class SystemReport(TypedDict):
    """What a ``system`` step run on this host did (:mod:`agent.install.host.wiring`)."""

    id: str
    version: str
    manager: str
    already_present: bool
    refreshed: bool
    seconds: float
    check: str
