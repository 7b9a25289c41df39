"""Downloading artifacts into a content-addressed cache: blocking, bounded, retried, verified.

Policy:
- blocking code on the standard library's ``urllib``; callers run it in a thread;
- only ``https`` and ``http`` URLs, before and after redirects; ``file://`` and the rest are
  refused, and so is a redirect from ``https`` down to ``http`` (it would let anyone on the
  path swap a checksum file and the artifact together);
- :class:`Policy` mirrors rewrite a URL by prefix, first match wins, before anything is sent;
  a mirror's ``user:password@`` goes as Basic auth to it alone, and every URL recorded
  (artifacts, so receipts and install logs), logged, reported or raised has it hidden;
- a body is hashed while it streams into a temporary file beside its final place, then
  checked, fsynced and renamed: the cache path holds complete, verified files or nothing;
- transient failures (refused or reset connections, timeouts, a stall mid-body, a body cut
  short, HTTP 5xx, 408, 429) are retried with capped exponential backoff and jitter, each
  retry logged as a warning; anything else (other 4xx, a hash mismatch, a body over
  ``max_bytes``, a bad scheme) fails at once.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import logging
import os
import re
import secrets
import stat
import urllib.error
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import tenacity

from agent.install.fetch import transport
from agent.install.fetch.transport import DownloadError, Policy
from agent.kits import progress
from agent.store import nofollow

__all__ = ["DownloadError", "Policy"]

DEFAULT_POLICY = Policy()

log = logging.getLogger(__name__)

_T = TypeVar("_T")
_CHUNK = 1024 * 1024
_CHECKSUM_LIMIT = 1024 * 1024
_HEX64 = re.compile(r"[0-9a-f]{64}")


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
    url: str
    """The URL fetched (after the mirror rewrite), credentials hidden: receipts and
    install logs record it."""


class DownloadCache:
    """Content-addressed: ``<root>/<sha256[:2]>/<sha256>``.

    Files appear only complete and verified (temp file in the same folder, fsync, rename).
    Temporary files are named ``.*.partial``; one left by a crash is never a cache hit.
    """

    def __init__(self, root: Path, *, store_root: Path | None = None) -> None:
        self.root = root
        # Opened from the store's root without following any link below it (the
        # operator's cache.root may itself be one); a lone cache from its own root.
        self._base = store_root or root
        self._parts = root.relative_to(self._base).parts

    def open_folder(self, sub: tuple[str, ...] = (), *, create: bool = False) -> int:
        """A descriptor of ``root/sub``, reached without following links."""
        return nofollow.open_dir(self._base, (*self._parts, *sub), create=create)

    def path_for(self, sha256: str) -> Path:
        # The digest becomes a path: anything but 64 lowercase hex could walk out of root.
        if not _HEX64.fullmatch(sha256):
            raise ValueError(f"not a sha256 digest (64 lowercase hex digits): {sha256!r}")
        return self.root / sha256[:2] / sha256

    def get(self, sha256: str) -> Path | None:
        path = self.path_for(sha256)
        try:
            fd = self.open_folder((path.parent.name,))
        except OSError:  # missing, or a link planted for a folder: not a hit
            return None
        try:
            st = os.stat(path.name, dir_fd=fd, follow_symlinks=False)
            if not stat.S_ISREG(st.st_mode):
                return None
            # Touched: the janitor keeps a download used within the last hour, even one
            # no receipt names (its entry was evicted and is being installed again).
            with contextlib.suppress(OSError):
                os.utime(path.name, dir_fd=fd, follow_symlinks=False)
        except OSError:
            return None
        finally:
            os.close(fd)
        return path


def fetch(
    url: str,
    cache: DownloadCache,
    *,
    sha256: str | None,
    policy: Policy = DEFAULT_POLICY,
    sha512: str | None = None,
) -> Artifact:
    """Download ``url`` into ``cache`` and return the verified artifact.

    With ``sha256`` known, a cache hit does no network I/O at all. With ``sha256=None`` the
    file is still stored under the digest computed while streaming; the caller verifies it,
    unless ``sha512`` is given: then the stream must have that sha512 (an upstream that
    publishes no sha256), and a mismatch keeps nothing. Raises :class:`DownloadError`.
    """
    target = rewrite(url, policy)
    if sha512 is not None:
        wanted = sha512.lower()
        if sha256 is not None or not _HEX128.fullmatch(wanted):
            raise transport.fatal(
                target, f"expected sha512 {sha512!r} is not 128 hex", "fix the manifest"
            )
        transport.check_scheme(target)
        return _retrying(
            target, policy, lambda: _download_once(target, cache, None, policy, sha512=wanted)
        )
    expected = sha256.lower() if sha256 is not None else None
    if expected is not None:
        if not _HEX64.fullmatch(expected):
            raise transport.fatal(
                target, f"expected sha256 {sha256!r} is not 64 hex", "fix the manifest"
            )
        hit = cache.get(expected)
        if hit is not None:
            return Artifact(hit, expected, hit.lstat().st_size, transport.shown(target))
    transport.check_scheme(target)
    return _retrying(target, policy, lambda: _download_once(target, cache, expected, policy))


def fetch_checksum(checksum_url: str, file_name: str, *, policy: Policy = DEFAULT_POLICY) -> str:
    """The lowercase digest that the checksum file at ``checksum_url`` lists for
    ``file_name``: a sha256 (64 hex digits) or, where that is all an upstream publishes, a
    sha512 (128; .NET's ``<release>-sha.txt``). The length says which.

    Reads GNU coreutils lines (``<hex>  <name>``, ``<hex> *<name>``, one space too) and BSD
    lines (``SHA256 (<name>) = <hex>``, ``SHA512 ...``); other lines are ignored. A file
    that holds one bare digest and nothing else (the per-file ``.sha256`` of Kubernetes'
    and Go's downloads) names no file: it is the digest of the one file its URL is for. Raises
    :class:`DownloadError`.
    """
    target = rewrite(checksum_url, policy)
    transport.check_scheme(target)
    body = _retrying(target, policy, lambda: _read_small(target, policy))
    bare = _BARE_DIGEST.fullmatch(body.decode("utf-8", errors="replace").strip())
    if bare is not None:
        return bare[0].lower()
    listed = {digest for name, digest in _checksum_lines(body) if _same_name(name, file_name)}
    # One file may list a name once per algorithm (yq's checksums-bsd: SHA256 and SHA512
    # lines): the sha256 is used where there is one; only two of one length contradict.
    found = {d for d in listed if len(d) == 64} or listed
    if len(found) > 1:
        advice = "the checksum file contradicts itself; report it upstream"
        raise transport.fatal(target, f"lists different digests for {file_name!r}", advice)
    if not found:
        advice = "check the name and version in the manifest, or the checksum URL"
        raise transport.fatal(target, f"has no sha256 or sha512 entry for {file_name!r}", advice)
    return found.pop()


def fetch_document(
    url: str, *, policy: Policy = DEFAULT_POLICY, limit: int = _CHECKSUM_LIMIT
) -> bytes:
    """The body of a small document (a components' manifest, a version index), at most
    ``limit`` bytes (1 MiB), fetched through the mirrors and retried like a checksum
    file. Raises :class:`DownloadError`."""
    target = rewrite(url, policy)
    transport.check_scheme(target)
    return _retrying(target, policy, lambda: _read_small(target, policy, limit))


# --- one attempt ----------------------------------------------------------------------


def _download_once(
    url: str,
    cache: DownloadCache,
    sha256: str | None,
    policy: Policy,
    *,
    sha512: str | None = None,
) -> Artifact:
    # With the digest known the temp file sits in its final folder; otherwise in the root.
    # Both are on the cache's file system, so the rename is atomic.
    # Every folder is opened by descriptor, never through a link (agent.store.nofollow):
    # a link planted at downloads/<xx> must not send archives out of the store.
    parts = (cache.path_for(sha256).parent.name,) if sha256 else ()
    digest = hashlib.sha256()
    other = hashlib.sha512() if sha512 is not None else None
    temp: str | None = None
    folder = -1
    try:
        folder = cache.open_folder(parts, create=True)
        temp = f".{secrets.token_hex(8)}.partial"
        descriptor = os.open(temp, _NEW, 0o644, dir_fd=folder)
        with os.fdopen(descriptor, "wb") as out:

            def sink(chunk: bytes) -> None:
                digest.update(chunk)
                if other is not None:
                    other.update(chunk)
                out.write(chunk)

            size = _transfer(url, policy, sink, limit=policy.max_bytes)
            out.flush()
            os.fsync(out.fileno())
        actual = digest.hexdigest()
        if sha256 is not None and actual != sha256:
            raise transport.ChecksumMismatch(url, expected=sha256, actual=actual, size=size)
        if other is not None and sha512 is not None and other.hexdigest() != sha512:
            raise transport.ChecksumMismatch(
                url, expected=sha512, actual=other.hexdigest(), size=size
            )
        final = cache.path_for(actual)
        into = cache.open_folder((final.parent.name,), create=True)
        try:
            os.replace(temp, final.name, src_dir_fd=folder, dst_dir_fd=into)
            temp = None
            os.fsync(into)  # the rename itself must survive a power cut
        finally:
            os.close(into)
    except OSError as exc:
        problem = f"cannot write to the download cache {cache.root}: {exc}"
        raise transport.fatal(url, problem, "check free space and permissions") from exc
    finally:
        if folder >= 0:
            if temp is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(temp, dir_fd=folder)
            os.close(folder)
    return Artifact(final, actual, size, transport.shown(url))


_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def _read_small(url: str, policy: Policy, limit: int = _CHECKSUM_LIMIT) -> bytes:
    body = bytearray()
    # A checksum file is no download to show: with the archive cached, a progress line
    # "downloading 0.0/0.0 MiB" read as if the cache had missed.
    _transfer(url, policy, body.extend, limit=limit, report=False)
    return bytes(body)


def _transfer(
    url: str, policy: Policy, sink: Callable[[bytes], None], *, limit: int, report: bool = True
) -> int:
    """Stream the body of ``url`` into ``sink``; return its size.

    Network failures become :class:`DownloadError` here; an error from ``sink`` (a full
    disk) passes through untouched, so it is never mistaken for a flaky server.
    """
    request = transport.request(url, policy)
    try:
        response = transport.opener(policy).open(request, timeout=policy.connect_timeout)
    except urllib.error.HTTPError as exc:
        with contextlib.closing(exc):  # it holds the connection open
            raise transport.http_error(url, exc) from exc
    except urllib.error.URLError as exc:
        raise transport.network_error(url, exc.reason, "connecting", policy) from exc
    except (OSError, http.client.HTTPException) as exc:
        raise transport.network_error(url, exc, "waiting for the response", policy) from exc
    with response:
        header = response.headers.get("Content-Length", "")
        declared = int(header) if header.isdigit() else None
        if declared is not None and declared > limit:
            raise transport.too_big(url, f"is {declared} bytes (Content-Length)", limit)
        received = 0
        shown = transport.shown(url)
        counter = progress.ByteCounter(shown, declared) if report and progress.active() else None
        while True:
            try:
                chunk = response.read(_CHUNK)
            except (OSError, http.client.HTTPException) as exc:
                raise transport.network_error(url, exc, f"after {received} bytes", policy) from exc
            if not chunk:
                break
            received += len(chunk)
            if received > limit:
                raise transport.too_big(url, f"is over {limit} bytes (counted)", limit)
            sink(chunk)
            if counter is not None:
                counter.add(len(chunk))
        if counter is not None:
            counter.finish()
    # http.client returns b"" rather than raising when a sized body ends early.
    if declared is not None and received < declared:
        raise transport.transient(url, f"body cut short: {received} of {declared} bytes")
    return received


# --- errors and retries ---------------------------------------------------------------


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
            transport.shown(url),
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

# sha256 (64 hex digits) or sha512 (128: Microsoft publishes only those for .NET).
_HEX = r"[0-9a-fA-F]{128}|[0-9a-fA-F]{64}"
_BARE_DIGEST = re.compile(_HEX)
_GNU_LINE = re.compile(rf"(?P<hex>{_HEX})\s[ *]?(?P<name>.+)")
_BSD_LINE = re.compile(rf"SHA(?:256|512) ?\((?P<name>.+)\) ?= ?(?P<hex>{_HEX})")
_HEX128 = re.compile(r"[0-9a-f]{128}")


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
