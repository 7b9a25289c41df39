"""Receipts: what each entry is and where it came from, beside the entry, as JSON.

Policy: a receipt is written (atomically) after the entry is renamed into place and
before the marker; an entry is trusted only when its marker exists and its receipt names
the same feature, version and key. ``last_used`` is the receipt file's mtime, touched at
most once a minute per process, so a warm hit never writes more than that.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from agent.store import layout, nofollow


class BadReceipt(layout.StoreError):
    """A receipt that cannot be read or parsed: the entry it describes is left alone and
    reported, never treated as missing."""


RECEIPT_FORMAT = 1
TOUCH_EVERY = 60.0


@dataclass(frozen=True)
class Source:
    """One downloaded artifact."""

    url: str
    sha256: str
    size: int


@dataclass(frozen=True)
class Receipt:
    """The record of one installed entry."""

    feature: str
    version: str
    key: str
    platform: dict[str, Any]
    method: str
    sources: tuple[Source, ...]
    size: int
    install_seconds: float
    agent_version: str
    created: float
    check: str
    env: dict[str, Any] = field(default_factory=dict)
    """PATH entries and variables, relative to the entry (no absolute paths)."""
    format: int = RECEIPT_FORMAT
    manifest: dict[str, dict[str, Any]] | None = None
    """Every file of the entry at publish time, by path relative to the entry:
    ``{"sha256": ..., "size": ...}`` for a regular file, ``{"link": target}`` for a
    symlink. ``None`` in receipts written before manifests existed: ``cache verify``
    checks those by total size only, and says so."""

    def to_json(self) -> bytes:
        """The receipt as JSON bytes."""
        data = asdict(self)
        return (json.dumps(data, sort_keys=True, indent=2) + "\n").encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Receipt:
        """Parse a receipt; :class:`BadReceipt` if it is not one (JSON that is not an
        object, a field of the wrong type, nesting too deep, a number too long).

        Fields this agent does not know are ignored: a newer agent may add some, and the
        entry it wrote is still good (the store's format file guards real changes).
        """
        try:
            data = json.loads(raw)
            if not isinstance(data, dict):
                raise TypeError(f"expected a JSON object, got {type(data).__name__}")
            known = {f.name for f in fields(cls)}
            data = {k: v for k, v in data.items() if k in known}
            for name, want in _TYPES.items():
                if name in data and not _is(data[name], want):
                    raise TypeError(f"{name} is {type(data[name]).__name__}, not {want.__name__}")
            sources = data["sources"]
            if not isinstance(sources, list) or not all(_source(s) for s in sources):
                raise TypeError("sources must be a list of {url, sha256, size}")
            data["sources"] = tuple(
                Source(url=s["url"], sha256=s["sha256"], size=s["size"]) for s in sources
            )
            if data.get("manifest") is not None and not _manifest(data["manifest"]):
                raise TypeError("manifest must map paths to {sha256, size} or {link}")
            env = data.get("env", {})
            if not _env(env):
                raise TypeError("env must be {path: [str], vars: {str: str}}")
            return cls(**data)
        except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
            raise BadReceipt(f"not a receipt: {exc}") from exc


_TYPES: dict[str, type] = {
    "feature": str,
    "version": str,
    "key": str,
    "platform": dict,
    "method": str,
    "size": int,
    "install_seconds": float,
    "agent_version": str,
    "created": float,
    "check": str,
    "env": dict,
    "format": int,
}


def _is(value: object, want: type) -> bool:
    if isinstance(value, bool):
        return want is bool
    if want is float:
        return isinstance(value, (int, float))
    if want is int:
        return isinstance(value, int) and value >= 0
    return isinstance(value, want)


def _source(value: object) -> bool:
    return (
        isinstance(value, dict)
        and isinstance(value.get("url"), str)
        and isinstance(value.get("sha256"), str)
        and _is(value.get("size"), int)
    )


def _manifest(value: object) -> bool:
    if not isinstance(value, dict):
        return False
    for rel, want in value.items():
        if not isinstance(rel, str) or not isinstance(want, dict):
            return False
        if "link" in want:
            if not isinstance(want["link"], str):
                return False
        elif not (isinstance(want.get("sha256"), str) and _is(want.get("size"), int)):
            return False
    return True


def _env(value: object) -> bool:
    if not isinstance(value, dict):
        return False
    path, vars_ = value.get("path", []), value.get("vars", {})
    return (
        isinstance(path, list)
        and all(isinstance(p, str) for p in path)
        and isinstance(vars_, dict)
        and all(isinstance(v, str) for v in vars_.values())
    )


MAX_BYTES = 64 * 1024 * 1024
"""The largest receipt read (or written): a manifest of 300,000 files fits; a planted
huge file is refused as a bad receipt instead of filling the agent's memory."""


def read(entry: layout.Entry) -> Receipt | None:
    """The entry's receipt; ``None`` when there is none; :class:`BadReceipt` when it
    cannot be read or parsed (an I/O error is not the same as no receipt). The file is
    read without following a link, must be a regular file, and at most :data:`MAX_BYTES`."""
    return read_file(entry.receipt)


def read_file(path: Path) -> Receipt | None:
    """:func:`read` for a receipt file given by path."""
    try:
        raw = nofollow.read(path, MAX_BYTES)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise BadReceipt(f"cannot read {path}: {exc.strerror}") from exc
    return Receipt.from_json(raw)


def write(entry: layout.Entry, receipt: Receipt) -> None:
    """Write the receipt atomically."""
    data = receipt.to_json()
    if len(data) > MAX_BYTES:
        raise layout.StoreError(
            f"the receipt of {entry.key} would be {len(data)} bytes, over the "
            f"{MAX_BYTES}-byte limit of what the agent reads back: the entry has too many "
            "files for the store"
        )
    layout.write_atomic(entry.receipt, data)


_touched: dict[str, float] = {}


def touch(entry: layout.Entry) -> None:
    """Record a use, at most once a minute per entry and process."""
    now = time.monotonic()
    if now - _touched.get(entry.key, -TOUCH_EVERY) < TOUCH_EVERY:
        return
    _touched[entry.key] = now
    # A read-only mount still serves; eviction then sees the install time.
    with contextlib.suppress(OSError, NotImplementedError):
        os.utime(entry.receipt, follow_symlinks=False)


def last_used(entry: layout.Entry) -> float | None:
    """When the entry was last used (the receipt's mtime)."""
    try:
        return entry.receipt.lstat().st_mtime
    except OSError:
        return None


def manifest(tree: Path) -> dict[str, dict[str, Any]]:
    """The manifest of ``tree`` (see :attr:`Receipt.manifest`); walked by descriptor,
    links recorded as links, never followed (nor is any file opened through one)."""
    files: dict[str, dict[str, Any]] = {}
    top = os.open(tree, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        for folder, _, names, fd in nofollow.walk(top):
            for name in names:
                rel = os.path.normpath(os.path.join(folder, name))
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                if stat.S_ISLNK(st.st_mode):
                    files[rel] = {"link": os.readlink(name, dir_fd=fd)}
                elif stat.S_ISREG(st.st_mode):
                    files[rel] = {"sha256": sha256_at(fd, name), "size": st.st_size}
    finally:
        os.close(top)
    return files


def sha256_at(dirfd: int, name: str) -> str:
    """The sha256 of the regular file ``name`` below ``dirfd``, opened without following
    a link, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    fd = nofollow.open_file(dirfd, name, os.O_RDONLY)
    with os.fdopen(fd, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def file_sha256(path: str | Path) -> str:
    """The sha256 of one file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def tree_size(path: Path) -> int:
    """Bytes of regular files under ``path`` (walked by descriptor, links not followed)."""
    total = 0
    top = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        for _, _, names, fd in nofollow.walk(top):
            for name in names:
                with contextlib.suppress(OSError):
                    st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                    if stat.S_ISREG(st.st_mode):
                        total += st.st_size
    finally:
        os.close(top)
    return total
