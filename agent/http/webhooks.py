"""GitHub webhooks on a listener of their own (``server.webhook_address``).

Policy:
- ``POST /v1/webhooks/github`` only. The body is read up to ``github.webhook_max_bytes``
  (413 beyond, before any of it is used) and its ``X-Hub-Signature-256`` (``sha256=`` and
  the HMAC-SHA256 of the raw body with ``github.webhook_secret_file``) is compared in
  constant time; a missing or bad signature, or no secret configured, is 401, and nothing
  of the body is parsed before the check passes;
- a delivery id (``X-GitHub-Delivery``) seen before is answered 200 ``duplicate`` and
  not acted on again (the last :data:`DELIVERIES` are remembered);
- ``ping`` is answered; a ``workflow_job`` delivery with action ``queued`` is offered to
  the pre-warmer (:mod:`agent.sources.prewarm`): 202, or 503 when its queue is full; one
  with ``in_progress`` or ``completed`` that names its runner is left as (or removes) a
  note on the store (:func:`agent.github.joblabels.note_delivery`), which the job's start
  on that runner reads instead of listing the run; every other event or action is 202
  ``ignored``;
- ``runner_agent_webhook_deliveries_total{event,result}``, with ``event`` one of the
  known names or ``other``, so a sender cannot grow the label set.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import hmac
import json
import logging
import re
from collections.abc import Callable
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter

from agent.config import models
from agent.github import credentials, joblabels, sharing
from agent.github import errors as github_errors
from agent.sources import prewarm

logger = logging.getLogger(__name__)

DELIVERIES = 10_000
READERS = 4
"""Deliveries whose bodies are read at once (each up to github.webhook_max_bytes)."""
_SIGNATURE = re.compile(r"sha256=[0-9a-f]{64}")
_EVENTS = frozenset({"ping", "workflow_job", "workflow_run", "push", "pull_request"})


class WebhookMetrics:
    """``runner_agent_webhook_deliveries_total{event,result}``."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.deliveries = Counter(
            "runner_agent_webhook_deliveries",
            "GitHub webhook deliveries, by event (ping, workflow_job, ..., other) and result "
            "(accepted, ignored, duplicate, unauthorized, too_large, bad_body, queue_full).",
            ["event", "result"],
            registry=registry,
        )


class Webhooks:
    """The webhook listener's state: the delivery ids seen, the pre-warmer, metrics."""

    def __init__(
        self,
        settings: Callable[[], models.Settings],
        prewarmer: prewarm.Prewarmer,
        metrics: WebhookMetrics,
        notes: sharing.Notes | None = None,
    ) -> None:
        self._settings = settings
        self.prewarmer = prewarmer
        self.metrics = metrics
        self.notes = notes
        self._seen: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._reading = asyncio.Semaphore(READERS)

    def app(self) -> web.Application:
        """The listener's application."""
        app = web.Application(client_max_size=25 * 1024 * 1024 + 1024)
        app.router.add_post("/v1/webhooks/github", self.post)
        return app

    def _answer(self, event: str, result: str, status: int, text: str) -> web.Response:
        shown = event if event in _EVENTS else "other"
        self.metrics.deliveries.labels(shown, result).inc()
        return web.json_response({"result": result, "message": text}, status=status)

    async def _secret(self) -> bytes | None:
        path = self._settings().github.webhook_secret_file
        if path is None:
            return None
        try:
            return await asyncio.to_thread(
                credentials.read_secret, path, "github.webhook_secret_file"
            )
        except github_errors.BadCredentials as exc:
            logger.error("webhook deliveries refused: %s", exc)
            return None

    async def _body(self, request: web.Request, limit: int) -> bytes | None:
        if request.content_length is not None and request.content_length > limit:
            return None
        raw = bytearray()
        async for chunk in request.content.iter_chunked(64 * 1024):
            raw += chunk
            if len(raw) > limit:
                return None
        return bytes(raw)

    async def post(self, request: web.Request) -> web.Response:
        """One delivery (see the module)."""
        event = request.headers.get("X-GitHub-Event", "")[:100]
        given = request.headers.get("X-Hub-Signature-256", "")
        unauthorized = "X-Hub-Signature-256 is missing or wrong"
        if not _SIGNATURE.fullmatch(given):  # before a byte of the body is read
            return self._answer(event, "unauthorized", 401, unauthorized)
        limit = int(self._settings().github.webhook_max_bytes)
        async with self._reading:  # bounded: bodies are held in memory until checked
            raw = await self._body(request, limit)
        if raw is None:
            return self._answer(event, "too_large", 413, f"a delivery is at most {limit} bytes")
        secret = await self._secret()
        expected = "sha256=" + hmac.new(secret or b"", raw, hashlib.sha256).hexdigest()
        if secret is None or not hmac.compare_digest(given.encode(), expected.encode()):
            return self._answer(event, "unauthorized", 401, unauthorized)
        delivery = request.headers.get("X-GitHub-Delivery", "")[:100]
        # Replays: by id, and by the signed body itself (an id is not signed).
        marks = [m for m in (delivery, "sha256:" + hashlib.sha256(raw).hexdigest()) if m]
        if any(m in self._seen for m in marks):
            return self._answer(event, "duplicate", 200, f"delivery {delivery} was seen")
        answer = await self._act(event, raw, delivery)
        if answer.status < 300:  # a refused delivery may come again (GitHub redelivers)
            for mark in marks:
                self._seen[mark] = None
            while len(self._seen) > DELIVERIES:
                self._seen.popitem(last=False)
        return answer

    async def _act(self, event: str, raw: bytes, delivery: str) -> web.Response:
        if event == "ping":
            return self._answer(event, "accepted", 200, "pong")
        if event != "workflow_job":
            return self._answer(event, "ignored", 202, f"{event or 'no'} event: nothing to do")
        try:
            payload = json.loads(raw)
            job = _queued(payload, delivery)
            delivered = _delivered(payload) if job is None else None
        except (ValueError, RecursionError, KeyError, TypeError, AttributeError) as exc:
            return self._answer(
                event, "bad_body", 400, f"not a workflow_job delivery: {str(exc)[:200]}"
            )
        if delivered is not None and self.notes is not None:
            try:
                noted = await joblabels.note_delivery(
                    self.notes, delivered, scope=self._settings().github.api_url
                )
            except github_errors.GitHubError as exc:
                return self._answer(event, "bad_body", 400, str(exc)[:300])
            if noted:
                what = f"runner {delivered.runner_name} {delivered.action}"
                return self._answer(event, "accepted", 202, f"noted {what}")
        if job is None:
            return self._answer(event, "ignored", 202, "only queued jobs are pre-warmed")
        if not self.prewarmer.offer(job):
            return self._answer(event, "queue_full", 503, "the pre-warm queue is full")
        return self._answer(event, "accepted", 202, f"pre-warming {job.name}")


def _delivered(payload: dict[str, Any]) -> joblabels.Delivered | None:
    """The runner an ``in_progress`` or ``completed`` delivery names, if it names one."""
    if payload.get("action") not in ("in_progress", "completed"):
        return None
    job, repository = payload["workflow_job"], payload["repository"]
    runner, labels = job.get("runner_name"), job.get("labels") or []
    if not isinstance(runner, str) or not runner or not isinstance(labels, list):
        return None
    if job.get("runner_group_name") == "GitHub Actions":
        return None  # a GitHub-hosted runner: no agent of this store serves it
    job_id, attempt = job.get("id"), job.get("run_attempt", 1)
    if not isinstance(job_id, int) or not isinstance(attempt, int):
        raise TypeError("workflow_job.id and run_attempt must be numbers")
    return joblabels.Delivered(
        action=str(payload["action"]),
        repository=str(repository["full_name"])[:201],
        run_id=str(job.get("run_id", ""))[:21],
        run_attempt=attempt,
        job_id=job_id,
        runner_name=runner[:200],
        labels=tuple(str(label)[:200] for label in labels[: joblabels.MAX_LABELS]),
    )


def _queued(payload: object, delivery: str) -> prewarm.Queued | None:
    if not isinstance(payload, dict):
        raise TypeError("the body is not a JSON object")
    if payload.get("action") != "queued":
        return None
    job, repository = payload["workflow_job"], payload["repository"]
    labels = job.get("labels") or []
    if not isinstance(labels, list):
        raise TypeError("workflow_job.labels is not a list")
    sha = job.get("head_sha")
    return prewarm.Queued(
        delivery=delivery,
        repository=str(repository["full_name"])[:201],
        head_sha=str(sha) if isinstance(sha, str) else None,
        labels=tuple(str(label)[:200] for label in labels[: joblabels.MAX_LABELS]),
        name=str(job.get("name", ""))[:200],
    )
