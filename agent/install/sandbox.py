"""Running a feature's install script so that it can write only into its PREFIX.

The choice: an **unprivileged user in a private mount namespace** (``isolation:
sandbox``, the default), both at once. In the namespace every mount is remounted
read-only, so no world-writable folder anywhere (an image's cache or spool folder) is a
way out; the staging folder is then bind-mounted, writable, at :data:`MOUNT` (so no
folder above it needs to be searchable); and ``/tmp``, ``/var/tmp``, ``/dev/shm`` and
``/run/lock`` are covered with empty read-only filesystems, so nothing of other jobs is
visible there. ``TMPDIR`` and ``HOME`` point into the staging folder. The user, which
owns nothing but the staging folder, is the second wall: what a mount cannot stop (a
mount that refuses to be remounted is reported in the install log), file modes do.

The steps, as root:

1. copy the feature's folder into the staging folder (Dev Container Features run from
   their own folder, and the catalog's folder may not be readable by that user);
2. take a uid of its own for this sandbox (:mod:`agent.install.confine_uids`, from
   ``installer.script_uid_range``), or the fixed ``installer.script_user`` where one is
   set, and give it the staged prefix, home, temp and copy;
3. ``unshare`` (mount, IPC, PID and, for ``network: none``, network namespaces) -> bind,
   cover -> a root init, which switches its child to that uid itself, with no capabilities, no
   supplementary groups, ``no_new_privs`` and RLIMIT_NPROC
   ``installer.script_max_processes`` -> ``bash <script>``, in a clean environment with
   the Dev Container Features contract: each option as an upper-case variable,
   ``PREFIX``, ``VERSION``, ``ARCH``, ``TARGET_OS``, ``TARGET_LIBC``, ``_REMOTE_USER``,
   ``_REMOTE_USER_HOME``, ``_CONTAINER_USER``, ``_CONTAINER_USER_HOME``. Nothing it
   starts outlives the run, the agent's death included (:mod:`agent.install.confine`);
   its staging folder is held to ``installer.max_entry_bytes`` and a full volume is
   named as such (:mod:`agent.install.watching`);
4. whatever happened, once every process of the sandbox is gone, give everything back
   to the agent's user and strip set-user-ID and set-group-ID bits: a published entry is
   never writable by the next script, and no script can leave a root-owned setuid
   binary in the store.

Network: ``installer.script_network: host`` (the default) lets a script reach whatever
the agent can reach, a cloud's metadata endpoint included; ``none`` leaves it loopback
only, as does a manifest that declares ``network: none`` (it brings its own files).
npm's install keeps the host's network: it needs its registry.

``isolation: none`` runs the script as the agent's own user, unconfined: for agents
that do not run as root (which cannot switch users), at the operator's explicit choice.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import os
import pwd
import shutil
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from agent.install import confine, confine_uids, watching
from agent.kits import procs
from agent.platform import plans as wire
from agent.store import layout, nofollow

MOUNT = "/run/runner-agent-sandbox"
COVERED = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")  # noqa: S108 - covered, not used

_SNIPPET = f"""set -eu
stage=$1 workdir=$2 mount=$3 envfile=$4
shift 4
# The command's environment, for the init: opened now, before /tmp and the rest are
# covered (the store may live there), and read by the init from descriptor 3.
exec 3< "$envfile"
# Every mount read-only (this namespace only), so a world-writable folder anywhere is
# no way out; then the staging folder, bound afresh, is the one writable place.
# A mount already read-only (a container runtime's /proc/sys, /proc/bus) is left as it
# is: remounting it can fail, and it is no way out.
while read -r _ _ _ _ point opts _; do
  case "$point" in
    *\\*) echo "sandbox: $point (an escaped name) stays writable" >&2; continue ;;
  esac
  case ",$opts," in *,ro,*) continue ;; esac
  "$mount" -o remount,bind,ro "$point" 2>/dev/null || echo "sandbox: $point stays writable" >&2
done < /proc/self/mountinfo
"$mount" --bind "$stage" {MOUNT}
"$mount" -o remount,bind,rw {MOUNT}
for d in {" ".join(COVERED)}; do
  if [ -d "$d" ] && [ ! -L "$d" ]; then
    "$mount" -t tmpfs -o ro,nosuid,nodev,size=4k,mode=0755 runner-agent-sandbox "$d"
  fi
done
cd "$workdir"
# The init (agent.install.confine): it stays root, runs the command as its child.
exec "$@"
"""


_KEPT_LINES = 2000  # output lines kept for the log: a chatty command must not fill memory
_LINE = 2000


class ScriptError(layout.StoreError):
    """A script could not be run as configured."""


Network = Literal["host", "none"]

DEFAULT_UID_RANGE = (2_000_000_000, 2_000_065_535)
"""Far above any account (systemd leaves 1879048192-2147483647 unused)."""


@dataclass(frozen=True)
class ScriptSettings:
    """From the ``installer`` settings."""

    isolation: Literal["sandbox", "none"] = "sandbox"
    user: str | None = None
    """A fixed user for every sandbox (opt-in); None: a uid of its own from ``uid_range``."""
    uid_range: tuple[int, int] = DEFAULT_UID_RANGE
    max_processes: int = 1024
    """RLIMIT_NPROC of the sandbox's uid."""
    network: Network = "host"
    remote_user: str = "runner"
    remote_user_home: str = "/home/runner"


def run_script(
    action: wire.RunAction,
    *,
    prefix: str,
    staging: Path,
    tree: Path,
    env: dict[str, str],
    settings: ScriptSettings,
    timeout: float,
    on_output: Callable[[str], None],
    max_entry_bytes: int = watching.DEFAULT_MAX_ENTRY_BYTES,
) -> str:
    """Run the action's script; return its output, or raise :class:`ScriptError`.

    A manifest that declares ``network: none`` (it brings its own files) runs with no
    network whatever ``installer.script_network`` says."""
    script = Path(list(action["argv"])[-1])
    copy = staging / "feature"
    try:
        shutil.copytree(script.parent, copy, symlinks=True)
    except OSError as exc:
        watching.check_volume(staging, str(exc), what="copying the feature folder", failed=True)
        raise ScriptError(f"cannot copy the feature folder {script.parent}: {exc}") from exc
    contract = {
        "_REMOTE_USER": settings.remote_user,
        "_REMOTE_USER_HOME": settings.remote_user_home,
        "_CONTAINER_USER": settings.remote_user,
        "_CONTAINER_USER_HOME": settings.remote_user_home,
    }
    return run_confined(
        ["bash", str(copy / script.name)],
        what=f"the script {script.name}",
        prefix=prefix,
        staging=staging,
        tree=tree,
        env={**env, **contract},
        settings=settings,
        timeout=timeout,
        on_output=on_output,
        cwd=copy,
        network="none" if action.get("network") == "none" else None,
        max_entry_bytes=max_entry_bytes,
    )


def run_confined(
    argv: list[str],
    *,
    what: str,
    prefix: str,
    staging: Path,
    tree: Path,
    env: dict[str, str],
    settings: ScriptSettings,
    timeout: float,
    on_output: Callable[[str], None],
    cwd: Path | None = None,
    writable_tree: bool = True,
    network: Network | None = None,
    max_entry_bytes: int = watching.DEFAULT_MAX_ENTRY_BYTES,
) -> str:
    """Run ``argv`` so that it can write only into the staging folder (see the module's
    policy); paths into the staging folder in ``argv`` and ``env`` are rewritten to where
    the command sees it. Return the output, or raise :class:`ScriptError` (or, for the
    limits, :class:`agent.install.watching.EntryTooBig` and ``VolumeFull``).

    With ``writable_tree`` false the tree stays the agent's (read-only to the command):
    the feature's check runs that way, on what the build left. ``network`` overrides
    ``settings.network`` (npm's install needs its registry; a manifest may need none)."""
    home, tmp = staging / "home", staging / "tmp"
    home.mkdir(exist_ok=True)
    tmp.mkdir(exist_ok=True)
    sandboxed = settings.isolation == "sandbox"
    wanted = network or settings.network
    if not sandboxed and settings.network == "none" and network is None:
        raise ScriptError(
            "installer.script_network: none gives scripts a network namespace of their own, "
            "which needs installer.script_isolation: sandbox (and the agent running as root)"
        )
    seen = Path(MOUNT) if sandboxed else staging
    env = {k: v.replace(str(staging), str(seen)) for k, v in env.items()}
    env.update(
        {
            "PREFIX": str(seen / tree.relative_to(staging)),
            "HOME": str(seen / "home"),
            "TMPDIR": str(seen / "tmp"),
        }
    )
    # Paths the plan computed for the final prefix mean the staged one while building.
    env = {k: v.replace(prefix, env["PREFIX"]) for k, v in env.items()}
    command = [a.replace(str(staging), str(seen)) for a in argv]
    workdir = cwd or staging
    lines: collections.deque[str] = collections.deque(maxlen=_KEPT_LINES)
    watch = watching.SizeWatch(staging, max_entry_bytes, what=what)
    with contextlib.ExitStack() as stack:
        before_kill: Callable[[int], None] | None = None
        if sandboxed:
            uid, gid = stack.enter_context(_identity(settings, staging))
            os.makedirs(MOUNT, mode=0o755, exist_ok=True)
            os.chmod(staging, 0o755)  # noqa: S103 - the user must reach its prefix
            for path in staging.iterdir():
                if path.is_dir() and not path.is_symlink() and (writable_tree or path != tree):
                    _chown_tree(path, uid, gid)
            inside = str(seen / workdir.relative_to(staging))
            # Beside the staging folder, in the agent's 0700 .runner-agent/staging: the
            # sandbox's uid cannot reach it, and it is gone when the run ends.
            env_file = staging.parent / f"{staging.name}.env"  # swept with its folder
            command = confine.command(
                _SNIPPET,
                [str(staging), inside, confine.host_tool("mount"), str(env_file)],
                command,
                uid=uid,
                gid=gid,
                max_processes=settings.max_processes,
                network=wanted,
            )
            # Root runs the chain up to the user switch with a fixed environment, never
            # the command's: its PATH starts in the staging folder (a planted bin/setpriv)
            # and its variables may name libraries there (LD_LIBRARY_PATH={prefix}/lib).
            confine.write_env(env_file, env)
            stack.callback(_unlink, env_file)
            env = dict(confine.CHAIN_ENV)
            before_kill = confine.kill_init
        try:
            done = procs.run(
                command,
                env=env,
                cwd=workdir,
                timeout=timeout,
                on_line=lambda x: lines.append(x[:_LINE]),
                watch=watch,
                before_kill=before_kill,
            )
        except procs.ProcError as exc:
            watching.check_volume(staging, "\n".join(lines), what=what, failed=True)
            raise ScriptError(f"{what}: {exc}") from exc
        finally:
            on_output("\n".join(lines))
            if sandboxed:
                _hand_back(staging, tree)
    watching.check_volume(staging, done.output, what=what, failed=not done.ok)
    if not done.ok:
        # Named by the command it ran, not by the sandbox's chain around it.
        shown = dataclasses.replace(done, argv=tuple(argv))
        raise ScriptError(f"{what} failed: {shown.describe()}")
    return done.output


@contextlib.contextmanager
def _identity(settings: ScriptSettings, staging: Path) -> Iterator[tuple[int, int]]:
    """The uid and gid the sandbox runs as, held for the ``with`` block."""
    if os.geteuid() != 0:
        raise ScriptError(
            "the script method runs scripts as an unprivileged user in a mount namespace, "
            "which needs the agent to run as root; run it as root, or set "
            "installer.script_isolation: none to run scripts as the agent's own user "
            "(unconfined: they can write wherever the agent can)"
        )
    if shutil.which("unshare") is None or shutil.which("setpriv") is None:
        raise ScriptError("the script sandbox needs unshare and setpriv (util-linux); install it")
    if settings.user is None:
        # The folder above the staging folders: the store's metadata, shared by every
        # agent on the volume.
        with confine_uids.allocate(
            staging.parent.parent / "sandbox-uids", *settings.uid_range
        ) as uid:
            yield uid, uid
        return
    try:
        entry = pwd.getpwnam(settings.user)
    except KeyError:
        raise ScriptError(
            f"installer.script_user {settings.user!r} is not a user on this machine; give "
            "an unprivileged user that owns no files, or leave it unset (a uid of its own "
            "per sandbox, from installer.script_uid_range)"
        ) from None
    if entry.pw_uid == 0:
        raise ScriptError(
            f"installer.script_user {settings.user!r} is root; give an unprivileged user"
        )
    yield entry.pw_uid, entry.pw_gid


def _hand_back(staging: Path, tree: Path) -> None:
    """After a sandboxed run: the entry is the agent's again (:func:`_reclaim`), and the
    rest (home, temp, the feature's copy, caches) is removed by descriptor, so no file of
    the sandbox's uid (a set-id one included) is left for whoever gets that uid next.
    Everything is handed back before the first error is raised."""
    first: BaseException | None = None
    try:
        _reclaim(tree)
    except (OSError, ScriptError) as exc:
        first = exc
    top = os.open(staging, _DIR)
    try:
        for name in nofollow.names(top):
            if name != tree.name:
                try:
                    nofollow.remove_at(top, name)
                except OSError as exc:
                    first = first or exc
    finally:
        os.close(top)
    if first is not None:
        raise first


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _chown_tree(path: Path, uid: int, gid: int) -> None:
    top = os.open(path, _DIR)
    try:
        os.fchown(top, uid, gid)
        for _, dirs, files, dirfd in nofollow.walk(top):
            for name in dirs + files:
                os.chown(name, uid, gid, dir_fd=dirfd, follow_symlinks=False)
    finally:
        os.close(top)


def _reclaim(tree: Path, *, strict: bool = True) -> None:
    """Own everything again, drop set-id bits and write bits for group and others;
    refuse special files (``strict``, the entry), or just remove them (scratch folders).

    Walked by descriptor (:func:`agent.store.nofollow.walk`), top-down: each folder is
    the agent's before anything in it is looked at, so nothing in it can be swapped
    afterwards, and a folder swapped for a link is never entered; modes change through
    a descriptor opened without following links, checked to be the file that was listed.
    """
    uid, gid = os.geteuid(), os.getegid()
    top = os.open(tree, _DIR)
    try:
        os.fchown(top, uid, gid)
        root = os.fstat(top)
        if root.st_mode & _LOOSE:
            os.fchmod(top, stat.S_IMODE(root.st_mode) & ~_LOOSE)
        for folder, dirs, files, dirfd in nofollow.walk(top):
            for name in dirs + files:
                st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
                os.chown(name, uid, gid, dir_fd=dirfd, follow_symlinks=False)
                if stat.S_ISLNK(st.st_mode):
                    continue
                if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
                    os.unlink(name, dir_fd=dirfd)
                    if not strict:
                        continue
                    raise ScriptError(
                        f"the script left {os.path.normpath(os.path.join(folder, name))}, "
                        "which is neither a file, a folder nor a link; entries hold only those"
                    )
                if st.st_mode & _LOOSE:
                    _tighten(dirfd, name, st, folder)
    finally:
        os.close(top)


_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


_LOOSE = stat.S_ISUID | stat.S_ISGID | stat.S_IWGRP | stat.S_IWOTH
"""Bits a published entry never keeps: set-id, and write for anyone but its owner."""


def _tighten(dirfd: int, name: str, st: os.stat_result, folder: str) -> None:
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dirfd)
    try:
        now = os.fstat(fd)
        if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
            where = os.path.normpath(os.path.join(folder, name))
            raise ScriptError(f"{where} changed while the agent reclaimed it; not installing it")
        os.fchmod(fd, stat.S_IMODE(now.st_mode) & ~_LOOSE)
    finally:
        os.close(fd)
