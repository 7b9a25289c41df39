"""``runner-agent hook install | uninstall | build``: host mode's hook set-up.

``install`` places the job hook (the ``runner-agent-hook.pyz`` zipapp and its wrappers)
in a hook folder and writes the hook variables into the runner's ``.env``, which the
runner's listener reads at its start (``KEY=VALUE`` lines, split at the first ``=``, no
quoting: actions/runner ``Program.cs``, ``LoadAndSetEnv``).

Policy:
- ``--runner-dir`` must be a runner folder (``run.sh`` or ``config.sh`` in it), else exit
  2 before anything is written;
- every other line of ``.env`` is kept byte for byte; our keys are replaced where they
  are (a duplicate of one is dropped) or appended; a run that changes nothing writes
  nothing, so ``install`` is idempotent;
- nothing is written through a symbolic link (:mod:`agent.cli.runnerdir`): a link planted
  at a hook file is replaced, never followed; a linked ``.env`` or hook folder is refused;
- a job-started hook that is not ours is never replaced without ``--force``;
- ``.env`` keeps its owner and mode; a new one belongs to the runner folder's owner;
- ``uninstall`` removes our keys only, and leaves the hook files (other runners of the
  host may use them);
- warnings (no python3, a socket or token file the runner's user cannot use) do not fail
  the install: the runner may run as a user of another machine image.

Exit codes: 0 done, 1 refused (a linked ``.env``, another hook, a failed write), 2 usage
(not a runner folder, a bad path).
"""

from __future__ import annotations

import argparse
import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from agent.cli import client, common, runnerdir

STARTED_KEY = "ACTIONS_RUNNER_HOOK_JOB_STARTED"
COMPLETED_KEY = "ACTIONS_RUNNER_HOOK_JOB_COMPLETED"
SOCKET_KEY = "RUNNER_AGENT_SOCKET"
TOKEN_KEY = "RUNNER_AGENT_TOKEN_FILE"  # noqa: S105 (a variable name, not a token)
PYZ = "runner-agent-hook.pyz"
STARTED = "job-started.sh"
COMPLETED = "job-completed.sh"
WRAPPERS = (STARTED, COMPLETED, "runner-agent-hook")
HOOK_FILES = {STARTED_KEY: STARTED, COMPLETED_KEY: COMPLETED}
ROOT_HOOK_DIR = Path("/opt/runner-agent/hook")


def add_parsers(sub: Any, config_arg: Callable[[argparse.ArgumentParser], None]) -> None:
    """Register ``hook`` and its sub-commands."""
    hook = sub.add_parser(
        "hook",
        help="install the job hook into a runner folder (host mode), or build it",
        description="Set up the job hook: the runner runs it before and after every job.",
    )
    hsub = hook.add_subparsers(dest="hook_command", required=True, metavar="SUBCOMMAND")
    install = hsub.add_parser(
        "install",
        help="place the hook and write its variables into the runner's .env",
        description=(
            "Write the hook (zipapp and wrappers) into the hook folder and set "
            f"{STARTED_KEY}, {COMPLETED_KEY}, {SOCKET_KEY} (and {TOKEN_KEY}) in the "
            "runner's .env, keeping its other lines. Restart the runner afterwards."
        ),
    )
    _runner_args(install)
    install.add_argument(
        "--socket",
        type=Path,
        default=None,
        help="the agent's API socket the hook uses (default: as every command finds it)",
    )
    install.add_argument(
        "--token-file",
        type=Path,
        default=None,
        help="job token file the hook reads (default: the config's server.job_token_file)",
    )
    install.add_argument(
        "--force", action="store_true", help="replace a job hook that is not runner-agent's"
    )
    config_arg(install)
    install.set_defaults(run=run_install)
    uninstall = hsub.add_parser(
        "uninstall",
        help="remove the hook's variables from the runner's .env",
        description="Remove runner-agent's variables from the runner's .env (the hook "
        "files stay: other runners may use them). Restart the runner afterwards.",
    )
    _runner_args(uninstall)
    uninstall.set_defaults(run=run_uninstall)
    build = hsub.add_parser(
        "build",
        help="write the hook zipapp alone (for image builds)",
        description=f"Write the single-file hook zipapp ({PYZ}) to FILE.",
    )
    build.add_argument("--output", type=Path, required=True, help="the file to write")
    build.add_argument(
        "--python",
        default=None,
        help=(
            "the runner's python3 (an absolute path): add its bytecode, so the hook does "
            "not compile itself at every job (default: source only)"
        ),
    )
    build.set_defaults(run=run_build)


def _runner_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--runner-dir", type=Path, required=True, help="the runner's folder (holds run.sh)"
    )
    parser.add_argument(
        "--hook-dir",
        type=Path,
        default=None,
        help=f"where the hook files go (default: {ROOT_HOOK_DIR} as root, else "
        "DIR/runner-agent-hook)",
    )
    parser.add_argument("--dry-run", action="store_true", help="show the changes, write nothing")


def _env_value(path: Path, what: str) -> str:
    """``path`` as a ``.env`` value: absolute, one line."""
    text = str(path)
    if not path.is_absolute() or any(c in text for c in "\n\r\0"):
        raise runnerdir.HookInstallError(
            f"{what} {text!r} cannot go into .env: give an absolute path on one line",
            common.EXIT_USAGE,
        )
    return text


def _hook_dir(args: argparse.Namespace, runner: Path) -> Path:
    if args.hook_dir is not None:
        return Path(os.path.abspath(args.hook_dir))
    return ROOT_HOOK_DIR if os.geteuid() == 0 else runner / "runner-agent-hook"


def _ours(value: str | None, key: str, hook_dir: Path) -> bool:
    """Whether a hook variable's value names our wrapper."""
    if value is None:
        return False
    path = Path(value)
    return path.name == HOOK_FILES[key] and (
        path.parent == hook_dir or (path.parent / PYZ).is_file()
    )


def _warnings(runner_uid: int, socket: Path, token: Path | None) -> list[str]:
    notes: list[str] = []
    if shutil.which("python3") is None:
        notes.append("no python3 on PATH here: the hook needs python3 (3.8 or newer)")
    access = runnerdir.user_may(socket, runner_uid, 6)
    if access is None and not socket.exists():
        notes.append(f"no agent listens at {socket} yet: start runner-agent before a job")
    elif access is False:
        notes.append(
            f"the runner's user (uid {runner_uid}) cannot use the socket {socket}: set "
            "server.socket_group to its group and restart the agent"
        )
    if token is not None and runnerdir.user_may(token, runner_uid, 4) is False:
        notes.append(f"the runner's user (uid {runner_uid}) cannot read the token file {token}")
    return notes


def _token(args: argparse.Namespace) -> Path | None:
    """``--token-file``, else the config's job token file (never the admin one)."""
    if args.token_file is not None:
        return Path(os.path.abspath(args.token_file))
    from agent.config import loading

    try:
        return loading.load(common.config_path(args)).server.job_token_file
    except loading.ConfigError:
        return None


# -- the hook files -----------------------------------------------------------------


def _pyz_bytes(python: str | None = None) -> bytes:
    from agent.hook import build

    with tempfile.TemporaryDirectory(prefix="runner-agent-hook-") as temp:
        try:
            return build.build_zipapp(Path(temp), python=python).read_bytes()
        except build.BuildError as exc:
            raise runnerdir.HookInstallError(str(exc)) from exc


def runner_python() -> str | None:
    """The python3 the runner on this host will run the hook with, to precompile for."""
    return shutil.which("python3")


def hook_files(python: str | None = None) -> dict[str, tuple[bytes, int]]:
    """Each hook file's name, bytes and mode; the zipapp with ``python``'s bytecode."""
    import agent.hook

    wrappers = Path(agent.hook.__file__).parent / "wrappers"
    files = {PYZ: (_pyz_bytes(python), 0o755)}  # it has a #! line too
    for name in WRAPPERS:
        try:
            files[name] = ((wrappers / name).read_bytes(), 0o755)
        except FileNotFoundError:
            raise runnerdir.HookInstallError(
                f"the hook's wrapper {wrappers / name} is missing from this installation: "
                "reinstall runner-agent"
            ) from None
    return files


def _installed_files() -> tuple[dict[str, tuple[bytes, int]], list[str]]:
    # Precompiled for this host's python3 when it can; else source only, which runs the
    # same, only slower at each job start: never a reason to refuse the install.
    python = runner_python()
    if python is not None:
        try:
            return hook_files(python), []
        except runnerdir.HookInstallError as exc:
            return hook_files(), [f"the hook is installed as source only: {exc}"]
    return hook_files(), []


def _place(hook_dir: Path, dry_run: bool) -> list[str]:
    if dry_run:
        if os.path.islink(hook_dir):
            raise runnerdir.HookInstallError(f"{hook_dir} is a symbolic link; give a real folder")
        files, notes = _installed_files()
        return [*notes, *(f"would write {hook_dir / name}" for name in files)]
    folder = runnerdir.open_folder(hook_dir, create=True)
    lines: list[str] = []
    try:
        files, lines = _installed_files()
        for name, (data, mode) in files.items():
            try:
                old = runnerdir.read_at(folder, name, hook_dir)
            except runnerdir.HookInstallError:
                old = None  # a link planted there: replaced below, never followed
            if old is not None and old[0] == data and stat.S_IMODE(old[1].st_mode) == mode:
                lines.append(f"unchanged {hook_dir / name}")
                continue
            runnerdir.write_at(folder, name, data, mode)
            lines.append(f"wrote {hook_dir / name}")
    finally:
        os.close(folder)
    return lines


# -- the commands -------------------------------------------------------------------


def _edit(runner: Path, folder: int, wanted: Mapping[str, str | None], dry: bool) -> list[str]:
    """Apply ``wanted`` to ``.env``; the lines that say what changed."""
    old, info = runnerdir.read_env(folder, runner)
    new = runnerdir.edit_env(old, wanted)
    env = runner / ".env"
    if new == old:
        return [f"{env}: unchanged"]
    if not dry:
        # The runner's user must keep editing its own .env (config.sh rewrites it).
        mode = stat.S_IMODE(info.st_mode) if info else 0o644
        info = info or os.fstat(folder)
        owner = (info.st_uid, info.st_gid)
        runnerdir.write_at(folder, ".env", new.encode("utf-8", "surrogateescape"), mode, owner)
    return [f"{env}: {'would change' if dry else 'changed'}", *runnerdir.env_diff(old, new)]


def _restart_note(runner: Path) -> str:
    return (
        f"Restart the runner so it reads .env: in {runner}, `sudo ./svc.sh stop && sudo "
        "./svc.sh start` for the service, or stop and start ./run.sh."
    )


def run_install(args: argparse.Namespace) -> int:
    """Place the hook and set its variables in the runner's ``.env``."""
    runner = Path(os.path.abspath(args.runner_dir))
    try:
        folder = runnerdir.runner_folder(runner)
        try:
            hook_dir = _hook_dir(args, runner)
            socket = Path(os.path.abspath(client.socket_path(args)))
            token = _token(args)
            wanted: dict[str, str | None] = {
                STARTED_KEY: _env_value(hook_dir / STARTED, "the hook folder"),
                COMPLETED_KEY: _env_value(hook_dir / COMPLETED, "the hook folder"),
                SOCKET_KEY: _env_value(socket, "the socket"),
                TOKEN_KEY: _env_value(token, "the token file") if token else None,
            }
            current = runnerdir.env_values(runnerdir.read_env(folder, runner)[0])
            for key in HOOK_FILES:
                value = current.get(key)
                foreign = value and value != wanted[key] and not _ours(value, key, hook_dir)
                if foreign and not args.force:
                    raise runnerdir.HookInstallError(
                        f"{runner / '.env'} already sets {key}={value}, a hook that is not "
                        "runner-agent's; call it from your own steps, or pass --force to "
                        "replace it"
                    )
            lines = _place(hook_dir, args.dry_run)
            lines += _edit(runner, folder, wanted, args.dry_run)
            notes = _warnings(os.fstat(folder).st_uid, socket, token)
        finally:
            os.close(folder)
    except runnerdir.HookInstallError as exc:
        return common.fail(str(exc), exc.code)
    except OSError as exc:
        return common.fail(f"cannot install the hook: {exc}")
    print("\n".join(lines))
    for note in notes:
        print(f"runner-agent: warning: {note}", file=sys.stderr)
    if not args.dry_run:
        print(_restart_note(runner))
    return common.EXIT_OK


def run_uninstall(args: argparse.Namespace) -> int:
    """Remove our variables from the runner's ``.env``."""
    runner = Path(os.path.abspath(args.runner_dir))
    try:
        folder = runnerdir.runner_folder(runner)
        try:
            hook_dir = _hook_dir(args, runner)
            current = runnerdir.env_values(runnerdir.read_env(folder, runner)[0])
            wanted: dict[str, str | None] = {SOCKET_KEY: None, TOKEN_KEY: None}
            kept = []
            for key in HOOK_FILES:
                if _ours(current.get(key), key, hook_dir):
                    wanted[key] = None
                elif key in current:
                    kept.append(f"kept {key}={current[key]}: not runner-agent's hook")
            lines = _edit(runner, folder, wanted, args.dry_run) + kept
        finally:
            os.close(folder)
    except runnerdir.HookInstallError as exc:
        return common.fail(str(exc), exc.code)
    except OSError as exc:
        return common.fail(f"cannot uninstall the hook: {exc}")
    print("\n".join(lines))
    if not args.dry_run:
        print(f"The hook files in {hook_dir} stay (other runners may use them).")
        print(_restart_note(runner))
    return common.EXIT_OK


def run_build(args: argparse.Namespace) -> int:
    """Write the zipapp to ``--output``."""
    output = Path(os.path.abspath(args.output))
    if output.name in ("", ".", ".."):
        return common.fail(f"--output {args.output}: give a file name", common.EXIT_USAGE)
    try:
        if args.python is not None and not os.path.isabs(args.python):
            return common.fail(
                f"--python {args.python}: give the interpreter's absolute path", common.EXIT_USAGE
            )
        data = _pyz_bytes(args.python)
        folder = runnerdir.open_folder(output.parent, create=False, follow=True)
        try:
            runnerdir.write_at(folder, output.name, data, 0o755)
        finally:
            os.close(folder)
    except runnerdir.HookInstallError as exc:
        return common.fail(str(exc), exc.code)
    except OSError as exc:
        return common.fail(f"cannot write {output}: {exc}")
    print(f"wrote {output} ({len(data)} bytes)")
    return common.EXIT_OK
