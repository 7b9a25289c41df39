"""Links planted in the store are never followed (issue 13, point 4).

Whoever can write some store folder (the sandbox user, a job with the volume mounted)
could plant a link there before the agent runs: at a lock file, at ``janitor.log``, at a
``<tool>`` or ``<version>`` folder that a receipt names a path below. Each target lies
outside the store; after installs, the janitor, ``cache gc``, ``evict`` and ``verify
--repair`` (through the real CLI and a real agent's API), the targets are byte for byte
what they were, nothing was created through a dangling link, and the agent said why.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path
from typing import Any

import pytest

from agent.cli.client import request as unix_request
from agent.store import entries, evicting, janitor, layout, locks
from tests.support import fixtures
from tests.support.agentproc import Agent, Starter, run_cli
from tests.support.server import Server

PRECIOUS = b"root:x:0:0:not the agent's file\n"


def snapshot(folder: Path) -> dict[str, tuple[int, bytes]]:
    """Every path below ``folder`` with its mode and bytes (links by their target)."""
    out: dict[str, tuple[int, bytes]] = {}
    for path in sorted(folder.rglob("*")):
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            data = os.readlink(path).encode()
        elif stat.S_ISREG(st.st_mode):
            data = path.read_bytes()
        else:
            data = b""
        out[str(path.relative_to(folder))] = (st.st_mode, data)
    return out


def outside_with_file(tmp_path: Path) -> Path:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_bytes(PRECIOUS)
    return outside


def cli(root: Path, *args: str) -> Any:
    config = root.parent / "config.yaml"
    config.write_text(json.dumps({"cache": {"root": str(root)}}))
    done = run_cli("cache", *args, "--config", str(config))
    assert "Traceback" not in done.stderr, done.stderr
    return done


def test_a_lock_file_that_is_a_link_is_refused(tmp_path: Path, http_server: Server) -> None:
    outside = outside_with_file(tmp_path)
    store = layout.Store(tmp_path / "store")
    store.prepare()
    entry = store.entry("node", "20.11.1", "x64")
    entry.lock.symlink_to(outside / "created-through-the-link")  # dangling
    fixtures.serve_node(http_server)
    with pytest.raises(layout.StoreError, match=r"node@20\.11\.1@x64\.lock is a symlink"):
        fixtures.ensure_node(store.root, http_server)
    assert not entry.marker.exists()

    janitor.lock_path(store).symlink_to(outside / "precious")
    done = cli(store.root, "gc")
    assert done.returncode == 1
    assert "janitor.lock is a symlink" in done.stderr
    assert snapshot(outside) == {"precious": (0o100644, PRECIOUS)}


def test_a_locks_folder_that_is_a_link_is_refused(tmp_path: Path, http_server: Server) -> None:
    outside = outside_with_file(tmp_path)
    store = layout.Store(tmp_path / "store")
    store.prepare()
    shutil.rmtree(store.meta / "locks")
    (store.meta / "locks").symlink_to(outside)
    fixtures.serve_node(http_server)
    with pytest.raises(layout.StoreError, match="locks is a symlink"):
        fixtures.ensure_node(store.root, http_server)
    held = locks.PosixLocks().hold(janitor.lock_path(store), what="t", timeout=0)
    with pytest.raises(locks.LockUnavailable, match="locks is a symlink"), held:
        pass
    assert snapshot(outside) == {"precious": (0o100644, PRECIOUS)}


def test_a_janitor_log_that_is_a_link_is_never_written_through(
    tmp_path: Path, http_server: Server
) -> None:
    outside = outside_with_file(tmp_path)
    fixtures.serve_node(http_server)
    fixtures.ensure_node(tmp_path / "store", http_server)
    store = layout.Store(tmp_path / "store")
    logs = store.meta / "logs"
    janitor.history_path(store).symlink_to(outside / "precious")
    done = cli(store.root, "gc")
    assert done.returncode == 0, done.stderr  # the pass ran; only its log line was refused
    assert "cannot append to the janitor log" in done.stderr
    assert "janitor.log is a symlink" in done.stderr
    assert janitor.history(store) == []  # reading it back does not follow the link either
    assert snapshot(outside) == {"precious": (0o100644, PRECIOUS)}

    # The whole logs folder a link: nothing is created in what it points at.
    shutil.rmtree(logs)
    logs.symlink_to(outside)
    assert cli(store.root, "gc").returncode == 0
    assert snapshot(outside) == {"precious": (0o100644, PRECIOUS)}


def tool_folder_moved_out(tmp_path: Path, server: Server, level: str) -> tuple[Path, Path]:
    """An installed entry whose ``<tool>`` (or ``<version>``) folder was moved out of the
    store and replaced by a link to it: the receipt now names a path below a link."""
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "store"
    fixtures.serve_node(server)
    fixtures.ensure_node(root, server)
    moved = root / "node" if level == "tool" else root / "node" / "20.11.1"
    os.rename(moved, outside / moved.name)
    moved.symlink_to(outside / moved.name)
    layout.Store(root).entry("node", "20.11.1", "x64").receipt.touch()
    os.utime(
        layout.Store(root).entry("node", "20.11.1", "x64").receipt,
        (0, 0),  # long unused: eviction would take it
    )
    return root, outside


@pytest.mark.parametrize("level", ["tool", "version"])
def test_repair_evict_and_gc_never_remove_through_a_linked_folder(
    tmp_path: Path, http_server: Server, level: str
) -> None:
    root, outside = tool_folder_moved_out(tmp_path, http_server, level)
    before = snapshot(outside)
    assert any(name.endswith("bin/node") for name in before)

    done = cli(root, "verify", "--repair", "--format", "json")
    assert done.returncode == 1, done.stderr
    [checked] = json.loads(done.stdout)["entries"]
    assert checked["repair"] == "refused"
    assert any("is a symlink" in p for p in checked["problems"]), checked
    for args in (("evict", "--to", "0"), ("gc",), ("ls",)):
        assert "Traceback" not in cli(root, *args).stderr
    assert snapshot(outside) == before
    assert layout.Store(root).entry("node", "20.11.1", "x64").receipt.exists()


def test_a_folder_swapped_for_a_link_before_a_removal_is_refused(
    tmp_path: Path, http_server: Server
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    fixtures.serve_node(http_server)
    fixtures.ensure_node(tmp_path / "store", http_server)
    store = layout.Store(tmp_path / "store")
    entry = store.entry("node", "20.11.1", "x64")
    # The listing saw real folders; then the tool folder became a link (a TOCTOU swap).
    os.rename(store.root / "node", outside / "node")
    (store.root / "node").symlink_to(outside / "node")
    before = snapshot(outside)
    with pytest.raises(evicting.Refused, match="node is a symlink"):
        evicting.remove(store, entry, backend=locks.PosixLocks(), why="test")
    assert snapshot(outside) == before


def call(agent: Agent, method: str, target: str, body: Any = None) -> tuple[int, Any]:
    raw = json.dumps(body).encode() if body is not None else None
    return unix_request(agent.socket, method, target, token=None, body=raw)


def test_an_agent_never_removes_or_logs_through_a_link(
    start_agent: Starter, http_server: Server
) -> None:
    root, outside = tool_folder_moved_out(start_agent.workdir, http_server, "tool")
    (outside / "precious").write_bytes(PRECIOUS)
    janitor.history_path(layout.Store(root)).parent.mkdir(exist_ok=True)
    janitor.history_path(layout.Store(root)).symlink_to(outside / "precious")
    before = snapshot(outside)
    config = start_agent.base_config()
    # A budget of one byte: every janitor pass tries to evict all it can.
    config["cache"] = {"root": str(root), "size_budget": 1, "janitor_interval_seconds": 1}
    agent = start_agent.start(config)

    def passes(result: str) -> float:
        return agent.metric(f'runner_agent_janitor_runs_total{{result="{result}"}}') or 0.0

    agent.wait_for(lambda: passes("ok") >= 3, timeout=15, what="three janitor passes")
    status, done = call(agent, "POST", "/v1/cache/verify", {"repair": True})
    assert status == 200, done
    [checked] = done["entries"]
    assert checked["repair"] == "refused"
    assert any("is a symlink" in p for p in checked["problems"])
    status, _ = call(agent, "POST", "/v1/cache/evict", {"to": 0})
    assert status == 200
    status, _ = call(agent, "POST", "/v1/cache/gc", {})
    assert status == 200
    assert snapshot(outside) == before
    assert "cannot append to the janitor log" in agent.logs()


def test_an_entry_reached_through_a_link_is_never_handed_out(
    tmp_path: Path, http_server: Server
) -> None:
    root, outside = tool_folder_moved_out(tmp_path, http_server, "tool")
    before = snapshot(outside)
    entries._verified.clear()  # a fresh process: the entry is verified again
    with pytest.raises(layout.StoreError, match="node is a symlink"):
        fixtures.ensure_node(root, http_server)
    assert snapshot(outside) == before


def test_a_folder_swapped_for_a_fifo_mid_walk_is_skipped_not_waited_on(tmp_path: Path) -> None:
    import threading

    from agent.store import nofollow

    tree = tmp_path / "tree"
    (tree / "a").mkdir(parents=True)
    (tree / "b").mkdir()
    (tree / "b" / "file").write_text("x")
    seen: list[str] = []

    def run() -> None:
        top = os.open(tree, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for folder, _, files, _ in nofollow.walk(top):
                if folder == ".":
                    # Listed as a folder; now a fifo: os.fwalk would block opening it.
                    (tree / "a").rmdir()
                    os.mkfifo(tree / "a")
                seen.append(folder)
                seen.extend(f"{folder}/{f}" for f in files)
        finally:
            os.close(top)

    walker = threading.Thread(target=run, daemon=True)
    walker.start()
    walker.join(timeout=10)
    assert not walker.is_alive(), "the walk is waiting on the fifo"
    assert seen == [".", "./b", "./b/file"]


def test_removing_a_tree_takes_fifos_and_links_as_themselves(tmp_path: Path) -> None:
    from agent.store import nofollow

    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("keep")
    tree = tmp_path / "tree"
    (tree / "d" / "e").mkdir(parents=True)
    os.mkfifo(tree / "d" / "fifo")
    (tree / "d" / "link").symlink_to(outside, target_is_directory=True)
    parent = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert nofollow.remove_at(parent, "tree")
    finally:
        os.close(parent)
    assert not tree.exists()
    assert (outside / "keep").read_text() == "keep"


def test_a_walk_refuses_a_tree_nested_past_its_depth(tmp_path: Path) -> None:
    from agent.store import nofollow

    deep = tmp_path / "deep"
    deep.mkdir()
    fd = os.open(deep, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(nofollow.MAX_DEPTH + 2):
        os.mkdir("d", dir_fd=fd)
        child = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = child
    os.close(fd)
    top = os.open(deep, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(nofollow.TooDeep, match="nested deeper than"):
            for _ in nofollow.walk(top):
                pass
    finally:
        os.close(top)


def test_a_huge_janitor_log_is_trimmed_from_its_tail_only(tmp_path: Path) -> None:
    from agent.store import janitor as janitor_mod
    from agent.store import layout as store_layout
    from agent.store import locks as store_locks

    store = store_layout.Store(tmp_path / "store")
    store.prepare()
    log = janitor_mod.history_path(store)
    log.parent.mkdir(parents=True, exist_ok=True)
    # 64 MiB of one line: the trim reads a bounded tail, not the whole file.
    with log.open("wb") as out:
        out.write((b"x" * 99 + b"\n") * (640 * 1024))
    import tracemalloc

    cache = janitor_mod.Janitor(store, store_locks.PosixLocks(), budget=lambda: 10**12)
    tracemalloc.start()
    try:
        cache.periodic()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * 1024 * 1024  # the whole file would be 64 MiB
    assert log.stat().st_size < janitor_mod.HISTORY_KEEP * 1000
    assert janitor_mod.history(store)[-1]["result"]
