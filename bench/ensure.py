"""Benchmark: the ensure API's warm path and the event loop while installs run.

What it measures, on one real agent process (its store in a temp folder, its archives
served by a real HTTP server on loopback, rate-limited so installs take seconds):

1. Cache-hit ensure over the unix socket: ``--hits`` sequential POST /v1/ensure for an
   installed feature; the client's round trip (request sent -> last NDJSON line read)
   and the server's own time (the ``seconds`` of the result event). Target: round trip
   p99 <= 10 ms.
2. /healthz at concurrency 16: ``--requests`` GETs with nothing else running (the
   baseline), then the same while 3 installs of ``--mib`` MiB archives download,
   extract and hash. Target: p99 <= 5 ms while installing. The table says whether the
   installs really were running for the whole measurement.

Run: ``.venv/bin/python bench/ensure.py`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import http.client
import io
import json
import os
import shlex
import socket
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from benchkit import met, pct  # noqa: E402
from startup import drive, healthz  # noqa: E402

from tests.support.agentproc import Starter, remove_tree  # noqa: E402
from tests.support.server import Reply, Server  # noqa: E402


def archive(name: str, mib: int) -> bytes:
    """A tar.gz of ``mib`` MiB of incompressible data in 16 files."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=1) as tar:
        for i in range(16):
            data = os.urandom(mib * 1024 * 1024 // 16)
            info = tarfile.TarInfo(f"{name}/data/part{i}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        script = f"#!/bin/sh\necho {name} 1.0.0\n".encode()
        info = tarfile.TarInfo(f"{name}/bin/{name}")
        info.size, info.mode = len(script), 0o755
        tar.addfile(info, io.BytesIO(script))
    return buffer.getvalue()


def feature(folder: Path, name: str, body: bytes) -> None:
    data = {
        "id": name,
        "name": name,
        "versions": ["1.0.0"],
        "platforms": ["linux"],
        "toolcache_name": name,
        "install": [
            {
                "method": "archive",
                "platforms": ["linux"],
                "url": f"https://example.invalid/{name}-{{version}}.tar.gz",
                "sha256": {"1.0.0": {"linux": hashlib.sha256(body).hexdigest()}},
                "strip_components": 1,
            }
        ],
        "env": {"path": ["bin"]},
    }
    (folder / name).mkdir(parents=True)
    (folder / name / "feature.yaml").write_text(yaml.safe_dump(data))


def ensure(sock: Path, name: str) -> tuple[float, dict[str, Any]]:
    """One POST /v1/ensure over the unix socket: round trip seconds and the result."""

    class Conn(http.client.HTTPConnection):
        def connect(self) -> None:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.connect(str(sock))

    conn = Conn("localhost", timeout=600)
    body = json.dumps({"requests": [name]}).encode()
    start = time.perf_counter()
    conn.request("POST", "/v1/ensure", body=body, headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    lines = response.read().splitlines()
    elapsed = time.perf_counter() - start
    conn.close()
    return elapsed, json.loads(lines[-1])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--hits", type=int, default=1000, help="cache-hit ensures")
    parser.add_argument("--requests", type=int, default=5000, help="/healthz GETs per phase")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--mib", type=int, default=48, help="size of each install's archive")
    parser.add_argument("--rate-mib", type=float, default=8.0, help="server rate, MiB/s each")
    parser.add_argument("--quick", action="store_true", help="hits 200, requests 1000, 16 MiB")
    args = parser.parse_args(argv)
    if args.quick:
        args.hits, args.requests, args.mib = 200, 1000, 16
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print("command: " + shlex.join([sys.executable, *sys.argv]))
    os.environ["no_proxy"] = os.environ["NO_PROXY"] = "127.0.0.1"
    work = Path(tempfile.mkdtemp(prefix="ra-bench-ensure-"))
    starter = Starter(work)
    rows: list[tuple[str, str, str, str]] = []
    try:
        with Server() as server:
            catalog = work / "catalog"
            small = archive("hit", 1)
            feature(catalog, "hit", small)
            server.route("/x/hit-1.0.0.tar.gz", Reply(body=small))
            for name in ("big1", "big2", "big3"):
                body = archive(name, args.mib)
                feature(catalog, name, body)
                server.route(
                    f"/x/{name}-1.0.0.tar.gz", Reply(body=body, rate=args.rate_mib * 2**20)
                )
            config = starter.base_config()
            config["catalog"] = {"bundled": False, "paths": [str(catalog)]}
            config["cache"] = {"root": str(work / "store")}
            config["installer"] = {
                "mirrors": {"https://example.invalid/": server.url("/x/")},
                "parallelism": 3,
            }
            config["logging"] = {"format": "json", "level": "warning"}
            agent = starter.start(config)
            agent.wait_for(lambda: agent.get("/readyz")[0] == 200, timeout=30, what="ready")
            print(
                f"python {sys.version.split()[0]}; {os.cpu_count()} CPUs; hits {args.hits}; "
                f"/healthz {args.requests} at c={args.concurrency}; 3 installs of {args.mib} "
                f"MiB at {args.rate_mib:g} MiB/s each",
                flush=True,
            )
            first, data = ensure(agent.socket, "hit")
            assert data["features"][0]["result"] == "installed", data
            trips, server_times = [], []
            for _ in range(args.hits):
                elapsed, data = ensure(agent.socket, "hit")
                assert data["features"][0]["result"] == "hit", data
                trips.append(elapsed * 1000)
                server_times.append(data["seconds"] * 1000)
            rows += [
                (
                    "cache-hit ensure, server time p50 (ms)",
                    f"{pct(server_times, 0.5):.2f}",
                    "-",
                    "-",
                ),
                (
                    "cache-hit ensure, server time p99 (ms)",
                    f"{pct(server_times, 0.99):.2f}",
                    "-",
                    "-",
                ),
                ("cache-hit ensure, round trip p50 (ms)", f"{pct(trips, 0.5):.2f}", "-", "-"),
                (
                    "cache-hit ensure, round trip p99 (ms)",
                    f"{pct(trips, 0.99):.2f}",
                    "<= 10 ms",
                    met(pct(trips, 0.99) <= 10),
                ),
                (
                    "first ensure (an install of 1 MiB), round trip (ms)",
                    f"{first * 1000:.1f}",
                    "-",
                    "-",
                ),
            ]
            base, _, errors = drive(agent.port, healthz, args.requests, args.concurrency)
            base_ms = [x * 1000 for x in base]
            finished: dict[str, float] = {}

            def install(name: str) -> None:
                _, result = ensure(agent.socket, name)
                assert result["ok"], result
                finished[name] = time.perf_counter()

            threads = [
                threading.Thread(target=install, args=(n,)) for n in ("big1", "big2", "big3")
            ]
            for thread in threads:
                thread.start()
            time.sleep(0.5)  # the installs are downloading now
            t0 = time.perf_counter()
            busy, _, busy_errors = drive(agent.port, healthz, args.requests, args.concurrency)
            t1 = time.perf_counter()
            for thread in threads:
                thread.join()
            busy_ms = [x * 1000 for x in busy]
            overlap = all(finished[n] > t1 for n in finished)
            rows += [
                (
                    f"/healthz p50, c={args.concurrency}, idle (ms)",
                    f"{pct(base_ms, 0.5):.2f}",
                    "-",
                    "-",
                ),
                (
                    f"/healthz p99, c={args.concurrency}, idle (ms)",
                    f"{pct(base_ms, 0.99):.2f}",
                    "-",
                    "-",
                ),
                (
                    f"/healthz p50, c={args.concurrency}, 3 installs running (ms)",
                    f"{pct(busy_ms, 0.5):.2f}",
                    "-",
                    "-",
                ),
                (
                    f"/healthz p99, c={args.concurrency}, 3 installs running (ms)",
                    f"{pct(busy_ms, 0.99):.2f}",
                    "<= 5 ms",
                    met(pct(busy_ms, 0.99) <= 5),
                ),
                (
                    "/healthz errors idle / busy",
                    f"{errors} / {busy_errors}",
                    "0 / 0",
                    met(errors + busy_errors == 0),
                ),
                (
                    "installs running for the whole measurement",
                    f"{'yes' if overlap else 'no'} ({t1 - t0:.1f} s measured; installs ended "
                    f"{min(finished.values()) - t0:.1f}-{max(finished.values()) - t0:.1f} s in)",
                    "yes",
                    met(overlap),
                ),
            ]
    finally:
        starter.stop_all()
        remove_tree(work)
    print()
    print("| metric | value | target | met |")
    print("|---|---:|---:|:---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    asyncio.set_event_loop_policy(None)
    raise SystemExit(main())
