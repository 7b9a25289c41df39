"""Benchmark: what a job costs GitHub, and how a pre-warm compares with an ensure.

1. Requests, counted at the GitHub stub (``tests/github/stub.py``: GitHub's published
   payloads on loopback, ``per_page`` 100 and ``Link`` pages as GitHub serves them):
   - one job: its labels (the run attempt's jobs list) and its team config at the commit,
     with a token, and with a GitHub App (whose installation token is minted once);
   - a 256-leg matrix whose legs share one run and one commit. Every leg is its own agent
     (its own ``JobLabels``, ``TeamConfigs`` and ``Notes`` objects, nothing shared in
     memory), all on one store, as the pods of a runner scale set share one volume.
     Legs start as ARC starts them: all at once; in waves of ``--wave`` pods; or one at a
     time, each after GitHub shows its runner (the worst case: every listing predates
     the next leg). And with webhooks: each leg's ``in_progress`` delivery noted first.
   Target: at most 3 jobs-list requests per leg after the first, and the team file once
   per (repository, sha).
2. Pre-warm, on one real agent process (its webhook listener on loopback, its archives
   from a real HTTP server, rate-limited so an install takes about a second): a signed
   ``workflow_job`` ``queued`` delivery whose team config at its ``head_sha`` names a
   feature nobody installed, timed from the POST to the entry's ``x64.complete``; against
   a direct POST /v1/ensure of a feature of the same size, timed to the same marker, in
   the same run and alternating (ABBA), after one install that neither side times (the
   agent's first starts its install machinery). Each round uses a fresh commit and fresh
   features, so every pre-warm fetches its team file and every install downloads.
   Target: median pre-warm <= 1.1x the median direct ensure.

Nothing is asserted: the tables say whether each target is met.

Run: ``.venv/bin/python bench/github.py`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from benchkit import met  # noqa: E402
from ensure import archive, ensure, feature  # noqa: E402

from agent.config import models  # noqa: E402
from agent.github import client, contents, joblabels  # noqa: E402
from agent.store import layout, locks, notes  # noqa: E402
from tests.github.stub import Stub, fixture, job  # noqa: E402
from tests.support.agentproc import Starter, free_port, remove_tree  # noqa: E402
from tests.support.server import Reply, Server  # noqa: E402

REPO = "octo/app"
RUN = "4242"
JOBS = f"/repos/{REPO}/actions/runs/{RUN}/attempts/1/jobs"
TEAM = f"/repos/{REPO}/contents/.github/runner-config.yml"
SECRET = b"bench-webhook-secret"


async def serve(stub: Stub) -> web.AppRunner:
    runner = web.AppRunner(stub.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    stub.url = f"http://127.0.0.1:{runner.addresses[0][1]}{stub.base}"
    return runner


class Legs:
    """A 256-leg matrix's agents: one per leg, sharing only the store."""

    def __init__(self, stub: Stub, work: Path, *, app: bool) -> None:
        self.stub = stub
        self.work = work
        creds = stub.credentials(work, app=app)
        self.settings = models.Settings.model_validate({"github": {"api_url": stub.url, **creds}})
        self.clients: list[client.Client] = []

    def agent(self, store: Path) -> tuple[joblabels.JobLabels, contents.TeamConfigs]:
        api = client.Client(lambda: self.settings)
        self.clients.append(api)
        shelf = notes.Notes(layout.Store(store), locks.PosixLocks())
        return joblabels.JobLabels(api, shelf), contents.TeamConfigs(api, shelf)

    async def close(self) -> None:
        for api in self.clients:
            await api.close()


async def leg_start(
    agent: tuple[joblabels.JobLabels, contents.TeamConfigs], runner: str, sha: str
) -> None:
    """What the hook's job start asks GitHub: the team file and this runner's labels."""
    labels, teams = agent
    text, found = await asyncio.gather(teams.get(REPO, sha), labels.running(REPO, RUN, 1, runner))
    assert text is not None, runner
    assert found is not None, runner


async def matrix(
    stub: Stub, legs: Legs, store: Path, sha: str, count: int, mode: str, wave: int
) -> None:
    """Start ``count`` legs of one run in ``mode``: all, waves, sequential or webhook."""
    jobs = [job(f"leg-{i}", 10_000 + i, ["self-hosted", f"feature:t@{i}"]) for i in range(count)]
    for item in jobs:  # queued: no runner yet
        item.update(runner_name=None, status="queued")
    stub.jobs[(REPO, RUN, "1")] = jobs
    stub.files[(REPO, sha, ".github/runner-config.yml")] = "features: [tool]\n"
    agents = [legs.agent(store) for _ in range(count)]

    def assign(i: int) -> None:
        jobs[i].update(runner_name=f"leg-{i}", status="in_progress")

    if mode == "webhook":
        delivered = legs.agent(store)[0].notes
        assert delivered is not None
        for i in range(count):
            assign(i)
            await joblabels.note_delivery(
                delivered,
                joblabels.Delivered(
                    "in_progress", REPO, RUN, 1, 10_000 + i, f"leg-{i}", ("self-hosted",)
                ),
                scope=stub.url,
            )
    size = {"all": count, "waves": wave, "sequential": 1, "webhook": count}[mode]
    for first in range(0, count, size):
        batch = range(first, min(first + size, count))
        for i in batch:
            assign(i)
        await asyncio.gather(*(leg_start(agents[i], f"leg-{i}", sha) for i in batch))


async def requests_table(args: argparse.Namespace, work: Path) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    stub = Stub()
    runner = await serve(stub)
    try:
        for app in (False, True):
            auth = "App" if app else "token"
            store = work / f"one-{auth}"
            legs = Legs(stub, work, app=app)
            stub.requests.clear()
            sha = commit(f"one-{auth}".encode())
            await matrix(stub, legs, store, sha, 1, "all", 1)
            total = sum(stub.requests.values())
            rows.append((f"one job ({auth}): requests", str(total), "-", "-"))
            # Another pod's first job on the same store, same commit: its labels only (and
            # an App's installation token, which each agent mints for itself).
            stub.requests.clear()
            stub.jobs[(REPO, RUN, "1")].append(job("again", 2, ["self-hosted"]))
            again = legs.agent(store)
            await asyncio.gather(again[0].running(REPO, RUN, 1, "again"), again[1].get(REPO, sha))
            again_total = str(sum(stub.requests.values()))
            rows.append((f"another pod, same commit ({auth}): requests", again_total, "-", "-"))
            await legs.close()
        for mode in ("all", "waves", "sequential", "webhook"):
            store = work / f"matrix-{mode}"
            legs = Legs(stub, work, app=False)
            stub.requests.clear()
            sha = commit(mode.encode())
            started = time.perf_counter()
            await matrix(stub, legs, store, sha, args.legs, mode, args.wave)
            seconds = time.perf_counter() - started
            await legs.close()
            listed, team = stub.requests[JOBS], stub.requests[TEAM]
            pages = -(-args.legs // 100)
            per_leg = max(0, listed - pages) / (args.legs - 1)
            name = {
                "all": "all at once",
                "waves": f"in waves of {args.wave}",
                "sequential": "one at a time",
                "webhook": "in_progress noted",
            }[mode]
            rows += [
                (f"{args.legs} legs {name}: jobs requests", str(listed), "-", "-"),
                (
                    f"{args.legs} legs {name}: per leg after the first",
                    f"{per_leg:.2f}",
                    "<= 3",
                    met(per_leg <= 3),
                ),
                (
                    f"{args.legs} legs {name}: team file requests",
                    str(team),
                    "1 per (repo, sha)",
                    met(team == 1),
                ),
                (f"{args.legs} legs {name}: wall time (s)", f"{seconds:.2f}", "-", "-"),
            ]
    finally:
        await runner.cleanup()
    return rows


def commit(seed: bytes) -> str:
    """A commit sha (40 hex digits) of its own for ``seed``."""
    return hashlib.sha256(seed).hexdigest()[:40]


def signed(payload: dict[str, Any], delivery: str) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(payload).encode()
    return body, {
        "X-GitHub-Event": "workflow_job",
        "X-GitHub-Delivery": delivery,
        "Content-Type": "application/json",
        "X-Hub-Signature-256": "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest(),
    }


async def until_complete(marker: Path, timeout: float = 120) -> float:
    deadline = time.monotonic() + timeout
    while not marker.exists():
        if time.monotonic() > deadline:
            raise AssertionError(f"{marker} never appeared")
        await asyncio.sleep(0.002)
    return time.perf_counter()


async def prewarm_table(args: argparse.Namespace, work: Path) -> list[tuple[str, ...]]:
    import aiohttp

    stub = Stub()
    runner = await serve(stub)
    starter = Starter(work / "agent")
    starter.workdir.mkdir()
    catalog, store = work / "catalog", work / "store"
    try:
        with Server() as server:
            warm = archive("warmup", 1)
            feature(catalog, "warmup", warm)
            server.route("/x/warmup-1.0.0.tar.gz", Reply(body=warm))
            for i in range(args.rounds):
                for kind in ("pw", "direct"):
                    name = f"{kind}{i}"
                    body = archive(name, args.mib)
                    feature(catalog, name, body)
                    server.route(
                        f"/x/{name}-1.0.0.tar.gz", Reply(body=body, rate=args.rate_mib * 2**20)
                    )
            (work / "secret").write_bytes(SECRET + b"\n")
            (work / "token").write_text(stub.job_token + "\n")
            hooks = f"127.0.0.1:{free_port()}"
            config = starter.base_config(webhook_address=hooks)
            config["catalog"] = {"bundled": False, "paths": [str(catalog)]}
            config["cache"] = {"root": str(store)}
            config["installer"] = {"mirrors": {"https://example.invalid/": server.url("/x/")}}
            config["logging"] = {"format": "json", "level": "warning"}
            config["github"] = {
                "api_url": stub.url,
                "token_file": str(work / "token"),
                "webhook_secret_file": str(work / "secret"),
            }
            agent = starter.start(config)
            agent.wait_for(lambda: agent.get("/readyz")[0] == 200, timeout=30, what="ready")
            queued = fixture("workflow-job-queued.json")
            queued["repository"]["full_name"] = REPO
            prewarm: list[float] = []
            direct: list[float] = []

            async def one_prewarm(i: int) -> None:
                sha = commit(f"round-{i}".encode())
                stub.files[(REPO, sha, ".github/runner-config.yml")] = f"features: [pw{i}]\n"
                queued["workflow_job"]["head_sha"] = sha
                queued["workflow_job"]["id"] = 50_000 + i
                body, headers = signed(queued, f"bench-{i}")
                marker = store / f"pw{i}" / "1.0.0" / "x64.complete"
                async with aiohttp.ClientSession() as session:
                    start = time.perf_counter()
                    async with session.post(
                        f"http://{hooks}/v1/webhooks/github", data=body, headers=headers
                    ) as answer:
                        assert answer.status == 202, await answer.text()
                    prewarm.append(await until_complete(marker) - start)

            async def one_direct(i: int) -> None:
                marker = store / f"direct{i}" / "1.0.0" / "x64.complete"
                start = time.perf_counter()
                call = asyncio.create_task(asyncio.to_thread(ensure, agent.socket, f"direct{i}"))
                direct.append(await until_complete(marker) - start)
                _, result = await call
                assert result["ok"], result

            # The agent's first install starts its install machinery (imports, worker
            # pool): paid here, by neither side.
            _, result = await asyncio.to_thread(ensure, agent.socket, "warmup")
            assert result["ok"], result
            order: list[Callable[[int], Awaitable[None]]] = [one_prewarm, one_direct]
            for i in range(args.rounds):
                for step in order if i % 2 == 0 else order[::-1]:
                    await step(i)
            errors = agent.logs().count('"level": "error"')
            starter.stop_all()
    finally:
        await runner.cleanup()
    ratio = statistics.median(prewarm) / statistics.median(direct)
    return [
        ("direct ensure to complete entry, median (s)", f"{statistics.median(direct):.3f}"),
        ("direct ensure, min / max (s)", f"{min(direct):.3f} / {max(direct):.3f}"),
        ("pre-warm: delivery to complete entry, median (s)", f"{statistics.median(prewarm):.3f}"),
        ("pre-warm, min / max (s)", f"{min(prewarm):.3f} / {max(prewarm):.3f}"),
        ("team file requests (one per round)", str(stub.requests[TEAM])),
        ("agent log errors", str(errors)),
        ("pre-warm / direct, medians", f"{ratio:.2f}x", "<= 1.1x", met(ratio <= 1.1)),
    ]


def table(title: str, rows: list[tuple[str, ...]]) -> None:
    print(f"\n{title}")
    full = [r + ("-",) * (4 - len(r)) for r in rows]
    head = ("measure", "value", "target", "")
    widths = [max(len(r[c]) for r in [*full, head]) for c in range(4)]
    for r in [head, tuple("-" * w for w in widths), *full]:
        print("  ".join(x.ljust(w) for x, w in zip(r, widths, strict=True)).rstrip())


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--legs", type=int, default=256)
    parser.add_argument("--wave", type=int, default=16, help="pods ARC starts together")
    parser.add_argument("--rounds", type=int, default=6, help="pre-warms (and ensures)")
    parser.add_argument("--mib", type=int, default=16, help="size of each feature's archive")
    parser.add_argument("--rate-mib", type=float, default=16.0, help="server rate, MiB/s")
    parser.add_argument("--quick", action="store_true", help="64 legs, 2 rounds of 4 MiB")
    args = parser.parse_args(argv)
    if args.quick:
        args.legs, args.rounds, args.mib = 64, 2, 4
    return args


async def amain(args: argparse.Namespace) -> int:
    work = Path(tempfile.mkdtemp(prefix="ra-bench-github-"))
    try:
        print(
            f"python {sys.version.split()[0]}; {os.cpu_count()} CPUs; {args.legs} legs, "
            f"waves of {args.wave}; {args.rounds} pre-warm rounds of {args.mib} MiB at "
            f"{args.rate_mib:g} MiB/s",
            flush=True,
        )
        table("GitHub requests, counted at the stub", await requests_table(args, work))
        table("Pre-warm against a direct ensure", await prewarm_table(args, work))
    finally:
        remove_tree(work)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print("command: " + shlex.join([sys.executable, *sys.argv]))
    os.environ["no_proxy"] = os.environ["NO_PROXY"] = "127.0.0.1"
    return asyncio.run(amain(args))


if __name__ == "__main__":
    raise SystemExit(main())
