"""``runner-agent cache ls | verify [--repair] | gc | evict --to SIZE``, on this host.

Works on the store at ``cache.root`` directly (host mode, like ``runner-agent ensure``),
with the configured lock backend, so it excludes and is excluded by the agents sharing
the volume: ``verify``, ``gc`` and ``evict`` take the janitor lock without waiting and
exit 1 when another janitor holds it. Output: a table, or ``--format json``.

An entry whose receipt cannot be used is listed as ``bad-receipt`` with the reason, and
never stops the others; ``verify --repair`` removes it.

The store's size counts the download cache (archives kept for a re-install) beside the
entries; ``evict`` removes downloads first, then entries. Entries are named in the
tool-cache form, ``node/22.21.1/x64`` (``x64-musl`` on musl), and sizes are human.

Exit codes: 0 done (``verify``: nothing broken is left; ``evict``: the target is
reached); 1 problems remain, the target cannot be reached (entries in use, recently used
or not the agent's), another janitor is running, or the store cannot be used; 2 usage.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

from agent.cli import common


def add_parsers(sub: Any, config_arg: Callable[[argparse.ArgumentParser], None]) -> None:
    """Register ``cache`` and its sub-commands."""
    cache = sub.add_parser(
        "cache",
        help="list, verify, collect and evict entries of the shared tool store (this host)",
        description="Manage the shared tool store at cache.root directly, on this host.",
    )
    csub = cache.add_subparsers(dest="cache_command", metavar="SUBCOMMAND", required=True)

    def common_args(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--format", choices=["table", "json"], default="table")
        config_arg(parser)

    listing = csub.add_parser(
        "ls", help="entries with size, target, last use and in-use state; the download cache"
    )
    common_args(listing)
    listing.set_defaults(run=run_ls)
    verify = csub.add_parser(
        "verify",
        help="re-hash entries against their receipts; find orphans and stray markers",
        description=(
            "Check every entry against its receipt. With --repair, remove broken entries "
            "the agent wrote (the next ensure re-installs them); entries without a receipt "
            "are reported, never removed."
        ),
    )
    verify.add_argument("--repair", action="store_true", help="remove what is broken")
    common_args(verify)
    verify.set_defaults(run=run_verify)
    gc = csub.add_parser("gc", help="remove what dead installs left: staging, partials, leases")
    common_args(gc)
    gc.set_defaults(run=run_gc)
    evict = csub.add_parser(
        "evict",
        help="remove least recently used downloads, then entries, until the store fits SIZE",
        description=(
            "Evict until the store (the receipts' total plus the download cache) is at most "
            "SIZE: least recently used downloads first (only a re-download), then entries. "
            "Entries in use by a job (in any pod), and anything used in the last minute, "
            "are kept."
        ),
    )
    evict.add_argument("--to", required=True, metavar="SIZE", help="e.g. 10GiB, 500MB or 0")
    common_args(evict)
    evict.set_defaults(run=run_evict)


def _janitor(args: argparse.Namespace) -> Any:
    from agent.store import janitor, layout, locks

    settings = common.settings(args)
    cache = settings.cache
    return janitor.Janitor(
        layout.Store(cache.root),
        locks.backend(cache.lock_backend, lease_ttl=cache.lease_seconds),
        budget=lambda: int(cache.size_budget),
        agent_id=f"cli:{janitor.default_agent_id()}",
    )


def _guarded(work: Callable[[], int]) -> int:
    from agent.store import layout

    try:
        return work()
    except layout.StoreError as exc:
        return common.fail(str(exc))
    except OSError as exc:  # the volume: a folder that cannot be read, or is a link
        return common.fail(f"cannot work on the store: {exc}")


def run_ls(args: argparse.Namespace) -> int:
    """List entries and the download cache."""
    from agent.store import inventory

    jan = _janitor(args)

    def work() -> int:
        found = inventory.scan(jan.store)
        archives = inventory.downloads(jan.store)
        total = inventory.totals(found, archives)
        items = [i.to_data() for i in found]
        if args.format == "json":
            _print_json(
                {
                    "root": str(jan.store.root),
                    "budget": int(jan.budget()),
                    "entries": items,
                    "downloads": [d.to_data() for d in archives],
                    "total": total.to_data(),
                }
            )
            return common.EXIT_OK
        now = time.time()
        rows = [
            [
                i["entry"],
                i["state"],
                human(i["size"]),
                i["target"] or "-",
                _ago(i["last_used"], now),
                ", ".join(f"{u['job']} ({u['agent']})" for u in i["in_use"]) or "-",
            ]
            for i in items
        ]
        _table(["ENTRY", "STATE", "SIZE", "TARGET", "LAST USED", "IN USE BY"], rows)
        print(f"{total.entries} entries, {human(total.entry_bytes)} (from receipts)")
        print(
            f"{total.downloads} downloads, {human(total.download_bytes)} (the download cache: "
            "archives kept for a re-install, evicted first)"
        )
        print(f"total {human(total.bytes)}, budget {human(int(jan.budget()))}")
        bad = [i for i in items if i["state"] == "bad-receipt"]
        for i in bad:
            print(f"bad-receipt {i['entry']}: {i['problem']}")
        if bad:
            print("run `runner-agent cache verify --repair` to remove entries with bad receipts")
        return common.EXIT_OK

    return _guarded(work)


def run_verify(args: argparse.Namespace) -> int:
    """Verify (and repair)."""
    jan = _janitor(args)

    def work() -> int:
        done = jan.verify(repair=args.repair).to_data()
        if args.format == "json":
            _print_json(done)
        else:
            rows = [
                [
                    e["entry"],
                    e["status"],
                    e["repair"] or "-",
                    "; ".join(e["problems"] + e["warnings"]) or "-",
                ]
                for e in done["entries"]
            ]
            _table(["ENTRY", "STATUS", "REPAIR", "PROBLEMS"], rows)
            counts = ", ".join(f"{n} {s}" for s, n in sorted(done["counts"].items()))
            print(
                f"{counts or 'no entries'}; receipts say {human(done['recorded_bytes'])}, "
                f"disk holds {human(done['disk_bytes'])}"
            )
            if not done["clean"] and not args.repair:
                print("run `runner-agent cache verify --repair` to remove what is broken")
        return common.EXIT_OK if done["clean"] else common.EXIT_BAD

    return _guarded(work)


def run_gc(args: argparse.Namespace) -> int:
    """Collect garbage."""
    jan = _janitor(args)

    def work() -> int:
        done = jan.gc().to_data()
        if args.format == "json":
            _print_json(done)
            return common.EXIT_OK
        print(f"staging folders removed: {len(done['staging_removed'])}")
        for name in done["staging_removed"]:
            print(f"  {_staged(name)}")
        for name in done["staging_kept"]:
            print(f"kept staging of {_staged(name)}: its install is running")
        print(f"partial downloads removed: {done['partials_removed']}")
        print(f"lapsed in-use leases removed: {done['leases_removed']}")
        print(
            f"unreferenced downloads removed: {done['downloads_removed']} "
            f"({human(done['download_bytes_removed'])})"
        )
        for name in done["unknown"]:
            print(f"left alone (not the agent's name): {name}")
        return common.EXIT_OK

    return _guarded(work)


def _staged(name: str) -> str:
    """``node/22.21.1/x64`` for the staging folder ``node@22.21.1@x64.<hex>``."""
    from agent.store import layout

    key, _, _ = name.rpartition(".")
    return layout.display(key or name)


def run_evict(args: argparse.Namespace) -> int:
    """Evict to a size."""
    from agent.store import evicting

    try:
        target = evicting.parse_size(args.to)
    except evicting.SizeError as exc:
        return common.fail(f"--to: {exc}", common.EXIT_USAGE)
    jan = _janitor(args)

    def work() -> int:
        done = jan.evict(target).to_data()
        if args.format == "json":
            _print_json(done)
        else:
            rows = [[r["entry"], human(r["size"]), "evicted"] for r in done["removed"]]
            rows += [
                [s["entry"], human(s["size"]), f"kept: {s['reason']}"] for s in done["skipped"]
            ]
            if rows:
                _table(["ENTRY", "SIZE", "OUTCOME"], rows)
            reached = "reached" if done["reached"] else "NOT reached"
            print(
                f"{human(done['before'])} -> {human(done['after'])} (entries and downloads); "
                f"target {human(done['target'])} {reached}"
            )
        return common.EXIT_OK if done["reached"] else common.EXIT_BAD

    return _guarded(work)


def human(size: int | None) -> str:
    """``1.5 GiB``; ``-`` when unknown."""
    from agent.store import evicting

    return evicting.human(size)


def _ago(when: float | None, now: float) -> str:
    if when is None:
        return "-"
    seconds = max(0.0, now - when)
    for unit, length in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= length:
            return f"{seconds / length:.0f}{unit} ago"
    return f"{seconds:.0f}s ago"


def _table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True))
