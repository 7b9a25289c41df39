"""One HTTP exchange for a download: the policy, the opener, and how failures are told.

Policy: connections open within ``connect_timeout`` and then wait at most
``stall_timeout`` per read; redirects stay on https (or http from http); the proxies and
trust come from :mod:`agent.install.fetch.network`. Every failure becomes a
:class:`DownloadError` that says whether trying again may help (refused or reset
connections, timeouts, 5xx, 408, 429) or not (other 4xx, an untrusted certificate, an
unknown host), with what to do about it.
"""

from __future__ import annotations

import base64
import functools
import http.client
import socket
import ssl
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from agent.install.fetch import credentials, network
from agent.kits import urls

_SCHEMES = ("https", "http")


class DownloadError(Exception):
    """A download failed: :attr:`url`, what failed, what to do, and whether to try again.

    :attr:`url` and the message have any credentials in a URL hidden: the error is
    logged, sent to clients and written into install logs."""

    def __init__(
        self,
        url: str,
        problem: str,
        advice: str,
        *,
        transient: bool,
        retry_after: float | None = None,
    ) -> None:
        self.url = shown(url)
        self.problem = urls.hide_urls(problem)
        self.advice = advice
        self.transient = transient
        self.retry_after = retry_after  # seconds the server asked us to wait (429)
        super().__init__(f"{self.url}: {self.problem}; {advice}")


class ChecksumMismatch(DownloadError):
    """The artifact's sha256 is not the one the manifest (or its checksum file) pins:
    nothing is kept, and retrying the same URL will not help."""

    def __init__(self, url: str, *, expected: str, actual: str, size: int) -> None:
        self.expected, self.actual, self.size = expected, actual, size
        super().__init__(
            url,
            f"{'sha512' if len(expected) == 128 else 'sha256'} mismatch: expected {expected}, "
            f"got {actual} ({size} bytes)",
            "either the artifact or the manifest is wrong",
            transient=False,
        )


class LockViolation(DownloadError):
    """The artifact is not the one the repository's lock file pins (trusted on first
    use): nothing is installed from it (the download cache, keyed by content, may keep
    the bytes); either the upstream (or a mirror) changed it, or the lock was edited."""

    def __init__(self, url: str, *, what: str, locked: str, actual: str) -> None:
        self.locked, self.actual = locked, actual
        super().__init__(
            url,
            f"{what} is {actual}, but the lock file pins {locked}",
            "the artifact changed since the lock was written: if that is expected, run "
            "runner-agent features lock --upgrade and review the diff",
            transient=False,
        )


def fatal(url: str, problem: str, advice: str) -> DownloadError:
    return DownloadError(url, problem, advice, transient=False)


def transient(url: str, problem: str, *, retry_after: float | None = None) -> DownloadError:
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
    credentials: credentials.Credentials = field(default_factory=credentials.Credentials)


# --- URLs, redirects and the opener ---------------------------------------------------


def shown(url: str) -> str:
    """``url`` as logs, errors, receipts and progress show it: credentials hidden."""
    return urls.hide_url(url)


def request(url: str, policy: Policy) -> urllib.request.Request:
    """The request for ``url``, with its credentials: a mirror's ``user:password@`` sent
    as Basic auth, else those :attr:`Policy.credentials` gives for it (a header file,
    netrc). Raises :class:`DownloadError` (not transient) for an unusable credentials
    file.

    urllib takes ``user:password@host`` for the host name (and fails to resolve it);
    the headers are unredirected, so a redirect to another host never carries them (see
    :class:`_Redirects` for one to the same origin).
    """
    parts = urllib.parse.urlsplit(url)
    headers = {"User-Agent": policy.user_agent, "Accept-Encoding": "identity"}
    if "@" not in parts.netloc:
        made = urllib.request.Request(url, headers=headers)  # noqa: S310 - scheme checked
        try:
            extra = policy.credentials.for_url(url)
        except credentials.CredentialError as exc:
            raise fatal(
                url, str(exc), "fix the file, or the installer setting that names it"
            ) from None
        for name, value in extra.items():
            made.add_unredirected_header(name, value)
        return made
    userinfo, _, host = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    bare = parts._replace(netloc=host).geturl()
    made = urllib.request.Request(bare, headers=headers)  # noqa: S310 - scheme checked
    if not userinfo:  # "https://@host/": nothing to send
        return made
    pair = f"{urllib.parse.unquote(user)}:{urllib.parse.unquote(password)}"
    made.add_unredirected_header("Authorization", _basic(pair))
    return made


def _basic(pair: str) -> str:
    return "Basic " + base64.b64encode(pair.encode()).decode("ascii")


def _same_origin(one: str, other: str) -> bool:
    def origin(url: str) -> tuple[str, str | None, int | None]:
        parts = urllib.parse.urlsplit(url)
        scheme = parts.scheme.lower()
        return scheme, parts.hostname, parts.port or {"http": 80, "https": 443}.get(scheme)

    try:
        return origin(one) == origin(other)
    except ValueError:  # a port that is no number: no origin to share
        return False


def check_scheme(url: str) -> None:
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in _SCHEMES:
        raise fatal(url, f"scheme {scheme!r} is not allowed", "use an https:// URL")


REDIRECTS = "redirects are followed to https only (or http from http); fix the URL"


class _Redirects(urllib.request.HTTPRedirectHandler):
    # urllib itself refuses schemes other than http, https and ftp (an HTTPError 3xx).
    def redirect_request(
        self, req: urllib.request.Request, fp: Any, code: int, msg: str, headers: Any, newurl: str
    ) -> urllib.request.Request | None:
        old = urllib.parse.urlsplit(req.full_url).scheme.lower()
        new = urllib.parse.urlsplit(newurl).scheme.lower()
        if new not in _SCHEMES or (old == "https" and new == "http"):
            fp.close()  # urllib would have handed it to an HTTPError; nobody else closes it
            problem = f"redirected to {shown(newurl)!r}, which is not allowed"
            raise fatal(req.full_url, problem, REDIRECTS)
        follow = super().redirect_request(req, fp, code, msg, headers, newurl)
        if follow is not None and _same_origin(follow.full_url, req.full_url):
            # A mirror that redirects within itself (to a storage path) still wants its
            # credentials (only they are unredirected headers); another origin never gets
            # them, as curl does it.
            for name, value in req.unredirected_hdrs.items():
                follow.add_unredirected_header(name, value)
        return follow


class _Stalling:
    """Connects within the connect timeout, then waits at most ``stall`` for each read
    (after the TLS handshake, for https)."""

    sock: Any

    def __init__(self, *args: Any, stall: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._stall = stall

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        self.sock.settimeout(self._stall)


class _HTTPConnection(_Stalling, http.client.HTTPConnection):
    pass


class _HTTPSConnection(_Stalling, http.client.HTTPSConnection):
    pass


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


def opener(policy: Policy) -> urllib.request.OpenerDirector:
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


class TooBig(DownloadError):
    """The body is over the limit (the policy's, or a locked artifact's size)."""

    def __init__(self, url: str, what: str, limit: int) -> None:
        self.limit = limit
        super().__init__(
            url,
            f"body {what}; the limit is {limit}",
            "check the URL, or raise max_bytes if the artifact really is this big",
            transient=False,
        )


def too_big(url: str, what: str, limit: int) -> DownloadError:
    return TooBig(url, what, limit)


def http_error(url: str, exc: urllib.error.HTTPError) -> DownloadError:
    status = f"HTTP {exc.code} {exc.reason}"
    if exc.code == 429:
        retry_after = exc.headers.get("Retry-After", "").strip()
        seconds = float(retry_after) if retry_after.isdigit() else None
        return transient(url, status, retry_after=seconds)
    if exc.code >= 500 or exc.code == 408:
        return transient(url, status)
    if exc.code == 404:
        advice = "check the URL, the version and the mirror settings"
    elif 300 <= exc.code < 400:
        advice = REDIRECTS
    elif exc.code in (401, 403):
        advice = (
            "access denied; check the URL, and the credentials for it (user:password@ in "
            "the mirror URL, installer.mirror_headers or installer.netrc)"
        )
    else:
        advice = "the server refused the request; check the URL and the mirror settings"
    return fatal(url, status, advice)


def network_error(url: str, reason: object, phase: str, policy: Policy) -> DownloadError:
    if isinstance(reason, ssl.SSLCertVerificationError):
        problem = f"TLS certificate not trusted: {reason.verify_message}"
        return fatal(url, problem, "add its CA to installer.ca_bundle (a PEM file) or fix the URL")
    if isinstance(reason, socket.gaierror) and reason.errno != socket.EAI_AGAIN:
        return fatal(url, f"cannot resolve the host: {reason.strerror}", "check the URL and DNS")
    if isinstance(reason, TimeoutError):
        limit = policy.connect_timeout if phase == "connecting" else policy.stall_timeout
        return transient(url, f"no data for {limit:g}s {phase}; the server stalled")
    if isinstance(reason, OSError | http.client.HTTPException):
        return transient(url, f"{type(reason).__name__} {phase}: {reason}".rstrip(": "))
    # urllib gives a bare string for requests it cannot make at all (an unknown URL type).
    return fatal(url, f"cannot be fetched: {reason}", "check the URL")
