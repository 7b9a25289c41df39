"""Catalog endpoints: /v1/features, /v1/features/{id} and /v1/plan (all ``job`` scope).

Policy: these read the catalog in force and resolve plans; they change nothing. A plan
request names its target platform explicitly (the runner's, which in sidecar mode is not
the agent's own), and resolution problems come back as one 422 listing every problem.
A team document is held to :data:`MAX_TEAM_FEATURES` entries and
:data:`MAX_TEAM_ENVIRONMENTS` environments (a 400 naming the cap, checked before it is
parsed), and resolving anything bigger than a few requests runs in a thread, so a big
request never holds the loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from aiohttp import web
from pydantic import Field

from agent.catalog import loading as catalog_loading
from agent.catalog import policy, requests, resolver, team
from agent.config import loading as config_loading
from agent.config import models as config_models
from agent.http import bodies, errors, models
from agent.http.context import CONTEXT
from agent.platform import model
from agent.platform import plans as wire

logger = logging.getLogger(__name__)

MAX_TEAM_FEATURES = 256
"""Feature entries one team document may hold, its environments' and extends included."""
MAX_TEAM_ENVIRONMENTS = 64
"""Environments one team document may define."""
INLINE_ITEMS = 8
"""A request of at most this many labels and requests, and no team document, is
resolved on the loop; anything bigger in a thread."""


class FeatureSummary(models.ApiModel):
    """One feature of the catalog."""

    id: str
    name: str
    description: str
    versions: list[str] = Field(description="Known versions; empty for OS-package features.")
    aliases: dict[str, str]
    default: str
    methods: list[str]
    platforms: list[str]


class FeatureList(models.ApiModel):
    """GET /v1/features."""

    features: list[FeatureSummary]
    disabled: list[dict[str, str]] = Field(
        description="Features whose manifest failed, with the reason."
    )


class TargetModel(models.ApiRequest):
    """The platform a plan is for."""

    os: str = Field(description="linux, darwin or windows")
    arch: str = Field(description="x64, arm64, arm, ppc64, s390x, riscv64 or ia32")
    libc: str | None = Field(default=None, description="glibc or musl (linux only)")
    package_manager: str | None = Field(default=None, description="apt, dnf, apk, ...")
    cuda_driver: str | None = Field(default=None, description="driver CUDA version, e.g. 12.4")


class PlanRequest(models.ApiRequest):
    """POST /v1/plan."""

    labels: list[str] = Field(
        default_factory=list, max_length=64, description="Runner labels; feature: ones count."
    )
    requests: list[str] = Field(
        default_factory=list,
        max_length=32,
        description="Requests in the id@spec form, where full ranges are allowed.",
    )
    team: wire.JsonObject | None = Field(
        default=None, description="A .github/runner-config.yml document, as JSON."
    )
    target: TargetModel


def _catalog(request: web.Request) -> catalog_loading.Catalog:
    catalog = request.app[CONTEXT].catalog()
    if catalog is None:
        raise errors.ApiError(503, "the feature catalog is still loading; retry in a moment")
    return catalog


async def list_features(request: web.Request) -> web.Response:
    """Every feature of the catalog, and the disabled ones with their reasons."""
    catalog = _catalog(request)
    items = []
    for ident in catalog.ids():
        feature = catalog.features[ident]
        items.append(
            FeatureSummary(
                id=ident,
                name=feature.name,
                description=feature.description,
                versions=feature.version_list(),
                aliases=dict(feature.aliases),
                default=feature.default if feature.versioned else "system",
                methods=sorted({m.method for m in feature.install}),
                platforms=list(feature.platforms),
            )
        )
    body = FeatureList(
        features=items,
        disabled=[{"feature": p.feature, "problem": str(p)} for p in catalog.problems],
    )
    return bodies.json_response(body)


async def get_feature(request: web.Request) -> web.Response:
    """One feature's manifest."""
    catalog = _catalog(request)
    ident = request.match_info["id"].lower()
    feature = catalog.features.get(ident)
    disabled = [p for p in catalog.problems if p.feature == ident]
    if feature is None and disabled:
        raise errors.ApiError(
            404,
            f"feature {ident!r} is disabled: {disabled[0]}",
            code="disabled",
            details={"problems": [str(p) for p in disabled]},
        )
    if feature is None:
        raise errors.ApiError(
            404,
            f"unknown feature {ident!r}{resolver.suggest(ident, catalog.ids())}",
            details={"known": catalog.ids()},
        )
    return bodies.json_response(feature)


async def post_plan(request: web.Request) -> web.Response:
    """Resolve requests for a target platform into an install plan."""
    body = await bodies.read_model(request, PlanRequest)
    target = to_platform(body.target)
    plan = await resolve(
        request, target, labels=body.labels, extra=body.requests, team_doc=body.team
    )
    return web.Response(text=plan.to_json(), content_type="application/json")


def _with_options(
    texts: list[str], parsed: list[requests.Request], options: dict[str, dict[str, str]]
) -> list[requests.Request]:
    """The requests with their options added, through the grammar (which checks names
    and values, and refuses one given twice)."""
    ids = [r.id for r in parsed]
    for feature, opts in options.items():
        if feature.lower() not in ids:
            raise errors.ApiError(
                400,
                f"options for {feature!r}, which is not among the requests {ids}; request "
                "it, or drop its options",
                code="validation_error",
            )
        at = ids.index(feature.lower())
        text = texts[at] + "".join(f";{name}={value}" for name, value in opts.items())
        parsed[at] = requests.parse(text, allow_ranges=True, source="request")
    return parsed


def to_platform(target: TargetModel) -> model.Platform:
    """The request's target as a platform, or a 400 naming what is wrong."""
    try:
        return model.Platform(**target.model_dump())
    except model.PlatformError as exc:
        raise errors.ApiError(400, f"target: {exc}", code="validation_error") from exc


def _check_team_size(doc: wire.JsonObject) -> None:
    """A 400 naming the cap if ``doc`` holds more entries than a team file ever needs;
    counted on the raw document, before anything validates each entry."""

    def count(value: object) -> int:
        return len(value) if isinstance(value, list) else 0

    environments = doc.get("environments")
    envs = list(environments.values()) if isinstance(environments, Mapping) else []
    if len(envs) > MAX_TEAM_ENVIRONMENTS:
        raise errors.ApiError(
            400,
            f"team: {len(envs)} environments is over the limit of {MAX_TEAM_ENVIRONMENTS} "
            "per request",
            code="validation_error",
            details={"limit": MAX_TEAM_ENVIRONMENTS},
        )
    total = count(doc.get("features")) + count(doc.get("extends"))
    for env in envs:
        if isinstance(env, Mapping):
            total += count(env.get("features")) + count(env.get("extends"))
    if total > MAX_TEAM_FEATURES:
        raise errors.ApiError(
            400,
            f"team: {total} features and extends is over the limit of {MAX_TEAM_FEATURES} "
            "per request (environments included)",
            code="validation_error",
            details={"limit": MAX_TEAM_FEATURES},
        )


class _Unchecked:
    """No policy check (a plan only shows what would be installed)."""


UNCHECKED = _Unchecked()


async def resolve(
    request: web.Request,
    target: model.Platform,
    *,
    labels: list[str],
    extra: list[str],
    team_doc: wire.JsonObject | None = None,
    options: dict[str, dict[str, str]] | None = None,
    policy_for: str | _Unchecked | None = UNCHECKED,
) -> resolver.Plan:
    """Merge labels, requests (with ``options`` per requested feature) and team
    configuration and resolve them for ``target``, in a thread; errors become 400 (bad
    input), 403 (outside ``runner.policy`` for the repository ``policy_for``, when one is
    given: ``None`` is a request that names none) or 422 (nothing satisfies it)."""
    catalog = _catalog(request)
    settings = request.app[CONTEXT].reloader.current.settings
    args = (catalog, settings, target, labels, extra, team_doc, options or {}, policy_for)
    if team_doc is None and len(labels) + len(extra) <= INLINE_ITEMS:
        return resolve_now(*args)  # a fraction of a millisecond: a thread hop costs more
    if team_doc is not None:
        _check_team_size(team_doc)
    return await asyncio.to_thread(resolve_now, *args)


def resolve_now(
    catalog: catalog_loading.Catalog,
    settings: config_models.Settings,
    target: model.Platform,
    labels: list[str],
    extra: list[str],
    team_doc: wire.JsonObject | None,
    options: dict[str, dict[str, str]],
    policy_for: str | _Unchecked | None = UNCHECKED,
) -> resolver.Plan:
    try:
        team_config = team.parse(team_doc, source="team") if team_doc is not None else None
        parsed = [requests.parse(r, allow_ranges=True, source="request") for r in extra]
        parsed = _with_options(extra, parsed, options)
        merged = team.merge(
            team=team_config, settings=settings.features, labels=labels, extra=parsed
        )
    except config_loading.ConfigError as exc:
        raise errors.ApiError(
            400,
            "invalid team configuration",
            code="validation_error",
            details=[str(p) for p in exc.problems],
        ) from exc
    except (requests.RequestError, team.TeamError) as exc:
        raise errors.ApiError(
            400, str(exc).splitlines()[0], code="invalid_request", details=str(exc).splitlines()
        ) from exc
    if not isinstance(policy_for, _Unchecked):
        runner = settings.runner
        try:
            policy.check(
                runner.policy, runner.allowed_features, policy_for, [r.id for r in merged.requests]
            )
        except policy.PolicyError as exc:
            raise errors.ApiError(403, str(exc), code="policy") from exc
    for note in merged.notes:
        # An override is easy to miss in a plan: the agent's log says it too.
        logger.info("request merge: %s", note)
    try:
        return resolver.resolve(
            merged.requests,
            catalog,
            target,
            store_root=str(settings.cache.root),
            notes=merged.notes,
        )
    except resolver.ResolutionError as exc:
        raise errors.ApiError(
            422, exc.problems[0], code="unresolvable", details={"problems": exc.problems}
        ) from exc
