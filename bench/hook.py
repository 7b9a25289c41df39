"""Benchmark: the job-started hook's whole-process time and peak RSS, features cached.

What it measures, on one real agent process (its store in a temp folder, one archive
feature served by a real HTTP server on loopback, installed once before timing) and the
real zipapp built from this checkout and precompiled for ``--python`` (as ``hook
install`` and the images ship it; ``--source-only`` leaves the bytecode out):

- hook: ``<python> -I runner-agent-hook.pyz started`` for a job whose runner menu
  (``runner.labels``) is that one cached feature: it opens the job, streams the ensure
  (a hit), links the entry into a pod-local tool cache, runs the feature's check and
  writes GITHUB_ENV/GITHUB_PATH. The clock runs from just before the fork to the exit;
  peak RSS is the child's ``ru_maxrss`` from ``wait4``. After each timed run the job is
  completed by ``... completed`` (not timed), so the next start opens a fresh job.
- floor: ``<python> -I -c "import http.client, json, socket"``, the least a hook that
  talks HTTP to the agent over a unix socket can cost.

Both run by absolute path (``--python``, default /usr/bin/python3: the runner image's
interpreter, never a pyenv shim), alternating in ABBA order so they share the noise.
Targets: median hook <= 1.3x the floor's, peak RSS <= 20 MB; moonshot: under 50 ms.
Nothing is asserted: the table says whether each target is met.

Run: ``.venv/bin/python bench/hook.py [--runs 30] [--python /usr/bin/python3]``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from benchkit import met, pct  # noqa: E402
from ensure import archive, feature  # noqa: E402

from agent.hook import build  # noqa: E402
from tests.support.agentproc import Starter, remove_tree  # noqa: E402
from tests.support.server import Reply, Server  # noqa: E402

FLOOR = "import http.client, json, socket"


GNU_TIME = "/usr/bin/time"


def run(argv: list[str], env: dict[str, str]) -> tuple[float, int]:
    """Seconds from fork to exit, and the exit status, of ``argv``."""
    start = time.perf_counter()
    proc = subprocess.run(
        argv,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=env["HOME"],
        check=False,
    )
    return time.perf_counter() - start, proc.returncode


def peak_rss_mb(argv: list[str], env: dict[str, str], out: Path) -> float | None:
    """Peak RSS of ``argv`` in MB, through GNU time (None without it).

    Not the child's own ``ru_maxrss``: Linux carries the high-water mark across exec, so a
    child forked from this (large) process would report this process's size. GNU time is
    small, and reports its own child's.
    """
    if not os.access(GNU_TIME, os.X_OK):
        return None
    subprocess.run(
        [GNU_TIME, "-f", "%M", "-o", str(out), *argv],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=env["HOME"],
        check=False,
    )
    return int(out.read_text().split()[-1]) * 1024 / 1e6  # KiB -> MB


def job_env(work: Path, sock: Path, n: int) -> dict[str, str]:
    """The environment the runner gives its job-started hook, for run ``n``."""
    home = work / "home"
    temp = work / "runner-temp"
    for folder in (home, temp):
        folder.mkdir(exist_ok=True)
    files = {}
    for name in ("GITHUB_ENV", "GITHUB_PATH"):
        path = temp / f"{name.lower()}-{n}"
        path.write_text("")
        files[name] = str(path)
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "RUNNER_AGENT_SOCKET": str(sock),
        "RUNNER_AGENT_HOOK_STATE": str(work / "hook-state.json"),
        "RUNNER_NAME": "bench-runner",
        "RUNNER_OS": "Linux",
        "RUNNER_ARCH": "X64",
        "RUNNER_TEMP": str(temp),
        "RUNNER_TOOL_CACHE": str(work / "toolcache"),
        "RUNNER_WORKSPACE": str(work / "_work" / "repo"),
        "GITHUB_WORKSPACE": str(work / "_work" / "repo" / "repo"),
        "GITHUB_REPOSITORY": "octo/repo",
        "GITHUB_RUN_ID": str(1000 + n),
        "GITHUB_RUN_ATTEMPT": "1",
        "GITHUB_JOB": "build",
        "GITHUB_WORKFLOW": "CI",
        "GITHUB_WORKFLOW_REF": "octo/repo/.github/workflows/ci.yml@refs/heads/main",
        "GITHUB_SHA": hashlib.sha1(str(n).encode()).hexdigest(),  # noqa: S324 - an id
        "GITHUB_EVENT_NAME": "push",
        **files,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=30, help="timed pairs")
    parser.add_argument("--python", default="/usr/bin/python3", help="absolute interpreter")
    parser.add_argument(
        "--source-only", action="store_true", help="time the zipapp without its bytecode"
    )
    parser.add_argument(
        "--profile", action="store_true", help="also print where one hook run spends its time"
    )
    args = parser.parse_args(argv)
    python = shutil.which(args.python) or args.python
    if not os.path.isabs(python) or not os.access(python, os.X_OK):
        parser.error(f"--python must be an absolute path to an interpreter: {args.python!r}")
    print("command: " + shlex.join([sys.executable, *sys.argv]))
    os.environ["no_proxy"] = os.environ["NO_PROXY"] = "127.0.0.1"
    work = Path(tempfile.mkdtemp(prefix="ra-bench-hook-"))
    starter = Starter(work)
    try:
        with Server() as server:
            catalog = work / "catalog"
            body = archive("tool", 1)
            feature(catalog, "tool", body)
            server.route("/x/tool-1.0.0.tar.gz", Reply(body=body))
            config = starter.base_config()
            config["catalog"] = {"bundled": False, "paths": [str(catalog)]}
            config["cache"] = {"root": str(work / "store")}
            config["installer"] = {"mirrors": {"https://example.invalid/": server.url("/x/")}}
            config["logging"] = {"format": "json", "level": "warning"}
            config["runner"] = {"labels": ["self-hosted", "feature:tool"]}
            agent = starter.start(config)
            agent.wait_for(lambda: agent.get("/readyz")[0] == 200, timeout=30, what="ready")
            # As shipped: precompiled for the runner's interpreter (hook install and the
            # images do it); --source-only measures the zipapp before that step.
            pyz = build.build_zipapp(work / "hook", python=None if args.source_only else python)
            version = subprocess.run(
                [python, "-c", "import sys; print(sys.version.split()[0])"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
            print(f"python {python} {version}; {os.cpu_count()} CPUs; {args.runs} pairs; {pyz}")
            hook = [python, "-I", str(pyz)]
            floor = [python, "-I", "-c", FLOOR]

            def complete(env: dict[str, str]) -> None:
                _, done = run([*hook, "completed", "--result", "succeeded"], env)
                if done != 0:
                    raise SystemExit(f"the completed hook failed ({done})")

            def started(n: int) -> float:
                env = job_env(work, agent.socket, n)
                seconds, code = run([*hook, "started"], env)
                if code != 0:
                    out = subprocess.run([*hook, "started"], env=env, capture_output=True)
                    raise SystemExit(f"the hook failed ({code}): {out.stdout!r} {out.stderr!r}")
                complete(env)
                return seconds

            started(0)  # installs the feature and warms the page cache
            if args.profile:
                env = job_env(work, agent.socket, 0)
                prof = (
                    f"import sys; sys.path.insert(0, {str(pyz)!r}); import cProfile, pstats; "
                    "from agent.hook import main; p = cProfile.Profile(); p.enable(); "
                    "code = main.main(['started']); p.disable(); "
                    "pstats.Stats(p, stream=sys.stdout).sort_stats('cumulative').print_stats(40)"
                )
                out = subprocess.run(
                    [python, "-I", "-X", "importtime", "-c", prof],
                    env=env,
                    capture_output=True,
                    text=True,
                    check=False,
                )
                print("\n".join(out.stdout.splitlines()[:60]))
                slow = sorted(
                    (
                        line
                        for line in out.stderr.splitlines()
                        if line.startswith("import time:")
                        and "|" in line
                        and line.split("|")[1].strip().isdigit()
                    ),
                    key=lambda line: -int(line.split("|")[1]),
                )
                print("\n".join(slow[:25]))
                complete(env)
            run(floor, job_env(work, agent.socket, 0))
            hooks: list[float] = []
            floors: list[float] = []
            for n in range(1, args.runs + 1):
                order = ("hook", "floor") if n % 2 else ("floor", "hook")
                for which in order:
                    if which == "hook":
                        hooks.append(started(n) * 1000)
                    else:
                        floors.append(run(floor, job_env(work, agent.socket, n))[0] * 1000)
            hook_rss: list[float] = []
            floor_rss: list[float] = []
            for n in range(args.runs + 1, args.runs + 4):
                env = job_env(work, agent.socket, n)
                rss = peak_rss_mb([*hook, "started"], env, work / "rss")
                complete(env)
                other = peak_rss_mb(floor, env, work / "rss")
                if rss is not None and other is not None:
                    hook_rss.append(rss)
                    floor_rss.append(other)
    finally:
        starter.stop_all()
        remove_tree(work)
    ratio = statistics.median(hooks) / statistics.median(floors)
    pair_ratio = statistics.median(h / f for h, f in zip(hooks, floors, strict=True))
    peak = max(hook_rss) if hook_rss else float("nan")
    floor_peak = statistics.median(floor_rss) if floor_rss else float("nan")
    rows = [
        (
            "floor: python -I -c 'import ...' median (ms)",
            f"{statistics.median(floors):.1f}",
            "-",
            "-",
        ),
        ("floor p90 (ms)", f"{pct(floors, 0.9):.1f}", "-", "-"),
        ("hook started, all cached, median (ms)", f"{statistics.median(hooks):.1f}", "-", "-"),
        ("hook p90 (ms)", f"{pct(hooks, 0.9):.1f}", "-", "-"),
        ("hook / floor, ratio of medians", f"{ratio:.2f}x", "<= 1.3x", met(ratio <= 1.3)),
        ("hook / floor, median of pair ratios", f"{pair_ratio:.2f}x", "-", "-"),
        (
            "hook peak RSS, max of 3 (MB, GNU time)",
            f"{peak:.1f}",
            "<= 20 MB",
            met(peak <= 20),
        ),
        ("floor peak RSS, median (MB)", f"{floor_peak:.1f}", "-", "-"),
        (
            "moonshot: hook median under 50 ms",
            f"{statistics.median(hooks):.1f}",
            "< 50 ms",
            met(statistics.median(hooks) < 50),
        ),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  {'value':>9}  {'target':>9}  result")
    for name, value, target, result in rows:
        print(f"{name:<{width}}  {value:>9}  {target:>9}  {result}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
