"""Startup time, memory and probe latency of ``runner-agent serve`` against a floor.

Run from the repository root with the venv's interpreter::

    .venv/bin/python bench/startup.py [--runs 15] [--requests 20000] [--json FILE]
    .venv/bin/python bench/startup.py --quick      # a short smoke run

Method (one machine, one run, loopback only, ports found by binding port 0):

0. Precompile ``agent``, ``bench`` and the site-packages of the agent's dependency
   closure (aiohttp, prometheus_client, pydantic, pydantic_core, yaml, multidict, yarl,
   uvloop, ...), so that neither process pays bytecode compilation even with
   ``PYTHONDONTWRITEBYTECODE`` set. One untimed start of each process warms the page cache.
1. Floor: ``bench/floor.py PORT`` imports aiohttp.web, prometheus_client, pydantic and
   yaml and answers GET with 200. Agent: ``sys.executable -m agent serve --config FILE``
   (or the console script with ``--launcher script``), with a config that sets only
   ``server.metrics_address`` and ``server.socket_path`` (in a temp dir); RUNNER_AGENT_*
   variables are removed from the child's environment.
2. Startup: the clock starts just before ``Popen`` (fork + exec of the venv's interpreter,
   never a pyenv shim) and stops when a GET /healthz returns 200. The benchmark polls
   with a raw socket: a refused connect is retried every ``--poll-ms`` (default 2 ms).
   ``--runs`` pairs are timed, floor and agent alternating (ABBA order) to share noise;
   median and p90 (linear interpolation) of each, the ratio of the medians (the one
   held to the target) and, as a check, the median of the per-pair ratios are reported.
3. Memory: ``--settle`` (0.5 s) after the first 200, VmHWM (peak RSS) and VmRSS are read
   from ``/proc/PID/status`` in every timed run; medians and their ratio are reported.
4. RSS growth: a fresh process of each kind gets ``--warmup`` (500) mixed requests
   (half /healthz, half /metrics; the floor answers both with its one route), then
   VmRSS is read, then ``--requests`` (20,000) more mixed requests, then VmRSS again.
   Requests come from an aiohttp client at concurrency ``--concurrency`` (16).
5. Latency: on the same processes, ``--latency-requests`` (5,000) GET /healthz from 16
   keep-alive workers (aiohttp ClientSession, TCPConnector(limit=16)); each request is
   timed from send to the body read; p50, p99 and requests/s are reported. The client
   shares the machine's cores with the server and uses uvloop when it is installed.

Nothing is asserted: the table has a target and a met column, and ``--json`` writes the
raw samples and the summary. Every started process is stopped by PID with SIGTERM, then
SIGKILL after 5 s; temp dirs are removed.
"""

from __future__ import annotations

import argparse
import asyncio
import compileall
import contextlib
import importlib.metadata
import importlib.util
import json
import os
import re
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import aiohttp
from benchkit import met, pct

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
FLOOR = BENCH / "floor.py"
MIB = 1024.0

# Packages precompiled by name, on top of runner-agent's dependency closure.
NAMED_PACKAGES = (
    "aiohttp",
    "prometheus_client",
    "pydantic",
    "pydantic_core",
    "yaml",
    "multidict",
    "yarl",
    "uvloop",
)

TARGET_STARTUP_RATIO = 1.15
TARGET_PEAK_RSS_RATIO = 1.15
TARGET_GROWTH_PERCENT = 5.0
TARGET_P99_MS = 5.0


# --- precompilation --------------------------------------------------------------------


def _dependency_closure(root: str) -> set[str]:
    """Distribution names reachable from ``root``'s requirements, extras left out."""
    seen: set[str] = set()
    todo = [root]
    while todo:
        name = todo.pop()
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in seen:
            continue
        seen.add(key)
        try:
            requires = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for req in requires:
            _, _, marker = req.partition(";")
            if "extra" in marker:
                continue
            match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", req)
            if match:
                todo.append(match.group(1))
    return seen


def _top_level_paths(dist_name: str) -> set[Path]:
    """The top-level package dirs and modules a distribution installed."""
    try:
        dist = importlib.metadata.distribution(dist_name)
    except importlib.metadata.PackageNotFoundError:
        return set()
    found: set[Path] = set()
    for entry in dist.files or []:
        parts = entry.parts
        if not parts or parts[0].endswith((".dist-info", ".data")) or parts[0] == "..":
            continue
        if len(parts) == 1 and entry.suffix != ".py":
            continue
        found.add(Path(str(dist.locate_file(parts[0]))))
    return found


def precompile() -> float:
    """Write .pyc files for agent, bench and the dependencies; return seconds spent."""
    start = time.perf_counter()
    targets: set[Path] = {ROOT / "agent", BENCH}
    for dist_name in _dependency_closure("runner-agent") - {"runner-agent"}:
        targets |= _top_level_paths(dist_name)
    for name in NAMED_PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.submodule_search_locations:
            targets.update(Path(p) for p in spec.submodule_search_locations)
    for target in sorted(targets):
        if target.is_dir():
            compileall.compile_dir(target, quiet=1)
        elif target.suffix == ".py" and target.is_file():
            compileall.compile_file(target, quiet=1)
    return time.perf_counter() - start


# --- processes -------------------------------------------------------------------------


def free_port() -> int:
    """A free TCP port on 127.0.0.1, found by binding port 0."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def child_env() -> dict[str, str]:
    """The benchmark's environment without any RUNNER_AGENT_* setting."""
    return {k: v for k, v in os.environ.items() if not k.startswith("RUNNER_AGENT_")}


@dataclass
class Started:
    """One started process: its Popen, port, log and the seconds to its first 200."""

    kind: str
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path
    log: TextIO
    startup_s: float = 0.0
    status: dict[str, int] = field(default_factory=dict)

    def log_tail(self, limit: int = 2000) -> str:
        self.log.flush()
        try:
            return self.log_path.read_text(errors="replace")[-limit:]
        except OSError:
            return ""


def read_proc_status(pid: int) -> dict[str, int]:
    """VmHWM and VmRSS of ``pid`` in kB, from /proc/PID/status."""
    values: dict[str, int] = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            key, _, rest = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                values[key] = int(rest.split()[0])
    return values


def http_get_status(port: int, path: str, timeout: float) -> int:
    """One GET over a fresh connection; the status code (raises OSError if refused)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode()
        )
        data = b""
        while b"\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                raise ConnectionResetError("closed before a status line")
            data += chunk
    return int(data.split(b"\r\n", 1)[0].split()[1])


def wait_first_200(started: Started, t0: float, *, poll_s: float, deadline_s: float) -> float:
    """Poll GET /healthz until 200; return seconds since ``t0``."""
    limit = t0 + deadline_s
    while True:
        try:
            if http_get_status(started.port, "/healthz", timeout=2.0) == 200:
                return time.perf_counter() - t0
        except OSError:
            pass
        if started.proc.poll() is not None:
            raise RuntimeError(
                f"{started.kind} exited with {started.proc.returncode} before its first 200:\n"
                + started.log_tail()
            )
        if time.perf_counter() > limit:
            raise RuntimeError(
                f"{started.kind}: no 200 from /healthz in {deadline_s} s:\n" + started.log_tail()
            )
        time.sleep(poll_s)


def stop(started: Started) -> None:
    """SIGTERM the process by PID, wait up to 5 s, then SIGKILL it."""
    proc = started.proc
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5.0)
    started.log.close()


@dataclass
class Launcher:
    """Builds the argv for the floor and the agent, with configs in one temp dir."""

    workdir: Path
    agent_launcher: str
    count: int = 0

    def argv(self, kind: str, port: int) -> list[str]:
        if kind == "floor":
            return [sys.executable, str(FLOOR), str(port)]
        self.count += 1
        run_dir = self.workdir / f"agent-{self.count}"
        run_dir.mkdir()
        config = run_dir / "config.yaml"
        config.write_text(
            "server:\n"
            f'  metrics_address: "127.0.0.1:{port}"\n'
            f'  socket_path: "{run_dir / "api.sock"}"\n',
            encoding="utf-8",
        )
        if self.agent_launcher == "script":
            script = Path(sys.executable).parent / "runner-agent"
            return [str(script), "serve", "--config", str(config)]
        return [sys.executable, "-m", "agent", "serve", "--config", str(config)]


@contextlib.contextmanager
def launched(
    launcher: Launcher, kind: str, *, poll_s: float, deadline_s: float = 30.0
) -> Iterator[Started]:
    """Start ``kind``, time it to its first 200, yield it, and always stop it."""
    port = free_port()
    argv = launcher.argv(kind, port)
    log_path = launcher.workdir / f"{kind}-{port}-{time.monotonic_ns()}.log"
    log = open(log_path, "w", encoding="utf-8")  # noqa: SIM115 - closed by stop()
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        argv, cwd=ROOT, env=child_env(), stdin=subprocess.DEVNULL, stdout=log, stderr=log
    )
    started = Started(kind=kind, proc=proc, port=port, log_path=log_path, log=log)
    try:
        started.startup_s = wait_first_200(started, t0, poll_s=poll_s, deadline_s=deadline_s)
        yield started
    finally:
        stop(started)


# --- load ------------------------------------------------------------------------------


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def client_loop_name() -> str:
    return "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"


async def _drive(
    port: int, paths: Callable[[int], str], total: int, concurrency: int
) -> tuple[list[float], float, int]:
    """``total`` GETs from ``concurrency`` keep-alive workers: latencies, seconds, errors."""
    latencies: list[float] = []
    errors = 0
    counter = iter(range(total))
    base = f"http://127.0.0.1:{port}"
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(base, connector=connector, timeout=timeout) as session:

        async def worker() -> None:
            nonlocal errors
            for i in counter:
                t = time.perf_counter()
                async with session.get(paths(i)) as resp:
                    await resp.read()
                    if resp.status != 200:
                        errors += 1
                latencies.append(time.perf_counter() - t)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    return latencies, elapsed, errors


def drive(
    port: int, paths: Callable[[int], str], total: int, concurrency: int
) -> tuple[list[float], float, int]:
    """Run :func:`_drive` on a fresh client event loop."""
    with asyncio.Runner(loop_factory=_new_loop) as runner:
        return runner.run(_drive(port, paths, total, concurrency))


def mixed(i: int) -> str:
    return "/healthz" if i % 2 == 0 else "/metrics"


def healthz(i: int) -> str:
    return "/healthz"


# --- statistics and report -------------------------------------------------------------


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def load_phase(
    launcher: Launcher, kind: str, args: argparse.Namespace, poll_s: float
) -> dict[str, Any]:
    """RSS growth under mixed load, then /healthz latency, on one fresh process."""
    with launched(launcher, kind, poll_s=poll_s) as started:
        pid = started.proc.pid
        _, _, warm_errors = drive(started.port, mixed, args.warmup, args.concurrency)
        rss_before = read_proc_status(pid)["VmRSS"]
        _, load_s, load_errors = drive(started.port, mixed, args.requests, args.concurrency)
        rss_after = read_proc_status(pid)["VmRSS"]
        lat, lat_s, lat_errors = drive(
            started.port, healthz, args.latency_requests, args.concurrency
        )
        hwm = read_proc_status(pid)["VmHWM"]
    return {
        "rss_before_kb": rss_before,
        "rss_after_kb": rss_after,
        "growth_percent": 100.0 * (rss_after - rss_before) / rss_before,
        "load_seconds": load_s,
        "load_rps": args.requests / load_s,
        "vmhwm_after_load_kb": hwm,
        "latency_p50_ms": 1000 * pct(lat, 0.50),
        "latency_p99_ms": 1000 * pct(lat, 0.99),
        "latency_max_ms": 1000 * max(lat),
        "latency_rps": args.latency_requests / lat_s,
        "errors": warm_errors + load_errors + lat_errors,
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=15, help="timed startups of each (15)")
    parser.add_argument("--requests", type=int, default=20_000, help="mixed load requests")
    parser.add_argument("--warmup", type=int, default=500, help="mixed requests before RSS")
    parser.add_argument("--latency-requests", type=int, default=5_000, help="/healthz GETs")
    parser.add_argument("--concurrency", type=int, default=16, help="client workers (16)")
    parser.add_argument("--settle", type=float, default=0.5, help="s after first 200 (0.5)")
    parser.add_argument("--poll-ms", type=float, default=2.0, help="connect retry interval")
    parser.add_argument(
        "--launcher",
        choices=["module", "script"],
        default="module",
        help="agent as `python -m agent serve` (default) or the runner-agent console script",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 3 runs, 2,000 requests")
    parser.add_argument("--json", type=Path, default=None, metavar="FILE", help="also write JSON")
    args = parser.parse_args(argv)
    if args.quick:
        args.runs, args.requests, args.warmup, args.latency_requests = 3, 2_000, 200, 1_000
    return args


def main(argv: list[str] | None = None) -> int:
    """Run every measurement and print the table."""
    args = parse_args(argv)
    wall = time.perf_counter()
    poll_s = args.poll_ms / 1000.0
    print("command: " + shlex.join([sys.executable, *sys.argv]))
    compile_s = precompile()
    print(
        f"python {sys.version.split()[0]} ({sys.executable}); {os.cpu_count()} CPUs; "
        f"runs {args.runs}; load {args.warmup}+{args.requests} mixed; latency "
        f"{args.latency_requests} /healthz at c={args.concurrency}; client loop "
        f"{client_loop_name()}; agent via {args.launcher}; precompile {compile_s:.1f} s",
        flush=True,
    )

    samples: dict[str, dict[str, list[float]]] = {
        kind: {"startup_ms": [], "vmhwm_kb": [], "vmrss_kb": []} for kind in ("floor", "agent")
    }
    with tempfile.TemporaryDirectory(prefix="agent-bench-") as tmp:
        launcher = Launcher(Path(tmp), args.launcher)
        for kind in ("floor", "agent"):  # untimed: page cache, first-exec costs
            with launched(launcher, kind, poll_s=poll_s):
                pass
        for i in range(args.runs):
            order = ("floor", "agent") if i % 4 in (0, 3) else ("agent", "floor")
            for kind in order:
                with launched(launcher, kind, poll_s=poll_s) as started:
                    time.sleep(args.settle)
                    status = read_proc_status(started.proc.pid)
                samples[kind]["startup_ms"].append(1000 * started.startup_s)
                samples[kind]["vmhwm_kb"].append(status["VmHWM"])
                samples[kind]["vmrss_kb"].append(status["VmRSS"])
        load = {kind: load_phase(launcher, kind, args, poll_s) for kind in ("floor", "agent")}

    def med(kind: str, key: str) -> float:
        return statistics.median(samples[kind][key])

    def p90(kind: str, key: str) -> float:
        return pct(samples[kind][key], 0.90)

    startup_ratio = med("agent", "startup_ms") / med("floor", "startup_ms")
    paired = [
        a / f
        for a, f in zip(samples["agent"]["startup_ms"], samples["floor"]["startup_ms"], strict=True)
    ]
    hwm_ratio = med("agent", "vmhwm_kb") / med("floor", "vmhwm_kb")
    rss_ratio = med("agent", "vmrss_kb") / med("floor", "vmrss_kb")
    fl, ag = load["floor"], load["agent"]
    rows = [
        (
            "startup to first 200, median (ms)",
            fmt(med("floor", "startup_ms")),
            fmt(med("agent", "startup_ms")),
            f"{startup_ratio:.2f}x",
            f"<= {TARGET_STARTUP_RATIO}x",
            met(startup_ratio <= TARGET_STARTUP_RATIO),
        ),
        (
            "startup to first 200, p90 (ms)",
            fmt(p90("floor", "startup_ms")),
            fmt(p90("agent", "startup_ms")),
            f"{p90('agent', 'startup_ms') / p90('floor', 'startup_ms'):.2f}x",
            "-",
            "-",
        ),
        (
            "startup, median of per-pair agent/floor ratios",
            "-",
            "-",
            f"{statistics.median(paired):.2f}x",
            "-",
            "-",
        ),
        (
            f"peak RSS (VmHWM) {args.settle:g} s after, median (MiB)",
            fmt(med("floor", "vmhwm_kb") / MIB),
            fmt(med("agent", "vmhwm_kb") / MIB),
            f"{hwm_ratio:.2f}x",
            f"<= {TARGET_PEAK_RSS_RATIO}x",
            met(hwm_ratio <= TARGET_PEAK_RSS_RATIO),
        ),
        (
            f"RSS (VmRSS) {args.settle:g} s after, median (MiB)",
            fmt(med("floor", "vmrss_kb") / MIB),
            fmt(med("agent", "vmrss_kb") / MIB),
            f"{rss_ratio:.2f}x",
            "-",
            "-",
        ),
        (
            f"VmRSS after {args.warmup} -> after +{args.requests} mixed (MiB)",
            f"{fl['rss_before_kb'] / MIB:.1f} -> {fl['rss_after_kb'] / MIB:.1f}",
            f"{ag['rss_before_kb'] / MIB:.1f} -> {ag['rss_after_kb'] / MIB:.1f}",
            "-",
            "-",
            "-",
        ),
        (
            f"RSS growth over {args.requests} mixed requests (%)",
            fmt(fl["growth_percent"], 2),
            fmt(ag["growth_percent"], 2),
            f"{ag['growth_percent']:.2f} %",
            f"<= {TARGET_GROWTH_PERCENT:g} %",
            met(ag["growth_percent"] <= TARGET_GROWTH_PERCENT),
        ),
        (
            f"mixed load throughput, c={args.concurrency} (req/s)",
            fmt(fl["load_rps"], 0),
            fmt(ag["load_rps"], 0),
            f"{ag['load_rps'] / fl['load_rps']:.2f}x",
            "-",
            "-",
        ),
        (
            f"/healthz latency p50, c={args.concurrency} (ms)",
            fmt(fl["latency_p50_ms"], 2),
            fmt(ag["latency_p50_ms"], 2),
            f"{ag['latency_p50_ms']:.2f} ms",
            "-",
            "-",
        ),
        (
            f"/healthz latency p99, c={args.concurrency} (ms)",
            fmt(fl["latency_p99_ms"], 2),
            fmt(ag["latency_p99_ms"], 2),
            f"{ag['latency_p99_ms']:.2f} ms",
            f"<= {TARGET_P99_MS:g} ms",
            met(ag["latency_p99_ms"] <= TARGET_P99_MS),
        ),
        (
            f"/healthz throughput, c={args.concurrency} (req/s)",
            fmt(fl["latency_rps"], 0),
            fmt(ag["latency_rps"], 0),
            f"{ag['latency_rps'] / fl['latency_rps']:.2f}x",
            "-",
            "-",
        ),
    ]
    header = ("metric", "floor", "agent", "ratio/value", "target", "met")
    print()
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join(["---"] + ["---:"] * 4 + [":---"]) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    errors = fl["errors"] + ag["errors"]
    total_s = time.perf_counter() - wall
    print()
    print(f"non-200 responses under load: {errors}; total {total_s:.1f} s")

    if args.json is not None:
        report = {
            "command": [sys.executable, *sys.argv],
            "python": sys.version,
            "cpus": os.cpu_count(),
            "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "samples": samples,
            "load": load,
            "summary": {
                "startup_median_ms": {k: med(k, "startup_ms") for k in samples},
                "startup_p90_ms": {k: p90(k, "startup_ms") for k in samples},
                "startup_ratio": startup_ratio,
                "startup_paired_ratios": paired,
                "startup_paired_ratio_median": statistics.median(paired),
                "vmhwm_median_kb": {k: med(k, "vmhwm_kb") for k in samples},
                "vmhwm_ratio": hwm_ratio,
                "vmrss_median_kb": {k: med(k, "vmrss_kb") for k in samples},
                "vmrss_ratio": rss_ratio,
                "agent_growth_percent": ag["growth_percent"],
                "agent_latency_p50_ms": ag["latency_p50_ms"],
                "agent_latency_p99_ms": ag["latency_p99_ms"],
                "met": {
                    "startup_ratio": startup_ratio <= TARGET_STARTUP_RATIO,
                    "peak_rss_ratio": hwm_ratio <= TARGET_PEAK_RSS_RATIO,
                    "rss_growth": ag["growth_percent"] <= TARGET_GROWTH_PERCENT,
                    "latency_p99": ag["latency_p99_ms"] <= TARGET_P99_MS,
                },
            },
            "total_seconds": total_s,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
