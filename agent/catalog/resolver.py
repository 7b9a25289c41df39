"""Resolution: requests + catalog + target platform -> an ordered install plan.

Policy:
- pure and deterministic: identical input gives byte-identical JSON (sorted keys, no
  clock, no host facts); the target platform is an argument, never read here;
- each feature gets the highest known version that satisfies every constraint on it
  (its request, after alias expansion, and every ``requires`` that names it); a clash
  names both sides; pre-releases only when a spec names one;
- hard dependencies are added transitively; ``installs_after`` only orders features
  already in the plan; installs are ordered in rounds, sorted by id inside each round;
- the install method is the manifest's first that covers the target (a system method
  also needs the target's package manager);
- GPU needs never block an install (CPU jobs compile CUDA code too): no GPU or no
  driver version is a warning; a driver older than the needed CUDA major version is an
  error; an older minor of the same major only warns (minor-version compatibility);
- every problem is collected and raised together, with "did you mean" hints.
"""

from __future__ import annotations

import graphlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from agent.catalog import (
    choosing,
    cuda,
    loading,
    lockfile,
    manifest,
    methods,
    patterns,
    planning,
    requests,
)
from agent.platform import model
from agent.platform import plans as wire


class ResolutionError(ValueError):
    """The requests cannot be resolved; :attr:`problems` says why, one per item."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


# Part of the resolver's interface, defined beside the version choice they serve.
suggest = choosing.suggest
wanting_index = choosing.wanting_index


@dataclass
class Plan:
    """The install plan, as JSON-ready data."""

    platform: model.Platform
    features: list[wire.Step]
    warnings: list[str] = field(default_factory=list)
    vars: dict[str, dict[str, str]] = field(default_factory=dict)
    """Per feature, the template vars a version index (or the lock) gave its version:
    what ``features lock`` records; not part of the plan's data."""

    def to_data(self) -> wire.Plan:
        """The plan as plain data (the wire format of ``/v1/plan``)."""
        return {
            "platform": self.platform.to_json(),
            "features": self.features,
            "warnings": self.warnings,
        }

    def to_json(self) -> str:
        """Canonical JSON: sorted keys, two-space indent, ASCII, newline-terminated."""
        return json.dumps(self.to_data(), sort_keys=True, indent=2, ensure_ascii=True) + "\n"


def resolve(
    wanted: Sequence[requests.Request],
    catalog: loading.Catalog,
    target: model.Platform,
    *,
    store_root: str,
    notes: Sequence[str] = (),
    indexed: Mapping[str, Mapping[str, Mapping[str, str]]] | None = None,
    lock: lockfile.Lock | None = None,
    lock_artifacts: bool = True,
) -> Plan:
    """Resolve ``wanted`` for ``target``; raise :class:`ResolutionError` with every problem.

    ``notes`` (how the requests were merged) lead the plan's warnings. ``indexed`` maps
    a feature to the versions its upstream's index lists, each with the template vars
    the index gives it (:func:`wanting_index` says which to fetch): they join the
    catalog's own, which stay the offline fallback.

    With a ``lock``, a feature gets its highest locked version that meets every
    constraint (even one the catalog no longer lists, with a warning), and an archive
    step downloads the lock's artifacts, verified against the lock's hashes and sizes;
    a catalog that pins another hash for one of them is a problem naming both. Without
    ``lock_artifacts`` the lock pins versions (and their vars) only: each step is the
    catalog's own, as ``features lock --check`` compares them."""
    problems: list[str] = []
    warnings: list[str] = list(notes)
    wants = choosing.collect(wanted, catalog, problems)
    chosen: dict[str, tuple[str, methods.Method]] = {}
    unlocked: list[str] = []
    for ident in sorted(wants):
        feature = catalog.features[ident]
        # The methods that serve this target and these options, then a version among
        # those they serve (both problems are reported together), then the method for it.
        candidates = _methods_for(feature, target, problems, _asked(feature, wants[ident]))
        served = choosing.served_by(candidates)
        extra = (indexed or {}).get(ident, {})
        locked = lock.versions(ident) if lock is not None and feature.versioned else []
        if not all(isinstance(m, methods.ArchiveMethod) for m in candidates):
            # A locked version the catalog does not list installs only by archive, whose
            # bytes the lock pins; pip, npm and scripts install what the registry serves.
            locked = [v for v in locked if v in feature.version_list() or v in extra]
        version = choosing.version_for(
            feature, wants[ident], target, problems, served, extra, locked
        )
        if version is None or not candidates:
            continue
        # A locked version the catalog dropped: its first method (the lock says how).
        method = next(
            (m for m in candidates if not m.versions or version in m.versions), candidates[0]
        )
        if lock is not None and feature.versioned:
            if version not in locked:
                unlocked.append(
                    f"{ident} {version}" + (f" (locked: {', '.join(locked)})" if locked else "")
                )
            elif version not in feature.version_list() and version not in extra:
                warnings.append(
                    f"{ident} {version} is locked but the catalog does not list it (no longer, "
                    "or only its version index does): it installs as the lock pins it"
                )
        if feature.gpu:
            build = cuda.variant(feature, wants[ident].request, target)
            if build is not None:
                wants[ident].variant = build
            cuda.check(feature, version, wants[ident].variant, target, problems, warnings)
        chosen[ident] = (version, method)
    if problems:
        raise ResolutionError(sorted(problems))
    if unlocked:
        warnings.append(
            f"not pinned by the lock: {'; '.join(unlocked)}; resolved as if there were no "
            "lock: run runner-agent features lock to pin them"
        )
    rounds = _rounds(chosen, catalog)
    features: list[wire.Step] = []
    plan_vars: dict[str, dict[str, str]] = {}
    for number, ident in rounds:
        version, method = chosen[ident]
        runtime = next(
            ((f["version"], f["prefix"]) for f in features if f["id"] == "python" and f["prefix"]),
            None,
        )
        given = (indexed or {}).get(ident, {}).get(version)
        lock_only = lock is not None and given is None and version not in _listed(catalog, ident)
        if lock_only and lock is not None:
            given = lock.vars(ident, version)  # an index gave them when the lock was written
        if given:
            plan_vars[ident] = dict(given)
        try:
            features.append(
                planning.step(
                    catalog,
                    ident,
                    version,
                    method,
                    _asked_of(wants[ident]),
                    target,
                    number,
                    store_root,
                    runtime if _requires(catalog, ident, "python") else None,
                    lock,
                    warnings,
                    given,
                    lock_only,
                    lock_artifacts,
                )
            )
        except Exception as exc:  # a manifest case the loader missed must not be a crash
            problems.append(f"{ident}: {exc}")
    if problems:
        raise ResolutionError(sorted(problems))
    return Plan(platform=target, features=features, warnings=warnings, vars=plan_vars)


def _listed(catalog: loading.Catalog, ident: str) -> list[str]:
    feature = catalog.features[ident]
    return feature.version_list() if feature.versioned else ["system"]


def _asked_of(want: choosing.Want) -> planning.Asked:
    variant = want.variant
    return planning.Asked(want.request, variant[0] if variant else None, want.requested_by)


def _asked(feature: manifest.Feature, want: choosing.Want) -> dict[str, str]:
    """The options by name as the request sets them over the defaults (a bad value is
    reported later, where the step's options are built)."""
    chosen = {name: opt.default_text() for name, opt in feature.options.items()}
    for name, value in want.request.options if want.request else ():
        option = feature.options.get(name)
        if option is not None:
            try:
                chosen[name] = option.coerce(name, str(value))
            except ValueError:
                continue
    return chosen


def _methods_for(
    feature: manifest.Feature,
    target: model.Platform,
    problems: list[str],
    options: dict[str, str],
) -> list[methods.Method]:
    """The methods, in manifest order, whose platforms, package manager and ``when``
    fit; none is a problem that says where the feature is available."""
    fitting = []
    for method in feature.install:
        if not any(patterns.matches(p, target) for p in method.platforms):
            continue
        if (
            isinstance(method, methods.SystemMethod)
            and target.package_manager not in method.packages
        ):
            continue
        if not _when_fits(feature, method, options):
            continue
        fitting.append(method)
    if fitting:
        return fitting
    selected = [m for m in feature.install if m.when]
    keys = sorted({k for m in selected for k in m.when})
    if any(options.get(k) != feature.options[k].default_text() for k in keys):
        asked = " ".join(f"{k}={options.get(k)}" for k in keys)
        where = sorted(
            {p for m in feature.install if _when_fits(feature, m, options) for p in m.platforms}
        )
        problems.append(
            f"{feature.id} with {asked} is not available on {target.triple}; with those "
            f"options it installs on: {', '.join(where) or 'no platform'}"
        )
        return []
    supported = list(feature.platforms)
    system = [m for m in feature.install if isinstance(m, methods.SystemMethod)]
    detail = ""
    if system and any(patterns.matches(p, target) for m in system for p in m.platforms):
        managers = sorted({k for m in system for k in m.packages})
        detail = (
            f" with package manager {target.package_manager or 'unknown'}; "
            f"packages are known for: {', '.join(managers)}"
        )
    if target.os == "linux" and target.libc is None:
        detail += "; the target's libc is unknown: give libc (glibc or musl)"
    problems.append(
        f"{feature.id} is not available on {target.triple}{detail} in this catalog; "
        f"available: {', '.join(supported)}"
    )
    return []


def _when_fits(feature: manifest.Feature, method: methods.Method, options: dict[str, str]) -> bool:
    """Whether the options as asked are those the method's ``when`` names (each value as
    the option spells it: a boolean's true/false in any case)."""
    return all(
        options.get(name) == feature.options[name].coerce(name, value)
        for name, value in method.when.items()
    )


def _rounds(chosen: Mapping[str, object], catalog: loading.Catalog) -> list[tuple[int, str]]:
    graph: dict[str, set[str]] = {}
    for ident in chosen:
        feature = catalog.features[ident]
        deps = {manifest.parse_requirement(r).id for r in feature.requires}
        deps |= {a for a in feature.installs_after if a in chosen}
        graph[ident] = deps & set(chosen)
    sorter = graphlib.TopologicalSorter(graph)
    sorter.prepare()
    order: list[tuple[int, str]] = []
    number = 0
    while sorter.is_active():
        ready = sorted(sorter.get_ready())
        number += 1
        order.extend((number, ident) for ident in ready)
        sorter.done(*ready)
    return order


def _requires(catalog: loading.Catalog, ident: str, other: str) -> bool:
    return any(manifest.parse_requirement(r).id == other for r in catalog.features[ident].requires)
