"""Fixtures of the supervisor tests: fake services, agents stopped gracefully, and a
check that nothing a test started is left running.

Every process a test starts carries the test's scratch folder on its command line (the
fakes take it as their first argument; dockerd's --data-root and --exec-root live in
it; the agent's --config is in it), so ``strays`` finds leftovers by /proc without
ever touching another test's or the machine's own processes, and kills them by PID.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import agentproc

FAKES = Path(__file__).resolve().parent / "fakes"


def fake(name: str, workdir: Path, *args: str) -> list[str]:
    """argv of the fake service ``name``."""
    return [sys.executable, str(FAKES / f"{name}.py"), str(workdir), *args]


def _stat(pid: int) -> tuple[str, int] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    fields = raw[raw.rfind(b")") + 2 :].split()
    return fields[0].decode(), int(fields[1])


def processes_of(workdir: Path) -> dict[int, str]:
    """Live (non-zombie) processes whose command line, or an ancestor's, names ``workdir``."""
    marker = str(workdir).encode()
    cmdlines: dict[int, bytes] = {}
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        info = _stat(pid)
        if info is None or info[0] == "Z" or pid == os.getpid():
            continue
        parents[pid] = info[1]
        try:
            cmdlines[pid] = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
    found: dict[int, str] = {}
    for pid, cmdline in cmdlines.items():
        chain, cursor = [], pid
        while cursor in parents and len(chain) < 64:
            chain.append(cursor)
            cursor = parents[cursor]
        if any(marker in cmdlines.get(p, b"") for p in chain):
            found[pid] = cmdline.replace(b"\0", b" ").decode(errors="replace").strip()
    return found


def wait_gone(workdir: Path, timeout: float = 5.0) -> dict[int, str]:
    """What is still running of ``workdir`` after up to ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    left = processes_of(workdir)
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = processes_of(workdir)
    return left


def mounts_under(workdir: Path) -> list[str]:
    """Mount points inside ``workdir``, deepest first."""
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point == str(workdir) or point.startswith(f"{workdir}/"):
            points.append(point)
    return sorted(points, key=len, reverse=True)


def unmount_under(workdir: Path) -> None:
    """Detach what dockerd mounted in ``workdir`` (its data root is bind-mounted onto
    itself, and a SIGKILLed dockerd leaves that behind), so the folder can be removed."""
    for point in mounts_under(workdir):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True, timeout=30)


@pytest.fixture
def strays(workdir: Path) -> Iterator[Path]:
    """Fail the test if any process of its scratch folder is left running; kill those.

    Then detach any mount a dockerd left in the folder, so nothing outlives the test.
    """
    yield workdir
    left = wait_gone(workdir)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    unmount_under(workdir)
    if left:
        pytest.fail(f"stray processes left running: {left}")
    assert mounts_under(workdir) == [], "mounts left in the test's folder"


class Agents(agentproc.Starter):
    """Starts agents; at teardown stops them gracefully (SIGTERM) before any SIGKILL."""

    def stop_all(self) -> None:
        for agent in self.agents:
            if agent.proc.poll() is None:
                agent.proc.send_signal(signal.SIGTERM)
        for agent in self.agents:
            try:
                agent.proc.wait(timeout=30)
            except Exception:
                agent.proc.kill()
                agent.proc.wait(timeout=10)


@pytest.fixture
def agents(strays: Path) -> Iterator[Agents]:
    """Real ``runner-agent serve`` processes in the test's scratch folder."""
    starter = Agents(strays)
    try:
        yield starter
    finally:
        starter.stop_all()
