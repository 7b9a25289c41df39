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
  installed (``busy``). Removal follows :func:`agent.store.evicting.remove`, which
  refuses (``refused``) an entry whose ``<tool>`` or ``<version>`` folder is a link;
- an entry whose receipt cannot be used (``bad-receipt``: not JSON, not an object, a
  field of the wrong type, too big, a link or fifo) is the agent's (the receipt file is
  its own): repair removes it with its receipt, and the next ensure installs it again;
- entries are read by descriptor from the store root down, never through a link.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.store import evicting, inventory, layout, locks, nofollow, receipts

Status = str
"""``ok``, ``size-only``, ``broken``, or an inventory state (``no-receipt``, ...)."""

_REPAIRABLE = {"broken", "no-entry", "receipt-only", "bad-receipt"}


@dataclass
class Checked:
    """The verdict on one key."""

    key: str
    """``name@version@leaf`` (the receipt's name)."""
    entry: str
    """``name/version/leaf``: what users read."""
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
            "entry": self.entry,
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
            bad = item.state == "bad-receipt"
            if item.receipt is None and not bad:
                checked.repair = "not-ours"  # no receipt: someone else wrote it
                continue
            if item.in_use:
                checked.repair = "in-use"
                continue
            try:
                checked.repair = evicting.remove(
                    store,
                    item.entry,
                    backend=backend,
                    why=f"repair: {checked.status}",
                    unreadable_receipt=bad,
                )
            except evicting.Refused as exc:
                checked.repair = "refused"
                checked.problems.append(str(exc))
    return result


def _check(item: inventory.Item) -> Checked:
    checked = Checked(item.key, item.display, item.state, recorded_bytes=item.size)
    if item.problem:
        checked.problems.append(item.problem)
    if item.state != "ok" or item.receipt is None:
        return checked
    checked.problems.clear()
    receipt = item.receipt
    try:
        top = nofollow.open_dir(
            item.entry.root, (item.entry.name, item.entry.version, item.entry.leaf)
        )
    except OSError as exc:
        checked.status = "broken"
        checked.problems.append(f"cannot open the entry: {exc.strerror}")
        return checked
    try:
        return _check_tree(top, receipt, checked)
    finally:
        os.close(top)


def _check_tree(top: int, receipt: receipts.Receipt, checked: Checked) -> Checked:
    if receipt.manifest is None:
        disk = _walk(top, {}, checked)
        checked.disk_bytes = disk
        checked.status = "size-only"
        if disk < receipt.size:
            checked.status = "broken"
            checked.problems.append(
                f"{evicting.human(disk)} on disk, {evicting.human(receipt.size)} recorded: "
                "files are missing or truncated"
            )
        elif disk > receipt.size:
            checked.warnings.append(
                f"{evicting.human(disk - receipt.size)} more on disk than recorded (files added?)"
            )
        checked.warnings.append("its receipt has no manifest: checked by total size only")
        return checked
    checked.disk_bytes = _walk(top, receipt.manifest, checked)
    for rel, want in sorted(receipt.manifest.items()):
        problem = _check_file(top, rel, want)
        if problem:
            checked.problems.append(problem)
    checked.status = "broken" if checked.problems else "ok"
    return checked


def _check_file(top: int, rel: str, want: dict[str, Any]) -> str:
    """One manifest file, reached from the entry's descriptor without following a link
    at any folder on the way (a folder swapped for a link is "missing", never read)."""
    *folders, name = Path(rel).parts or ("",)
    if not name or os.path.isabs(rel) or ".." in folders or name == "..":
        return f"{rel}: not a path inside the entry"
    try:
        fd = nofollow.open_below(top, folders)
    except FileNotFoundError:
        return f"{rel}: missing"
    except OSError as exc:
        return f"{rel}: cannot read: {exc.strerror}"
    try:
        try:
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            return f"{rel}: missing"
        except OSError as exc:
            return f"{rel}: cannot read: {exc.strerror}"
        if "link" in want:
            if not stat.S_ISLNK(st.st_mode):
                return f"{rel}: was a symlink, now is not"
            same = os.readlink(name, dir_fd=fd) == want["link"]
            return "" if same else f"{rel}: the link points elsewhere"
        if not stat.S_ISREG(st.st_mode):
            return f"{rel}: no longer a regular file"
        if st.st_size != want.get("size"):
            recorded = want.get("size")
            recorded = recorded if isinstance(recorded, int) else None
            return f"{rel}: {evicting.human(st.st_size)}, {evicting.human(recorded)} recorded"
        try:
            digest = receipts.sha256_at(fd, name)
        except OSError as exc:
            return f"{rel}: cannot read: {exc.strerror}"
        return "" if digest == want.get("sha256") else f"{rel}: modified (sha256 differs)"
    finally:
        os.close(fd)


def _walk(top: int, known: dict[str, dict[str, Any]], checked: Checked) -> int:
    """Bytes on disk below ``top`` (by descriptor); files ``known`` does not list become
    warnings. Links count their own size, as receipts without a manifest counted them."""
    total = 0
    extra = []
    for folder, _, names, fd in nofollow.walk(top):
        for name in names:
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISDIR(st.st_mode):
                continue
            total += st.st_size
            rel = os.path.normpath(os.path.join(folder, name))
            if known and rel not in known:
                extra.append(rel)
    if extra:
        shown = ", ".join(sorted(extra)[:5]) + (" ..." if len(extra) > 5 else "")
        checked.warnings.append(f"{len(extra)} file(s) not in the manifest: {shown}")
    return total
