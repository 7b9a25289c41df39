"""Merging a job's sources, checking policy and resolving them into a plan.

Policy: the runner's menu (labels), a team document and explicit requests (with options
per requested feature) are merged by the catalog engine's rules (:func:`team.merge`);
policy is checked on the merged ids for the repository named, unless the caller is
exempt (:data:`UNCHECKED`: a plan only shows what would be installed, and an admin's
ensure bypasses it); every override the merge made is logged. A team document is held
to :data:`MAX_TEAM_FEATURES` entries and :data:`MAX_TEAM_ENVIRONMENTS` environments,
counted on the raw document before anything parses it, and anything bigger than a few
requests, or naming a feature whose version index may be fetched
(:mod:`agent.sources.indexes`), is resolved in a thread, so it never holds the loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from agent.catalog import loading as catalog_loading
from agent.catalog import lockfile, manifest, policy, requests, resolver, team
from agent.config import loading as config_loading
from agent.config import models as config_models
from agent.platform import model
from agent.platform import plans as wire
from agent.sources import errors, indexes

logger = logging.getLogger(__name__)

MAX_TEAM_FEATURES = 256
"""Feature entries one team document may hold, its environments' and extends included."""
MAX_TEAM_ENVIRONMENTS = 64
"""Environments one team document may define."""
INLINE_ITEMS = 8
"""A request of at most this many labels and requests, and no team document, is
resolved on the loop; anything bigger in a thread."""


class _Unchecked:
    """No policy check (a plan only shows what would be installed)."""


UNCHECKED = _Unchecked()
PolicyFor = str | _Unchecked | None
"""The repository whose rule applies; ``None`` is a request that names none."""


async def resolve(
    catalog: catalog_loading.Catalog,
    settings: config_models.Settings,
    target: model.Platform,
    *,
    labels: list[str],
    extra: list[str],
    team_doc: wire.JsonObject | None = None,
    options: dict[str, dict[str, str]] | None = None,
    policy_for: PolicyFor = UNCHECKED,
    lock: lockfile.Lock | None = None,
) -> resolver.Plan:
    """:func:`resolve_now`, on the loop when it is small and in a thread otherwise."""
    args = (catalog, settings, target, labels, extra, team_doc, options or {}, policy_for, lock)
    small = team_doc is None and lock is None and len(labels) + len(extra) <= INLINE_ITEMS
    if small and not _names_indexed(catalog, [*labels, *extra]):
        return resolve_now(*args)  # a fraction of a millisecond: a thread hop costs more
    if team_doc is not None:
        check_team_size(team_doc)
    return await asyncio.to_thread(resolve_now, *args)


def _names_indexed(catalog: catalog_loading.Catalog, texts: list[str]) -> bool:
    # A feature with a version index may fetch it (blocking): never on the loop. Read
    # loosely (the grammar runs later): "feature:node@19;x=y" and "node@19" name node;
    # what they require counts too (a dependency's spec may need the index).
    queue = [
        text.lower().removeprefix(requests.PREFIX).partition("@")[0].partition(";")[0].strip()
        for text in texts
    ]
    seen: set[str] = set()
    while queue:
        ident = queue.pop()
        feature = catalog.features.get(ident)
        if feature is None or ident in seen:
            continue
        if feature.version_index is not None:
            return True
        seen.add(ident)
        queue += [manifest.parse_requirement(r).id for r in feature.requires]
    return False


def resolve_now(
    catalog: catalog_loading.Catalog,
    settings: config_models.Settings,
    target: model.Platform,
    labels: list[str],
    extra: list[str],
    team_doc: wire.JsonObject | None,
    options: dict[str, dict[str, str]],
    policy_for: PolicyFor = UNCHECKED,
    lock: lockfile.Lock | None = None,
) -> resolver.Plan:
    """Merge, check policy and resolve (see the module), pinned by ``lock`` when one is
    given (:func:`resolver.resolve`); raises an
    :class:`errors.SourceError` subclass naming what to change."""
    try:
        team_config = team.parse(team_doc, source="team") if team_doc is not None else None
        parsed = [requests.parse(r, allow_ranges=True, source="request") for r in extra]
        parsed = _with_options(extra, parsed, options)
        merged = team.merge(
            team=team_config, settings=settings.features, labels=labels, extra=parsed
        )
    except config_loading.ConfigError as exc:
        raise errors.InvalidTeam(
            "invalid team configuration", details=[str(p) for p in exc.problems]
        ) from exc
    except (requests.RequestError, team.TeamError) as exc:
        lines = str(exc).splitlines()
        raise errors.InvalidRequest(lines[0], details=lines) from exc
    if not isinstance(policy_for, _Unchecked):
        runner = settings.runner
        try:
            policy.check(
                runner.policy, runner.allowed_features, policy_for, [r.id for r in merged.requests]
            )
        except policy.PolicyError as exc:
            raise errors.Refused(str(exc)) from exc
    for note in merged.notes:
        # An override is easy to miss in a plan: the agent's log says it too.
        logger.info("request merge: %s", note)
    wanting = resolver.wanting_index(merged.requests, catalog, lock)
    looked = indexes.from_settings(settings).lookup(wanting) if wanting else None
    try:
        return resolver.resolve(
            merged.requests,
            catalog,
            target,
            store_root=str(settings.cache.root),
            notes=[*merged.notes, *(looked.warnings if looked else [])],
            indexed=looked.versions if looked else None,
            lock=lock,
        )
    except resolver.ResolutionError as exc:
        # Why a version is unknown may be an index that could not be read: say so too.
        found = [*exc.problems, *(looked.warnings if looked else [])]
        raise errors.Unresolvable(found[0], details={"problems": found}) from exc


def _with_options(
    texts: list[str], parsed: list[requests.Request], options: dict[str, dict[str, str]]
) -> list[requests.Request]:
    """The requests with their options added, through the grammar (which checks names
    and values, and refuses one given twice)."""
    ids = [r.id for r in parsed]
    for feature, opts in options.items():
        if feature.lower() not in ids:
            raise errors.Invalid(
                f"options for {feature!r}, which is not among the requests {ids}; request "
                "it, or drop its options"
            )
        at = ids.index(feature.lower())
        text = texts[at] + "".join(f";{name}={value}" for name, value in opts.items())
        parsed[at] = requests.parse(text, allow_ranges=True, source="request")
    return parsed


async def lock_of(data: wire.JsonObject | None, source: str) -> lockfile.Lock | None:
    """:func:`lock_from` in a thread (a lock of 256 KiB takes ~10 ms to check)."""
    if data is None:
        return None
    return await asyncio.to_thread(lock_from, data, source)


def lock_from(data: wire.JsonObject | None, source: str) -> lockfile.Lock | None:
    """The lock that a body's (or a commit's) parsed JSON holds; :class:`errors.InvalidLock`
    lists its problems."""
    if data is None:
        return None
    try:
        return lockfile.from_data(data, source=source)
    except lockfile.LockError as exc:
        raise errors.InvalidLock(
            f"{source} is not a usable lock file: {exc.problems[0]}",
            details={"problems": exc.problems[:50]},
        ) from exc


def check_team_size(doc: wire.JsonObject) -> None:
    """An :class:`errors.Invalid` naming the cap if ``doc`` holds more entries than a
    team file ever needs; counted on the raw document, before anything validates it."""

    def count(value: object) -> int:
        return len(value) if isinstance(value, list) else 0

    environments = doc.get("environments")
    envs = list(environments.values()) if isinstance(environments, Mapping) else []
    if len(envs) > MAX_TEAM_ENVIRONMENTS:
        raise errors.Invalid(
            f"team: {len(envs)} environments is over the limit of {MAX_TEAM_ENVIRONMENTS} "
            "per request",
            details={"limit": MAX_TEAM_ENVIRONMENTS},
        )
    total = count(doc.get("features")) + count(doc.get("extends"))
    for env in envs:
        if isinstance(env, Mapping):
            total += count(env.get("features")) + count(env.get("extends"))
    if total > MAX_TEAM_FEATURES:
        raise errors.Invalid(
            f"team: {total} features and extends is over the limit of {MAX_TEAM_FEATURES} "
            "per request (environments included)",
            details={"limit": MAX_TEAM_FEATURES},
        )
