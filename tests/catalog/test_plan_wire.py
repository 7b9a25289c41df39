"""The wire format, pinned: the exact keys of a plan, its platform, its steps, each kind
of action, the events of an ensure and its ``result``.

These are the JSON of ``POST /v1/plan`` and the NDJSON lines of ``POST /v1/ensure``; a
renamed, added or dropped key fails here, and so does a type of
:mod:`agent.platform.plans` that no longer names the keys the data has.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, get_args, get_type_hints

import pytest

from agent.catalog import loading, requests, resolver
from agent.config import models, paths
from agent.install import coordinator, plans, protocol
from agent.install import metrics as install_metrics
from agent.kits import progress
from agent.platform import model
from agent.platform import plans as wire
from agent.store import entries, layout, receipts
from tests.catalog import factories

LINUX = model.Platform(os="linux", arch="x64", libc="glibc", package_manager="apt")

PLAN = {"platform", "features", "warnings"}
PLATFORM = {
    "arch",
    "cuda_driver",
    "distro",
    "distro_like",
    "distro_version",
    "libc",
    "os",
    "package_manager",
}
STEP = {
    "id",
    "name",
    "version",
    "method",
    "round",
    "prefix",
    "toolcache_name",
    "requested_by",
    "options",
    "actions",
    "env",
    "check",
}
STEP_ENV = {"path", "vars"}
CHECK = {"argv", "expect"}
DOWNLOAD_CHECKSUM_FILE = {"action", "url", "file", "checksum_url"}
DOWNLOAD_PINNED = {"action", "url", "file", "sha256"}
EXTRACT = {"action", "file", "format", "dest", "strip_components"}
RUN = {"action", "argv", "env"}
RUN_ON_PYTHON = RUN | {"interpreter"}
KEY_DOWNLOAD = {"action", "url", "dest"}
WRITE_FILE = {"action", "path", "content"}
REFRESH = {"action", "argv", "env", "purpose", "manager"}
INSTALL = REFRESH | {"packages"}

QUEUED = {"event", "feature"}
DOWNLOADING = {"event", "feature", "url", "bytes", "total"}
DONE = {"event", "feature", "result", "seconds"}
FAILED = {"event", "feature", "step", "error"}
RESULT = {"event", "ok", "features", "path", "env"}
ITEM = {"id", "version", "method", "result"}
ITEM_ENTRY = ITEM | {"seconds", "entry", "path", "env"}
ITEM_FAILED = ITEM | {"error"}
ITEM_LEFT = ITEM | {"seconds", "steps_left"}
ITEM_ON_HOST = ITEM | {"seconds", "manager", "already_present", "refreshed", "check"}


def _fits(data: dict[str, Any], keys: set[str], kind: type) -> None:
    """``data`` has exactly ``keys``, and the TypedDict ``kind`` declares them."""
    assert set(data) == keys
    required = set(kind.__required_keys__)  # type: ignore[attr-defined]
    declared = set(get_type_hints(kind))
    assert required <= keys <= declared, (kind.__name__, keys - declared, required - keys)


def _member(union: object, key: str, tag: str) -> type:
    """The member of a TypedDict union whose ``key`` Literal admits ``tag``."""
    for member in get_args(union):
        if tag in get_args(get_type_hints(member)[key]):
            return member  # type: ignore[no-any-return]
    raise AssertionError(f"no member of {union} takes {key}={tag!r}")


def _resolve(catalog: loading.Catalog, *labels: str, target: model.Platform = LINUX) -> Any:
    wanted = [requests.parse(label, allow_ranges=True) for label in labels]
    done = resolver.resolve(wanted, catalog, target, store_root="/store")
    data = json.loads(done.to_json())  # what /v1/plan sends
    assert data == json.loads(json.dumps(done.to_data()))  # what the engine runs
    return data


def _step(plan: dict[str, Any], ident: str) -> dict[str, Any]:
    return next(s for s in plan["features"] if s["id"] == ident)


@pytest.fixture(scope="module")
def bundled() -> loading.Catalog:
    return loading.load([paths.bundled_catalog()])


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> loading.Catalog:
    folder = tmp_path_factory.mktemp("catalog")
    pinned = factories.archive_feature("pinned")
    pinned["install"][0].pop("checksum_url")
    pinned["install"][0]["sha256"] = {"1.2.0": {"linux": factories.SHA, "darwin": factories.SHA}}
    pinned["versions"] = ["1.2.0"]
    wheel = factories.archive_feature("wheel", requires=["python"])
    wheel["install"] = [{"method": "pip", "platforms": ["linux"], "packages": ["w=={version}"]}]
    tsc = factories.archive_feature("tsc", requires=["node"])
    tsc["install"] = [{"method": "npm", "platforms": ["linux"], "packages": ["ts@{version}"]}]
    scripted = factories.archive_feature("scripted")
    scripted["install"] = [{"method": "script", "platforms": ["linux"]}]
    gh = {
        "id": "gh",
        "name": "GitHub CLI",
        "platforms": ["linux"],
        "install": [
            {
                "method": "system",
                "platforms": ["linux"],
                "packages": {"apt": ["gh"]},
                "apt_repositories": [
                    {
                        "name": "github-cli",
                        "uri": "https://cli.github.com/packages",
                        "suites": ["stable"],
                        "components": ["main"],
                        "key_url": "https://cli.github.com/packages/githubcli-archive-keyring.gpg",
                    }
                ],
            }
        ],
    }
    for data in (pinned, wheel, tsc, scripted, gh):
        factories.write(folder, data)
    for ident in ("python", "node"):
        factories.write(folder, factories.archive_feature(ident))
    (folder / "scripted" / "install.sh").write_text("#!/bin/sh\n")
    return loading.load([folder])


# --- the plan -------------------------------------------------------------------------------


def test_a_plan_of_bundled_features_has_exactly_these_keys(bundled: loading.Catalog) -> None:
    plan = _resolve(bundled, "feature:python", "feature:ninja", "feature:jq")
    _fits(plan, PLAN, wire.Plan)
    _fits(plan["platform"], PLATFORM, wire.PlatformData)
    for step in plan["features"]:
        _fits(step, STEP, _member(wire.Step, "method", step["method"]))
        _fits(step["env"], STEP_ENV, wire.StepEnv)
        _fits(step["check"], CHECK, wire.Check)
    download, extract = _step(plan, "python")["actions"]  # archive: a checksum file
    _fits(download, DOWNLOAD_CHECKSUM_FILE, wire.DownloadAction)
    _fits(extract, EXTRACT, wire.ExtractAction)
    [pip] = _step(plan, "ninja")["actions"]  # pip, a wheel with its own binary
    _fits(pip, RUN, wire.RunAction)
    jq = _step(plan, "jq")  # system, with apt
    assert jq["prefix"] is None
    refresh, install = jq["actions"]
    _fits(refresh, REFRESH, wire.SystemAction)
    _fits(install, INSTALL, wire.SystemAction)
    assert (refresh["purpose"], install["purpose"]) == ("refresh", "install")


def test_every_other_kind_of_action_has_exactly_these_keys(synthetic: loading.Catalog) -> None:
    plan = _resolve(
        synthetic,
        "feature:pinned@1.2",
        "feature:wheel@1.2",
        "feature:tsc@1.2",
        "feature:scripted@1.2",
        "feature:gh",
    )
    for step in plan["features"]:
        _fits(step, STEP, _member(wire.Step, "method", step["method"]))
    download, _ = _step(plan, "pinned")["actions"]
    _fits(download, DOWNLOAD_PINNED, wire.DownloadAction)
    [pip] = _step(plan, "wheel")["actions"]  # pip on the python feature's interpreter
    _fits(pip, RUN_ON_PYTHON, wire.RunAction)
    for ident in ("tsc", "scripted"):
        [run] = _step(plan, ident)["actions"]
        _fits(run, RUN, wire.RunAction)
    key, sources, refresh, install = _step(plan, "gh")["actions"]
    _fits(key, KEY_DOWNLOAD, wire.SystemAction)
    _fits(sources, WRITE_FILE, wire.SystemAction)
    _fits(refresh, REFRESH, wire.SystemAction)
    _fits(install, INSTALL, wire.SystemAction)


# --- the events of an ensure and its result -------------------------------------------------


class _Pool:
    """Installs "ok" (after one download report) and fails "broken"."""

    async def install(
        self,
        root: str,
        step: wire.ToolStep,
        *,
        lock: tuple[str, float],
        options: protocol.Options,
        listener: progress.Listener,
    ) -> entries.Installed:
        listener("downloading", {"url": "https://example.invalid/a", "bytes": 1, "total": 1})
        if step["id"] == "broken":
            raise protocol.InstallError("broken 1.0.0", "download", "refused")
        entry = entries.entry_of(layout.Store(Path(root)), step["prefix"])
        receipt = receipts.Receipt(
            feature=step["id"],
            version=step["version"],
            key=entry.key,
            platform=dict(step.get("platform", {})),
            method=step["method"],
            sources=(),
            size=0,
            install_seconds=0.0,
            agent_version="test",
            created=0.0,
            check="no check declared",
            env={"path": ["bin"], "vars": {"OK_HOME": entries.PREFIX_VAR}},
            manifest={},
        )
        return entries.Installed(entry, receipt, cached=False)

    def close(self) -> None:
        pass


def _plan_of(root: Path, bundled: loading.Catalog) -> Any:
    """Round 1: a failing install, one that works and a system step (left to the runner);
    round 2: one that is skipped."""

    def tool(ident: str, number: int) -> dict[str, Any]:
        return {
            "id": ident,
            "name": ident,
            "version": "1.0.0",
            "method": "archive",
            "round": number,
            "prefix": str(root / ident / "1.0.0" / "x64"),
            "toolcache_name": None,
            "requested_by": ["test"],
            "options": {},
            "actions": [],
            "env": {"path": [], "vars": {}},
            "check": None,
        }

    plan = _resolve(bundled, "feature:jq")
    [jq] = plan["features"]
    plan["features"] = [tool("broken", 1), tool("ok", 1), {**jq, "round": 1}, tool("later", 2)]
    return plan


async def test_the_events_and_the_result_have_exactly_these_keys(
    bundled: loading.Catalog, tmp_path: Path
) -> None:
    root = tmp_path / "store"
    settings = models.Settings.model_validate({"cache": {"root": str(root)}})
    installs = coordinator.Coordinator(
        lambda: settings, install_metrics.InstallMetrics(None), pool=_Pool, host_system=False
    )
    plan = _plan_of(root, bundled)
    events: list[dict[str, Any]] = []

    async def send(event: wire.Event) -> None:
        events.append(dict(event))

    try:
        outcomes = await plans.run(installs, plan, send)
    finally:
        await installs.close()
    for event in events:
        _fits(event, set(event), _member(wire.Event, "event", event["event"]))
    kinds = {e["event"]: set(e) for e in events}
    assert kinds == {
        "queued": QUEUED,
        "downloading": DOWNLOADING,
        "failed": FAILED,
        "done": DONE,
        "skipped": QUEUED,
    }

    final = plans.result(plan, outcomes)
    _fits(dict(final), RESULT, wire.ResultEvent)
    broken, ok, jq, later = final["features"]
    _fits(dict(broken), ITEM_FAILED, wire.FeatureResult)
    _fits(dict(ok), ITEM_ENTRY, wire.FeatureResult)
    _fits(dict(jq), ITEM_LEFT, wire.FeatureResult)
    _fits(dict(later), ITEM, wire.FeatureResult)
    assert [i["result"] for i in final["features"]] == ["failed", "installed", "left", "skipped"]
    for action in jq["steps_left"]:
        assert set(action) in (REFRESH, INSTALL)


def test_a_system_step_run_on_this_host_reports_its_manager(bundled: loading.Catalog) -> None:
    plan = _resolve(bundled, "feature:jq")
    [step] = plan["features"]
    report: wire.SystemReport = {
        "id": "jq",
        "version": "system",
        "manager": "apt",
        "already_present": True,
        "refreshed": False,
        "seconds": 0.25,
        "check": "ok: already present on this host",
    }
    final = plans.result(plan, {"jq": coordinator.Outcome(step, "present", system=report)})
    [item] = final["features"]
    _fits(dict(item), ITEM_ON_HOST, wire.FeatureResult)
    assert final["ok"] is True
