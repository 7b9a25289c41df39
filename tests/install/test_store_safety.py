"""What the store must never do: replace an entry in use, leave half an entry at the final
path, follow a symlink out, leak a killed install's leftovers, or depend on the umask."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from agent.install import plans, protocol
from agent.store import entries, layout
from tests.support import fixtures
from tests.support.server import Server


def installed(tmp_path: Path, server: Server) -> layout.Entry:
    fixtures.serve_node(server)
    return fixtures.ensure_node(tmp_path, server).installed[0].entry


def test_a_receipt_from_a_newer_agent_is_still_a_hit(tmp_path: Path, http_server: Server) -> None:
    entry = installed(tmp_path, http_server)
    data = json.loads(entry.receipt.read_text())
    data["field_from_the_future"] = 1
    entry.receipt.write_text(json.dumps(data))
    inode = entry.path.stat().st_ino
    entries._verified.clear()
    again = fixtures.ensure_node(tmp_path, http_server).installed[0]
    assert again.cached
    assert entry.path.stat().st_ino == inode


def test_a_marker_with_a_broken_receipt_is_reported_and_left_alone(
    tmp_path: Path, http_server: Server
) -> None:
    entry = installed(tmp_path, http_server)
    entry.receipt.write_text("{not json")
    inode = entry.path.stat().st_ino
    entries._verified.clear()
    with pytest.raises(layout.StoreError, match="has a marker but its receipt cannot be used"):
        fixtures.ensure_node(tmp_path, http_server)
    assert entry.path.stat().st_ino == inode
    assert entry.marker.exists()


def test_another_feature_under_the_same_name_is_an_error(
    tmp_path: Path, http_server: Server
) -> None:
    entry = installed(tmp_path, http_server)
    with pytest.raises(layout.StoreError, match="two features share a tool cache name"):
        entries.lookup(entry, feature="other", version="20.11.1")


def test_a_failure_while_publishing_leaves_nothing_at_the_final_path(
    tmp_path: Path, http_server: Server
) -> None:
    fixtures.serve_node(http_server)
    store = layout.Store(tmp_path)
    store.open()
    entry = store.entry("node", "20.11.1", "x64")
    entry.receipt.mkdir()  # the receipt cannot be written
    with pytest.raises(protocol.InstallError) as info:
        fixtures.ensure_node(tmp_path, http_server)
    assert info.value.step == "publish"
    assert not entry.path.exists()
    assert not entry.marker.exists()
    assert not list(entry.receipt.parent.glob(".*.tmp"))


def test_leftovers_of_a_killed_install_are_swept_under_the_lock(
    tmp_path: Path, http_server: Server
) -> None:
    store = layout.Store(tmp_path)
    store.open()
    entry = store.entry("node", "20.11.1", "x64")
    (store.staging / f"{entry.key}.deadbeef" / "entry").mkdir(parents=True)
    entry.path.parent.mkdir(parents=True)
    (entry.path.parent / f".{entry.leaf}.stale-12345678").mkdir()
    fixtures.serve_node(http_server)
    fixtures.ensure_node(tmp_path, http_server)
    assert not list(store.staging.iterdir())
    assert not list(entry.path.parent.glob(".*stale*"))


def test_a_symlink_in_the_store_is_never_followed(tmp_path: Path, http_server: Server) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    store = tmp_path / "store"
    store.mkdir()
    (store / "node").symlink_to(elsewhere)
    fixtures.serve_node(http_server)
    with pytest.raises(protocol.InstallError, match="is a symlink"):
        fixtures.ensure_node(store, http_server)
    assert list(elsewhere.iterdir()) == []


def test_modes_do_not_depend_on_the_umask(tmp_path: Path, http_server: Server) -> None:
    old = os.umask(0o077)
    try:
        entry = installed(tmp_path, http_server)
    finally:
        os.umask(old)
    assert entry.path.stat().st_mode & 0o777 == 0o755
    assert entry.path.parent.stat().st_mode & 0o777 == 0o755
    assert entry.marker.stat().st_mode & 0o777 == 0o644
    assert entry.receipt.stat().st_mode & 0o777 == 0o644


def test_opening_a_fresh_store_from_many_threads_is_safe(tmp_path: Path) -> None:
    errors: list[BaseException] = []

    def open_store() -> None:
        try:
            layout.Store(tmp_path).open()
        except BaseException as exc:  # collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=open_store) for _ in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert (tmp_path / ".runner-agent" / "format").read_text() == "1\n"


def test_variables_under_the_prefix_are_stored_relative(
    tmp_path: Path, http_server: Server
) -> None:
    fixtures.serve_node(http_server)
    plan = fixtures.node_plan(tmp_path)
    plan["features"][0]["env"]["vars"] = {"NODE_HOME": plan["features"][0]["prefix"]}
    done = plans.ensure_plan(layout.Store(tmp_path), plan, options=fixtures.options(http_server))
    receipt = json.loads(done.installed[0].entry.receipt.read_text())
    assert receipt["env"]["vars"] == {"NODE_HOME": "${prefix}"}
    assert str(tmp_path) not in done.installed[0].entry.receipt.read_text()
    assert done.vars == {"NODE_HOME": str(done.installed[0].entry.path)}


def test_entry_names_cannot_collide_through_the_separator(tmp_path: Path) -> None:
    with pytest.raises(layout.StoreError):
        layout.Store(tmp_path).entry("a@b", "c", "x64")


def test_a_store_wiped_under_a_running_process_is_set_up_again(
    tmp_path: Path, http_server: Server
) -> None:
    import shutil

    installed(tmp_path, http_server)
    shutil.rmtree(tmp_path / ".runner-agent")
    shutil.rmtree(tmp_path / "node")
    [done] = fixtures.ensure_node(tmp_path, http_server).installed
    assert not done.cached
    assert (tmp_path / ".runner-agent" / "format").exists()
