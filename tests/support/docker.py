"""A real Docker engine and a real Debian image for the tests that run containers.

- :func:`engine` starts ONE dockerd for the test session on private paths (its socket,
  pid file, --data-root and --exec-root under a folder of its own), the way the
  development machine runs it: ``--iptables=false --ip6tables=false --bridge=none``, so
  containers run with ``--network none`` (or host). It is stopped by its PID at the end.
- :func:`base_image` builds ``localbase/debian:bookworm`` once with debootstrap from the
  Debian mirror this machine's apt already uses (no registry can be reached here), and
  keeps the root file system's tarball in a cache folder so the next session imports it
  in seconds. Production Dockerfiles take the real base as a build argument; tests pass
  this one (see shared/recipes).

Needs root, dockerd and debootstrap (installed by apt when missing, as scripts/test does
for dockerd); a test that cannot have them skips with the reason, never under CI=true.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

BASE_TAG = "localbase/debian:bookworm"
CACHE = Path(os.environ.get("RUNNER_AGENT_TEST_CACHE", "/var/cache/runner-agent-tests"))


class Unavailable(Exception):
    """No Docker engine can run here; the message says what is missing."""


@dataclass
class Engine:
    """A running dockerd of the test session."""

    socket: Path
    pid: int

    @property
    def env(self) -> dict[str, str]:
        """The environment for the docker CLI to reach this engine."""
        return {**os.environ, "DOCKER_HOST": f"unix://{self.socket}"}

    def docker(
        self, *args: str, timeout: float = 120, check: bool = True, input_: bytes | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        """Run the docker CLI against this engine."""
        return subprocess.run(
            ["docker", *args],
            env=self.env,
            capture_output=True,
            timeout=timeout,
            check=check,
            input=input_,
        )


def _ping(path: Path) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(2)
            s.connect(str(path))
            s.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            return s.recv(4096).startswith(b"HTTP/1.") and True
    except OSError:
        return False


def check_available() -> None:
    """Raise :class:`Unavailable` unless root, dockerd and the docker CLI are here."""
    if os.geteuid() != 0:
        raise Unavailable("needs root to run dockerd")
    for tool in ("dockerd", "docker"):
        if shutil.which(tool) is None:
            raise Unavailable(f"needs {tool}: apt-get install docker.io (scripts/test does it)")


@contextlib.contextmanager
def engine_or_skip() -> Iterator[Engine]:
    """:func:`engine`, or skip the test with what is missing (a skip fails under CI=true)."""
    import pytest

    try:
        check_available()
    except Unavailable as exc:
        pytest.skip(str(exc))
    with engine() as eng:
        yield eng


@contextlib.contextmanager
def engine() -> Iterator[Engine]:
    """A dockerd of its own for as long as the context lasts."""
    check_available()
    root = Path(tempfile.mkdtemp(prefix="ra-dockerd-"))
    sock = root / "docker.sock"
    log = open(root / "dockerd.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            "dockerd",
            f"--host=unix://{sock}",
            f"--pidfile={root / 'docker.pid'}",
            f"--data-root={root / 'data'}",
            f"--exec-root={root / 'exec'}",
            "--iptables=false",
            "--ip6tables=false",
            "--bridge=none",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while not _ping(sock):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise Unavailable(
                    "dockerd did not start: " + (root / "dockerd.log").read_text()[-2000:]
                )
            time.sleep(0.1)
        yield Engine(socket=sock, pid=proc.pid)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        log.close()
        shutil.rmtree(root, ignore_errors=True)


def _mirror() -> str:
    # The mirror this machine's apt already uses (deb822 or one-line sources).
    found: list[str] = []
    for path in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        found += [
            line.split()[1] for line in path.read_text().splitlines() if line.startswith("URIs:")
        ]
    legacy = Path("/etc/apt/sources.list")
    if legacy.exists():
        found += [
            line.split()[1] for line in legacy.read_text().splitlines() if line.startswith("deb ")
        ]
    mirrors = [m for m in found if "security" not in m]
    if not mirrors:
        raise Unavailable("no Debian mirror in the apt sources to debootstrap from")
    return mirrors[0]


def base_image(eng: Engine, tag: str = BASE_TAG) -> str:
    """``tag``, a minimal Debian bookworm imported into ``eng`` (built once, then cached)."""
    if eng.docker("image", "inspect", tag, check=False).returncode == 0:
        return tag
    tarball = CACHE / "bookworm-minbase.tar"
    if not tarball.exists():
        if shutil.which("debootstrap") is None:
            quiet = {**os.environ, "DEBIAN_FRONTEND": "noninteractive", "NEEDRESTART_SUSPEND": "1"}
            for argv in (
                ["apt-get", "update", "-qq"],
                ["apt-get", "install", "-y", "-qq", "debootstrap"],
            ):
                subprocess.run(argv, check=True, timeout=300, env=quiet, capture_output=True)
        CACHE.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="ra-rootfs-") as rootfs:
            subprocess.run(
                ["debootstrap", "--variant=minbase", "bookworm", rootfs, _mirror()],
                check=True,
                capture_output=True,
                timeout=600,
            )
            partial = tarball.with_suffix(".partial")
            subprocess.run(["tar", "-C", rootfs, "-cf", str(partial), "."], check=True, timeout=300)
            partial.rename(tarball)  # whole or absent: a killed build leaves no half tarball
    with open(tarball, "rb") as handle:
        subprocess.run(
            ["docker", "import", "-", tag],
            env=eng.env,
            stdin=handle,
            check=True,
            capture_output=True,
            timeout=300,
        )
    return tag
