"""The REST client: GitHub's API through the agent's trust and proxy settings.

Policy:
- one ``aiohttp`` session for the agent's life (the daemon closes it); every request has
  ``github.request_timeout_seconds``, and a caller's deadline bounds all its attempts;
- 5xx answers, timeouts and connection failures are retried with tenacity's random
  exponential backoff, up to ``github.max_attempts``; a rate limit (403 or 429 with
  ``x-ratelimit-remaining: 0``, or a ``retry-after``) waits what GitHub says, unless
  that passes the deadline: then it fails at once, naming when the limit resets;
- 401 drops cached credentials and tries once more (an App token may have been revoked);
  then it fails, as 403 (the permission the caller needs is named), 404 and malformed
  JSON do, at once;
- answers are read up to :data:`MAX_ANSWER_BYTES`; ``Link: rel="next"`` pages are
  followed only on the API's own origin (the token never goes elsewhere), at most
  ``max_pages``;
- nothing secret is logged or put in an error.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import tenacity

from agent.config import models
from agent.config.github import GitHubSettings
from agent.github import credentials, errors
from agent.kits import tls

logger = logging.getLogger(__name__)

MAX_ANSWER_BYTES = 8 * 1024 * 1024
EXCHANGE_SECONDS = 30.0
"""Longest an App's installation token exchange may take, retries included."""
ACCEPT = "application/vnd.github+json"
API_VERSION = "2022-11-28"
_NEXT = re.compile(r'<([^>]+)>\s*;\s*rel="next"')


@dataclass(frozen=True)
class Answer:
    """One answer: its status, JSON body and headers."""

    status: int
    data: Any
    headers: Mapping[str, str]


class _Transient(Exception):
    """An attempt that may succeed later; ``error`` is what to raise if none does."""

    def __init__(self, error: errors.GitHubError, retry_after: float | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.retry_after = retry_after
        self.delay: float | None = None


def _rate_limit_wait(status: int, headers: Mapping[str, str]) -> float | None:
    """Seconds GitHub asks to wait, if this answer is a rate limit."""
    if status not in (403, 429):
        return None
    retry_after = headers.get("retry-after", "")
    if retry_after.isdigit():
        return float(retry_after)
    if headers.get("x-ratelimit-remaining") == "0":
        reset = headers.get("x-ratelimit-reset", "")
        if reset.isdigit():
            return max(0.0, int(reset) - time.time())
        return 60.0  # GitHub's advice when no reset is given
    return None


def _message(data: Any) -> str:
    said = data.get("message") if isinstance(data, dict) else None
    return said[:300] if isinstance(said, str) else ""


class Client:
    """GitHub's REST API for the agent; build one per agent, close it at shutdown."""

    def __init__(self, settings: Callable[[], models.Settings]) -> None:
        self._settings = settings
        self._session: aiohttp.ClientSession | None = None
        self._closed = False
        self._credentials: credentials.Credentials | None = None
        self._credentials_for: GitHubSettings | None = None
        self.requests = 0
        """Requests sent (every attempt, every page): the benches count them."""

    @property
    def api_url(self) -> str:
        return self._settings().github.api_url

    @property
    def identity(self) -> str:
        """Which API, as whom: agents that share a store share an answer that depends on
        access (a file "missing" may be one these credentials cannot see) only with
        agents of the same identity."""
        github = self._settings().github
        if github.token_file is not None:
            who = f"token {github.token_file}"
        else:
            who = f"app {github.app_id or github.client_id}/{github.installation_id}"
        return f"{github.api_url} {who}"

    def _session_for_use(self) -> aiohttp.ClientSession:
        if self._closed:
            raise errors.Unavailable("the agent is stopping: no more GitHub requests")
        if self._session is None:
            # Not trust_env: it would also read ~/.netrc and add its credentials. The
            # environment's proxies are read by _proxy instead.
            self._session = aiohttp.ClientSession()
        return self._session

    async def close(self) -> None:
        """Close the session for good (the daemon's shutdown)."""
        self._closed = True
        if self._session is not None:
            await self._session.close()

    def credentials(self) -> credentials.Credentials:
        """The configured credentials, rebuilt when a reload changed github's settings
        (an App's cached token is kept otherwise)."""
        github = self._settings().github
        if self._credentials is None or self._credentials_for != github:
            self._credentials = credentials.from_settings(github, self._exchange)
            self._credentials_for = github
        return self._credentials

    async def _exchange(self, path: str, jwt: str) -> dict[str, Any]:
        # Bounded: every request waits behind it (one exchange at a time).
        deadline = asyncio.get_running_loop().time() + EXCHANGE_SECONDS
        answer = await self.request(
            "POST", path, authorization=f"Bearer {jwt}", need="", deadline=deadline
        )
        if not isinstance(answer.data, dict):
            raise errors.BadAnswer(f"POST {path} answered no JSON object")
        return answer.data

    def _ssl(self) -> Any:
        bundle = self._settings().installer.ca_bundle
        try:
            return tls.context(str(bundle) if bundle else None)
        except tls.TrustError as exc:
            raise errors.GitHubError(
                f"installer.ca_bundle {bundle} cannot be loaded ({exc}); it applies to "
                "GitHub requests too"
            ) from exc

    def _proxy(self, url: str) -> str | None:
        installer = self._settings().installer
        proxy = installer.https_proxy if url.startswith("https:") else installer.http_proxy
        host = urllib.parse.urlsplit(url).hostname or ""
        if proxy is None:  # the environment's, with its no_proxy
            env = urllib.request.getproxies_environment()
            if urllib.request.proxy_bypass_environment(host, env):  # type: ignore[attr-defined]
                return None
            return env.get("https" if url.startswith("https:") else "http") or None
        if not proxy:
            return None  # '': none
        for entry in (installer.no_proxy or "").split(","):
            entry = entry.strip().lstrip(".")
            if entry and (host == entry or host.endswith("." + entry)):
                return None
        return proxy

    def url(self, path: str) -> str:
        """``path`` on the API (a full URL is kept as it is)."""
        return path if path.startswith(("https://", "http://")) else self.api_url + path

    def _same_origin(self, url: str) -> bool:
        mine, theirs = urllib.parse.urlsplit(self.api_url), urllib.parse.urlsplit(url)
        return (mine.scheme, mine.netloc) == (theirs.scheme, theirs.netloc)

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        need: str,
        deadline: float | None = None,
        authorization: str | None = None,
        accept: str = ACCEPT,
    ) -> Answer:
        """One request with its retries (see the module). ``need`` names the permission
        a 403 or 404 asks for (e.g. ``contents: read``); ``deadline`` is loop time."""
        settings = self._settings().github
        loop = asyncio.get_running_loop()
        waits = tenacity.wait_random_exponential(multiplier=0.5, max=30)

        def delay(state: tenacity.RetryCallState) -> float:
            # Computed once per failure, so stop() and wait() agree on the same sleep.
            exc = state.outcome.exception() if state.outcome else None
            if not isinstance(exc, _Transient):
                return 0.0
            if exc.delay is None:
                exc.delay = max(exc.retry_after or 0.0, waits(state))
            return exc.delay

        def stop(state: tenacity.RetryCallState) -> bool:
            if state.attempt_number >= settings.max_attempts:
                return True
            # No sleep that ends past the deadline, and no request sent after it.
            return deadline is not None and loop.time() + delay(state) + 0.1 >= deadline

        retried = 0
        try:
            async for attempt in tenacity.AsyncRetrying(
                stop=stop,
                wait=delay,
                retry=tenacity.retry_if_exception_type(_Transient),
                reraise=True,
            ):
                with attempt:
                    try:
                        return await self._once(
                            method, path, params, need, deadline, authorization, accept
                        )
                    except errors.BadCredentials:
                        # Once: a cached App token may be stale; a token file may rotate.
                        if authorization is not None or retried:
                            raise
                        retried += 1
                        self.credentials().forget()
                        raise _Transient(
                            errors.BadCredentials("GitHub refused the credentials (401)")
                        ) from None
        except _Transient as exc:
            raise exc.error from None
        raise AssertionError("unreachable: tenacity either returns or raises")

    async def _once(
        self,
        method: str,
        path: str,
        params: Mapping[str, str] | None,
        need: str,
        deadline: float | None,
        authorization: str | None,
        accept: str,
    ) -> Answer:
        settings = self._settings().github
        url = self.url(path)
        if not self._same_origin(url):
            raise errors.BadAnswer(f"{url} is not on github.api_url; the token stays home")
        if authorization is None:
            left = None if deadline is None else deadline - asyncio.get_running_loop().time()
            try:
                authorization = await asyncio.wait_for(
                    self.credentials().authorization(),
                    timeout=EXCHANGE_SECONDS + 5 if left is None else max(0.1, left),
                )
            except TimeoutError:
                raise errors.Unavailable(
                    "no GitHub App installation token in time (the exchange is slow or "
                    "rate-limited)"
                ) from None
        headers = {
            "Accept": accept,
            "X-GitHub-Api-Version": API_VERSION,
            "User-Agent": "runner-agent",
            "Authorization": authorization,
        }
        timeout = settings.request_timeout_seconds
        if deadline is not None:
            timeout = min(timeout, max(0.1, deadline - asyncio.get_running_loop().time()))
        shown = urllib.parse.urlsplit(url).path
        self.requests += 1
        try:
            async with self._session_for_use().request(
                method,
                url,
                params=params,
                headers=headers,
                ssl=self._ssl(),
                proxy=self._proxy(url),
                timeout=aiohttp.ClientTimeout(total=timeout),
                allow_redirects=False,
            ) as resp:
                raw = bytearray()
                async for chunk in resp.content.iter_chunked(64 * 1024):
                    raw += chunk
                    if len(raw) > MAX_ANSWER_BYTES:
                        raise errors.BadAnswer(
                            f"{method} {shown} answered more than {MAX_ANSWER_BYTES} bytes"
                        )
                status, answer_headers = resp.status, resp.headers
        except TimeoutError:
            raise _Transient(
                errors.Unavailable(f"{method} {shown}: no answer within {timeout:.0f} s")
            ) from None
        except aiohttp.ClientError as exc:
            # Not str(exc): it can carry a proxy's URL with its user and password.
            raise _Transient(
                errors.Unavailable(
                    f"{method} {shown}: cannot reach {self.api_url} ({type(exc).__name__})"
                )
            ) from None
        try:
            data = json.loads(raw) if raw else None
        except (ValueError, RecursionError):
            if status < 300:
                raise errors.BadAnswer(
                    f"{method} {shown} answered {status} with a body that is not JSON; is "
                    "github.api_url GitHub's API (https://HOST/api/v3 for GHES)?"
                ) from None
            data = None
        if status < 300:
            return Answer(status, data, answer_headers)
        return self._fail(method, shown, status, answer_headers, data, need)

    def _fail(
        self,
        method: str,
        shown: str,
        status: int,
        headers: Mapping[str, str],
        data: Any,
        need: str,
    ) -> Answer:
        said = _message(data)
        said = f": {said}" if said else ""
        wait = _rate_limit_wait(status, headers)
        if wait is not None:
            raise _Transient(
                errors.RateLimited(
                    f"{method} {shown} is rate-limited{said}; the limit resets in "
                    f"{wait:.0f} s (a GitHub App's installation has a higher limit than a "
                    "token)"
                ),
                retry_after=wait,
            )
        if status == 401:
            raise errors.BadCredentials(
                f"GitHub refused the credentials (401){said}; check github.token_file, or "
                "the App's id, installation and key"
            )
        grant = f"; grant {need} to the token or App" if need else ""
        if status == 403:
            raise errors.PermissionDenied(f"{method} {shown} is forbidden (403){said}{grant}")
        if status == 404:
            raise errors.NotFound(
                f"{method} {shown} was not found (404), or the credentials cannot see it{grant}"
            )
        if status >= 500:
            raise _Transient(errors.Unavailable(f"{method} {shown} answered {status}{said}"))
        raise errors.GitHubError(f"{method} {shown} answered {status}{said}")

    async def get_all(
        self,
        path: str,
        *,
        key: str,
        params: Mapping[str, str] | None = None,
        need: str,
        deadline: float | None = None,
        max_pages: int = 50,
    ) -> list[Any]:
        """Every item of a paginated list (``per_page`` 100, ``Link: rel="next"``),
        whose items are under ``key`` in each page."""
        items: list[Any] = []
        url: str | None = path
        query: Mapping[str, str] | None = {"per_page": "100", **(params or {})}
        for _ in range(max_pages):
            assert url is not None
            answer = await self.request("GET", url, params=query, need=need, deadline=deadline)
            page = answer.data.get(key) if isinstance(answer.data, dict) else None
            if not isinstance(page, list):
                raise errors.BadAnswer(f"GET {path} answered no {key!r} list")
            items.extend(page)
            found = _NEXT.search(answer.headers.get("link", ""))
            if found is None:
                return items
            url, query = found.group(1), None  # the next URL carries its own query
        raise errors.BadAnswer(f"GET {path} has more than {max_pages} pages; stopped there")
