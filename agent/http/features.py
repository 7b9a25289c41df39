"""Catalog endpoints: /v1/features, /v1/features/{id} and /v1/plan (all ``job`` scope).

Policy: these read the catalog in force and resolve plans (:mod:`agent.sources.resolution`,
which also caps team documents and keeps big requests off the loop); they change
nothing. A plan request names its target platform explicitly (the runner's, which in
sidecar mode is not the agent's own), and resolution problems come back as one 422
listing every problem.
"""

from __future__ import annotations

import logging

from aiohttp import web
from pydantic import Field

from agent.catalog import loading as catalog_loading
from agent.catalog import lockfile, resolver
from agent.http import bodies, errors, models
from agent.http.context import CONTEXT
from agent.platform import model
from agent.platform import plans as wire
from agent.sources import resolution

logger = logging.getLogger(__name__)


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
    lock: wire.JsonObject | None = Field(
        default=None, description="A .github/runner-agent.lock document, as JSON."
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
        request,
        target,
        labels=body.labels,
        extra=body.requests,
        team_doc=body.team,
        lock=await resolution.lock_of(body.lock, "lock"),
    )
    return web.Response(text=plan.to_json(), content_type="application/json")


def to_platform(target: TargetModel) -> model.Platform:
    """The request's target as a platform, or a 400 naming what is wrong."""
    try:
        return model.Platform(**target.model_dump())
    except model.PlatformError as exc:
        raise errors.ApiError(400, f"target: {exc}", code="validation_error") from exc


async def resolve(
    request: web.Request,
    target: model.Platform,
    *,
    labels: list[str],
    extra: list[str],
    team_doc: wire.JsonObject | None = None,
    options: dict[str, dict[str, str]] | None = None,
    policy_for: resolution.PolicyFor = resolution.UNCHECKED,
    lock: lockfile.Lock | None = None,
) -> resolver.Plan:
    """Merge labels, requests (with ``options`` per requested feature) and team
    configuration and resolve them for ``target`` (:func:`resolution.resolve`); its
    errors are answered 400 (bad input), 403 (outside ``runner.policy`` for the
    repository ``policy_for``) or 422 (nothing satisfies it) by the error middleware."""
    return await resolution.resolve(
        _catalog(request),
        request.app[CONTEXT].reloader.current.settings,
        target,
        labels=labels,
        extra=extra,
        team_doc=team_doc,
        options=options,
        policy_for=policy_for,
        lock=lock,
    )
