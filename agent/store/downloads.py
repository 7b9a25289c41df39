"""Downloading artifacts into a content-addressed cache: blocking, bounded, retried, verified.

Policy:
- blocking code on the standard library's ``urllib``; callers run it in a thread;
- only ``https`` and ``http`` URLs, before and after redirects; ``file://`` and the rest are
  refused, and so is a redirect from ``https`` down to ``http`` (it would let anyone on the
  path swap a checksum file and the artifact together);
- :class:`Policy` mirrors rewrite a URL by prefix, first match wins, before anything is sent;
- a body is hashed while it streams into a temporary file beside its final place, then
  checked, fsynced and renamed: the cache path holds complete, verified files or nothing;
- transient failures (refused or reset connections, timeouts, a stall mid-body, a body cut
  short, HTTP 5xx, 408, 429) are retried with capped exponential backoff and jitter, each
  retry logged as a warning; anything else (other 4xx, a hash mismatch, a body over
  ``max_bytes``, a bad scheme) fails at once.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.client
import logging
import os
import re
import socket
import ssl
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import tenacity

from agent.store import network, progress

log = logging.getLogger(__name__)

_T = TypeVar("_T")
_CHUNK = 1024 * 1024
_CHECKSUM_LIMIT = 1024 * 1024
_SCHEMES = ("https", "http")
_HEX64 = re.compile(r"[0-9a-f]{64}")


class DownloadError(Exception):
    """A download failed: :attr:`url`, what failed, what to do, and whether to try again."""

    def __init__(
        self,
        url: str,
        problem: str,
        advice: str,
        *,
        transient: bool,
        retry_after: float | None = None,
    ) -> None:
        self.url = url
        self.problem = problem
        self.advice = advice
        self.transient = transient
        self.retry_after = retry_after  # seconds the server asked us to wait (429)
        super().__init__(f"{_shown(url)}: {problem}; {advice}")


def _fatal(url: str, problem: str, advice: str) -> DownloadError:
    return DownloadError(url, problem, advice, transient=False)


def _transient(url: str, problem: str, *, retry_after: float | None = None) -> DownloadError:
    return DownloadError(url, problem, "retrying may help", transient=True, retry_after=retry_after)


@dataclass(frozen=True)
class Policy:
    """How downloads behave; times in seconds, sizes in bytes."""

    connect_timeout: float = 10.0  # to open the connection (and the TLS handshake)
    stall_timeout: float = 30.0  # no byte for this long = a stalled server
    attempts: int = 4  # total tries for transient errors
    backoff_initial: float = 0.5  # first wait; doubles per try, plus jitter
    backoff_max: float = 8.0  # cap on any wait, Retry-After included
    max_bytes: int = 16 * 1024**3  # bodies larger than this are refused
    mirrors: tuple[tuple[str, str], ...] = ()  # (prefix, replacement); first match wins
    user_agent: str = "runner-agent"
    network: network.Network = field(default_factory=network.Network)


def rewrite(url: str, policy: Policy) -> str:
    """``url`` with the first matching mirror prefix replaced, or unchanged."""
    for prefix, replacement in policy.mirrors:
        if url.startswith(prefix):
            return replacement + url[len(prefix) :]
    return url


@dataclass(frozen=True)
class Artifact:
    """A verified file in the download cache."""

    path: Path
    sha256: str
    size: int
    url: str  # the URL actually fetched (after mirror rewrite)


class DownloadCache:
    """Content-addressed: ``<root>/<sha256[:2]>/<sha256>``.

    Files appear only complete and verified (temp file in the same folder, fsync, rename).
    Temporary files are named ``.*.partial``; one left by a crash is never a cache hit.
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    def path_for(self, sha256: str) -> Path:
        # The digest becomes a path: anything but 64 lowercase hex could walk out of root.
        if not _HEX64.fullmatch(sha256):
            raise ValueError(f"not a sha256 digest (64 lowercase hex digits): {sha256!r}")
        return self.root / sha256[:2] / sha256

    def get(self, sha256: str) -> Path | None:
        path = self.path_for(sha256)
        return path if path.is_file() else None


def fetch(
    url: str, cache: DownloadCache, *, sha256: str | None, policy: Policy = Policy()
) -> Artifact:
    """Download ``url`` into ``cache`` and return the verified artifact.

    With ``sha256`` known, a cache hit does no network I/O at all. With ``sha256=None`` the
    file is still stored under the digest computed while streaming; the caller verifies it.
    Raises :class:`DownloadError`.
    """
    target = rewrite(url, policy)
    expected = sha256.lower() if sha256 is not None else None
    if expected is not None:
        if not _HEX64.fullmatch(expected):
            raise _fatal(target, f"expected sha256 {sha256!r} is not 64 hex", "fix the manifest")
        hit = cache.get(expected)
        if hit is not None:
            return Artifact(hit, expected, hit.stat().st_size, target)
    _check_scheme(target)
    return _retrying(target, policy, lambda: _download_once(target, cache, expected, policy))


def fetch_checksum(checksum_url: str, file_name: str, *, policy: Policy = Policy()) -> str:
    """The lowercase sha256 that the checksum file at ``checksum_url`` lists for ``file_name``.

    Reads GNU coreutils lines (``<hex>  <name>``, ``<hex> *<name>``) and BSD lines
    (``SHA256 (<name>) = <hex>``); other lines are ignored. Raises :class:`DownloadError`.
    """
    target = rewrite(checksum_url, policy)
    _check_scheme(target)
    body = _retrying(target, policy, lambda: _read_small(target, policy))
    found = {digest for name, digest in _checksum_lines(body) if _same_name(name, file_name)}
    if len(found) > 1:
        advice = "the checksum file contradicts itself; report it upstream"
        raise _fatal(target, f"lists different digests for {file_name!r}", advice)
    if not found:
        advice = "check the name and version in the manifest, or the checksum URL"
        raise _fatal(target, f"has no sha256 entry for {file_name!r}", advice)
    return found.pop()


# --- one attempt ----------------------------------------------------------------------


def _download_once(url: str, cache: DownloadCache, sha256: str | None, policy: Policy) -> Artifact:
    # With the digest known the temp file sits in its final folder; otherwise in the root.
    # Both are on the cache's file system, so the rename is atomic.
    folder = cache.path_for(sha256).parent if sha256 else cache.root
    digest = hashlib.sha256()
    temp: str | None = None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        descriptor, temp = tempfile.mkstemp(dir=folder, prefix=".", suffix=".partial")
        with os.fdopen(descriptor, "wb") as out:

            def sink(chunk: bytes) -> None:
                digest.update(chunk)
                out.write(chunk)

            size = _transfer(url, policy, sink, limit=policy.max_bytes)
            out.flush()
            os.fsync(out.fileno())
        actual = digest.hexdigest()
        if sha256 is not None and actual != sha256:
            problem = f"sha256 mismatch: expected {sha256}, got {actual} ({size} bytes)"
            raise _fatal(url, problem, "either the artifact or the manifest is wrong")
        final = cache.path_for(actual)
        final.parent.mkdir(exist_ok=True)
        os.replace(temp, final)
        temp = None
        _fsync_folder(final.parent)  # the rename itself must survive a power cut
    except OSError as exc:
        problem = f"cannot write to the download cache {cache.root}: {exc}"
        raise _fatal(url, problem, "check free space and permissions") from exc
    finally:
        if temp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
    return Artifact(final, actual, size, url)


def _read_small(url: str, policy: Policy) -> bytes:
    body = bytearray()
    _transfer(url, policy, body.extend, limit=_CHECKSUM_LIMIT)
    return bytes(body)


def _transfer(url: str, policy: Policy, sink: Callable[[bytes], None], *, limit: int) -> int:
    """Stream the body of ``url`` into ``sink``; return its size.

    Network failures become :class:`DownloadError` here; an error from ``sink`` (a full
    disk) passes through untouched, so it is never mistaken for a flaky server.
    """
    request = urllib.request.Request(  # noqa: S310 - the scheme was checked
        url, headers={"User-Agent": policy.user_agent, "Accept-Encoding": "identity"}
    )
    try:
        response = _opener(policy).open(request, timeout=policy.connect_timeout)
    except urllib.error.HTTPError as exc:
        with contextlib.closing(exc):  # it holds the connection open
            raise _http_error(url, exc) from exc
    except urllib.error.URLError as exc:
        raise _network_error(url, exc.reason, "connecting", policy) from exc
    except (OSError, http.client.HTTPException) as exc:
        raise _network_error(url, exc, "waiting for the response", policy) from exc
    with response:
        header = response.headers.get("Content-Length", "")
        declared = int(header) if header.isdigit() else None
        if declared is not None and declared > limit:
            raise _too_big(url, f"is {declared} bytes (Content-Length)", limit)
        received = 0
        counter = progress.ByteCounter(url, declared) if progress.active() else None
        while True:
            try:
                chunk = response.read(_CHUNK)
            except (OSError, http.client.HTTPException) as exc:
                raise _network_error(url, exc, f"after {received} bytes", policy) from exc
            if not chunk:
                break
            received += len(chunk)
            if received > limit:
                raise _too_big(url, f"is over {limit} bytes (counted)", limit)
            sink(chunk)
            if counter is not None:
                counter.add(len(chunk))
        if counter is not None:
            counter.finish()
    # http.client returns b"" rather than raising when a sized body ends early.
    if declared is not None and received < declared:
        raise _transient(url, f"body cut short: {received} of {declared} bytes")
    return received


# --- URLs, redirects and the opener ---------------------------------------------------


def _shown(url: str) -> str:
    # Credentials in a mirror URL must not reach logs or error messages.
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{parts.username}:***@{host}").geturl()


def _check_scheme(url: str) -> None:
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in _SCHEMES:
        raise _fatal(url, f"scheme {scheme!r} is not allowed", "use an https:// URL")


_REDIRECTS = "redirects are followed to https only (or http from http); fix the URL"


class _Redirects(urllib.request.HTTPRedirectHandler):
    # urllib itself refuses schemes other than http, https and ftp (an HTTPError 3xx).
    def redirect_request(
        self, req: urllib.request.Request, fp: Any, code: int, msg: str, headers: Any, newurl: str
    ) -> urllib.request.Request | None:
        old = urllib.parse.urlsplit(req.full_url).scheme.lower()
        new = urllib.parse.urlsplit(newurl).scheme.lower()
        if new not in _SCHEMES or (old == "https" and new == "http"):
            fp.close()  # urllib would have handed it to an HTTPError; nobody else closes it
            problem = f"redirected to {_shown(newurl)!r}, which is not allowed"
            raise _fatal(req.full_url, problem, _REDIRECTS)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class _HTTPConnection(http.client.HTTPConnection):
    """Connects within the connect timeout, then waits at most ``stall`` for each read."""

    def __init__(self, *args: Any, stall: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._stall = stall

    def connect(self) -> None:
        super().connect()
        self.sock.settimeout(self._stall)


class _HTTPSConnection(http.client.HTTPSConnection):
    """As :class:`_HTTPConnection`, after the TLS handshake."""

    def __init__(self, *args: Any, stall: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._stall = stall

    def connect(self) -> None:
        super().connect()
        self.sock.settimeout(self._stall)


class _Handler(urllib.request.AbstractHTTPHandler):
    """Opens http and https with the connections above; verifies TLS certificates."""

    def __init__(self, stall: float, tls: ssl.SSLContext) -> None:
        super().__init__()
        self._stall = stall
        self._tls = tls

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(functools.partial(_HTTPConnection, stall=self._stall), req)

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        connection = functools.partial(_HTTPSConnection, stall=self._stall)
        return self.do_open(connection, req, context=self._tls)

    http_request = https_request = urllib.request.AbstractHTTPHandler.do_request_


def _opener(policy: Policy) -> urllib.request.OpenerDirector:
    # Built by hand rather than build_opener(), which would add file:, ftp: and data:.
    opener = urllib.request.OpenerDirector()
    for handler in (
        policy.network.proxy_handler(),
        _Handler(policy.stall_timeout, policy.network.ssl_context()),
        urllib.request.HTTPDefaultErrorHandler(),
        _Redirects(),
        urllib.request.HTTPErrorProcessor(),
    ):
        opener.add_handler(handler)
    return opener


# --- errors and retries ---------------------------------------------------------------


def _too_big(url: str, what: str, limit: int) -> DownloadError:
    advice = "check the URL, or raise max_bytes if the artifact really is this big"
    return _fatal(url, f"body {what}; the limit is {limit}", advice)


def _http_error(url: str, exc: urllib.error.HTTPError) -> DownloadError:
    status = f"HTTP {exc.code} {exc.reason}"
    if exc.code == 429:
        retry_after = exc.headers.get("Retry-After", "").strip()
        seconds = float(retry_after) if retry_after.isdigit() else None
        return _transient(url, status, retry_after=seconds)
    if exc.code >= 500 or exc.code == 408:
        return _transient(url, status)
    if exc.code == 404:
        advice = "check the URL, the version and the mirror settings"
    elif 300 <= exc.code < 400:
        advice = _REDIRECTS
    elif exc.code in (401, 403):
        advice = "access denied; check the URL and the mirror's access rules"
    else:
        advice = "the server refused the request; check the URL and the mirror settings"
    return _fatal(url, status, advice)


def _network_error(url: str, reason: object, phase: str, policy: Policy) -> DownloadError:
    if isinstance(reason, ssl.SSLCertVerificationError):
        problem = f"TLS certificate not trusted: {reason.verify_message}"
        return _fatal(url, problem, "add its CA to installer.ca_bundle (a PEM file) or fix the URL")
    if isinstance(reason, socket.gaierror) and reason.errno != socket.EAI_AGAIN:
        return _fatal(url, f"cannot resolve the host: {reason.strerror}", "check the URL and DNS")
    if isinstance(reason, TimeoutError):
        limit = policy.connect_timeout if phase == "connecting" else policy.stall_timeout
        return _transient(url, f"no data for {limit:g}s {phase}; the server stalled")
    if isinstance(reason, OSError | http.client.HTTPException):
        return _transient(url, f"{type(reason).__name__} {phase}: {reason}".rstrip(": "))
    # urllib gives a bare string for requests it cannot make at all (an unknown URL type).
    return _fatal(url, f"cannot be fetched: {reason}", "check the URL")


def _wait(policy: Policy) -> Callable[[tenacity.RetryCallState], float]:
    # Composed rather than wait_exponential_jitter, whose arguments differ across releases.
    backoff = tenacity.wait_exponential(multiplier=policy.backoff_initial) + tenacity.wait_random(
        0, policy.backoff_initial
    )

    def wait(state: tenacity.RetryCallState) -> float:
        failure = state.outcome.exception() if state.outcome else None
        if isinstance(failure, DownloadError) and failure.retry_after is not None:
            return min(failure.retry_after, policy.backoff_max)
        return min(backoff(state), policy.backoff_max)

    return wait


def _retrying(url: str, policy: Policy, attempt: Callable[[], _T]) -> _T:
    def transient(exc: BaseException) -> bool:
        return isinstance(exc, DownloadError) and exc.transient

    def warn(state: tenacity.RetryCallState) -> None:
        failure = state.outcome.exception() if state.outcome else None
        pause = state.next_action.sleep if state.next_action else 0.0
        reason = failure.problem if isinstance(failure, DownloadError) else failure
        log.warning(
            "download of %s failed (attempt %d of %d): %s; retrying in %.2fs",
            _shown(url),
            state.attempt_number,
            policy.attempts,
            reason,
            pause,
        )

    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(max(1, policy.attempts)),
        wait=_wait(policy),
        retry=tenacity.retry_if_exception(transient),
        before_sleep=warn,
    )
    try:
        return retrying(attempt)
    except tenacity.RetryError as exc:
        last = exc.last_attempt.exception()
        assert isinstance(last, DownloadError)  # only transient DownloadErrors are retried
        raise DownloadError(
            last.url,
            f"{last.problem} (gave up after {exc.last_attempt.attempt_number} attempts)",
            "the server or the network keeps failing; try again later or set a mirror",
            transient=True,
        ) from last


# --- checksum files and the file system -----------------------------------------------

_GNU_LINE = re.compile(r"(?P<hex>[0-9a-fA-F]{64})\s[ *]?(?P<name>.+)")
_BSD_LINE = re.compile(r"SHA256 ?\((?P<name>.+)\) ?= ?(?P<hex>[0-9a-fA-F]{64})")


def _checksum_lines(body: bytes) -> list[tuple[str, str]]:
    entries = []
    for raw in body.decode("utf-8", errors="replace").splitlines():
        line = raw.strip()
        match = _GNU_LINE.fullmatch(line) or _BSD_LINE.fullmatch(line)
        if match is not None:  # else a comment, a signature block, or another algorithm
            entries.append((match["name"], match["hex"].lower()))
    return entries


def _same_name(listed: str, wanted: str) -> bool:
    return listed == wanted or listed.removeprefix("./") == wanted.removeprefix("./")


def _fsync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
