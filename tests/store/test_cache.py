"""Cache management on a real store: listing, leases, verify and repair, gc, eviction.

Entries are installed through the real installer from the loopback test server (a fake
node tarball per version), then damaged or aged by hand the way time and people do.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path

import pytest

from agent.store import (
    collecting,
    entries,
    evicting,
    inuse,
    inventory,
    janitor,
    layout,
    locks,
    receipts,
    verifying,
)
from tests.support import fixtures
from tests.support.server import Server

VERSIONS = ("18.20.8", "20.11.1", "20.19.5", "22.21.1")


def install(root: Path, server: Server, *versions: str) -> layout.Store:
    for version in versions:
        fixtures.serve_node(server, version)
        fixtures.ensure_node(root, server, version)
    return layout.Store(root)


def entry(store: layout.Store, version: str) -> layout.Entry:
    return store.entry("node", version, "x64")


def age(store: layout.Store, version: str, seconds_ago: float) -> None:
    """Make the entry look last used ``seconds_ago`` (its receipt's mtime)."""
    when = time.time() - seconds_ago
    os.utime(entry(store, version).receipt, (when, when))


def states(store: layout.Store) -> dict[str, str]:
    return {i.key: i.state for i in inventory.scan(store)}


def archives(store: layout.Store) -> list[Path]:
    """The download cache's archives (what the installs downloaded), by digest."""
    return sorted(p for p in store.downloads.glob("??/*") if not p.name.startswith("."))


def age_downloads(store: layout.Store, seconds_ago: float) -> int:
    """Make every download look last used ``seconds_ago``; their bytes."""
    when = time.time() - seconds_ago
    for path in archives(store):
        os.utime(path, (when, when))
    return sum(p.stat().st_size for p in archives(store))


def test_a_receipt_carries_the_sha256_and_size_of_every_file(
    tmp_path: Path, http_server: Server
) -> None:
    store = install(tmp_path, http_server, "20.11.1")
    receipt = receipts.read(entry(store, "20.11.1"))
    assert receipt is not None
    assert receipt.manifest is not None
    node = entry(store, "20.11.1").path / "bin" / "node"
    assert receipt.manifest["bin/node"] == {
        "sha256": receipts.file_sha256(node),
        "size": node.stat().st_size,
    }
    assert set(receipt.manifest) == {"bin/node", "README.md"}
    assert receipt.size == sum(f["size"] for f in receipt.manifest.values())


def test_an_old_receipt_without_a_manifest_still_reads(tmp_path: Path, http_server: Server) -> None:
    store = install(tmp_path, http_server, "20.11.1")
    path = entry(store, "20.11.1").receipt
    data = json.loads(path.read_bytes())
    del data["manifest"]
    path.write_text(json.dumps(data))
    receipt = receipts.read(entry(store, "20.11.1"))
    assert receipt is not None
    assert receipt.manifest is None


def test_ls_lists_size_target_last_use_and_who_uses_it(tmp_path: Path, http_server: Server) -> None:
    store = install(tmp_path, http_server, "20.11.1", "22.21.1")
    age(store, "22.21.1", 3600)
    with inuse.hold(store, ["node@20.11.1@x64"], agent_id="pod-a/1", job="build", ttl=60):
        items = {i.key: i.to_data() for i in inventory.scan(store)}
    one = items["node@20.11.1@x64"]
    assert one["state"] == "ok"
    assert one["target"] == "linux/x64/glibc"
    assert one["size"] == receipts.tree_size(entry(store, "20.11.1").path)
    assert one["feature"] == "node"
    assert one["method"] == "archive"
    assert [u["job"] for u in one["in_use"]] == ["build"]
    assert items["node@22.21.1@x64"]["in_use"] == []
    assert time.time() - items["node@22.21.1@x64"]["last_used"] == pytest.approx(3600, abs=5)


def test_verify_finds_every_kind_of_damage_and_repair_removes_only_the_agents(
    tmp_path: Path, http_server: Server
) -> None:
    store = install(tmp_path, http_server, *VERSIONS)
    (entry(store, "18.20.8").path / "README.md").unlink()  # a deleted file
    (entry(store, "20.11.1").path / "bin" / "node").write_text("#!/bin/sh\necho evil\n")
    gone = entry(store, "20.19.5")  # a marker without its entry
    shutil.rmtree(gone.path)
    orphan = tmp_path / "go" / "1.22.0" / "x64"  # a folder with neither marker nor receipt
    orphan.mkdir(parents=True)
    (orphan / "go").write_text("x")
    foreign = tmp_path / "Python" / "3.12.1" / "x64"  # setup-python's own entry
    foreign.mkdir(parents=True)
    (foreign / "python").write_text("x")
    (tmp_path / "Python" / "3.12.1" / "x64.complete").write_text("")
    (tmp_path / "jq" / "1.7").mkdir(parents=True)  # someone else's marker, no entry
    (tmp_path / "jq" / "1.7" / "x64.complete").write_text("")
    backend = locks.PosixLocks()

    report = verifying.verify(store, repair=False, backend=backend)
    by_key = {c.key: c for c in report.checked}
    assert by_key["node@18.20.8@x64"].status == "broken"
    assert by_key["node@18.20.8@x64"].problems == ["README.md: missing"]
    assert by_key["node@20.11.1@x64"].status == "broken"
    assert "bin/node" in by_key["node@20.11.1@x64"].problems[0]
    assert by_key["node@20.19.5@x64"].status == "no-entry"
    assert by_key["node@22.21.1@x64"].status == "ok"
    assert by_key["go@1.22.0@x64"].status == "orphan"
    assert by_key["Python@3.12.1@x64"].status == "no-receipt"
    assert by_key["jq@1.7@x64"].status == "no-entry"
    assert not report.clean
    assert states(store)["node@18.20.8@x64"] == "ok"  # verify alone changes nothing

    repaired = verifying.verify(store, repair=True, backend=backend)
    done = {c.key: c.repair for c in repaired.checked if c.repair}
    assert done == {
        "node@18.20.8@x64": "removed",
        "node@20.11.1@x64": "removed",
        "node@20.19.5@x64": "removed",
        "jq@1.7@x64": "not-ours",
    }
    after = states(store)
    assert "node@18.20.8@x64" not in after
    assert "node@20.19.5@x64" not in after
    assert not entry(store, "20.11.1").path.exists()
    assert after["node@22.21.1@x64"] == "ok"
    assert after["go@1.22.0@x64"] == "orphan"
    assert (orphan / "go").exists()
    assert after["Python@3.12.1@x64"] == "no-receipt"
    assert (foreign / "python").exists()
    assert after["jq@1.7@x64"] == "no-entry"

    # Repair re-installs nothing; the next ensure does.
    entries._verified.clear()
    again = fixtures.ensure_node(tmp_path, http_server, "20.11.1")
    assert not again.installed[0].cached
    assert verifying.verify(store, backend=backend).to_data()["counts"]["ok"] == 2


def test_an_old_receipt_is_verified_by_size_and_says_so(
    tmp_path: Path, http_server: Server
) -> None:
    store = install(tmp_path, http_server, "20.11.1")
    path = entry(store, "20.11.1").receipt
    data = json.loads(path.read_bytes())
    del data["manifest"]
    path.write_text(json.dumps(data))
    checked = verifying.verify(store, backend=locks.PosixLocks()).checked[0]
    assert checked.status == "size-only"
    assert "checked by total size only" in checked.warnings[-1]
    assert checked.disk_bytes == checked.recorded_bytes
    (entry(store, "20.11.1").path / "README.md").unlink()
    assert verifying.verify(store, backend=locks.PosixLocks()).checked[0].status == "broken"


def test_eviction_goes_least_recently_used_first_and_skips_leased_and_recent(
    tmp_path: Path, http_server: Server
) -> None:
    store = install(tmp_path, http_server, *VERSIONS)
    for hours, version in enumerate(VERSIONS):  # 18 is the most recent, 22 the oldest
        age(store, version, 3600 * (hours + 1))
    age(store, "18.20.8", 5)  # used a moment ago
    age_downloads(store, 10 * 3600)  # the downloads go first, however old the entries
    size = receipts.read(entry(store, "22.21.1")).size  # type: ignore[union-attr]
    with inuse.hold(store, ["node@22.21.1@x64"], agent_id="a/1", job="j", ttl=60):
        done = evicting.evict(store, to=0, backend=locks.PosixLocks())
    removed = [r["key"] for r in done.removed if r["kind"] == "entry"]
    assert removed == ["node@20.19.5@x64", "node@20.11.1@x64"]
    assert archives(store) == []
    reasons = {s["key"]: s["reason"] for s in done.skipped}
    assert reasons["node@22.21.1@x64"].startswith("in use by job 'j' of agent a/1")
    assert "used 5 s ago" in reasons["node@18.20.8@x64"]
    assert done.after == 2 * size
    assert not done.reached
    assert set(states(store)) == {"node@22.21.1@x64", "node@18.20.8@x64"}
    assert not any(p.name.startswith(".") for p in (tmp_path / "node").rglob("*"))


def test_a_lease_that_appears_after_the_marker_went_keeps_the_entry(
    tmp_path: Path, http_server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = install(tmp_path, http_server, "20.11.1")
    answers = iter([False, True])
    seen = []

    def leased(store: layout.Store, key: str) -> bool:
        seen.append(entry(store, "20.11.1").marker.exists())
        return next(answers)

    monkeypatch.setattr(evicting, "_leased", leased)
    outcome = evicting.remove(store, entry(store, "20.11.1"), backend=locks.PosixLocks(), why="t")
    assert outcome == "in-use"
    assert seen == [True, False]  # the second look came after the marker was gone
    assert states(store) == {"node@20.11.1@x64": "ok"}


def test_a_lease_lapses_unless_refreshed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inuse, "SKEW", 0.0)
    store = layout.Store(tmp_path)
    quiet = inuse.hold(store, ["a@1@x64"], agent_id="a", job="quiet", ttl=0.3)
    alive = inuse.hold(store, ["b@1@x64"], agent_id="a", job="alive", ttl=0.3)
    alive.keep_alive(every=0.05)
    time.sleep(0.6)
    assert set(inuse.live(store)) == {"b@1@x64"}
    assert inuse.sweep(store) == 1
    assert not quiet.path.exists()
    assert quiet.refresh() is False  # lapsed: the caller must ensure its entries again
    alive.release()
    quiet.release()
    assert inuse.live(store) == {}
    assert list(inuse.folder(store).iterdir()) == []
    with pytest.raises(inuse.LeaseError, match="ttl 0 is out of range"):
        inuse.hold(store, ["a@1@x64"], agent_id="a", job="j", ttl=0)


def test_gc_removes_what_dead_installs_left_and_keeps_a_running_ones(
    tmp_path: Path, http_server: Server
) -> None:
    store = install(tmp_path, http_server, "20.11.1")
    dead = store.staging / f"node@18.20.8@x64.{'a' * 32}"
    running = store.staging / f"node@22.21.1@x64.{'b' * 32}"
    for folder in (dead, running):
        (folder / "entry").mkdir(parents=True)
    (store.staging / "mystery").mkdir()
    trash = tmp_path / "node" / "20.11.1" / ".x64.stale-0badc0de"
    trash.mkdir()
    old = store.downloads / "ab" / ".abc.partial"
    # exist_ok: the installed archive's own download may sit in ab/ too (its sha256 varies
    # with the archive's timestamps: 1 run in 256).
    old.parent.mkdir(exist_ok=True)
    old.write_bytes(b"x")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    lapsed = inuse.hold(store, ["x@1@x64"], agent_id="a", job="j", ttl=1)
    data = json.loads(lapsed.path.read_bytes()) | {"expires": time.time() - 3600}
    lapsed.path.write_text(json.dumps(data))
    backend = locks.PosixLocks()
    holding, release = threading.Event(), threading.Event()

    def installer() -> None:
        with backend.hold(entry(store, "22.21.1").lock, what="install", timeout=5):
            holding.set()
            release.wait(10)

    thread = threading.Thread(target=installer)
    thread.start()
    try:
        assert holding.wait(5)
        collected = collecting.gc(store, backend=backend)
    finally:
        release.set()
        thread.join()
    assert collected.staging_removed == [dead.name]
    assert collected.staging_kept == [running.name]
    assert collected.unknown == ["mystery"]
    assert collected.partials_removed == 1
    assert collected.leases_removed == 1
    assert not dead.exists()
    assert running.exists()
    assert not trash.exists()
    assert states(store) == {"node@20.11.1@x64": "ok"}


def test_one_janitor_at_a_time_and_the_second_is_counted_as_skipped(
    tmp_path: Path, http_server: Server
) -> None:
    store = install(tmp_path, http_server, "20.11.1")
    backend = locks.PosixLocks()
    one = janitor.Janitor(store, backend, budget=lambda: 1 << 30, agent_id="one")
    two = janitor.Janitor(store, backend, budget=lambda: 1 << 30, agent_id="two")
    with janitor.exclusive(store, backend, what="a test"):
        assert two.periodic() is None
        with pytest.raises(janitor.Busy, match="another janitor is working on the store"):
            two.gc()
    assert two.runs == {"ok": 0, "skipped": 2, "failed": 0}
    assert one.periodic() is not None
    assert one.runs["ok"] == 1
    assert [(h["agent"], h["op"], h["result"]) for h in janitor.history(store)] == [
        ("one", "periodic", "ok")
    ]


def test_the_janitor_never_creates_a_store(tmp_path: Path) -> None:
    store = layout.Store(tmp_path / "nothing")
    one = janitor.Janitor(store, locks.PosixLocks(), budget=lambda: 1)
    assert one.periodic() is None
    assert not store.root.exists()
    with pytest.raises(layout.NoStore, match="there is no store"):
        one.gc()


def test_the_tally_sums_receipts_and_rereads_only_what_changed(
    tmp_path: Path, http_server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = install(tmp_path, http_server, "20.11.1", "22.21.1")
    tally = inventory.Tally(store)
    assert tally.snapshot().refreshed is None
    first = tally.refresh()
    sizes = [receipts.read(entry(store, v)).size for v in ("20.11.1", "22.21.1")]  # type: ignore[union-attr]
    downloaded = sum(p.stat().st_size for p in archives(store))
    assert (first.entry_bytes, first.entries, first.downloads) == (sum(sizes), 2, 2)
    assert (first.bytes, first.download_bytes) == (sum(sizes) + downloaded, downloaded)
    parsed = []
    real = receipts.Receipt.from_json
    monkeypatch.setattr(receipts.Receipt, "from_json", lambda raw: parsed.append(1) or real(raw))
    age(store, "20.11.1", 100)  # a touch is not a change
    assert tally.refresh().bytes == sum(sizes) + downloaded
    assert parsed == []
    entry(store, "22.21.1").marker.unlink()
    assert (tally.refresh().entry_bytes, tally.snapshot().entries) == (sizes[0], 1)
    for path in archives(store):
        path.unlink()
    assert (tally.refresh().bytes, tally.snapshot().downloads) == (sizes[0], 0)


def test_gc_removes_downloads_no_receipt_names_after_the_grace(
    tmp_path: Path, http_server: Server
) -> None:
    store = install(tmp_path, http_server, "20.11.1")
    [kept] = [p for p in store.downloads.glob("??/*") if not p.name.startswith(".")]
    long_ago = time.time() - collecting.DOWNLOAD_GRACE - 60
    os.utime(kept, (long_ago, long_ago))  # old, but its entry's receipt names it
    orphan = store.downloads / "cd" / ("cd" + "0" * 62)
    orphan.parent.mkdir(exist_ok=True)
    orphan.write_bytes(b"an archive of an evicted entry")
    os.utime(orphan, (long_ago, long_ago))
    fresh = store.downloads / "ef" / ("ef" + "0" * 62)
    fresh.parent.mkdir(exist_ok=True)
    fresh.write_bytes(b"downloaded by an install that has not published yet")
    collected = collecting.gc(store, backend=locks.PosixLocks())
    assert (collected.downloads_removed, collected.download_bytes_removed) == (1, 30)
    assert kept.exists()
    assert not orphan.exists()
    assert fresh.exists()

    # One receipt that cannot be read does not keep every download for ever: only what
    # the readable ones name stays (a bad one's archives are only a re-download).
    os.utime(fresh, (long_ago, long_ago))
    (store.meta / "receipts" / "broken@1@x64.json").write_text("{")
    assert collecting.gc(store, backend=locks.PosixLocks()).downloads_removed == 1
    assert not fresh.exists()
    assert kept.exists()


def test_an_unparsable_receipt_is_a_bad_receipt(tmp_path: Path) -> None:
    store = layout.Store(tmp_path)
    store.prepare()
    entry = store.entry("tool", "1.0.0", "x64")
    entry.receipt.parent.mkdir(parents=True, exist_ok=True)
    entry.receipt.write_text('"a string, not a receipt"')
    with pytest.raises(receipts.BadReceipt, match="not a receipt"):
        receipts.read(entry)


def test_the_download_cache_counts_in_the_budget_and_is_evicted_first(
    tmp_path: Path, http_server: Server
) -> None:
    store = install(tmp_path, http_server, "20.11.1", "22.21.1")
    age(store, "20.11.1", 2 * 3600)
    age(store, "22.21.1", 3 * 3600)  # the entries are older than the downloads, and stay
    downloaded = age_downloads(store, 3600)
    assert downloaded > 0
    sizes = [receipts.read(entry(store, v)).size for v in ("20.11.1", "22.21.1")]  # type: ignore[union-attr]
    listed = inventory.totals(inventory.scan(store), inventory.downloads(store))
    assert (listed.bytes, listed.downloads) == (sum(sizes) + downloaded, 2)

    done = evicting.evict(store, to=sum(sizes), backend=locks.PosixLocks())
    assert (done.before, done.after, done.reached) == (sum(sizes) + downloaded, sum(sizes), True)
    assert [r["kind"] for r in done.removed] == ["download", "download"]
    assert all(r["entry"].startswith("download ") for r in done.removed)
    assert archives(store) == []
    assert states(store) == {"node@20.11.1@x64": "ok", "node@22.21.1@x64": "ok"}


def test_a_download_used_a_moment_ago_is_kept(tmp_path: Path, http_server: Server) -> None:
    store = install(tmp_path, http_server, "20.11.1")
    age(store, "20.11.1", 3600)
    done = evicting.evict(store, to=0, backend=locks.PosixLocks())
    [kept] = done.skipped
    assert kept["kind"] == "download"
    assert "used 0 s ago" in kept["reason"]
    assert [r["entry"] for r in done.removed] == ["node/20.11.1/x64"]
    assert len(archives(store)) == 1


def test_the_janitor_evicts_downloads_before_entries_to_the_budget(
    tmp_path: Path, http_server: Server
) -> None:
    store = install(tmp_path, http_server, "20.11.1", "22.21.1")
    age(store, "20.11.1", 7200)
    age(store, "22.21.1", 9000)
    age_downloads(store, 3600)  # used later than the entries: LRU alone would take entries
    sizes = [receipts.read(entry(store, v)).size for v in ("20.11.1", "22.21.1")]  # type: ignore[union-attr]
    jan = janitor.Janitor(store, locks.PosixLocks(), budget=lambda: sum(sizes))
    done = jan.periodic()
    assert done is not None
    assert [r["kind"] for r in done.evicted.removed] == ["download", "download"]
    assert done.evicted.reached
    assert archives(store) == []
    assert states(store) == {"node@20.11.1@x64": "ok", "node@22.21.1@x64": "ok"}
    assert jan.evictions == 0  # entries evicted: none
    assert (jan.tally.snapshot().bytes, jan.tally.snapshot().downloads) == (sum(sizes), 0)

    jan.budget = lambda: sizes[0]
    again = jan.periodic()
    assert again is not None
    assert [r["entry"] for r in again.evicted.removed] == ["node/22.21.1/x64"]
    assert jan.evictions == 1


def test_entries_are_named_in_the_tool_cache_form_and_sizes_are_human(
    tmp_path: Path, http_server: Server
) -> None:
    store = install(tmp_path, http_server, "20.11.1")
    musl = store.entry("node", "20.11.1", "x64-musl")
    assert (musl.display, musl.key) == ("node/20.11.1/x64-musl", "node@20.11.1@x64-musl")
    assert musl.receipt.name == "node@20.11.1@x64-musl.json"  # the on-disk names stay
    path = entry(store, "20.11.1").path / "README.md"
    path.write_bytes(path.read_bytes()[:1])
    [checked] = verifying.verify(store, backend=locks.PosixLocks()).checked
    assert checked.entry == "node/20.11.1/x64"
    assert any(p.startswith("README.md: 1 B, ") for p in checked.problems), checked.problems


def test_a_passing_read_error_on_a_receipt_keeps_every_download(
    tmp_path: Path, http_server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    # EMFILE says nothing about the receipt: gc must not take it as "names nothing".
    import errno

    store = install(tmp_path, http_server, "20.11.1")
    [kept] = [p for p in store.downloads.glob("??/*") if not p.name.startswith(".")]
    long_ago = time.time() - collecting.DOWNLOAD_GRACE - 60
    os.utime(kept, (long_ago, long_ago))
    real = receipts.read_file

    def read_file(path: Path) -> receipts.Receipt | None:
        if path.name.startswith("node@"):
            raise receipts.BadReceipt("cannot read it") from OSError(errno.EMFILE, "Too many")
        return real(path)

    monkeypatch.setattr(receipts, "read_file", read_file)
    assert collecting.gc(store, backend=locks.PosixLocks()).downloads_removed == 0
    assert kept.exists()
