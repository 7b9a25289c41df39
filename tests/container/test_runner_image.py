"""The runner image (and its GPU target) and the hook image, built on the local base with
stand-in runner tarballs, and run.

The stand-ins are named as the release's assets and verified by checksum like the real
ones (:func:`tests.support.images.standin_runner`); each records its architecture, so the
arm64 build shows that TARGETARCH chose the arm64 tarball.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.support import docker, images

HOOK = "/opt/runner-agent/hook"
WRAPPERS = ("job-started.sh", "job-completed.sh", "runner-agent-hook")


def sh(engine: docker.Engine, image: str, script: str, *options: str) -> tuple[int, str, str]:
    done = engine.docker(
        "run", "--rm", "--network", "none", *options, image, "bash", "-c", script, check=False
    )
    return done.returncode, done.stdout.decode(), done.stderr.decode()


@pytest.fixture(scope="module")
def runner(built: images.Images) -> str:
    return built.runner()


def test_the_runner_has_its_user_groups_and_sudo(engine: docker.Engine, runner: str) -> None:
    code, out, err = sh(engine, runner, "id; sudo -n true && echo sudo-ok; pwd")
    assert code == 0, err
    assert out.splitlines() == [
        "uid=1001(runner) gid=1001(runner) groups=1001(runner),27(sudo),123(docker)",
        "sudo-ok",
        "/home/runner",
    ]


def test_the_runner_sets_the_hook_and_the_runner_variables(
    built: images.Images, engine: docker.Engine, runner: str
) -> None:
    config = built.inspect(runner)["Config"]
    assert isinstance(config, dict)
    assert config["User"] == "1001"
    env = dict(line.split("=", 1) for line in config["Env"])
    assert env["ImageOS"] == images.IMAGE_OS
    assert env["ACTIONS_RUNNER_HOOK_JOB_STARTED"] == f"{HOOK}/job-started.sh"
    assert env["ACTIONS_RUNNER_HOOK_JOB_COMPLETED"] == f"{HOOK}/job-completed.sh"
    assert env["RUNNER_AGENT_SOCKET"] == "/run/runner-agent/api.sock"
    assert env["RUNNER_MANUALLY_TRAP_SIG"] == "1"
    assert env["ACTIONS_RUNNER_PRINT_LOG_TO_STDOUT"] == "1"
    assert config["Cmd"] == ["/home/runner/run.sh"]
    code, out, err = sh(
        engine, runner,
        "cat .stand-in-arch; test -f /tmp/.deps-ran && echo deps-ran; "
        "stat -c '%U:%G' _work/_tool _work/_tool/.runner-agent-store; ./run.sh",
    )  # fmt: skip
    assert code == 0, err
    assert out.splitlines() == [
        "x64",
        "deps-ran",  # the runner's own installdependencies.sh ran in the build
        "runner:docker",
        "runner:docker",
        f"stand-in runner x64 {images.RUNNER_VERSION}",
    ]


def test_the_hook_is_there_precompiled_and_runs(engine: docker.Engine, runner: str) -> None:
    listing = "; ".join(f"test -x {HOOK}/{w} && echo {w}" for w in WRAPPERS)
    code, out, err = sh(
        engine, runner,
        f"{listing}; python3 -I {HOOK}/runner-agent-hook.pyz --help | head -1; "
        f"python3 -I -c \"import zipfile; z = zipfile.ZipFile('{HOOK}/runner-agent-hook.pyz'); "
        "print(sum(n.endswith('.pyc') for n in z.namelist()) > 10)\"",
    )  # fmt: skip
    assert code == 0, err
    assert out.splitlines() == [*WRAPPERS, "usage: runner-agent-hook [-h] COMMAND ...", "True"]


def test_the_job_started_hook_names_an_absent_agent(engine: docker.Engine, runner: str) -> None:
    code, out, err = sh(
        engine, runner, "bash -e \"$ACTIONS_RUNNER_HOOK_JOB_STARTED\"",
        "-e", "RUNNER_AGENT_HOOK_WAIT=0", "-e", "GITHUB_RUN_ID=1", "-e", "GITHUB_JOB=build",
        "-e", "RUNNER_NAME=r1", "-e", "GITHUB_RUN_ATTEMPT=1",
    )  # fmt: skip
    assert code == 3, out + err
    assert "/run/runner-agent/api.sock" in out + err
    assert "RUNNER_AGENT_HOOK_UNREACHABLE=continue" in out + err


def test_the_gpu_target_is_the_runner_with_nvidias_variables(
    built: images.Images, engine: docker.Engine
) -> None:
    gpu = built.runner(target="runner-gpu")
    config = built.inspect(gpu)["Config"]
    assert isinstance(config, dict)
    env = dict(line.split("=", 1) for line in config["Env"])
    assert env["NVIDIA_VISIBLE_DEVICES"] == "all"
    assert env["NVIDIA_DRIVER_CAPABILITIES"] == "compute,utility"
    assert env["ACTIONS_RUNNER_HOOK_JOB_STARTED"] == f"{HOOK}/job-started.sh"
    assert env["ImageOS"] == images.IMAGE_OS
    assert config["Labels"]["org.opencontainers.image.title"] == "runner-agent-runner-gpu"
    code, out, err = sh(
        engine, gpu, 'id -u; test -x "$ACTIONS_RUNNER_HOOK_JOB_STARTED" && echo hook'
    )
    assert (code, out) == (0, "1001\nhook\n"), err


def test_targetarch_arm64_takes_the_arm64_tarball(
    built: images.Images, engine: docker.Engine
) -> None:
    arm = built.runner(arch="arm64")
    code, out, err = sh(engine, arm, "cat .stand-in-arch")
    assert (code, out) == (0, "arm64\n"), err


def test_a_tarball_with_the_wrong_checksum_fails_the_build(built: images.Images) -> None:
    images.standin_runner("x64")
    with pytest.raises(images.BuildFailed) as info:
        built.build(
            images.RUNNER_DOCKERFILE,
            "runner",
            "runner-agent-runner:test-bad-sum",
            {"RUNNER_FROM": "local", "RUNNER_SHA256_X64": "0" * 64, "TARGETARCH": "amd64"},
        )
    assert "FAILED" in str(info.value)  # sha256sum -c: "/tmp/runner.tar.gz: FAILED"


def test_the_hook_image_copies_the_hook_for_any_runner_image(
    built: images.Images, engine: docker.Engine
) -> None:
    hook = built.hook()

    def copy_into(dest: Path) -> subprocess.CompletedProcess[bytes]:
        mount = f"{dest}:/runner-agent-hook"
        return engine.docker("run", "--rm", "--network", "none", "-v", mount, hook, check=False)

    with tempfile.TemporaryDirectory(prefix="ra-hook-") as folder:
        dest = Path(folder)
        os.chown(dest, 1001, 123)
        done = copy_into(dest)
        assert done.returncode == 0, done.stderr.decode()
        assert "copied the job hook into /runner-agent-hook" in done.stdout.decode()
        assert sorted(p.name for p in dest.iterdir()) == sorted(
            ["runner-agent-hook.pyz", *WRAPPERS]
        )
        for path in dest.iterdir():
            assert path.stat().st_mode & 0o111, path
        # The copied zipapp runs on this machine's own python3 (not the image's).
        ran = subprocess.run(
            ["python3", "-I", str(dest / "runner-agent-hook.pyz"), "--help"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert ran.returncode == 0, ran.stderr
        # What was planted there is replaced, never followed or written into.
        outside = Path(folder + "-outside")
        outside.write_text("keep")
        (dest / "runner-agent-hook.pyz").unlink()
        (dest / "runner-agent-hook.pyz").symlink_to(outside)
        (dest / "job-started.sh").unlink()
        (dest / "job-started.sh").mkdir()
        done = copy_into(dest)
        assert done.returncode == 1
        assert "cannot put /runner-agent-hook/job-started.sh in place" in done.stderr.decode()
        assert outside.read_text() == "keep"
        assert not (dest / "runner-agent-hook.pyz").is_symlink()
        assert not [p for p in dest.iterdir() if p.name.startswith(".")]  # no leftovers
        outside.unlink()
        # A folder it cannot write is named.
        os.chown(dest, 0, 0)
        os.chmod(dest, 0o700)
        done = copy_into(dest)
        assert done.returncode == 1
        assert "/runner-agent-hook is not a writable folder" in done.stderr.decode()
