"""Building the project's images for the tests, once per session, on the local base.

- Every image is built from the repository root with the classic builder and
  ``--network host`` (no registry can be reached here), on ``localbase/debian:bookworm``
  (:func:`tests.support.docker.base_image`) instead of the production bases.
- The build stage's pip trusts this machine's CA bundle through the ``container/certs/``
  pattern (shared/recipes): the bundle is copied there, ignored by git.
- The runner image cannot download the GitHub runner here: stand-in tarballs named as
  the release's assets go to ``container/runner/local/`` and the build verifies their
  checksums as it verifies the real ones.
- The Docker engine container needs ``--privileged``; a host whose capability bounding set
  lacks a capability (this machine's lacks CAP_SYS_RESOURCE) cannot start one ("unable to
  apply caps"), so there it gets the same minus that capability: :func:`privileged`.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.support import docker

ROOT = Path(__file__).resolve().parents[2]
CERTS = ROOT / "container" / "certs"
LOCAL_RUNNERS = ROOT / "container" / "runner" / "local"
AGENT_DOCKERFILE = ROOT / "container" / "agent" / "Dockerfile"
RUNNER_DOCKERFILE = ROOT / "container" / "runner" / "Dockerfile"
RUNNER_VERSION = "2.335.1"
BUILD_TIMEOUT = 900
# What a runner image built here reports as ImageOS (the default is ubuntu24).
IMAGE_OS = "debian12"
# The interpreter's absolute path: the agent image's venv runs it.
VENV_PYTHON = "/opt/runner-agent/bin/python"


class BuildFailed(AssertionError):
    """``docker build`` failed; the message has the end of its output."""


def pip_index() -> str | None:
    """The index this machine's pip is configured with, if it names one."""
    done = subprocess.run(
        [sys.executable, "-m", "pip", "config", "get", "global.index-url"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    value = done.stdout.strip()
    return value if done.returncode == 0 and value else None


def standin_runner(arch: str, version: str = RUNNER_VERSION) -> str:
    """Write a stand-in for ``actions-runner-linux-<arch>-<version>.tar.gz``; its sha256.

    It has the release's layout where the image uses it (``run.sh``, ``config.sh``,
    ``bin/installdependencies.sh``) and a ``.stand-in-arch`` naming ``arch``, so a test
    sees which tarball the build picked."""
    LOCAL_RUNNERS.mkdir(parents=True, exist_ok=True)
    files = {
        "run.sh": f"#!/bin/bash\necho 'stand-in runner {arch} {version}' \"$@\"\n",
        "config.sh": "#!/bin/bash\necho 'stand-in config.sh' \"$@\"\n",
        "bin/installdependencies.sh": "#!/bin/bash\necho stand-in > /tmp/.deps-ran\n",
        ".stand-in-arch": f"{arch}\n",
    }
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", format=tarfile.GNU_FORMAT) as tar:
        for name in ("bin",):
            info = tarfile.TarInfo(f"./{name}")
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
            tar.addfile(info)
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"./{name}")
            info.size, info.mode, info.mtime = len(data), 0o755, 0
            tar.addfile(info, io.BytesIO(data))
    blob = buffer.getvalue()
    (LOCAL_RUNNERS / f"actions-runner-linux-{arch}-{version}.tar.gz").write_bytes(blob)
    return hashlib.sha256(blob).hexdigest()


@dataclass
class Images:
    """The images of this session's engine, each built the first time it is asked for."""

    engine: docker.Engine
    base: str
    built: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def build(self, dockerfile: Path, target: str, tag: str, args: dict[str, str]) -> str:
        """``tag``, built from ``dockerfile``'s ``target`` with ``args`` (once)."""
        if tag in self.built:
            return tag
        CERTS.mkdir(exist_ok=True)
        shutil.copyfile("/etc/ssl/certs/ca-certificates.crt", CERTS / "test-machine-ca.crt")
        argv = ["build", "--network", "host", "-q", "-f", str(dockerfile), "--target", target]
        full = {"BASE_IMAGE": self.base, **args}
        index = pip_index()
        if index:
            full["PIP_INDEX_URL"] = index
        for key, value in full.items():
            argv += ["--build-arg", f"{key}={value}"]
        started = time.monotonic()
        done = self.engine.docker(*argv, "-t", tag, str(ROOT), timeout=BUILD_TIMEOUT, check=False)
        self.seconds[tag] = time.monotonic() - started
        if done.returncode != 0:
            out = (done.stdout + done.stderr).decode(errors="replace")
            raise BuildFailed(f"docker build of {target} failed:\n{out[-6000:]}")
        self.built[tag] = target
        return tag

    def agent(self) -> str:
        return self.build(AGENT_DOCKERFILE, "agent", "runner-agent:test", {})

    def engine_image(self) -> str:
        return self.build(AGENT_DOCKERFILE, "engine", "runner-agent-engine:test", {})

    def hook(self) -> str:
        return self.build(AGENT_DOCKERFILE, "hook", "runner-agent-hook:test", {})

    def runner(self, arch: str = "x64", target: str = "runner") -> str:
        sums = {"x64": "RUNNER_SHA256_X64", "arm64": "RUNNER_SHA256_ARM64"}
        targetarch = {"x64": "amd64", "arm64": "arm64"}[arch]
        tag = f"runner-agent-{target}:test-{arch}"
        if tag in self.built:
            return tag
        return self.build(
            RUNNER_DOCKERFILE,
            target,
            tag,
            {
                "RUNNER_FROM": "local",
                sums[arch]: standin_runner(arch),
                "TARGETARCH": targetarch,
                "IMAGE_OS": IMAGE_OS,
            },
        )

    def size(self, tag: str) -> int:
        """The image's size in bytes, as ``docker image inspect`` reports it."""
        out = self.engine.docker("image", "inspect", "--format", "{{.Size}}", tag).stdout
        return int(out.decode().strip())

    def inspect(self, tag: str) -> dict[str, object]:
        """``docker image inspect``'s object for ``tag``."""
        data: list[dict[str, object]] = json.loads(
            self.engine.docker("image", "inspect", tag).stdout
        )
        return data[0]


def missing_capabilities() -> list[int]:
    """Capabilities the kernel knows that this process's bounding set lacks."""
    last = int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapBnd:"):
            bounding = int(line.split()[1], 16)
            return [cap for cap in range(last + 1) if not bounding >> cap & 1]
    return []


# Linux's capabilities by number (linux/capability.h), as Docker's --cap-drop names them.
_CAP_NAMES = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
]


def privileged() -> list[str]:
    """``docker run`` options for a privileged container on this host (see the module)."""
    missing = missing_capabilities()
    if not missing:
        return ["--privileged"]
    drops = [a for cap in missing for a in ("--cap-drop", _CAP_NAMES[cap])]
    return [
        "--cap-add",
        "ALL",
        *drops,
        "--security-opt",
        "seccomp=unconfined",
        "--security-opt",
        "apparmor=unconfined",
        # Docker mounts cgroupfs read-only unless privileged: dockerd inside needs it.
        "-v",
        "/sys/fs/cgroup:/sys/fs/cgroup",
    ]


@dataclass(frozen=True)
class AgentSizes:
    """The agent image against its base and its venv, in bytes."""

    image: int
    base: int
    venv: int

    @property
    def ratio(self) -> float:
        """image / (base + venv): what the image costs beyond what it must hold."""
        return self.image / (self.base + self.venv)

    def describe(self) -> str:
        mib = 1024 * 1024
        return (
            f"agent {self.image / mib:.1f} MiB, base {self.base / mib:.1f} MiB + venv "
            f"{self.venv / mib:.1f} MiB = {(self.base + self.venv) / mib:.1f} MiB: "
            f"{self.ratio:.2f}x"
        )


def agent_sizes(built: Images) -> AgentSizes:
    """Measure the agent image, its base and its venv (built if need be)."""
    agent = built.agent()
    du = built.engine.docker(
        "run", "--rm", "--network", "none", "--entrypoint", "du", agent, "-sb", "/opt/runner-agent"
    )
    return AgentSizes(
        image=built.size(agent), base=built.size(built.base), venv=int(du.stdout.split()[0])
    )
