"""The team config at a job's commit, read through the contents API and cached.

Policy:
- ``GET /repos/{owner}/{repo}/contents/{path}?ref={sha}``: at the job's commit, so the
  config a job gets is the one its commit carries, not the default branch's;
- a missing file (404) is no config, not an error; anything else that fails is an error
  the job sees (the permission to grant is ``contents: read``);
- the answer must be a file, base64, at most :data:`MAX_CONFIG_BYTES` decoded, and UTF-8;
- cached per (repository, sha, path), found or missing, up to :data:`CACHE_ENTRIES`
  (oldest out first): a commit's file never changes, so a matrix's legs and later jobs at
  the same commit make no request. Concurrent asks for one key share one request;
- with the store's notes (:class:`sharing.Notes`), the answer is left there for every
  agent on the store (a found file for :data:`NOTE_SECONDS`, a missing one for
  :data:`MISSING_SECONDS`), and one agent at a time fetches a key while the others wait
  for its note: a matrix's legs on many pods cost one request per (repository, sha).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import json
import re
import time
import urllib.parse

from agent.github import client, errors, sharing

TEAM_CONFIG = ".github/runner-config.yml"
MAX_CONFIG_BYTES = 256 * 1024
CACHE_ENTRIES = 1024
CACHE_BYTES = 16 * 1024 * 1024
"""The cache holds at most this much text in all (oldest out first)."""
MISSING_SECONDS = 300.0
"""A "no file" answer is kept this long: GitHub answers 404 for no access too, and a
permission granted later must apply without a restart."""
NOTE_SECONDS = 3600.0
"""A found file's note answers this long (the file at a commit never changes)."""
NOTE_WAIT = 30.0
_REPOSITORY = re.compile(r"[A-Za-z0-9_.-]{1,100}/[A-Za-z0-9_.-]{1,100}")
_SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")


def check_repository(repository: str) -> str:
    """``repository`` if it is owner/name (no ``.`` or ``..`` part: it goes into URLs)."""
    if not _REPOSITORY.fullmatch(repository) or any(
        part in (".", "..") for part in repository.split("/")
    ):
        raise errors.GitHubError(f"{repository!r} is not owner/name")
    return repository


class TeamConfigs:
    """Team config files by (repository, sha), fetched once each."""

    def __init__(self, api: client.Client, notes: sharing.Notes | None = None) -> None:
        self.api = api
        self.notes = notes
        self._cache: collections.OrderedDict[tuple[str, str, str], tuple[float, str | None]] = (
            collections.OrderedDict()
        )
        self._bytes = 0
        self._shared: sharing.Shared[tuple[str, str, str], str | None] = sharing.Shared()

    async def get(
        self, repository: str, sha: str, *, path: str = TEAM_CONFIG, deadline: float | None = None
    ) -> str | None:
        """The file's text at ``sha``, or ``None`` when the commit has none."""
        check_repository(repository)
        if not _SHA.fullmatch(sha):
            raise errors.GitHubError(f"{sha!r} is not a commit sha (40 or 64 hex digits)")
        key = (repository, sha, path)
        cached = self._cache.get(key)
        if cached is not None:
            at, text = cached
            if text is not None or time.monotonic() - at < MISSING_SECONDS:
                self._cache.move_to_end(key)
                return text
            del self._cache[key]
        text = await self._shared.run(key, lambda: self._noted(repository, sha, path, deadline))
        if key not in self._cache:
            self._cache[key] = (time.monotonic(), text)
            self._bytes += len(text or "")
        while len(self._cache) > CACHE_ENTRIES or self._bytes > CACHE_BYTES:
            _, (_, old) = self._cache.popitem(last=False)
            self._bytes -= len(old or "")
        return text

    async def _noted(
        self, repository: str, sha: str, path: str, deadline: float | None
    ) -> str | None:
        if self.notes is None:
            return await self._fetch(repository, sha, path, deadline)
        key = f"{self.api.identity} {repository}@{sha}:{path}"
        wait = NOTE_WAIT
        if deadline is not None:  # half the time left: the rest is for fetching itself
            wait = max(0.0, deadline - asyncio.get_running_loop().time()) / 2
        notes = self.notes

        async def kept() -> tuple[str | None] | None:
            aged = await notes.read_aged("team", key, max_age=NOTE_SECONDS)
            note = _team_note(aged[0]) if aged is not None else None
            if note is None or aged is None:
                return None
            if note[1]:
                return (note[0],)
            if aged[1] <= MISSING_SECONDS:
                return (None,)  # "no file", and recent enough to believe
            return None

        async def ready() -> bool:
            return await kept() is not None

        # Read first, lock only to fetch: a matrix's legs mostly find the note there.
        found = await kept()
        if found is not None:
            return found[0]
        async with notes.exclusive("team", key, wait=wait, ready=ready):
            found = await kept()
            if found is not None:
                return found[0]
            text = await self._fetch(repository, sha, path, deadline)
            note = json.dumps({"text": text}, ensure_ascii=False).encode("utf-8", "replace")
            await self.notes.write("team", key, note)
            return text

    async def _fetch(
        self, repository: str, sha: str, path: str, deadline: float | None
    ) -> str | None:
        quoted = urllib.parse.quote(path)
        try:
            answer = await self.api.request(
                "GET",
                f"/repos/{repository}/contents/{quoted}",
                params={"ref": sha},
                need="contents: read",
                deadline=deadline,
            )
        except errors.NotFound:
            return None
        data = answer.data
        where = f"{repository}/{path} at {sha[:12]}"
        if not isinstance(data, dict) or data.get("type") != "file":
            kind = data.get("type") if isinstance(data, dict) else type(data).__name__
            raise errors.BadAnswer(f"{where} is a {kind}, not a file")
        if data.get("encoding") != "base64" or not isinstance(data.get("content"), str):
            raise errors.BadAnswer(
                f"{where}: the contents API gave no base64 content (a file over 1 MB?)"
            )
        encoded = data["content"]
        if len(encoded) > MAX_CONFIG_BYTES * 2:
            raise errors.BadAnswer(f"{where} is over {MAX_CONFIG_BYTES} bytes")
        try:
            raw = base64.b64decode(encoded.replace("\n", ""), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise errors.BadAnswer(f"{where}: its content is not base64 ({exc})") from exc
        if len(raw) > MAX_CONFIG_BYTES:
            raise errors.BadAnswer(f"{where} is over {MAX_CONFIG_BYTES} bytes")
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise errors.BadAnswer(f"{where} is not UTF-8 text ({exc.reason})") from exc


def _team_note(raw: bytes | None) -> tuple[str | None, bool] | None:
    """(text, found) of a note another agent left, or ``None`` for none or a bad one."""
    try:
        data = json.loads(raw) if raw is not None else None
    except ValueError:
        return None
    if not isinstance(data, dict) or "text" not in data:
        return None
    text = data["text"]
    if text is None:
        return None, False
    if not isinstance(text, str):
        return None
    try:
        size = len(text.encode())
    except UnicodeEncodeError:  # a lone surrogate: no file GitHub served
        return None
    return (text, True) if size <= MAX_CONFIG_BYTES else None
