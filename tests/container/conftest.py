"""The image tests' engine and images: one dockerd and one build of each image per
session (see :mod:`tests.support.images`).

Every test here that uses the engine is marked ``images`` (build and run the images:
slower, and CI runs them) and ``root`` (dockerd needs it), with a timeout that covers
the first build.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import docker, images

HERE = Path(__file__).resolve().parent
BUILD_TIMEOUT = 1200


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        uses_engine = "engine" in getattr(item, "fixturenames", ())
        if HERE in Path(str(item.path)).parents and uses_engine:
            item.add_marker(pytest.mark.images)
            item.add_marker(pytest.mark.root)
            if item.get_closest_marker("timeout") is None:
                item.add_marker(pytest.mark.timeout(BUILD_TIMEOUT))


@pytest.fixture(scope="session")
def engine() -> Iterator[docker.Engine]:
    with docker.engine_or_skip() as eng:
        yield eng


@pytest.fixture(scope="session")
def built(engine: docker.Engine) -> images.Images:
    return images.Images(engine=engine, base=docker.base_image(engine))


# A GET over a unix socket with the image's own python3: argv path, socket.
_GET = """
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[2])
s.sendall(b"GET " + sys.argv[1].encode() + b" HTTP/1.0\\r\\nHost: a\\r\\n\\r\\n")
head, _, body = b"".join(iter(lambda: s.recv(65536), b"")).partition(b"\\r\\n\\r\\n")
print(head.split()[1].decode())
print(body.decode())
"""


class Running:
    """A container a test started."""

    def __init__(self, engine: docker.Engine, name: str) -> None:
        self.engine = engine
        self.name = name

    def exec(self, *argv: str, user: str | None = None, timeout: float = 300) -> tuple[int, str]:
        """Run ``argv`` in it: exit code and output (stdout then stderr)."""
        extra = ["--user", user] if user else []
        done = self.engine.docker("exec", *extra, self.name, *argv, check=False, timeout=timeout)
        return done.returncode, (done.stdout + done.stderr).decode(errors="replace")

    def get(self, path: str, sock: str) -> tuple[int, Any]:
        """GET ``path`` from the agent API at ``sock`` inside the container: status, JSON."""
        code, out = self.exec("python3", "-I", "-c", _GET, path, sock)
        assert code == 0, out
        status, _, body = out.partition("\n")
        return int(status), json.loads(body)

    def logs(self) -> str:
        done = self.engine.docker("logs", self.name, check=False)
        return (done.stdout + done.stderr).decode(errors="replace")


class Containers:
    """Starts the test's containers; each is removed (with its anonymous volumes) after."""

    def __init__(self, engine: docker.Engine) -> None:
        self.engine = engine
        self.names: list[str] = []

    def __call__(self, image: str, *options: str, args: tuple[str, ...] = ()) -> Running:
        name = f"ra-test-{len(self.names)}-{time.monotonic_ns() % 10**9}"
        self.names.append(name)
        self.engine.docker("run", "-d", "--name", name, *options, image, *args)
        return Running(self.engine, name)

    def remove_all(self) -> None:
        for name in self.names:
            self.engine.docker("rm", "-f", "-v", name, check=False)


@pytest.fixture
def run(engine: docker.Engine) -> Iterator[Containers]:
    containers = Containers(engine)
    yield containers
    containers.remove_all()


def wait(
    predicate: Callable[[], object], what: str, container: Running, timeout: float = 60
) -> None:
    """Until ``predicate()`` is true (an OSError counts as false), or fail with the logs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; logs:\n{container.logs()[-4000:]}")
