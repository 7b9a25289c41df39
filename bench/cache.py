"""The store's cache metrics: ``/metrics`` scrape time with 10,000 entries, no tree walk.

Run from the repository root with the venv's interpreter::

    .venv/bin/python bench/cache.py [--entries 10000] [--scrapes 1000] [--json FILE]

Method (one machine, one run; nothing is asserted, a table is printed):

1. A store is written into a temp folder: ``--entries`` entries laid out as the installer
   leaves them (``<name>/<version>/x64/`` with one small file, the ``x64.complete``
   marker, and a receipt written by ``agent.store.receipts.write`` recording a size and a
   manifest), spread over 100 tool names. No install runs: what is measured is reading
   the store, not filling it.
2. Tally: ``agent.store.inventory.Tally.refresh()`` (what the daemon runs in a thread
   every 15 s), the first time (every receipt parsed) and then ``--refreshes`` times
   again with nothing changed (two ``stat()`` calls an entry), timed with
   ``perf_counter``. Context for the scrape, no target.
3. Scrape: a real ``runner-agent serve`` (``tests.support.agentproc``) runs on the store, with
   the default janitor interval (no pass during the run). Once its
   ``runner_agent_cache_entries`` reads ``--entries``, ``GET /metrics`` is sent
   ``--scrapes`` times in a row over loopback TCP with ``urllib``, a new connection each
   (as Prometheus without keep-alive), and each round trip is timed; p50/p99 with
   linear interpolation. The same is then done for the in-process collector alone
   (``agent.store.exporting.CacheCollector.collect`` over a refreshed ``Tally``).
   Target: scrape p99 <= 20 ms.

The agent is stopped by PID; temp folders are removed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from benchkit import met, pct, timed

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.store import exporting, inventory, janitor, layout, locks, receipts  # noqa: E402
from tests.support import agentproc  # noqa: E402 - the repository root is on the path above


def fill(root: Path, entries: int) -> layout.Store:
    """``entries`` complete entries with receipts, as an installer would leave them."""
    store = layout.Store(root)
    store.prepare()
    for i in range(entries):
        entry = store.entry(f"tool{i % 100}", f"1.{i // 100}.0", "x64")
        entry.path.mkdir(parents=True)
        (entry.path / "bin").write_bytes(b"x" * 64)
        receipt = receipts.Receipt(
            feature=f"tool{i % 100}",
            version=entry.version,
            key=entry.key,
            platform={"os": "linux", "arch": "x64", "libc": "glibc"},
            method="archive",
            sources=(),
            size=64,
            install_seconds=0.1,
            agent_version="bench",
            created=time.time(),
            check="no check declared",
            manifest={"bin": {"sha256": "0" * 64, "size": 64}},
        )
        entry.receipt.write_bytes(receipt.to_json())
        entry.marker.write_bytes(b"")
    return store


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=10_000)
    parser.add_argument("--scrapes", type=int, default=1000)
    parser.add_argument("--refreshes", type=int, default=20)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    workdir = agentproc.make_workdir()
    starter = agentproc.Starter(workdir)
    try:
        start = time.perf_counter()
        store = fill(workdir / "store", args.entries)
        filled = time.perf_counter() - start
        tally = inventory.Tally(store)
        first = timed(tally.refresh, 1)[0]
        again = timed(tally.refresh, args.refreshes)
        assert tally.snapshot().entries == args.entries

        config = starter.base_config()
        config["cache"] = {"root": str(store.root)}
        agent = starter.start(config)
        agent.wait_for(
            lambda: agent.metric("runner_agent_cache_entries") == args.entries,
            timeout=60,
            what="the agent's running total",
        )
        url = agent.base + "/metrics"
        body = agentproc.http_get(url)[1]
        scrapes = timed(lambda: agentproc.http_get(url), args.scrapes)

        jan = janitor.Janitor(store, locks.PosixLocks(), budget=lambda: 1 << 40)
        jan.refresh()
        collector = exporting.CacheCollector(lambda: jan, budget=lambda: 1 << 40)
        collects = timed(lambda: list(collector.collect()), args.scrapes)
    finally:
        starter.stop_all()
        agentproc.remove_tree(workdir)

    ms = 1000.0
    p99 = pct(scrapes, 0.99)
    rows: list[tuple[str, str, str, str]] = [
        (f"/metrics scrape, {args.entries} entries, p50 (ms)", f"{pct(scrapes, 0.5) * ms:.2f}",
         "", ""),
        (f"/metrics scrape, {args.entries} entries, p99 (ms)", f"{p99 * ms:.2f}", "<= 20",
         met(p99 <= 0.020)),
        ("cache collector alone, p50 / p99 (ms)",
         f"{pct(collects, 0.5) * ms:.3f} / {pct(collects, 0.99) * ms:.3f}", "", ""),
        ("tally refresh, first (every receipt parsed) (ms)", f"{first * ms:.0f}", "", ""),
        ("tally refresh, nothing changed, p50 (ms)", f"{pct(again, 0.5) * ms:.0f}", "", ""),
    ]  # fmt: skip
    print(f"store of {args.entries} entries written in {filled:.1f} s under {workdir}")
    print(f"/metrics body: {len(body)} bytes; {args.scrapes} scrapes, new connection each")
    print("| metric | value | target | met |")
    print("|---|---:|---:|:---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    if args.json:
        data: dict[str, Any] = {
            "entries": args.entries,
            "scrapes": scrapes,
            "collects": collects,
            "tally_first": first,
            "tally_again": again,
        }
        args.json.write_text(json.dumps(data, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
