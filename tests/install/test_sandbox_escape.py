"""Nothing a script starts outlives its sandbox: not past the step timeout, and not past
a SIGKILL of the process running the install, whatever the script does to get away
(setsid, a double fork, its own process group, SIGTERM ignored, ``exec setsid`` of the
script itself)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from agent.install import protocol
from tests.install.test_script import ensure

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="the script sandbox switches users and mounts: needs root"
)

REPO = Path(__file__).resolve().parents[2]


def escaping(marker: str) -> str:
    """An install.sh that prints its PID namespace, then tries every way out."""
    return textwrap.dedent(
        f"""\
        mkdir -p "$PREFIX"
        readlink /proc/self/ns/pid > "$PREFIX/ns"
        echo "ns=$(cat "$PREFIX/ns")"
        # its own session
        setsid bash -c 'exec -a esc-{marker}-setsid sleep 300' &
        # a double fork: the sleeper's parent is gone at once
        bash -c '(exec -a esc-{marker}-double sleep 300 &); exit 0' &
        # its own process group, deaf to SIGTERM
        bash -c 'set -m; trap "" TERM; (trap "" TERM; exec -a esc-{marker}-group sleep 300) &
                 wait' &
        trap '' TERM
        # and the script itself leaves the group the timeout signals
        exec setsid bash -c "trap '' TERM; exec -a esc-{marker}-self sleep 300"
        """
    )


def left_behind(marker: str, namespace: str) -> list[str]:
    """Every process that has the marker in its command line or lives in ``namespace``."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            ns = os.readlink(f"/proc/{pid}/ns/pid")
        except OSError:
            continue
        if marker.encode() in cmdline or ns == namespace:
            shown = cmdline.replace(b"\0", b" ").decode(errors="replace")
            found.append(f"{pid}: {shown}")
    return found


def test_nothing_survives_the_step_timeout(tmp_path: Path) -> None:
    marker = uuid.uuid4().hex
    started = time.monotonic()
    with pytest.raises(protocol.InstallError) as caught:
        ensure(tmp_path, escaping(marker), run_timeout=2.0)
    assert "did not finish within 2 s" in str(caught.value)
    assert time.monotonic() - started < 20
    [log] = (tmp_path / "store" / ".runner-agent" / "logs").glob("*.log")
    found = re.search(r"ns=(pid:\[\d+\])", log.read_text())
    assert found, log.read_text()
    namespace = found.group(1)
    assert namespace != os.readlink("/proc/self/ns/pid")
    # Once the ensure has reported, the namespace is empty: not a moment later.
    assert left_behind(marker, namespace) == []


def test_nothing_survives_a_sigkill_of_the_installing_process(tmp_path: Path) -> None:
    marker = uuid.uuid4().hex
    code = textwrap.dedent(
        f"""\
        from pathlib import Path
        from tests.install.test_script import ensure
        ensure(Path({str(tmp_path)!r}), {escaping(marker)!r}, run_timeout=600)
        """
    )
    installer = subprocess.Popen([sys.executable, "-c", code], cwd=REPO)
    try:
        staging = tmp_path / "store" / ".runner-agent" / "staging"
        deadline = time.monotonic() + 30
        ns_files: list[Path] = []
        while not ns_files and time.monotonic() < deadline:
            assert installer.poll() is None, "the install ended early"
            ns_files = [p for p in staging.glob("*/entry/ns") if p.read_text().strip()]
            time.sleep(0.1)
        assert ns_files, "the script never started"
        namespace = ns_files[0].read_text().strip()
        time.sleep(0.5)  # every way out has been taken
        assert len(left_behind(marker, namespace)) >= 4
    finally:
        installer.send_signal(signal.SIGKILL)
        installer.wait(timeout=30)
    deadline = time.monotonic() + 10
    while left_behind(marker, namespace) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert left_behind(marker, namespace) == []


def test_a_setpriv_or_mount_the_build_left_never_runs_as_root(tmp_path: Path) -> None:
    # The check runs with the entry's bin first on PATH; every process before the user
    # switch is root, so each must come from the host, never from the staging folder.
    proof = tmp_path / "planted-ran"
    body = textwrap.dedent(
        f"""\
        mkdir -p "$PREFIX/bin"
        printf '#!/bin/sh\\necho "tool $VERSION"\\n' > "$PREFIX/bin/tool"
        for name in setpriv mount unshare sh; do
          printf '#!/bin/sh\\nid -u >> {proof}; exec /usr/bin/env false\\n' > "$PREFIX/bin/$name"
        done
        chmod 755 "$PREFIX"/bin/*
        """
    )
    done = ensure(tmp_path, body, manifest={"check": {"command": ["tool"], "expect": "tool"}})
    assert len(done.installed) == 1  # the check passed, through the real tools
    assert not proof.exists(), proof.read_text()


def test_no_root_process_of_the_chain_gets_the_commands_environment(tmp_path: Path) -> None:
    # A feature's env.vars reach its check (LD_LIBRARY_PATH={prefix}/lib is ordinary);
    # every process before the user switch is root, so none may see them: a library
    # the build planted would run as root. This one writes its uid wherever it loads.
    from agent.install import sandbox

    proof = tmp_path / "loaded"
    source = tmp_path / "planted.c"
    source.write_text(
        "#include <stdio.h>\n#include <unistd.h>\n"
        "__attribute__((constructor)) static void planted(void) {\n"
        f'  FILE *f = fopen("{proof}", "a"); if (f) {{ fprintf(f, "%d\\n", getuid()); '
        "fclose(f); }\n}\n"
    )
    library = tmp_path / "planted.so"
    subprocess.run(
        ["gcc", "-shared", "-fPIC", "-o", str(library), str(source)], check=True, timeout=60
    )
    staging = tmp_path / "staging"
    tree = staging / "entry"
    tree.mkdir(parents=True)
    output = sandbox.run_confined(
        ["sh", "-c", 'echo "preload=$LD_PRELOAD"'],
        what="the test",
        prefix="/nowhere",
        staging=staging,
        tree=tree,
        env={"PATH": "/usr/bin:/bin", "LD_PRELOAD": str(library)},
        settings=sandbox.ScriptSettings(),
        timeout=30,
        on_output=lambda _: None,
        writable_tree=False,
    )
    assert f"preload={library}" in output  # the command itself still gets its variables
    loaded_by = proof.read_text().split() if proof.exists() else []
    assert "0" not in loaded_by, "a root process of the sandbox's chain loaded the library"
    assert not list(tmp_path.glob("staging.env"))  # the root-only file is gone
