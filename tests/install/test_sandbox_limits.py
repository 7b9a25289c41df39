"""What a sandbox may consume: its staging folder's size (installer.max_entry_bytes, or
the manifest's own), the store's volume (a full one is named as such), its processes
(counted per sandbox, never together with a parallel one's) and the network
(installer.script_network, a manifest's network: none)."""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import subprocess
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pydantic
import pytest
import yaml

from agent.catalog import loading, requests, resolver
from agent.config import models
from agent.install import plans, protocol, sandbox
from agent.store import layout
from tests.install.test_script import ensure
from tests.support import fixtures

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="the script sandbox switches users and mounts: needs root"
)

MiB = 1024**2


@contextlib.contextmanager
def tmpfs(folder: Path, size: str, inodes: int | None = None) -> Iterator[Path]:
    folder.mkdir()
    options = f"size={size}" + (f",nr_inodes={inodes}" if inodes else "")
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], check=True)
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def world_python() -> str:
    """A python3 the sandbox's uid can run (the agent's may live under /root)."""
    for candidate in ("/usr/bin/python3", "/usr/local/bin/python3", "/bin/python3"):
        path = Path(candidate)
        if path.exists() and all(
            os.stat(p).st_mode & stat.S_IXOTH for p in [path.resolve(), *path.resolve().parents]
        ):
            return candidate
    raise AssertionError("no python3 that any user can run; the sandbox tests need one")


# --- size ---------------------------------------------------------------------------------


def test_a_step_past_max_entry_bytes_is_killed_and_the_limit_named(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "volume", "64m") as store:
        body = 'mkdir -p "$PREFIX"\nhead -c 8388608 /dev/zero > "$PREFIX/big"\nsleep 60\n'
        started = time.monotonic()
        with pytest.raises(protocol.InstallError) as caught:
            ensure(tmp_path, body, store=store, run_timeout=40, max_entry_bytes=4 * MiB)
        assert time.monotonic() - started < 20  # killed by the limit, not the timeout
        message = str(caught.value)
        assert "step 'script'" in message
        assert "max_entry_bytes" in message
        assert "limit of 4 MiB" in message
        assert list((store / ".runner-agent" / "staging").iterdir()) == []


def test_a_manifest_may_raise_its_own_limit(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "volume", "64m") as store:
        body = 'mkdir -p "$PREFIX"\nhead -c 8388608 /dev/zero > "$PREFIX/big"\nsleep 3\n'
        done = ensure(
            tmp_path,
            body,
            store=store,
            manifest={"max_entry_bytes": "16MiB"},
            max_entry_bytes=4 * MiB,
        )
        assert (done.installed[0].entry.path / "big").stat().st_size == 8 * MiB


def test_the_check_is_held_to_the_same_limit_as_the_build(tmp_path: Path) -> None:
    # The check ran with the built-in 32 GiB whatever installer.max_entry_bytes or the
    # manifest said: one that writes into its HOME could fill the volume.
    body = textwrap.dedent(
        """\
        mkdir -p "$PREFIX/bin"
        printf '#!/bin/sh\\nhead -c 8388608 /dev/zero > "$HOME/junk"\\n' > "$PREFIX/bin/tool"
        printf 'sleep 4; echo tool 1.4.2\\n' >> "$PREFIX/bin/tool"
        chmod 755 "$PREFIX/bin/tool"
        """
    )
    manifest = {"check": {"command": ["tool"], "expect": "tool {version}"}}
    with tmpfs(tmp_path / "volume", "64m") as store:
        killed = r"the check 'tool' was killed: .* past the limit of 4 MiB"
        with pytest.raises(protocol.InstallError, match=killed):
            ensure(tmp_path, body, store=store, manifest=manifest, max_entry_bytes=4 * MiB)
        raised = {**manifest, "max_entry_bytes": "16MiB"}
        second = tmp_path / "raised"
        done = ensure(second, body, store=store, manifest=raised, max_entry_bytes=4 * MiB)
        assert done.installed[0].receipt.check == "ok: tool 1.4.2"


def test_a_full_volume_is_reported_as_a_full_volume(tmp_path: Path) -> None:
    # The script ignores the failed write and exits 0: only the volume can tell.
    body = textwrap.dedent(
        """\
        mkdir -p "$PREFIX/bin"
        head -c 33554432 /dev/zero > "$PREFIX/big" 2>/dev/null
        printf '#!/bin/sh\\necho tool 1.4.2\\n' > "$PREFIX/bin/tool" 2>/dev/null
        chmod 755 "$PREFIX/bin/tool" 2>/dev/null
        exit 0
        """
    )
    check = {"check": {"command": ["tool"], "expect": "tool {version}"}}
    with tmpfs(tmp_path / "volume", "8m") as store:
        with pytest.raises(protocol.InstallError) as caught:
            ensure(tmp_path, body, store=store, manifest=check)
        message = str(caught.value)
        assert f"the store volume at {store} is full" in message
        assert "printed" not in message


def test_a_write_that_found_no_space_names_the_volume(tmp_path: Path) -> None:
    body = 'mkdir -p "$PREFIX"\nhead -c 33554432 /dev/zero > "$PREFIX/big"\n'
    with tmpfs(tmp_path / "volume", "8m") as store:
        with pytest.raises(protocol.InstallError) as caught:
            ensure(tmp_path, body, store=store)
        assert f"the store volume at {store} is full" in str(caught.value)


# --- processes ----------------------------------------------------------------------------


def forker(count: int, hold: float) -> str:
    """An install.sh that starts up to ``count`` processes, each living ``hold`` s, and
    writes how many it got into $PREFIX/started."""
    program = textwrap.dedent(
        f"""\
        import os, sys, time
        started = 0
        for _ in range({count}):
            try:
                pid = os.fork()
            except OSError:
                break
            if pid == 0:
                time.sleep({hold})
                os._exit(0)
            started += 1
        open(sys.argv[1], "w").write(str(started))
        for _ in range(started):
            os.wait()
        """
    )
    return f'mkdir -p "$PREFIX"\n{world_python()} -c \'{program}\' "$PREFIX/started"\n'


def test_a_sandbox_cannot_start_processes_without_bound(tmp_path: Path) -> None:
    settings = sandbox.ScriptSettings(max_processes=20)
    done = ensure(tmp_path, forker(200, 2), script=settings)
    started = int((done.installed[0].entry.path / "started").read_text())
    assert 5 < started < 20


def two_features(folder: Path, body: str) -> loading.Catalog:
    for name in ("alpha", "beta"):
        data = {
            "id": name,
            "name": name,
            "versions": ["1.0.0"],
            "platforms": ["linux"],
            "install": [{"method": "script", "platforms": ["linux"], "script": "install.sh"}],
        }
        (folder / name).mkdir(parents=True)
        (folder / name / "feature.yaml").write_text(yaml.safe_dump(data))
        (folder / name / "install.sh").write_text(body)
    return loading.load([folder])


def test_parallel_sandboxes_do_not_count_each_others_processes(tmp_path: Path) -> None:
    # Each needs 14 of the 20 (bash, python, 12 children) at the same time as the other.
    timed = (
        'mkdir -p "$PREFIX"; date +%s.%N > "$PREFIX/begin"\n'
        + forker(12, 3)
        + 'date +%s.%N > "$PREFIX/end"\n'
    )
    catalog = two_features(tmp_path / "catalog", timed)
    store = tmp_path / "store"
    plan = resolver.resolve(
        [requests.parse("feature:alpha"), requests.parse("feature:beta")],
        catalog,
        fixtures.LINUX,
        store_root=str(store),
    ).to_data()
    options = protocol.Options(lock_timeout=60, script=sandbox.ScriptSettings(max_processes=20))
    done = plans.ensure_plan(layout.Store(store), plan, options=options, parallelism=2)
    for installed in done.installed:
        assert (installed.entry.path / "started").read_text() == "12"
    # Both held their 12 children at once (each began before the other ended), and
    # neither was refused a process for the other's.
    spans = [
        (float((i.entry.path / "begin").read_text()), float((i.entry.path / "end").read_text()))
        for i in done.installed
    ]
    assert max(b for b, _ in spans) < min(e for _, e in spans), spans


def test_a_fixed_script_user_still_works(tmp_path: Path) -> None:
    body = 'mkdir -p "$PREFIX"\nid -u > "$PREFIX/uid"\n'
    done = ensure(tmp_path, body, script=sandbox.ScriptSettings(user="nobody"))
    assert int((done.installed[0].entry.path / "uid").read_text()) == 65534


def test_each_sandbox_gets_a_uid_of_its_own_from_the_range(tmp_path: Path) -> None:
    body = 'mkdir -p "$PREFIX"\nid -u > "$PREFIX/uid"\n'
    done = ensure(
        tmp_path, body, script=sandbox.ScriptSettings(uid_range=(2_100_000_000, 2_100_000_009))
    )
    assert 2_100_000_000 <= int((done.installed[0].entry.path / "uid").read_text()) <= 2_100_000_009


# --- network ------------------------------------------------------------------------------


@pytest.fixture
def host_port() -> Iterator[int]:
    """A TCP listener on the host's loopback that accepts and closes."""
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            with contextlib.suppress(OSError):
                conn, _ = server.accept()
                conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    server.close()


def prober(port: int) -> str:
    program = textwrap.dedent(
        f"""\
        import socket, sys
        out = []
        try:
            socket.create_connection(("127.0.0.1", {port}), timeout=3).close()
            out.append("host reached")
        except OSError as exc:
            out.append("host unreachable")
        own = socket.create_server(("127.0.0.1", 0))
        socket.create_connection(own.getsockname(), timeout=3).close()
        out.append("loopback ok")
        open(sys.argv[1], "w").write(", ".join(out))
        """
    )
    return f'mkdir -p "$PREFIX"\n{world_python()} -c \'{program}\' "$PREFIX/net"\n'


def test_script_network_host_reaches_the_host(tmp_path: Path, host_port: int) -> None:
    done = ensure(tmp_path, prober(host_port))
    assert (done.installed[0].entry.path / "net").read_text() == "host reached, loopback ok"


def test_script_network_none_leaves_only_loopback(tmp_path: Path, host_port: int) -> None:
    done = ensure(tmp_path, prober(host_port), script=sandbox.ScriptSettings(network="none"))
    assert (done.installed[0].entry.path / "net").read_text() == "host unreachable, loopback ok"


def test_a_manifest_that_needs_no_network_gets_none(tmp_path: Path, host_port: int) -> None:
    done = ensure(tmp_path, prober(host_port), manifest={"network": "none"})
    assert (done.installed[0].entry.path / "net").read_text() == "host unreachable, loopback ok"


# --- settings -----------------------------------------------------------------------------


def test_the_installer_settings_reach_the_sandbox() -> None:
    installer = models.InstallerSettings(
        script_network="none",
        script_uid_range="3000000000-3000000010",
        script_max_processes=64,
        max_entry_bytes="1GiB",
    )
    options = protocol.options_from(installer, native=True)
    assert options.script.network == "none"
    assert options.script.uid_range == (3_000_000_000, 3_000_000_010)
    assert options.script.max_processes == 64
    assert options.script.user is None
    assert options.max_entry_bytes == 1024**3


@pytest.mark.parametrize("text", ["2000-1000", "0-65535", "abc", "5000000000-5000000001"])
def test_a_bad_uid_range_is_refused(text: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=r"uid range|between 1000"):
        models.InstallerSettings(script_uid_range=text)


def test_nothing_in_staging_stays_the_sandboxs_after_a_run(tmp_path: Path) -> None:
    # home, tmp and the rest are handed back too: a set-id file the sandbox's uid left
    # there would run as the next sandbox that gets that uid.
    staging = tmp_path / "staging"
    tree = staging / "entry"
    tree.mkdir(parents=True)
    script = (
        'cp /bin/true "$HOME/suid"; chmod 6755 "$HOME/suid"; mkfifo "$TMPDIR/fifo"; '
        'mkdir -p "$PREFIX/bin"; id -u > "$PREFIX/uid"'
    )
    sandbox.run_confined(
        ["sh", "-c", script],
        what="the test",
        prefix="/nowhere",
        staging=staging,
        tree=tree,
        env={"PATH": "/usr/bin:/bin"},
        settings=sandbox.ScriptSettings(),
        timeout=30,
        on_output=lambda _: None,
    )
    assert int((tree / "uid").read_text()) != 0  # it did run as the sandbox's uid
    me = os.geteuid()
    for path in staging.rglob("*"):
        st = path.lstat()
        assert st.st_uid == me, path
        assert not st.st_mode & (stat.S_ISUID | stat.S_ISGID), path
    assert not (staging / "tmp" / "fifo").exists()


def test_empty_files_count_against_the_limit(tmp_path: Path) -> None:
    # Blocks alone made a million empty files free: every inode costs at least 4 KiB.
    body = 'mkdir -p "$PREFIX"; cd "$PREFIX"; seq 3000 | xargs touch; sleep 5\n'
    with (
        tmpfs(tmp_path / "volume", "64m") as store,
        pytest.raises(protocol.InstallError, match="past the limit of 4 MiB"),
    ):
        ensure(tmp_path, body, store=store, max_entry_bytes=4 * MiB)


def test_a_volume_out_of_inodes_is_a_full_volume(tmp_path: Path) -> None:
    body = 'mkdir -p "$PREFIX"; cd "$PREFIX"; seq 5000 | xargs touch 2>/dev/null; sleep 3\n'
    with (
        tmpfs(tmp_path / "volume", "64m", inodes=400) as store,
        pytest.raises(protocol.InstallError, match=r"is full \(\d+ inodes free\)"),
    ):
        ensure(tmp_path, body, store=store)


def test_a_uid_lock_that_fails_half_way_holds_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno
    import fcntl

    from agent.install import confine_uids
    from agent.store import layout as store_layout

    real = fcntl.flock
    calls = []

    def flock(fd: int, op: int) -> None:
        calls.append(fd)
        if len(calls) == 2:  # the second folder's lock: the kernel has no lock left
            raise OSError(errno.ENOLCK, "No locks available")
        real(fd, op)

    before = len(os.listdir("/proc/self/fd"))
    monkeypatch.setattr(confine_uids.fcntl, "flock", flock)
    monkeypatch.setattr(confine_uids, "LOCAL_LOCKS", tmp_path / "local")
    with (
        pytest.raises(store_layout.StoreError, match="cannot lock sandbox uid"),
        confine_uids.allocate(tmp_path / "locks", 2_100_000_100, 2_100_000_101),
    ):
        pass
    assert len(os.listdir("/proc/self/fd")) == before


def test_a_tree_deeper_than_any_walk_is_still_removed(tmp_path: Path) -> None:
    # 1,500 folders deep in $HOME within one step: shutil.rmtree raised RecursionError,
    # and the capped removal left it on the shared volume for ever.
    body = textwrap.dedent(
        """\
        mkdir -p "$PREFIX"
        cd "$HOME"; for i in $(seq 1500); do mkdir d && cd d || exit 1; done
        cp /bin/true "$HOME/d/suid" && chmod 4755 "$HOME/d/suid"
        sleep 3
        """
    )
    # The size watch refuses the depth (it cannot measure past it) and kills the step...
    with pytest.raises(protocol.InstallError, match="nests folders more than 256 deep"):
        ensure(tmp_path, body)
    # ...and the tree is gone all the same.
    staging = tmp_path / "store" / ".runner-agent" / "staging"
    assert list(staging.iterdir()) == []


def test_removal_takes_any_depth_with_bounded_descriptors(tmp_path: Path) -> None:
    from agent.store import nofollow

    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    os.mkdir("deep", dir_fd=fd)
    level = os.open("deep", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
    for _ in range(3 * nofollow.MAX_DEPTH):
        os.mkdir("d", dir_fd=level)
        (child := os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=level))
        os.close(level)
        level = child
    os.close(level)
    before = len(os.listdir("/proc/self/fd"))
    try:
        assert nofollow.remove_at(fd, "deep")
    finally:
        os.close(fd)
    assert list(tmp_path.iterdir()) == []
    assert len(os.listdir("/proc/self/fd")) == before - 1
