"""``runner-agent features lock --check``: is the lock still what the catalog installs?

Policy: no network. With requests (``--features``, a team file) every one must be locked
for each platform checked (``--platform``, else the lock's), and each entry must be what
the catalog itself makes for that version: same method, URL and pinned hash, a version
it lists (or one its version index may list, which offline cannot be told apart). An
entry no request uses is stale too. Without requests each entry is checked on its own.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote

from agent.cli import common

if TYPE_CHECKING:  # imported where used: commands start fast
    from agent.catalog import loading as catalog_loading
    from agent.catalog import lockfile, resolver
    from agent.config import models as config_models
    from agent.platform import model
    from agent.platform import plans as wire


def resolve_for(
    given: list[str],
    team: Path | None,
    catalog: catalog_loading.Catalog,
    settings: config_models.Settings,
    target: model.Platform,
    features: config_models.FeaturesSettings,
    lock: lockfile.Lock | None,
    *,
    online: bool,
    artifacts: bool = True,
) -> resolver.Plan | int:
    """The plan for the requests and team file, as ``plan`` builds it; with
    ``online``, through the version indexes; without ``artifacts`` the lock pins
    versions only."""
    from agent.cli import catalogs
    from agent.sources import indexes

    return catalogs.resolve_cli(
        given,
        team,
        catalog,
        target,
        features,
        store_root=str(settings.cache.root),
        version_indexes=indexes.from_settings(settings) if online else None,
        lock=lock,
        lock_artifacts=artifacts,
    )


def check(
    lock: lockfile.Lock,
    catalog: catalog_loading.Catalog,
    settings: config_models.Settings,
    targets: list[model.Platform],
    given: list[str],
    team: Path | None,
    features: config_models.FeaturesSettings,
) -> int:
    from agent.catalog import planning

    if not given and team is None:
        return _alone(lock, catalog, settings, targets)
    # The lock's versions, not its artifacts: each step is then what the catalog alone
    # makes for that version, to compare with what the lock recorded.
    stale: list[str] = []
    used: set[tuple[str, str, str]] = set()
    for target in targets:
        plan = resolve_for(
            given, team, catalog, settings, target, features, lock, online=False, artifacts=False
        )
        if isinstance(plan, int):
            return plan
        for step in plan.features:
            if step["method"] == "system":
                continue
            key = planning.lock_key(catalog, step, target)
            entry = lock.entry(step["id"], step["version"], key)
            if entry is None:
                stale.append(f"{step['id']}: not locked for {key} (resolves to {step['version']})")
                continue
            used.add((step["id"], step["version"], key))
            feature = catalog.features[step["id"]]
            # Offline, a version only an index lists cannot be told from a dropped one.
            listed = step["version"] in feature.version_list() or feature.version_index is not None
            stale += _compare(step, entry, key, listed)
    asked = {t.triple for t in targets}
    for ident, version, key, _entry in lock.entries():
        if key.partition(";")[0] in asked and (ident, version, key) not in used:
            stale.append(f"{ident} {version} for {key}: no request uses it")
    return _report(stale, lock)


def _report(stale: list[str], lock: lockfile.Lock) -> int:
    for line in stale:
        print(f"stale: {line}")
    if stale:
        print(
            f"{len(stale)} stale entr{'y' if len(stale) == 1 else 'ies'}: run runner-agent "
            "features lock (add --upgrade ID to move a feature on)",
            file=sys.stderr,
        )
        return common.EXIT_BAD
    print(f"the lock is current: {len(lock)} entries", file=sys.stderr)
    return common.EXIT_OK


def _compare(
    step: wire.Step,
    entry: lockfile.Entry,
    key: str,
    listed: bool,
) -> list[str]:
    where = f"{step['id']} {step['version']} for {key}"
    fresh = step
    if not listed:
        return [f"{where}: the catalog no longer lists it; it installs as the lock pins it"]
    if fresh["method"] != entry.method:
        return [
            f"{where}: the catalog now installs it by {fresh['method']}, the lock by {entry.method}"
        ]
    found: list[str] = []
    actions: list[tuple[str, str | None]] = []  # (url, the sha256 the catalog pins)
    for action in fresh["actions"] if fresh["method"] != "system" else []:
        if action["action"] == "download":
            actions.append((action["url"], action.get("sha256")))
        elif action["action"] == "components":
            actions.append((action["manifest_url"], None))
    for artifact, (url, pinned) in zip(entry.artifacts, actions, strict=False):
        if url != artifact.url:
            found.append(f"{where}: the catalog now downloads {url}, the lock {artifact.url}")
        if pinned is not None and pinned != artifact.sha256:
            found.append(f"{where}: the catalog pins sha256 {pinned}, the lock {artifact.sha256}")
    if len(actions) != len(entry.artifacts):
        found.append(
            f"{where}: the catalog installs from {len(actions)} artifact(s), the lock lists "
            f"{len(entry.artifacts)}"
        )
    return found


def problems(problems: list[str], source: str) -> int:
    for problem in problems:
        print(f"{source}: {problem}")
    return common.EXIT_BAD


def _alone(
    lock: lockfile.Lock,
    catalog: catalog_loading.Catalog,
    settings: config_models.Settings,
    targets: list[model.Platform],
) -> int:
    """Each entry against the catalog, resolved alone at its version and options."""
    from agent.catalog import manifest, planning, requests, resolver

    stale: list[str] = []
    by_triple = {t.triple: t for t in targets}
    for ident, version, key, entry in lock.entries():
        triple, *options = key.split(";")
        target = by_triple.get(triple)
        feature = catalog.features.get(ident)
        if target is None:
            continue
        if feature is None:
            stale.append(f"{ident} {version} for {key}: the catalog has no such feature")
            continue
        names = {manifest.option_env_name(n): n for n in feature.options}
        asked = "".join(
            f";{names.get(k, k.lower())}={unquote(v)}"
            for k, _, v in (o.partition("=") for o in options)
        )
        try:
            request = requests.parse(
                f"{ident}@=={version}{asked}", allow_ranges=True, source="lock"
            )
            plan = resolver.resolve(
                [request],
                catalog,
                target,
                store_root=str(settings.cache.root),
                lock=lock,
                lock_artifacts=False,
            )
        except (requests.RequestError, resolver.ResolutionError) as exc:
            stale.append(f"{ident} {version} for {key}: {str(exc).splitlines()[0]}")
            continue
        step = next(s for s in plan.features if s["id"] == ident)
        if planning.lock_key(catalog, step, target) != key:
            stale.append(f"{ident} {version} for {key}: the catalog's options give another key")
            continue
        listed = version in feature.version_list() or feature.version_index is not None
        stale += _compare(step, entry, key, listed)
    return _report(stale, lock)
