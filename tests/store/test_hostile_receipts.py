"""One bad receipt must not stop cache management (issue 13, point 5).

A store holds one good entry, installed for real from the loopback server, beside entries
whose receipts are hostile: JSON that is not an object, fields of the wrong type, a
100,000-deep array, a file over the size the agent reads, invalid UTF-8, and a receipt
that is a symlink, a fifo or a folder. The real CLI and a real agent's API must list and
verify every one as ``bad-receipt`` and go on, gc and evict must work, the janitor must
pass with the good entry counted, and ``verify --repair`` must remove the bad ones.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from agent.cli.client import request as unix_request
from agent.store import inventory, janitor, layout, locks, receipts, verifying
from tests.support import fixtures
from tests.support.agentproc import Agent, Starter, run_cli
from tests.support.server import Server

GOOD = "node@20.11.1@x64"


def _receipt_of(key: str, **changes: Any) -> bytes:
    name, version, _ = key.split("@")
    data: dict[str, Any] = {
        "feature": name,
        "version": version,
        "key": key,
        "platform": {"os": "linux", "arch": "x64"},
        "method": "archive",
        "sources": [],
        "size": 1,
        "install_seconds": 0.1,
        "agent_version": "0",
        "created": 0.0,
        "check": "",
        "env": {},
        "manifest": {"tool": {"sha256": hashlib.sha256(b"x").hexdigest(), "size": 1}},
    }
    return json.dumps(data | changes).encode()


# name -> what its receipt file holds (bytes), or how it is made (a str).
HOSTILE: dict[str, bytes | str] = {
    "string": b'"a string, not a receipt"',
    "number": b"42",
    "null": b"null",
    "list": b"[1, 2, 3]",
    "size-is-a-string": _receipt_of("size-is-a-string@1.0.0@x64", size="big"),
    "size-is-null": _receipt_of("size-is-null@1.0.0@x64", size=None),
    "platform-is-a-string": _receipt_of("platform-is-a-string@1.0.0@x64", platform="linux"),
    "manifest-is-a-list": _receipt_of("manifest-is-a-list@1.0.0@x64", manifest=[1]),
    "env-is-a-list": _receipt_of("env-is-a-list@1.0.0@x64", env=[1]),
    "sources-are-numbers": _receipt_of("sources-are-numbers@1.0.0@x64", sources=[1, 2]),
    "deep": b"[" * 100_000 + b"]" * 100_000,
    "utf8": b'{"feature": "\xff\xfe"}',
    "huge": "huge",
    "link": "link",
    "fifo": "fifo",
    "folder": "folder",
}


def key_of(name: str) -> str:
    return f"{name}@1.0.0@x64"


def hostile_store(root: Path, server: Server, outside: Path) -> layout.Store:
    """The good entry plus one entry per hostile receipt (folder, file and marker each)."""
    fixtures.serve_node(server)
    fixtures.ensure_node(root, server)
    store = layout.Store(root)
    when = time.time() - 3600  # last used an hour ago: eviction may take it
    os.utime(store.entry("node", "20.11.1", "x64").receipt, (when, when))
    for archive in store.downloads.glob("??/*"):
        os.utime(archive, (when, when))  # its download too: evicted first
    outside.mkdir()
    for name, content in HOSTILE.items():
        entry = store.entry(name, "1.0.0", "x64")
        entry.path.mkdir(parents=True)
        (entry.path / "tool").write_bytes(b"x")
        entry.marker.write_bytes(b"")
        path = entry.receipt
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif content == "huge":  # sparse: over the bound without filling the disk
            with path.open("wb") as handle:
                handle.truncate(receipts.MAX_BYTES + 1)
        elif content == "link":  # a valid receipt, but outside the store
            (outside / "receipt.json").write_bytes(_receipt_of(entry.key))
            path.symlink_to(outside / "receipt.json")
        elif content == "fifo":
            os.mkfifo(path)
        else:
            path.mkdir()
    return store


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))}


def cli(config: Path, *args: str) -> tuple[int, Any, str]:
    done = run_cli("cache", *args, "--config", str(config))
    data: Any = None
    if "--format" in args and done.stdout.strip():
        data = json.loads(done.stdout)
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, data if data is not None else done.stdout, done.stderr


def write_config(path: Path, root: Path) -> Path:
    path.write_text(json.dumps({"cache": {"root": str(root)}}))
    return path


def test_each_hostile_receipt_is_a_bad_receipt_and_the_cli_goes_on(
    tmp_path: Path, http_server: Server
) -> None:
    outside = tmp_path / "outside"
    store = hostile_store(tmp_path / "store", http_server, outside)
    before = snapshot(outside)
    config = write_config(tmp_path / "config.yaml", store.root)
    bad = {key_of(name) for name in HOSTILE}

    rc, listing, _ = cli(config, "ls", "--format", "json")
    assert rc == 0
    states = {e["key"]: e for e in listing["entries"]}
    assert {k for k, e in states.items() if e["state"] == "bad-receipt"} == bad
    assert all(states[k]["problem"] for k in bad)
    assert states[GOOD]["state"] == "ok"
    assert listing["total"]["entries"] == 1
    assert "is a symlink" in states[key_of("link")]["problem"]
    assert "is a fifo" in states[key_of("fifo")]["problem"]
    assert "over" in states[key_of("huge")]["problem"]

    rc, table, _ = cli(config, "ls")
    assert rc == 0
    for key in bad:
        assert f"bad-receipt {layout.display(key)}: " in table
    assert "cache verify --repair" in table

    rc, verified, _ = cli(config, "verify", "--format", "json")
    assert rc == 1  # bad receipts are problems left
    assert verified["counts"] == {"bad-receipt": len(HOSTILE), "ok": 1}

    rc, collected, _ = cli(config, "gc", "--format", "json")
    assert rc == 0
    assert collected["downloads_removed"] == 0  # the good entry's, and fresh ones, stay

    rc, repaired, _ = cli(config, "verify", "--repair", "--format", "json")
    assert rc == 0, repaired
    assert {e["key"]: e["repair"] for e in repaired["entries"] if e["repair"]} == dict.fromkeys(
        bad, "removed"
    )
    rc, listing, _ = cli(config, "ls", "--format", "json")
    assert [(e["key"], e["state"]) for e in listing["entries"]] == [(GOOD, "ok")]
    for name in HOSTILE:
        assert not (store.root / name / "1.0.0" / "x64").exists()
    assert snapshot(outside) == before  # the link went, not what it pointed at

    rc, evicted, _ = cli(config, "evict", "--to", "0", "--format", "json")
    removed = [(r["kind"], r["key"]) for r in evicted["removed"]]
    assert (rc, removed[1:]) == (0, [("entry", GOOD)])
    assert removed[0][0] == "download"


def test_the_store_code_goes_on_past_each_hostile_receipt(
    tmp_path: Path, http_server: Server
) -> None:
    store = hostile_store(tmp_path / "store", http_server, tmp_path / "outside")
    backend = locks.PosixLocks()
    items = {i.key: i for i in inventory.scan(store)}
    for name in HOSTILE:
        assert items[key_of(name)].state == "bad-receipt", name
        items[key_of(name)].to_data()  # what ls and the API print
    tally = inventory.Tally(store).refresh()
    assert tally.entries == 1
    jan = janitor.Janitor(store, backend, budget=lambda: 1 << 40, agent_id="test")
    assert jan.periodic() is not None
    assert jan.runs == {"ok": 1, "skipped": 0, "failed": 0}
    assert jan.tally.snapshot().entries == 1
    checked = {c.key: c.status for c in verifying.verify(store, backend=backend).checked}
    assert checked[GOOD] == "ok"


def call(agent: Agent, method: str, target: str, body: Any = None) -> tuple[int, Any]:
    raw = json.dumps(body).encode() if body is not None else None
    return unix_request(agent.socket, method, target, token=None, body=raw)


def test_an_agent_serves_and_cleans_a_store_with_hostile_receipts(
    start_agent: Starter, http_server: Server
) -> None:
    outside = start_agent.workdir / "outside"
    store = hostile_store(start_agent.workdir / "store", http_server, outside)
    before = snapshot(outside)
    bad = {key_of(name) for name in HOSTILE}
    config = start_agent.base_config()
    config["cache"] = {"root": str(store.root), "janitor_interval_seconds": 1}
    agent = start_agent.start(config)

    def passes(result: str) -> float:
        return agent.metric(f'runner_agent_janitor_runs_total{{result="{result}"}}') or 0.0

    agent.wait_for(lambda: passes("ok") >= 2, timeout=15, what="two janitor passes")
    assert passes("failed") == 0
    assert agent.metric("runner_agent_cache_entries") == 1

    status, listing = call(agent, "GET", "/v1/cache")
    assert status == 200, listing
    states = {e["key"]: e["state"] for e in listing["entries"]}
    assert {k for k, s in states.items() if s == "bad-receipt"} == bad
    assert states[GOOD] == "ok"
    status, verified = call(agent, "POST", "/v1/cache/verify", {"repair": False})
    assert status == 200, verified
    assert verified["counts"] == {"bad-receipt": len(HOSTILE), "ok": 1}
    status, collected = call(agent, "POST", "/v1/cache/gc", {})
    assert status == 200, collected
    status, repaired = call(agent, "POST", "/v1/cache/verify", {"repair": True})
    assert status == 200, repaired
    assert repaired["clean"] is True
    assert {e["key"] for e in repaired["entries"] if e["repair"] == "removed"} == bad
    status, listing = call(agent, "GET", "/v1/cache")
    assert [e["key"] for e in listing["entries"]] == [GOOD]
    status, evicted = call(agent, "POST", "/v1/cache/evict", {"to": 0})
    removed = [(r["kind"], r["key"]) for r in evicted["removed"]]
    assert (status, removed[1:]) == (200, [("entry", GOOD)])
    assert removed[0][0] == "download"
    assert passes("failed") == 0
    assert snapshot(outside) == before
