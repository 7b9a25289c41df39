"""``cache verify [--repair]``: re-hash entries against their receipts, find the debris.

Policy:
- an entry whose receipt has a manifest is checked file by file: each file must exist
  with the recorded size and sha256 (links: the recorded target). Files the manifest
  does not know are reported (a tool may write caches into its own folder), not broken;
- an entry whose receipt predates manifests is checked by existence and total size only,
  and reported as ``size-only``: fewer bytes than recorded is broken, more is a warning;
- the walk also sums the bytes on disk, reconciling the receipts' total (which scrapes
  and eviction use) with the truth;
- repair removes what the agent wrote and is broken: entries whose files changed or
  vanished, markers whose entry folder is gone, receipts left without entry or marker.
  It never re-installs: the next ensure of the feature does that. It never touches what
  has no receipt (``no-receipt`` entries, orphan folders, foreign markers), an entry
  with a live in-use lease (reported as ``in-use``; repair it after the job) or one being
  installed (``busy``). Removal follows :func:`agent.store.evicting.remove`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.store import evicting, inventory, layout, locks, receipts

Status = str
"""``ok``, ``size-only``, ``broken``, or an inventory state (``no-receipt``, ...)."""

_REPAIRABLE = {"broken", "no-entry", "receipt-only"}


@dataclass
class Checked:
    """The verdict on one key."""

    key: str
    status: Status
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    recorded_bytes: int | None = None
    disk_bytes: int | None = None
    repair: str = ""
    """What repair did: ``removed``, or why it left it (``in-use``, ``busy``, ...)."""

    def to_data(self) -> dict[str, Any]:
        """JSON-ready data."""
        return {
            "key": self.key,
            "status": self.status,
            "problems": self.problems,
            "warnings": self.warnings,
            "recorded_bytes": self.recorded_bytes,
            "disk_bytes": self.disk_bytes,
            "repair": self.repair,
        }


@dataclass
class Verified:
    """The outcome of a verify (and repair) pass."""

    checked: list[Checked] = field(default_factory=list)
    repaired: bool = False

    @property
    def recorded_bytes(self) -> int:
        """What the receipts of intact-looking entries say (what scrapes report)."""
        return sum(c.recorded_bytes or 0 for c in self.checked if c.status in ("ok", "size-only"))

    @property
    def disk_bytes(self) -> int:
        """What those entries hold on disk."""
        return sum(c.disk_bytes or 0 for c in self.checked if c.status in ("ok", "size-only"))

    @property
    def clean(self) -> bool:
        """No problem left (warnings and foreign entries aside)."""
        return all(
            c.status in ("ok", "size-only", "no-receipt") or c.repair == "removed"
            for c in self.checked
        )

    def to_data(self) -> dict[str, Any]:
        """JSON-ready data."""
        counts: dict[str, int] = {}
        for c in self.checked:
            counts[c.status] = counts.get(c.status, 0) + 1
        return {
            "clean": self.clean,
            "repaired": self.repaired,
            "counts": counts,
            "recorded_bytes": self.recorded_bytes,
            "disk_bytes": self.disk_bytes,
            "entries": [c.to_data() for c in self.checked],
        }


def verify(store: layout.Store, *, repair: bool = False, backend: locks.LockBackend) -> Verified:
    """Check every entry (see the module's policy); with ``repair``, remove the broken."""
    result = Verified(repaired=repair)
    for item in inventory.scan(store):
        checked = _check(item)
        result.checked.append(checked)
        if repair and checked.status in _REPAIRABLE:
            if item.receipt is None:
                checked.repair = "not-ours"  # no receipt: someone else wrote it
                continue
            if item.in_use:
                checked.repair = "in-use"
                continue
            outcome = evicting.remove(
                store, item.entry, backend=backend, why=f"repair: {checked.status}"
            )
            checked.repair = outcome
    return result


def _check(item: inventory.Item) -> Checked:
    checked = Checked(item.key, item.state, recorded_bytes=item.size)
    if item.problem:
        checked.problems.append(item.problem)
    if item.state != "ok" or item.receipt is None:
        return checked
    checked.problems.clear()
    receipt = item.receipt
    if receipt.manifest is None:
        disk = _walk(item.entry.path, {}, checked)
        checked.disk_bytes = disk
        checked.status = "size-only"
        if disk < receipt.size:
            checked.status = "broken"
            checked.problems.append(
                f"{disk} bytes on disk, {receipt.size} recorded: files are missing or truncated"
            )
        elif disk > receipt.size:
            checked.warnings.append(
                f"{disk - receipt.size} bytes more on disk than recorded (files added?)"
            )
        checked.warnings.append("its receipt has no manifest: checked by total size only")
        return checked
    checked.disk_bytes = _walk(item.entry.path, receipt.manifest, checked)
    for rel, want in sorted(receipt.manifest.items()):
        problem = _check_file(item.entry.path, rel, want)
        if problem:
            checked.problems.append(problem)
    checked.status = "broken" if checked.problems else "ok"
    return checked


def _check_file(root: Path, rel: str, want: dict[str, Any]) -> str:
    path = root / rel
    try:
        st = path.lstat()
    except FileNotFoundError:
        return f"{rel}: missing"
    except OSError as exc:
        return f"{rel}: cannot read: {exc.strerror}"
    if "link" in want:
        if not path.is_symlink():
            return f"{rel}: was a symlink, now is not"
        return "" if os.readlink(path) == want["link"] else f"{rel}: the link points elsewhere"
    if path.is_symlink() or not path.is_file():
        return f"{rel}: no longer a regular file"
    if st.st_size != want.get("size"):
        return f"{rel}: {st.st_size} bytes, {want.get('size')} recorded"
    try:
        digest = receipts.file_sha256(path)
    except OSError as exc:
        return f"{rel}: cannot read: {exc.strerror}"
    return "" if digest == want.get("sha256") else f"{rel}: modified (sha256 differs)"


def _walk(root: Path, known: dict[str, dict[str, Any]], checked: Checked) -> int:
    """Bytes on disk under ``root``; files ``known`` does not list become warnings."""
    total = 0
    extra = []
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            try:
                total += os.lstat(path).st_size
            except OSError:
                continue
            rel = os.path.relpath(path, root)
            if known and rel not in known:
                extra.append(rel)
    if extra:
        shown = ", ".join(sorted(extra)[:5]) + (" ..." if len(extra) > 5 else "")
        checked.warnings.append(f"{len(extra)} file(s) not in the manifest: {shown}")
    return total
