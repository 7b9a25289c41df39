"""``runner-agent cache`` as a real process, on a real store installed from the test server."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import yaml

from agent.store import layout
from tests.support import fixtures
from tests.support.agentproc import run_cli
from tests.support.server import Server


def store_with_node(workdir: Path, server: Server) -> tuple[Path, layout.Store]:
    root = workdir / "store"
    for version in ("20.11.1", "22.21.1"):
        fixtures.serve_node(server, version)
        fixtures.ensure_node(root, server, version)
    config = workdir / "agent.yaml"
    config.write_text(yaml.safe_dump({"cache": {"root": str(root)}}))
    return config, layout.Store(root)


def test_the_cache_commands_print_tables_and_json(workdir: Path, http_server: Server) -> None:
    config, store = store_with_node(workdir, http_server)
    cfg = ["--config", str(config)]

    listing = run_cli("cache", "ls", *cfg)
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.splitlines()
    assert lines[0].split()[:4] == ["ENTRY", "STATE", "SIZE", "TARGET"]
    assert lines[0].endswith("LAST USED  IN USE BY")
    assert lines[1].split()[:2] == ["node/20.11.1/x64", "ok"]
    assert "linux/x64/glibc" in lines[1]
    assert lines[-1].startswith("2 entries, ")
    data = json.loads(run_cli("cache", "ls", "--format", "json", *cfg).stdout)
    assert [e["key"] for e in data["entries"]] == ["node@20.11.1@x64", "node@22.21.1@x64"]
    assert data["total"]["entries"] == 2

    assert run_cli("cache", "verify", *cfg).returncode == 0
    (store.entry("node", "20.11.1", "x64").path / "README.md").unlink()
    broken = run_cli("cache", "verify", *cfg)
    assert broken.returncode == 1
    assert "README.md: missing" in broken.stdout
    assert "cache verify --repair" in broken.stdout
    repaired = run_cli("cache", "verify", "--repair", "--format", "json", *cfg)
    assert repaired.returncode == 0, repaired.stdout
    assert json.loads(repaired.stdout)["entries"][0]["repair"] == "removed"

    gc = run_cli("cache", "gc", *cfg)
    assert gc.returncode == 0
    assert "staging folders removed: 0" in gc.stdout

    recent = run_cli("cache", "evict", "--to", "0", *cfg)
    assert recent.returncode == 1  # used a moment ago: kept, so the target is not reached
    assert "kept: used" in recent.stdout
    assert "NOT reached" in recent.stdout
    old = time.time() - 3600
    os.utime(store.entry("node", "22.21.1", "x64").receipt, (old, old))
    evicted = run_cli("cache", "evict", "--to", "0B", *cfg)
    assert evicted.returncode == 0, evicted.stdout
    assert "node@22.21.1@x64" in evicted.stdout
    assert "evicted" in evicted.stdout

    bad = run_cli("cache", "evict", "--to", "ten gigs", *cfg)
    assert bad.returncode == 2
    assert "--to: 'ten gigs' is not a size; expected bytes" in bad.stderr
