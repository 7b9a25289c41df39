"""The script method for real: bash scripts in the sandbox (an unprivileged user in a
private mount namespace), with the Dev Container Features environment contract."""

from __future__ import annotations

import os
import stat
import subprocess
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.catalog import loading, requests, resolver
from agent.install import plans, protocol, sandbox
from agent.store import layout
from tests.support import fixtures

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="the script sandbox switches users and mounts: needs root"
)


def script_catalog(folder: Path, body: str, **extra: Any) -> loading.Catalog:
    data = {
        "id": "tool",
        "name": "Tool",
        "versions": ["1.4.2"],
        "platforms": ["linux"],
        "toolcache_name": "tool",
        "options": {"greeting": {"type": "string", "default": "hello"}},
        "install": [{"method": "script", "platforms": ["linux"], "script": "install.sh"}],
        "env": {"path": ["bin"]},
        **extra,
    }
    (folder / "tool").mkdir(parents=True)
    (folder / "tool" / "feature.yaml").write_text(yaml.safe_dump(data))
    (folder / "tool" / "install.sh").write_text(textwrap.dedent(body))
    (folder / "tool" / "helper.txt").write_text("from the feature folder\n")
    return loading.load([folder])


def ensure(
    tmp_path: Path,
    body: str,
    label: str = "feature:tool",
    *,
    manifest: dict[str, Any] | None = None,
    store: Path | None = None,
    **kw: Any,
) -> plans.Ensured:
    """Ensure the ``tool`` feature whose install.sh is ``body`` (``manifest``: more of its
    feature.yaml) into ``store`` (default ``tmp_path/store``); ``kw`` are Options."""
    catalog = script_catalog(tmp_path / "catalog", body, **(manifest or {}))
    store = store or tmp_path / "store"
    plan = resolver.resolve(
        [requests.parse(label)], catalog, fixtures.LINUX, store_root=str(store)
    ).to_data()
    options = protocol.Options(lock_timeout=60, **kw)
    return plans.ensure_plan(layout.Store(store), plan, options=options)


GOOD = """\
    set -eu
    mkdir -p "$PREFIX/bin"
    printf '#!/bin/sh\\necho "tool %s says %s"\\n' "$VERSION" "$GREETING" > "$PREFIX/bin/tool"
    chmod 4755 "$PREFIX/bin/tool"
    mkdir -m 0777 "$PREFIX/share"
    cp helper.txt "$PREFIX/"
    env | sort > "$PREFIX/env.txt"
    id -u > "$PREFIX/uid.txt"
    echo "installed tool $VERSION"
    """


def test_a_script_installs_into_its_prefix_with_the_contract(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JOB_SECRET_TOKEN", "must-not-leak")
    done = ensure(tmp_path, GOOD, "feature:tool;greeting=hi")
    [entry] = done.installed
    path = entry.entry.path
    env = dict(
        line.split("=", 1) for line in (path / "env.txt").read_text().splitlines() if "=" in line
    )
    assert env["VERSION"] == "1.4.2"
    assert env["GREETING"] == "hi"
    assert env["ARCH"] == "x64"
    assert env["TARGET_OS"] == "linux"
    assert env["_REMOTE_USER"] == env["_CONTAINER_USER"] == "runner"
    assert env["_REMOTE_USER_HOME"] == "/home/runner"
    assert env["PREFIX"].startswith(sandbox.MOUNT)
    assert env["HOME"].startswith(sandbox.MOUNT)
    assert "JOB_SECRET_TOKEN" not in env
    assert (path / "helper.txt").read_text() == "from the feature folder\n"
    # It ran as the unprivileged user, and what it left is the agent's now, setuid gone.
    assert int((path / "uid.txt").read_text()) != 0
    tool = path / "bin" / "tool"
    st = tool.stat()
    assert (st.st_uid, st.st_gid) == (0, 0)
    assert not st.st_mode & (stat.S_ISUID | stat.S_ISGID)
    assert stat.S_IMODE((path / "share").stat().st_mode) == 0o755  # nobody else writes
    assert entry.receipt.method == "script"
    ran = subprocess.run([tool], capture_output=True, text=True, check=True)
    assert ran.stdout == "tool 1.4.2 says hi\n"
    log = (tmp_path / "store" / ".runner-agent" / "logs" / f"{entry.entry.key}.log").read_text()
    assert "--- output of script ---" in log
    assert "  installed tool 1.4.2" in log


def test_writes_outside_the_prefix_are_refused(tmp_path: Path) -> None:
    marker = uuid.uuid4().hex
    store = tmp_path / "store"
    # A world-writable folder of the kind images leave around (a cache, a spool).
    open_dir = Path(f"/var/lib/runner-agent-open-{marker}")
    open_dir.mkdir(mode=0o777)
    os.chmod(open_dir, 0o1777)  # noqa: S103 - the hole the sandbox must close
    targets = {
        "world_writable": f"{open_dir}/escape",
        "etc": f"/etc/runner-agent-escape-{marker}",
        "root_home": f"{os.path.expanduser('~root')}/runner-agent-escape-{marker}",
        "var_tmp": f"/var/tmp/runner-agent-escape-{marker}",
        "tmp": f"/tmp/runner-agent-escape-{marker}",
        "dev_shm": f"/dev/shm/runner-agent-escape-{marker}",
        "store": f"{store}/escape-{marker}",
        "tests": f"{Path(__file__).parent}/escape-{marker}",
    }
    lines = ['mkdir -p "$PREFIX"']
    for name, target in targets.items():
        lines.append(
            f'if echo x > {target} 2>/dev/null; then echo {name} >> "$PREFIX/escaped"; '
            f'else echo {name} >> "$PREFIX/refused"; fi'
        )
    lines.append('echo y > "$TMPDIR/own-temp" && echo y > "$HOME/own-home"')
    try:
        done = ensure(tmp_path, "\n".join(lines) + "\n")
        assert list(open_dir.iterdir()) == []
    finally:
        for leftover in open_dir.iterdir():
            leftover.unlink()
        open_dir.rmdir()
    path = done.installed[0].entry.path
    assert not (path / "escaped").exists(), (path / "escaped").read_text()
    assert sorted((path / "refused").read_text().split()) == sorted(targets)
    for target in targets.values():
        assert not os.path.exists(target), target


def test_a_failing_script_publishes_nothing_and_says_why(tmp_path: Path) -> None:
    body = 'mkdir -p "$PREFIX/bin"\necho "about to fail" \necho x > /etc/passwd-escape\n'
    with pytest.raises(protocol.InstallError) as caught:
        ensure(tmp_path, body)
    message = str(caught.value)
    assert "step 'script'" in message
    assert "Read-only file system" in message or "Permission denied" in message
    assert "install.sh" in message
    store = tmp_path / "store"
    assert not (store / "tool").exists()
    assert list((store / ".runner-agent" / "staging").iterdir()) == []
    assert not os.path.exists("/etc/passwd-escape")


def test_a_script_past_its_timeout_is_killed_with_its_children(tmp_path: Path) -> None:
    marker = uuid.uuid4().hex
    body = f"(exec -a sleeper-{marker} sleep 300) &\nexec -a sleeper-{marker} sleep 301\n"
    with pytest.raises(protocol.InstallError) as caught:
        ensure(tmp_path, body, run_timeout=1.5)
    assert "did not finish within 1.5 s" in str(caught.value)
    left = [
        pid for pid in os.listdir("/proc") if pid.isdigit() and marker.encode() in _cmdline(pid)
    ]
    assert left == []


def _cmdline(pid: str) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def test_an_unknown_script_user_is_named(tmp_path: Path) -> None:
    settings = sandbox.ScriptSettings(user="no-such-user-here")
    with pytest.raises(protocol.InstallError, match=r"script_user .no-such-user-here."):
        ensure(tmp_path, GOOD, script=settings)


def test_isolation_none_runs_as_the_agent(tmp_path: Path) -> None:
    done = ensure(tmp_path, GOOD, script=sandbox.ScriptSettings(isolation="none"))
    path = done.installed[0].entry.path
    assert (path / "uid.txt").read_text().strip() == str(os.geteuid())


def test_nothing_a_script_leaves_running_outlives_it(tmp_path: Path) -> None:
    marker = uuid.uuid4().hex
    lurker = (
        'echo up > "$PREFIX/started"; sleep 1; echo late > "$PREFIX/late"; '
        f"exec -a lurker-{marker} sleep 300"
    )
    body = f"mkdir -p \"$PREFIX/bin\"\nsetsid -f bash -c '{lurker}'\nsleep 0.3\nexit 0\n"
    done = ensure(tmp_path, body)
    time.sleep(1.5)
    assert (done.installed[0].entry.path / "started").exists()  # it did get going
    assert not (done.installed[0].entry.path / "late").exists()
    left = [p for p in os.listdir("/proc") if p.isdigit() and marker.encode() in _cmdline(p)]
    assert left == []


def test_the_check_runs_confined_on_what_the_build_left(tmp_path: Path) -> None:
    body = (
        'mkdir -p "$PREFIX/bin"\n'
        'printf \'#!/bin/sh\\necho "checked as $(id -u)"; touch "$0.touched" 2>/dev/null '
        '|| echo "and could not write"\\n\' > "$PREFIX/bin/tool"\n'
        'chmod 755 "$PREFIX/bin/tool"\n'
    )
    catalog = script_catalog(
        tmp_path / "catalog", body, check={"command": ["tool"], "expect": "checked as"}
    )
    store = tmp_path / "store"
    plan = resolver.resolve(
        [requests.parse("feature:tool")], catalog, fixtures.LINUX, store_root=str(store)
    ).to_data()
    done = plans.ensure_plan(layout.Store(store), plan, options=protocol.Options(lock_timeout=60))
    [entry] = done.installed
    assert entry.receipt.check.startswith("ok: checked as ")
    assert entry.receipt.check != "ok: checked as 0"  # not root
    assert not (entry.entry.path / "bin" / "tool.touched").exists()


def test_reclaiming_never_reaches_through_a_link(tmp_path: Path) -> None:
    from agent.install import sandbox

    outside = tmp_path / "outside"
    outside.mkdir()
    loose = outside / "loose"
    loose.write_text("x")
    loose.chmod(0o4777)
    tree = tmp_path / "tree"
    (tree / "bin").mkdir(parents=True)
    (tree / "bin" / "tool").write_text("#!/bin/sh\n")
    (tree / "bin" / "tool").chmod(0o6777)
    (tree / "link").symlink_to(outside, target_is_directory=True)
    (tree / "bin" / "file-link").symlink_to(loose)
    sandbox._reclaim(tree)
    assert stat.S_IMODE((tree / "bin" / "tool").stat().st_mode) == 0o755
    assert stat.S_IMODE(loose.stat().st_mode) == 0o4777  # through neither link
    assert (tree / "link").is_symlink()
