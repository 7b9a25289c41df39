"""Upstream version indexes, fetched through the mirrors and cached on the shared store.

Policy:
- an index is consulted only for a requested version the catalog's own list does not
  meet (:func:`agent.catalog.resolver.wanting_index`): what the catalog knows resolves
  offline, as before;
- the index is fetched through the installer's mirrors, proxies and credentials, at most
  :data:`agent.catalog.indexes.MAX_BYTES`, and kept on the store
  (``.runner-agent/indexes/<sha256 of its URL>.json``) for ``ttl`` seconds, so a
  thousand pods asking for ``node@19`` fetch it about once per TTL, not once each; it is
  written atomically and read without following links, like every store file;
- an index that cannot be fetched or parsed falls back to the stale copy, if any, and
  else to the catalog's list; either way the plan carries a warning that says so. An
  index never fails a resolution by itself: a version neither lists is refused by the
  resolver, naming what is known;
- a cached copy is believed only if it is a regular file of the agent's own uid, with
  one link, not writable by group or others, in a folder of the agent's own, and dated
  no later than now (plus a minute of clock slack): a job that can write the store
  cannot plant one. It is parsed as strictly as a fresh one;
- one agent fetches an index at a time (a lock per URL), each fetch is tried at most
  twice, and a failed one is not tried again for :data:`RETRY_AFTER` seconds, so a
  flood of ``node@99`` requests costs one fetch a minute, not one each.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import logging
import os
import stat
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from agent.catalog import indexes, manifest
from agent.config import models as config_models
from agent.install import protocol
from agent.install.fetch import downloads
from agent.kits import urls
from agent.store import layout, nofollow

logger = logging.getLogger(__name__)

_FOLDER = "indexes"
_CLOCK_SLACK = 60.0
RETRY_AFTER = 60.0
"""Seconds a failed fetch of an index is not tried again (in this process)."""
_LOCKS: collections.defaultdict[str, threading.Lock] = collections.defaultdict(threading.Lock)
_FAILED: dict[str, float] = {}
_GUARD = threading.Lock()


@dataclass
class Looked:
    """What the indexes gave: per feature its versions, each with the template vars the
    index gives it (:func:`agent.catalog.indexes.parse_vars`), and warnings for the plan."""

    versions: dict[str, dict[str, dict[str, str]]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class VersionIndexes:
    """Fetches and caches the version indexes features name (see the module's policy).
    Blocking: call it from a thread, never on the event loop."""

    store_root: Path | None
    policy: downloads.Policy
    ttl: float = 3600.0

    def lookup(self, features: Sequence[manifest.Feature]) -> Looked:
        """The versions each feature's index lists; warnings where one fell back."""
        looked = Looked()
        for feature in features:
            if feature.version_index is None:
                continue
            found, warning = self._one(feature.id, feature.version_index)
            if found is not None:
                looked.versions[feature.id] = found
            if warning is not None:
                logger.warning("%s", warning)
                looked.warnings.append(warning)
        return looked

    def _one(
        self, ident: str, index: manifest.VersionIndex
    ) -> tuple[dict[str, dict[str, str]] | None, str | None]:
        with _GUARD:
            lock = _LOCKS[index.url]
        with lock:  # another thread fetching the same index: take its answer
            return self._locked(ident, index)

    def _locked(
        self, ident: str, index: manifest.VersionIndex
    ) -> tuple[dict[str, dict[str, str]] | None, str | None]:
        shown = urls.hide_url(downloads.rewrite(index.url, self.policy))
        cached = self._read(index.url)
        stale: dict[str, dict[str, str]] | None = None
        if cached is not None:
            try:
                stale = self._parse(index, cached[0], shown)
            except indexes.VersionIndexError as exc:
                logger.warning("ignoring the cached version index of %s: %s", ident, exc)
            else:
                if cached[1] < self.ttl:
                    return stale, None
        failed = _FAILED.get(index.url)
        try:
            if failed is not None and time.monotonic() - failed < RETRY_AFTER:
                raise _Recent(f"it failed {int(time.monotonic() - failed)} s ago")
            policy = dataclasses.replace(self.policy, attempts=min(self.policy.attempts, 2))
            body = downloads.fetch_document(index.url, policy=policy, limit=indexes.MAX_BYTES)
            found = self._parse(index, body, shown)
        except (downloads.DownloadError, indexes.VersionIndexError, _Recent) as exc:
            if not isinstance(exc, _Recent):
                _FAILED[index.url] = time.monotonic()
            if stale is not None and cached is not None:
                return stale, (
                    f"{ident}: its version index could not be refreshed ({exc}); using the "
                    f"copy cached {int(cached[1])} s ago"
                )
            return None, (
                f"{ident}: its version index could not be read ({exc}); only the catalog's "
                "versions are known"
            )
        _FAILED.pop(index.url, None)
        self._write(index.url, body)
        return found, None

    @staticmethod
    def _parse(index: manifest.VersionIndex, body: bytes, shown: str) -> dict[str, dict[str, str]]:
        return indexes.parse_vars(index.kind, body, source=shown, tag_prefix=index.tag_prefix)

    # --- the cache on the store -----------------------------------------------------

    def _name(self, url: str) -> str:
        return hashlib.sha256(url.encode()).hexdigest()[:32] + ".json"

    def _read(self, url: str) -> tuple[bytes, float] | None:
        if self.store_root is None:
            return None
        try:
            folder = nofollow.open_dir(self.store_root, (layout.META, _FOLDER))
        except OSError:
            return None
        try:
            if os.fstat(folder).st_uid != os.geteuid():
                return None  # a folder someone else made: nothing in it is ours
            fd = nofollow.open_file(folder, self._name(url), os.O_RDONLY)
        except OSError:
            return None
        finally:
            os.close(folder)
        try:
            info = os.fstat(fd)
            if not _believable(info):
                return None
            body = os.read(fd, indexes.MAX_BYTES + 1)
        except OSError:
            return None
        finally:
            os.close(fd)
        if len(body) > indexes.MAX_BYTES:
            return None
        return body, max(0.0, time.time() - info.st_mtime)

    def _write(self, url: str, body: bytes) -> None:
        if self.store_root is None:
            return
        try:
            folder = nofollow.open_dir(self.store_root, (layout.META, _FOLDER), create=True)
            try:
                nofollow.write_atomic_at(folder, self._name(url), body)
            finally:
                os.close(folder)
        except OSError as exc:  # a read-only store still resolves, uncached
            logger.warning("could not cache a version index on the store: %s", exc)


def from_settings(settings: config_models.Settings) -> VersionIndexes:
    """The indexes as the settings reach them: the installer's mirrors, proxies and
    credentials, the store's cache and ``installer.version_index_ttl_seconds``."""
    options = protocol.options_from(settings.installer, native=False)
    return VersionIndexes(
        store_root=settings.cache.root,
        policy=options.policy,
        ttl=settings.installer.version_index_ttl_seconds,
    )


class _Recent(Exception):
    """A fetch of this index failed moments ago: not tried again yet."""


def _believable(info: os.stat_result) -> bool:
    return (
        stat.S_ISREG(info.st_mode)
        and info.st_uid == os.geteuid()
        and info.st_nlink == 1
        and not info.st_mode & 0o022
        and info.st_mtime <= time.time() + _CLOCK_SLACK
    )
