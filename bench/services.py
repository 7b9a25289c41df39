"""The supervisor against real dockerd: recovery, hang detection, and idle CPU.

Run as root from the repository root with the venv's interpreter (needs docker.io)::

    .venv/bin/python bench/services.py [--trials 10] [--hangs 5] [--cpu-seconds 30]
    .venv/bin/python bench/services.py --quick       # a short smoke run

Method (one machine, one run; every dockerd on private paths in a temp folder, with
``--iptables=false --ip6tables=false --bridge=none`` as the development machine needs):

1. Cold start: dockerd launched directly (no agent) ``--cold`` times (5); the clock runs
   from just before ``Popen`` to the first ``GET /_ping`` answering ``OK``, polled every
   5 ms on the socket; each is stopped with SIGTERM and waited for before the next.
2. Recovery: an agent runs dockerd with the preset (``backoff_initial_seconds`` 1 s, the
   default; ``reset_after_seconds`` 1 s and a start limit of 50, so the trials do not
   compound their backoff or trip the limit). Each trial waits 1.5 s of healthy running,
   SIGKILLs dockerd (the pid from ``GET /v1/services``) and times from the kill to
   ``/_ping`` answering OK again, polled every 5 ms. The agent sees the exit at once (a
   pidfd), so the kill is the detection. p50 and max of ``--trials`` (10) are compared
   with the target ``backoff_initial + 1.2 x cold start median``.
3. Hang detection: the same agent with checks every 1 s, timeout 0.5 s, threshold 3 (the
   bound: 1 x 3 + 0.5 = 3.5 s). Each trial SIGSTOPs dockerd at a random phase of the
   check cycle and reads, from the agent's JSON log, when the supervisor moved dockerd to
   ``stopping`` (the moment it declared the hang); the detection time is that timestamp
   minus the wall time of the SIGSTOP. Target: max within 10 % of the bound.
4. Idle CPU: an agent supervising 3 idle services (``python -m http.server`` on
   loopback ports, each with an HTTP check every 1 s over TCP, whose request lines the
   agent forwards to its log) for ``--cpu-seconds`` (30) after 5 s of warm-up; utime +
   stime of the agent process alone from /proc, as a share of one core. Target < 1 %.

Nothing is asserted: the table has a target and a met column, ``--json`` writes the raw
samples. Every process is stopped by PID; temp folders are removed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchkit import met, pct

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support import agentproc  # noqa: E402 - the repository root is on the path above

FLAGS = ["--iptables=false", "--ip6tables=false", "--bridge=none"]


def ping_ok(sock: Path) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(1.0)
            s.connect(str(sock))
            s.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            data = b""
            while chunk := s.recv(4096):
                data += chunk
    except OSError:
        return False
    return b" 200 " in data and data.endswith(b"OK")


def wait_ping(sock: Path, timeout: float = 120.0) -> float:
    start = time.perf_counter()
    while not ping_ok(sock):
        if time.perf_counter() - start > timeout:
            raise RuntimeError(f"dockerd on {sock} did not answer within {timeout} s")
        time.sleep(0.005)
    return time.perf_counter()


def remove(workdir: Path) -> None:
    # dockerd bind-mounts its data root onto itself, and a SIGKILLed one leaves it.
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4]
        if point.startswith(f"{workdir}/"):
            subprocess.run(["umount", "-l", point], check=False, capture_output=True, timeout=30)
    agentproc.remove_tree(workdir)


def paths(workdir: Path) -> dict[str, str]:
    return {
        "socket": str(workdir / "docker.sock"),
        "pidfile": str(workdir / "docker.pid"),
        "data_root": str(workdir / "data"),
        "exec_root": str(workdir / "exec"),
    }


def cold_starts(runs: int) -> list[float]:
    samples = []
    workdir = agentproc.make_workdir()
    try:
        p = paths(workdir)
        argv = [
            "dockerd",
            f"--host=unix://{p['socket']}",
            f"--pidfile={p['pidfile']}",
            f"--data-root={p['data_root']}",
            f"--exec-root={p['exec_root']}",
            *FLAGS,
        ]
        for _ in range(runs):
            started = time.perf_counter()
            proc = subprocess.Popen(
                argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
            )
            try:
                samples.append(wait_ping(Path(p["socket"])) - started)
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=60)
    finally:
        remove(workdir)
    return samples


def call(agent: agentproc.Agent, target: str) -> Any:
    from agent.cli import client

    return client.request(agent.socket, "GET", target, token=None)[1]


def dockerd_service(agent: agentproc.Agent) -> dict[str, Any]:
    body = call(agent, "/v1/services")
    return next(s for s in body["services"] if s["name"] == "dockerd")


def start_dockerd_agent(starter: agentproc.Starter, health: dict[str, Any]) -> agentproc.Agent:
    config = starter.base_config()
    config["logging"] = {"format": "json", "level": "info"}
    config["services"] = {
        "dockerd": {
            "preset": "dockerd",
            "params": {**paths(starter.workdir), "extra_args": FLAGS},
            "health": health,
            "restart": {"reset_after_seconds": 1, "start_limit_burst": 50},
        }
    }
    agent = starter.start(config)
    agent.wait_for(lambda: agent.get("/readyz")[0] == 200, timeout=120, what="ready")
    return agent


def stop_agent(agent: agentproc.Agent) -> None:
    agent.signal(signal.SIGTERM)
    agent.wait(timeout=60)


def recoveries(trials: int) -> list[float]:
    samples = []
    workdir = agentproc.make_workdir()
    starter = agentproc.Starter(workdir)
    try:
        agent = start_dockerd_agent(starter, {})
        sock = workdir / "docker.sock"
        for _ in range(trials):
            time.sleep(1.5)  # healthy for longer than reset_after_seconds
            pid = dockerd_service(agent)["pid"]
            killed = time.perf_counter()
            os.kill(pid, signal.SIGKILL)
            while ping_ok(sock):  # the old socket may answer for a moment: it must not count
                time.sleep(0.001)
            samples.append(wait_ping(sock) - killed)
            agent.wait_for(lambda: dockerd_service(agent)["state"] == "running", timeout=60)
        stop_agent(agent)
    finally:
        starter.stop_all()
        remove(workdir)
    return samples


def _ts(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


def hang_detections(trials: int, *, interval: float, timeout: float, threshold: int) -> list[float]:
    samples = []
    workdir = agentproc.make_workdir()
    starter = agentproc.Starter(workdir)
    health = {
        "interval_seconds": interval,
        "timeout_seconds": timeout,
        "failure_threshold": threshold,
    }
    try:
        agent = start_dockerd_agent(starter, health)
        for trial in range(trials):
            time.sleep(1.5 + random.random() * interval)  # noqa: S311 - a random phase
            pid = dockerd_service(agent)["pid"]
            stopped_at = time.time()
            os.kill(pid, signal.SIGSTOP)

            def declared(since: float = stopped_at) -> float | None:
                for record in agent.log_records():
                    if record.get("service") == "dockerd" and record.get("state") == "stopping":
                        at = _ts(record["timestamp"])
                        if at >= since - 0.01:
                            return at
                return None

            at = agent.wait_for(declared, timeout=60, what=f"hang {trial} declared")
            samples.append(at - stopped_at)
            agent.wait_for(lambda: dockerd_service(agent)["state"] == "running", timeout=60)
        stop_agent(agent)
    finally:
        starter.stop_all()
        remove(workdir)
    return samples


def cpu_share(seconds: float) -> float:
    workdir = agentproc.make_workdir()
    starter = agentproc.Starter(workdir)
    try:
        config = starter.base_config()
        config["logging"] = {"format": "json", "level": "info"}
        config["services"] = {}
        for index in range(3):
            port = agentproc.free_port()
            config["services"][f"idle{index}"] = {
                "command": [
                    sys.executable,
                    "-m",
                    "http.server",
                    "--bind",
                    "127.0.0.1",
                    "--directory",
                    str(workdir),
                    str(port),
                ],
                "health": {
                    "kind": "http",
                    "address": f"127.0.0.1:{port}",
                    "interval_seconds": 1,
                    "timeout_seconds": 1,
                },
            }
        agent = starter.start(config)
        agent.wait_for(lambda: agent.get("/readyz")[0] == 200, timeout=60, what="ready")
        time.sleep(5)
        tick = os.sysconf("SC_CLK_TCK")

        def used() -> float:
            fields = Path(f"/proc/{agent.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / tick

        before, start = used(), time.perf_counter()
        time.sleep(seconds)
        share = (used() - before) / (time.perf_counter() - start)
        stop_agent(agent)
        return share
    finally:
        starter.stop_all()
        remove(workdir)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cold", type=int, default=5)
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--hangs", type=int, default=5)
    parser.add_argument("--cpu-seconds", type=float, default=30.0)
    parser.add_argument("--quick", action="store_true", help="2 trials of each, 10 s of CPU")
    parser.add_argument("--json", type=Path, default=None, help="write raw samples here")
    args = parser.parse_args()
    if args.quick:
        args.cold, args.trials, args.hangs, args.cpu_seconds = 2, 2, 2, 10.0
    if os.geteuid() != 0 or shutil.which("dockerd") is None:
        print("bench/services.py needs root and dockerd (apt-get install docker.io)")
        return 2
    initial, interval, timeout, threshold = 1.0, 1.0, 0.5, 3
    bound = interval * threshold + timeout

    cold = cold_starts(args.cold)
    recovery = recoveries(args.trials)
    hangs = hang_detections(args.hangs, interval=interval, timeout=timeout, threshold=threshold)
    cpu = cpu_share(args.cpu_seconds)

    cold_median = pct(cold, 0.5)
    target = initial + 1.2 * cold_median
    rows = [
        ("dockerd cold start, median (ms)", f"{cold_median * 1000:.0f}", "-", "-"),
        ("dockerd cold start, max (ms)", f"{max(cold) * 1000:.0f}", "-", "-"),
        (
            f"recovery after kill -9, p50 of {len(recovery)} (ms)",
            f"{pct(recovery, 0.5) * 1000:.0f}",
            f"<= {target * 1000:.0f}",
            met(pct(recovery, 0.5) <= target),
        ),
        (
            f"recovery after kill -9, max of {len(recovery)} (ms)",
            f"{max(recovery) * 1000:.0f}",
            f"<= {target * 1000:.0f}",
            met(max(recovery) <= target),
        ),
        (
            f"hang detection, p50 of {len(hangs)} (s)",
            f"{pct(hangs, 0.5):.2f}",
            f"bound {bound:.2f}",
            "-",
        ),
        (
            f"hang detection, max of {len(hangs)} (s)",
            f"{max(hangs):.2f} ({max(hangs) / bound:.0%} of the bound)",
            f"<= {bound * 1.1:.2f} (bound + 10 %)",
            met(max(hangs) <= bound * 1.1),
        ),
        (
            "agent CPU, 3 idle services, 1 s checks (% of a core)",
            f"{cpu * 100:.2f}",
            "< 1",
            met(cpu < 0.01),
        ),
    ]
    print("| metric | value | target | met |")
    print("|---|---:|---:|:---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print(
        f"\nbackoff_initial {initial:g} s; checks every {interval:g} s, timeout {timeout:g} s, "
        f"threshold {threshold}; hang detection samples: " + ", ".join(f"{h:.2f}" for h in hangs)
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {"cold": cold, "recovery": recovery, "hangs": hangs, "cpu": cpu, "bound": bound},
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
