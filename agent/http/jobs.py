"""The job routes: the job a ``POST /v1/ensure`` leases its entries to, and ``DELETE
/v1/jobs/{id}`` that releases them (the engine is :mod:`agent.jobs.leases`)."""

from __future__ import annotations

from aiohttp import web
from pydantic import Field

from agent.http import bodies, errors, models
from agent.http.context import CONTEXT


class JobModel(models.ApiRequest):
    """The job that will use the entries: they are leased to it, so no janitor (of this
    agent or another sharing the volume) evicts them while it runs."""

    id: str = Field(
        min_length=1, max_length=200, pattern=r"^[\x21-\x7e]+$", description="The job's id."
    )
    max_seconds: int = Field(
        default=6 * 3600,
        ge=1,
        le=86400,
        description="Release the lease after this long even without DELETE /v1/jobs/{id}.",
    )


class JobReleased(models.ApiModel):
    """The outcome of DELETE /v1/jobs/{id}."""

    job: str
    released: int = Field(description="How many leases of the job this agent released.")


async def delete_job(request: web.Request) -> web.Response:
    """Release the entries leased to a job (it ended)."""
    job = request.match_info["id"]
    released = await request.app[CONTEXT].jobs.release(job)
    if not released:
        raise errors.ApiError(404, f"this agent holds no lease for job {job!r}")
    return bodies.json_response(JobReleased(job=job, released=released))
