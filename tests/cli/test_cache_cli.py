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


def downloads(store: layout.Store) -> list[Path]:
    return sorted(p for p in store.downloads.glob("??/*") if not p.name.startswith("."))


def human(size: int) -> str:
    return f"{size} B" if size < 1024 else f"{size / 1024:.1f} KiB"


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
    assert lines[3].startswith("2 entries, ")
    data = json.loads(run_cli("cache", "ls", "--format", "json", *cfg).stdout)
    assert [e["key"] for e in data["entries"]] == ["node@20.11.1@x64", "node@22.21.1@x64"]
    assert [e["entry"] for e in data["entries"]] == ["node/20.11.1/x64", "node/22.21.1/x64"]
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
    for path in downloads(store):
        os.utime(path, (old, old))
    evicted = run_cli("cache", "evict", "--to", "0B", *cfg)
    assert evicted.returncode == 0, evicted.stdout
    assert "node/22.21.1/x64" in evicted.stdout
    assert "evicted" in evicted.stdout

    bad = run_cli("cache", "evict", "--to", "ten gigs", *cfg)
    assert bad.returncode == 2
    assert "--to: 'ten gigs' is not a size; expected bytes" in bad.stderr


def test_the_download_cache_is_listed_counted_and_evicted_first(
    workdir: Path, http_server: Server
) -> None:
    config, store = store_with_node(workdir, http_server)
    cfg = ["--config", str(config)]
    old = time.time() - 3600
    for key in ("20.11.1", "22.21.1"):
        os.utime(store.entry("node", key, "x64").receipt, (old, old))
    archives = downloads(store)
    assert len(archives) == 2
    for path in archives:
        os.utime(path, (old, old))
    downloaded = sum(p.stat().st_size for p in archives)

    data = json.loads(run_cli("cache", "ls", "--format", "json", *cfg).stdout)
    entry_bytes = sum(e["size"] for e in data["entries"])
    assert data["total"] == {
        "bytes": entry_bytes + downloaded,
        "entries": 2,
        "entry_bytes": entry_bytes,
        "downloads": 2,
        "download_bytes": downloaded,
    }
    assert sorted(d["sha256"] for d in data["downloads"]) == [p.name for p in archives]
    listing = run_cli("cache", "ls", *cfg).stdout
    assert f"2 downloads, {human(downloaded)} (the download cache" in listing
    assert f"total {human(entry_bytes + downloaded)}, budget " in listing

    evicted = run_cli("cache", "evict", "--to", "0", *cfg)
    assert evicted.returncode == 0, evicted.stdout
    rows = [line.split()[:2] for line in evicted.stdout.splitlines()[1:-1]]
    kinds = [row[0] for row in rows]
    assert kinds == ["download", "download", "node/20.11.1/x64", "node/22.21.1/x64"], rows
    assert f"{human(entry_bytes + downloaded)} -> 0 B (entries and downloads)" in evicted.stdout
    assert downloads(store) == []


def test_verify_evict_and_ls_name_entries_one_way(workdir: Path, http_server: Server) -> None:
    config, store = store_with_node(workdir, http_server)
    cfg = ["--config", str(config)]
    (store.entry("node", "20.11.1", "x64").path / "README.md").write_text("")
    outputs = {
        "ls": run_cli("cache", "ls", *cfg).stdout,
        "verify": run_cli("cache", "verify", *cfg).stdout,
        "evict": run_cli("cache", "evict", "--to", "0", *cfg).stdout,
    }
    for command, out in outputs.items():
        assert "node/20.11.1/x64" in out, (command, out)
        assert "node/22.21.1/x64" in out, (command, out)
        assert "@" not in out.replace("(cli:", ""), (command, out)
        assert " bytes" not in out, (command, out)
    assert "README.md: 0 B, " in outputs["verify"]
