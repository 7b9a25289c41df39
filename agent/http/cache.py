"""Cache management endpoints: /v1/cache, /v1/cache/verify, /gc and /evict (``admin``).

Policy: every one works on the store through the daemon's janitor, in a thread (they
walk folders, hash files and delete trees; the event loop never waits on the volume).
``verify``, ``gc`` and ``evict`` take the janitor lock without waiting: when another
agent's janitor holds it, the answer is 409 ``janitor_busy`` naming it. Listing takes no
lock. A store that does not exist yet (nothing installed) is 409 ``no_store``; a store
that cannot be worked on (a folder that is a link, unreadable) is 409 ``store_error``.
One bad receipt never fails a listing or a pass: its entry is listed as ``bad-receipt``
with the reason in ``problem``, and ``verify`` with ``repair`` removes it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from aiohttp import web
from pydantic import Field, computed_field, field_validator

from agent.http import bodies, errors, models
from agent.http import routes as routing
from agent.http.context import CONTEXT
from agent.store import evicting, janitor, layout

T = TypeVar("T")


class LeaseModel(models.ApiModel):
    """A job's in-use lease on an entry."""

    agent: str = Field(description="The agent that took it (host/pid).")
    job: str
    expires: models.Timestamp = Field(description="When it lapses unless refreshed.")

    # mypy cannot see through pydantic's decorator on a property; pydantic's documented way.
    @computed_field(description="`expires` as Unix time, for a hook to compare with date +%s.")  # type: ignore[prop-decorator]
    @property
    def expires_epoch(self) -> float:
        return self.expires


class CacheEntry(models.ApiModel):
    """One entry of the store (or what is left of one)."""

    key: str = Field(description="name@version@leaf: its name in lock and receipt files.")
    entry: str = Field(
        description="name/version/leaf, the tool-cache form (x64-musl on musl): its name in "
        "every message."
    )
    name: str
    version: str
    leaf: str
    path: str
    state: str = Field(
        description="ok, no-receipt (someone else's), no-entry (a marker alone), unmarked, "
        "orphan, receipt-only or bad-receipt."
    )
    problem: str
    feature: str | None
    feature_version: str | None
    method: str | None
    target: str = Field(description="os/arch[/libc] it was installed for.")
    size: int | None = Field(description="Bytes, from the receipt; null without one.")
    last_used: models.Timestamp | None = Field(description="When it was last used.")
    in_use: list[LeaseModel]


class Totals(models.ApiModel):
    """The store's size: the receipts of complete entries plus the download cache."""

    bytes: int = Field(description="entry_bytes + download_bytes: what the budget compares.")
    entries: int
    entry_bytes: int
    downloads: int
    download_bytes: int


class CacheDownload(models.ApiModel):
    """One archive of the download cache (kept for a re-install; evicted first)."""

    sha256: str
    entry: str = Field(description="download <first 12 digits of the sha256>.")
    size: int
    last_used: models.Timestamp = Field(description="When it was downloaded or last reused.")


class CacheList(models.ApiModel):
    """GET /v1/cache."""

    root: str
    budget: int = Field(description="cache.size_budget, in bytes.")
    total: Totals
    entries: list[CacheEntry]
    downloads: list[CacheDownload]


class VerifyRequest(models.ApiRequest):
    """POST /v1/cache/verify."""

    repair: bool = Field(
        default=False,
        description="Remove broken entries the agent wrote; the next ensure re-installs them.",
    )


class VerifiedEntry(models.ApiModel):
    """The verdict on one entry."""

    key: str
    entry: str = Field(description="name/version/leaf: its name in every message.")
    status: str = Field(description="ok, size-only, broken, or a listing state.")
    problems: list[str]
    warnings: list[str]
    recorded_bytes: int | None
    disk_bytes: int | None
    repair: str = Field(
        description="removed, or why repair left it (in-use, busy, not-ours, refused: a "
        "folder on the way is a link; see problems)."
    )


class VerifyResponse(models.ApiModel):
    """The outcome of POST /v1/cache/verify."""

    clean: bool = Field(description="Nothing broken is left.")
    repaired: bool
    counts: dict[str, int]
    recorded_bytes: int = Field(description="What the receipts of intact entries say.")
    disk_bytes: int = Field(description="What those entries hold on disk.")
    entries: list[VerifiedEntry]


class GcRequest(models.ApiRequest):
    """POST /v1/cache/gc. The body is optional and has no fields."""


class GcResponse(models.ApiModel):
    """The outcome of POST /v1/cache/gc."""

    staging_removed: list[str]
    staging_kept: list[str] = Field(description="Staging folders of installs still running.")
    partials_removed: int
    leases_removed: int
    downloads_removed: int = Field(description="Downloaded archives no receipt names.")
    download_bytes_removed: int
    unknown: list[str] = Field(description="Names in the staging folder left alone.")


class EvictRequest(models.ApiRequest):
    """POST /v1/cache/evict."""

    to: int | None = Field(
        default=None,
        description="Target size (required): bytes, or a string with a unit such as 10GiB.",
        json_schema_extra={"anyOf": [{"type": "integer", "minimum": 0}, {"type": "string"}]},
    )

    @field_validator("to", mode="before")
    @classmethod
    def _size(cls, value: Any) -> int:
        if not isinstance(value, (str, int)) or isinstance(value, bool):
            raise ValueError(f"got {value!r}; expected bytes or a size such as 10GiB or 500MB")
        try:
            return evicting.parse_size(value)
        except evicting.SizeError as exc:
            raise ValueError(str(exc)) from None


class EvictedEntry(models.ApiModel):
    """An entry or download eviction removed or kept."""

    kind: str = Field(description="download (evicted first) or entry.")
    key: str = Field(description="The entry's name@version@leaf, or the download's sha256.")
    entry: str = Field(description="name/version/leaf, or download <sha256 prefix>.")
    size: int | None
    reason: str | None = Field(default=None, description="Why it was kept.")


class EvictResponse(models.ApiModel):
    """The outcome of POST /v1/cache/evict."""

    target: int
    before: int
    after: int
    reached: bool = Field(description="Whether the store now fits the target.")
    removed: list[EvictedEntry]
    skipped: list[EvictedEntry]


def _janitor(request: web.Request) -> janitor.Janitor:
    jan = request.app[CONTEXT].cache()
    if jan is None:
        raise errors.ApiError(503, "the store's janitor is still starting; retry in a moment")
    return jan


async def _run(work: Callable[[], T]) -> T:
    try:
        return await asyncio.to_thread(work)
    except janitor.Busy as exc:
        raise errors.ApiError(409, str(exc), code="janitor_busy") from exc
    except layout.NoStore as exc:
        raise errors.ApiError(409, str(exc), code="no_store") from exc
    except layout.StoreError as exc:
        raise errors.ApiError(409, str(exc), code="store_error") from exc
    except OSError as exc:
        # The volume, not the request: a folder the agent cannot read or that is not what
        # the store puts there. Named, never a 500.
        raise errors.ApiError(409, f"cannot work on the store: {exc}", code="store_error") from exc


async def list_cache(request: web.Request) -> web.Response:
    """Entries with size, target, last use and in-use state, and the download cache."""
    from agent.store import inventory

    jan = _janitor(request)

    def listing() -> tuple[list[inventory.Item], list[inventory.Download]]:
        return inventory.scan(jan.store), inventory.downloads(jan.store)

    items, archives = await _run(listing)
    return bodies.json_response(
        CacheList(
            root=str(jan.store.root),
            budget=int(jan.budget()),
            total=Totals.model_validate(inventory.totals(items, archives).to_data()),
            entries=[CacheEntry.model_validate(i.to_data()) for i in items],
            downloads=[CacheDownload.model_validate(d.to_data()) for d in archives],
        )
    )


async def post_verify(request: web.Request) -> web.Response:
    """Re-hash entries against their receipts; with ``repair``, remove the broken."""
    body = await bodies.read_model(request, VerifyRequest)
    jan = _janitor(request)
    done = await _run(lambda: jan.verify(repair=body.repair).to_data())
    return bodies.json_response(VerifyResponse.model_validate(done))


async def post_gc(request: web.Request) -> web.Response:
    """Collect what dead installs left behind."""
    await bodies.read_model(request, GcRequest)
    jan = _janitor(request)
    done = await _run(lambda: jan.gc().to_data())
    return bodies.json_response(GcResponse.model_validate(done))


async def post_evict(request: web.Request) -> web.Response:
    """Evict least recently used downloads, then entries, down to ``to``."""
    body = await bodies.read_model(request, EvictRequest)
    target = body.to
    if target is None:
        raise errors.ApiError(
            400,
            'invalid request body: to: the target size is required, e.g. {"to": "10GiB"}',
            code="validation_error",
            details=[{"field": "to", "message": "Field required", "type": "missing"}],
        )
    jan = _janitor(request)
    done = await _run(lambda: jan.evict(target).to_data())
    return bodies.json_response(EvictResponse.model_validate(done))


def routes() -> list[routing.Route]:
    """The cache management routes, all ``admin``: they read or change the shared volume."""
    busy = (409, 503)
    return [
        routing.Route(
            "GET",
            "/v1/cache",
            list_cache,
            "admin",
            "Store entries with size, target platform, last use and in-use leases, and "
            "the download cache (counted in the total)",
            response=CacheList,
            errors=busy,
        ),
        routing.Route(
            "POST",
            "/v1/cache/verify",
            post_verify,
            "admin",
            "Re-hash entries against their receipts; find orphans and stray markers; "
            "with repair, remove broken entries the agent wrote",
            request=VerifyRequest,
            response=VerifyResponse,
            errors=busy,
        ),
        routing.Route(
            "POST",
            "/v1/cache/gc",
            post_gc,
            "admin",
            "Remove staging folders of dead installs, stale partial downloads, lapsed leases",
            request=GcRequest,
            response=GcResponse,
            errors=busy,
        ),
        routing.Route(
            "POST",
            "/v1/cache/evict",
            post_evict,
            "admin",
            "Evict least recently used downloads, then entries (not those in use), until "
            "the store (entries and downloads) fits a size",
            request=EvictRequest,
            response=EvictResponse,
            errors=busy,
        ),
    ]
