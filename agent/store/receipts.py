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
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from agent.store import layout


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
        """Parse a receipt; :class:`~agent.store.layout.StoreError` if it is not one.

        Fields this agent does not know are ignored: a newer agent may add some, and the
        entry it wrote is still good (the store's format file guards real changes).
        """
        try:
            data = json.loads(raw)
            if not isinstance(data, dict):
                raise TypeError(f"expected a JSON object, got {type(data).__name__}")
            known = {f.name for f in fields(cls)}
            data = {k: v for k, v in data.items() if k in known}
            data["sources"] = tuple(
                Source(url=s["url"], sha256=s["sha256"], size=s["size"]) for s in data["sources"]
            )
            return cls(**data)
        except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
            raise BadReceipt(f"not a receipt: {exc}") from exc


def read(entry: layout.Entry) -> Receipt | None:
    """The entry's receipt; ``None`` when there is none; :class:`StoreError` when it
    cannot be read or parsed (an I/O error is not the same as no receipt)."""
    try:
        raw = entry.receipt.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise BadReceipt(f"cannot read {entry.receipt}: {exc.strerror}") from exc
    return Receipt.from_json(raw)


def write(entry: layout.Entry, receipt: Receipt) -> None:
    """Write the receipt atomically."""
    layout.write_atomic(entry.receipt, receipt.to_json())


_touched: dict[str, float] = {}


def touch(entry: layout.Entry) -> None:
    """Record a use, at most once a minute per entry and process."""
    now = time.monotonic()
    if now - _touched.get(entry.key, -TOUCH_EVERY) < TOUCH_EVERY:
        return
    _touched[entry.key] = now
    # A read-only mount still serves; eviction then sees the install time.
    with contextlib.suppress(OSError):
        os.utime(entry.receipt)


def last_used(entry: layout.Entry) -> float | None:
    """When the entry was last used (the receipt's mtime)."""
    try:
        return entry.receipt.stat().st_mtime
    except OSError:
        return None


def manifest(tree: Path) -> dict[str, dict[str, Any]]:
    """The manifest of ``tree`` (see :attr:`Receipt.manifest`); links are not followed."""
    files: dict[str, dict[str, Any]] = {}
    for folder, dirs, names in os.walk(tree):
        for name in sorted(names + [d for d in dirs if os.path.islink(os.path.join(folder, d))]):
            path = os.path.join(folder, name)
            rel = os.path.relpath(path, tree)
            if os.path.islink(path):
                files[rel] = {"link": os.readlink(path)}
            elif os.path.isfile(path):
                files[rel] = {"sha256": file_sha256(path), "size": os.lstat(path).st_size}
    return files


def file_sha256(path: str | Path) -> str:
    """The sha256 of one file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def tree_size(path: Path) -> int:
    """Bytes of regular files under ``path`` (links not followed)."""
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(folder, name)).st_size
    return total
