"""A Kubernetes API server stub on loopback, over real TLS, for the one call the agent
makes: ``PATCH /api/v1/namespaces/{namespace}/pods/{name}`` with a JSON merge patch.

It answers as the real API server does, in its order: a bearer token it knows (401),
then RBAC (403, when ``forbid`` is set), then the media type (415 unless
``application/merge-patch+json``), the body (400), the pod (404); it applies RFC 7386
to the stored pod, checks annotation keys as Kubernetes does (422), bumps the
resourceVersion and answers the updated Pod. Every error is a ``Status`` object as the
real one sends it. It can be told to fail the next requests, to answer late, and it
records every request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import ssl
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

NAMESPACE = "arc-runners"
POD = "runner-set-abc12-runner-x7k2p"
SERVICE_ACCOUNT = "runner-set-gha-rs-no-permission"
MERGE_PATCH = "application/merge-patch+json"
_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def status(code: int, reason: str, message: str, **details: Any) -> dict[str, Any]:
    """A ``Status`` answer, as the API server words one."""
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details:
        body["details"] = details
    return body


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge key by key, null removes a key, anything else replaces."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _bad_key(key: str) -> str | None:
    """Why ``key`` is not a qualified name (Kubernetes' rule for annotation keys)."""
    prefix, _, name = key.rpartition("/")
    if not name or len(name) > 63 or not _NAME.fullmatch(name):
        return (
            "name part must consist of alphanumeric characters, '-', '_' or '.', and must "
            "start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  "
            "or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?"
            "[A-Za-z0-9]')"
        )
    if "/" in key and (
        len(prefix) > 253 or not all(_LABEL.fullmatch(p) for p in prefix.split("."))
    ):
        return "prefix part a lowercase RFC 1123 subdomain must consist of lower case ..."
    return None


def new_pod(namespace: str, name: str) -> dict[str, Any]:
    """A pod as the API server stores it (a few fields of a runner pod)."""
    return {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": "0b8c3f0e-6a4e-4a57-9d5e-3c1f7f8f2a11",
            "resourceVersion": "1000",
            "labels": {"app.kubernetes.io/component": "runner"},
            "annotations": {"actions.github.com/patch-id": "0"},
        },
        "spec": {"containers": [{"name": "runner", "image": "ghcr.io/actions/actions-runner"}]},
        "status": {"phase": "Running"},
    }


@dataclass
class Failure:
    """An answer to give instead of the real one, once."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass
class Seen:
    """One request as the stub received it."""

    method: str
    path: str
    authorization: str
    content_type: str
    body: bytes
    answered: int = 0


class ApiServer:
    """The stub's state: its pods, the tokens it accepts, what it was asked."""

    def __init__(self, *, namespace: str = NAMESPACE, pod: str = POD) -> None:
        self.namespace, self.pod = namespace, pod
        self.pods: dict[tuple[str, str], dict[str, Any]] = {
            (namespace, pod): new_pod(namespace, pod)
        }
        self.tokens: set[str] = {"kube-token-" + "t" * 40}
        self.forbid = False
        """Refuse every patch with 403, as RBAC does without a Role for it."""
        self.delay = 0.0
        """Seconds before every answer (a stalled API server)."""
        self.failures: deque[Failure] = deque()
        self.seen: list[Seen] = []
        self.url = ""
        self.handling: set[asyncio.Task[object]] = set()
        """Handlers running (a stalled answer outlives the client that gave up on it)."""

    @property
    def token(self) -> str:
        return next(iter(self.tokens))

    def annotations(self, namespace: str | None = None, pod: str | None = None) -> dict[str, str]:
        stored = self.pods[(namespace or self.namespace, pod or self.pod)]
        return dict(stored["metadata"].get("annotations") or {})

    def ours(self, prefix: str = "runner-agent/") -> dict[str, str]:
        """The annotations under ``prefix``."""
        return {k: v for k, v in self.annotations().items() if k.startswith(prefix)}

    @property
    def applied(self) -> list[dict[str, Any]]:
        """The merge patches applied, in order."""
        return [json.loads(s.body) for s in self.seen if s.answered == 200]

    def fail(self, *failures: Failure) -> None:
        self.failures.extend(failures)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/api/v1/namespaces/{namespace}/pods/{name}", self._pod)
        app.router.add_route("*", "/{tail:.*}", self._unknown)
        return app

    async def _unknown(self, request: web.Request) -> web.Response:
        said = "the server could not find the requested resource"
        return web.json_response(status(404, "NotFound", said), status=404)

    async def _pod(self, request: web.Request) -> web.Response:
        seen = Seen(
            request.method,
            request.path,
            request.headers.get("Authorization", ""),
            request.headers.get("Content-Type", ""),
            await request.read(),
        )
        self.seen.append(seen)
        task = asyncio.current_task()
        assert task is not None
        self.handling.add(task)
        try:
            answer = await self._answer(request, seen)
        finally:
            self.handling.discard(task)
        seen.answered = answer.status
        return answer

    async def _answer(self, request: web.Request, seen: Seen) -> web.Response:
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.failures:
            f = self.failures.popleft()
            await asyncio.sleep(f.delay)
            return web.Response(status=f.status, body=f.body, headers=f.headers)
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        scheme, _, token = seen.authorization.partition(" ")
        if scheme != "Bearer" or token not in self.tokens:
            return web.json_response(status(401, "Unauthorized", "Unauthorized"), status=401)
        if self.forbid:
            return web.json_response(
                status(
                    403,
                    "Forbidden",
                    f'pods "{name}" is forbidden: User "system:serviceaccount:{namespace}:'
                    f'{SERVICE_ACCOUNT}" cannot patch resource "pods" in API group "" in the '
                    f'namespace "{namespace}"',
                    name=name,
                    kind="pods",
                ),
                status=403,
            )
        if request.method != "PATCH":
            return web.json_response(
                status(405, "MethodNotAllowed", "the server does not allow this method"),
                status=405,
            )
        if seen.content_type.split(";")[0].strip() != MERGE_PATCH:
            return web.json_response(
                status(
                    415,
                    "UnsupportedMediaType",
                    "the body of the request was in an unknown format - accepted media types "
                    "include: application/json-patch+json, application/merge-patch+json, "
                    "application/apply-patch+yaml",
                ),
                status=415,
            )
        try:
            patch = json.loads(seen.body)
        except ValueError as exc:
            return web.json_response(
                status(400, "BadRequest", f"error decoding patch: {exc}"), status=400
            )
        stored = self.pods.get((namespace, name))
        if stored is None:
            return web.json_response(
                status(404, "NotFound", f'pods "{name}" not found', name=name, kind="pods"),
                status=404,
            )
        updated = merge_patch(stored, patch)
        annotations = updated.get("metadata", {}).get("annotations") or {}
        for key, value in annotations.items():
            if not isinstance(value, str):
                return web.json_response(
                    status(
                        400,
                        "BadRequest",
                        "json: cannot unmarshal number into Go struct field "
                        "ObjectMeta.metadata.annotations of type string",
                    ),
                    status=400,
                )
            why = _bad_key(key)
            if why is not None:
                return web.json_response(
                    status(
                        422,
                        "Invalid",
                        f'Pod "{name}" is invalid: metadata.annotations: Invalid value: '
                        f'"{key}": {why}',
                        name=name,
                        kind="Pod",
                    ),
                    status=422,
                )
        meta = updated["metadata"]
        meta["resourceVersion"] = str(int(stored["metadata"]["resourceVersion"]) + 1)
        if not meta.get("annotations"):
            meta.pop("annotations", None)  # an emptied map is dropped, as the server does
        self.pods[(namespace, name)] = updated
        return web.json_response(updated)


@contextlib.asynccontextmanager
async def serve(api: ApiServer, tls: ssl.SSLContext) -> AsyncIterator[ApiServer]:
    """``api`` over TLS on a free loopback port (its ``url`` set) until the block ends."""
    runner = web.AppRunner(api.app(), access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls)
    await site.start()
    port = runner.addresses[0][1]
    api.url = f"https://127.0.0.1:{port}"
    try:
        yield api
    finally:
        for task in list(api.handling):
            task.cancel()
        await runner.cleanup()
