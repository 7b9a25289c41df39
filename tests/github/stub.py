"""A GitHub REST API stub on loopback that serves GitHub's published payloads.

The payloads are in ``fixtures/`` (their sources and quirks: ``fixtures/SOURCES.txt``).
The stub serves them under a base path (``/api/v3`` plays GitHub Enterprise Server), can
be told to fail a path first (a rate limit, a 5xx, malformed JSON, a 403), counts every
request, and checks an App's JWT with the test's own public key, as GitHub does.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import json
import time
from collections import Counter, defaultdict, deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

FIXTURES = Path(__file__).resolve().parent / "fixtures"
SHA = "a" * 40


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def content_payload(text: str, path: str = ".github/runner-config.yml") -> dict[str, Any]:
    """A contents-API answer for ``text``, in the published payload's shape (its own
    content is not decodable: see SOURCES.txt)."""
    payload = copy.deepcopy(fixture("repos-get-content-file.json"))
    encoded = base64.b64encode(text.encode()).decode()
    # GitHub wraps base64 at 60 columns with newlines.
    payload["content"] = "\n".join(encoded[i : i + 60] for i in range(0, len(encoded), 60))
    payload.update(name=path.rsplit("/", 1)[-1], path=path, size=len(text.encode()))
    return payload


@dataclass
class Failure:
    """An answer to give instead of the real one, once."""

    status: int
    body: bytes = b'{"message": "stub failure"}'
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    """Seconds to wait before answering (a stalled GitHub)."""


class Stub:
    """The stub's state: what it serves, what it was asked, what to fail."""

    def __init__(self, base: str = "") -> None:
        self.base = base
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.app_id = "12345"
        self.token = "ghs_" + "x" * 36
        self.job_token = "github_pat_" + "y" * 40
        self.files: dict[tuple[str, str, str], str] = {}
        self.jobs: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
        self.failures: dict[str, deque[Failure]] = defaultdict(deque)
        self.requests: Counter[str] = Counter()
        self.jwts: list[dict[str, Any]] = []
        self.url = ""

    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def credentials(self, folder: Path, *, app: bool = False) -> dict[str, Any]:
        """``github`` settings for this stub: a token file, or the App's key and ids,
        written into ``folder``."""
        if app:
            key = folder / "app.pem"
            key.write_bytes(self.key_pem())
            return {"app_id": int(self.app_id), "installation_id": 99, "private_key_file": str(key)}
        token = folder / "token"
        token.write_text(self.job_token + "\n")
        return {"token_file": str(token)}

    def fail(self, path: str, *failures: Failure) -> None:
        self.failures[path].extend(failures)

    def app(self) -> web.Application:
        app = web.Application()
        b = self.base
        app.router.add_post(b + "/app/installations/{id}/access_tokens", self._access_token)
        app.router.add_get(b + "/repos/{owner}/{repo}/contents/{path:.+}", self._contents)
        app.router.add_get(
            b + "/repos/{owner}/{repo}/actions/runs/{run}/attempts/{attempt}/jobs", self._jobs
        )
        for scope in ("/orgs/{org}", "/repos/{owner}/{repo}", "/enterprises/{enterprise}"):
            app.router.add_post(
                b + scope + "/actions/runners/registration-token", self._registration_token
            )
        return app

    async def _registration_token(self, request: web.Request) -> web.Response:
        failed = await self._failure(request)
        if failed is not None:
            return failed
        if not self._authorized(request):
            return web.json_response({"message": "Bad credentials"}, status=401)
        return web.json_response(fixture("create-registration-token.json"), status=201)

    async def _failure(self, request: web.Request) -> web.Response | None:
        path = request.path[len(self.base) :]
        self.requests[path] += 1
        queue = self.failures.get(path)
        if queue:
            f = queue.popleft()
            await asyncio.sleep(f.delay)
            return web.Response(status=f.status, body=f.body, headers=f.headers)
        return None

    def _authorized(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") in (
            f"Bearer {self.token}",
            f"Bearer {self.job_token}",
        )

    async def _access_token(self, request: web.Request) -> web.Response:
        failed = await self._failure(request)
        if failed is not None:
            return failed
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        try:
            claims = jwt.decode(
                token,
                self.key.public_key(),
                algorithms=["RS256"],
                options={"require": ["iat", "exp", "iss"]},
            )
        except jwt.PyJWTError as exc:
            return web.json_response(
                {"message": f"A JSON web token could not be decoded: {exc}"}, status=401
            )
        now = time.time()
        # GitHub's rules: iat not in the future (60 s drift allowed), exp at most 10 min.
        if scheme != "Bearer" or claims["iat"] > now + 60 or claims["exp"] - now > 600:
            return web.json_response({"message": "'Expiration time' claim is too far"}, status=401)
        if str(claims["iss"]) != self.app_id:
            return web.json_response({"message": "Integration not found"}, status=401)
        self.jwts.append(claims)
        expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now + 3600))
        return web.json_response(
            {"token": self.token, "expires_at": expires, "permissions": {"contents": "read"}},
            status=201,
        )

    async def _contents(self, request: web.Request) -> web.Response:
        failed = await self._failure(request)
        if failed is not None:
            return failed
        if not self._authorized(request):
            return web.json_response({"message": "Bad credentials"}, status=401)
        repo = f"{request.match_info['owner']}/{request.match_info['repo']}"
        key = (repo, request.query.get("ref", ""), request.match_info["path"])
        if key not in self.files:
            return web.json_response({"message": "Not Found"}, status=404)
        return web.json_response(content_payload(self.files[key], key[2]))

    async def _jobs(self, request: web.Request) -> web.Response:
        failed = await self._failure(request)
        if failed is not None:
            return failed
        if not self._authorized(request):
            return web.json_response({"message": "Bad credentials"}, status=401)
        info = request.match_info
        key = (f"{info['owner']}/{info['repo']}", info["run"], info["attempt"])
        jobs = self.jobs.get(key, [])
        per_page = int(request.query.get("per_page", "30"))
        page = int(request.query.get("page", "1"))
        chunk = jobs[(page - 1) * per_page : page * per_page]
        headers = {}
        if page * per_page < len(jobs):
            nxt = request.url.update_query({"page": str(page + 1), "per_page": str(per_page)})
            headers["Link"] = f'<{nxt}>; rel="next"'
        return web.json_response({"total_count": len(jobs), "jobs": chunk}, headers=headers)


def job(
    runner_name: str, job_id: int, labels: list[str], status: str = "in_progress"
) -> dict[str, Any]:
    """The published job payload with this runner, id, labels and status."""
    item = copy.deepcopy(fixture("list-jobs-for-workflow-run-attempt.json")["jobs"][0])
    item.update(id=job_id, runner_name=runner_name, labels=labels, status=status)
    return item


@contextlib.asynccontextmanager
async def serve(served: Stub) -> AsyncIterator[Stub]:
    """``served`` on a free loopback port (its ``url`` set) until the block ends."""
    runner = web.AppRunner(served.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    served.url = f"http://127.0.0.1:{port}{served.base}"
    try:
        yield served
    finally:
        await runner.cleanup()
