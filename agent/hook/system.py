"""Running the ``system`` steps the agent left to the runner (``steps_left``): OS packages
installed in the runner's own container, with the runner's package manager.

Policy:
- a feature whose check passes already, or whose packages the manager's read-only query
  reports installed, installs nothing (an image that ships them costs no root);
- otherwise every action runs in order (:class:`agent.platform.plans.SystemAction`):
  ``download`` fetches a signing key through ``urllib`` with the environment's proxies,
  at most 1 MiB within 60 s, and it must be an OpenPGP key; ``write_file`` writes a
  repository file; both land only in the manager's repository folders, through a
  private temporary file and ``install -D -m 0644``; ``run`` runs its argv with its
  variables added to the hook's environment;
- as root everything runs directly, otherwise through ``sudo -n``: no sudo, or a sudo
  that wants a password, is one message naming the packages, the manager and the two
  ways out (passwordless sudo for the runner's user, or the agent in host mode);
- the commands' output streams into the job log as it comes; a failure names the
  feature, the manager and, where the manager's module recognises its output, why.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from agent.hook import errors

MAX_KEY_BYTES = 1 << 20
DOWNLOAD_TIMEOUT = 60.0
STEP_TIMEOUT = 30 * 60.0
CHECK_TIMEOUT = 60.0


class SystemStepError(errors.HookError):
    """A system step left to the runner could not run, or failed."""


def _packages(actions: Sequence[Mapping[str, Any]]) -> list[str]:
    asked = [
        str(name)
        for action in actions
        if action.get("purpose") == "install"
        for name in action.get("packages", [])
    ]
    return list(dict.fromkeys(asked))


def _manager(actions: Sequence[Mapping[str, Any]]) -> str:
    return next((str(a["manager"]) for a in actions if a.get("manager")), "the package manager")


class Runner:
    """Runs the steps left for one job; ``say`` prints a line into the job log."""

    def __init__(
        self,
        say: Callable[[str], None],
        *,
        environ: Mapping[str, str] | None = None,
        euid: int | None = None,
    ) -> None:
        self._say = say
        self._environ = dict(os.environ if environ is None else environ)
        self._root = (os.geteuid() if euid is None else euid) == 0
        self._sudo_checked = False

    def run_feature(
        self, feature: str, actions: Sequence[Mapping[str, Any]], check: Mapping[str, Any] | None
    ) -> str:
        """Install what ``actions`` install for ``feature``; ``present`` or ``installed``."""
        manager = _manager(actions)
        packages = _packages(actions)
        if check is not None and self._check_passes(check):
            self._say(f"{feature}: already present in the runner (its check passes)")
            return "present"
        if packages and self._installed(manager, packages):
            self._say(f"{feature}: {manager} reports {', '.join(packages)} installed already")
            return "present"
        self._privilege(feature, manager, packages)
        for action in actions:
            kind = action.get("action")
            if kind == "download":
                self._download(feature, manager, action)
            elif kind == "write_file":
                content = str(action.get("content", "")).encode("utf-8")
                self._install_file(feature, manager, str(action.get("path", "")), content)
            elif kind == "run":
                self._run(feature, manager, action)
            else:
                raise SystemStepError(
                    f"{feature}: the agent left an action {kind!r} the hook does not know; "
                    "use a hook as new as the agent"
                )
        return "installed"

    # --- privilege ------------------------------------------------------------------------

    def _argv(self, argv: Sequence[str], env: Mapping[str, str] | None = None) -> list[str]:
        pairs = [f"{k}={v}" for k, v in (env or {}).items()]
        if self._root:
            return list(argv)
        # sudo resets the environment; env(1) hands the step's variables through.
        return ["sudo", "-n", "--", "env", *pairs, *argv] if pairs else ["sudo", "-n", "--", *argv]

    def _privilege(self, feature: str, manager: str, packages: list[str]) -> None:
        if self._root or self._sudo_checked:
            return
        what = f"{feature} needs {', '.join(packages) or 'OS packages'} installed with {manager}"
        remedy = (
            "give the runner's user passwordless sudo, install them in the runner image, "
            "or run the agent in host mode"
        )
        if shutil.which("sudo", path=self._environ.get("PATH")) is None:
            raise SystemStepError(f"{what}, and the hook runs as a user without sudo: {remedy}")
        done = subprocess.run(
            ["sudo", "-n", "true"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=CHECK_TIMEOUT,
            env=self._environ,
            check=False,
        )
        if done.returncode != 0:
            said = (done.stderr or done.stdout).strip().splitlines()
            raise SystemStepError(
                f"{what}, and sudo -n refuses ({said[-1] if said else 'no answer'}): {remedy}"
            )
        self._sudo_checked = True

    # --- queries --------------------------------------------------------------------------

    def _check_passes(self, check: Mapping[str, Any]) -> bool:
        argv = [str(a) for a in check.get("argv", [])]
        if not argv:
            return False
        try:
            done = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                errors="replace",
                timeout=CHECK_TIMEOUT,
                env=self._environ,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            return False
        return done.returncode == 0 and str(check.get("expect", "")) in done.stdout + done.stderr

    def _installed(self, manager: str, packages: list[str]) -> bool:
        from agent.platform import model, packagers

        try:
            packager = packagers.get(manager)
        except (model.PlatformError, KeyError, ValueError):
            return False
        queries = packager.installed_queries(tuple(packages))
        if not queries:
            return False
        for query in queries:
            env = dict(self._environ)
            env.update(query.env)
            try:
                done = subprocess.run(
                    list(query.argv),
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    text=True,
                    errors="replace",
                    timeout=CHECK_TIMEOUT,
                    env=env,
                    check=False,
                )
            except (OSError, subprocess.TimeoutExpired):
                return False
            if not packager.says_installed(query, done.returncode, done.stdout + done.stderr):
                return False
        return True

    # --- actions --------------------------------------------------------------------------

    def _allowed(self, feature: str, manager: str, path: str) -> None:
        from agent.platform import model, packagers

        try:
            folders = packagers.get(manager).repository_folders
        except (model.PlatformError, KeyError, ValueError):
            folders = ()
        clean = posixpath.normpath(path)
        if posixpath.dirname(clean) not in folders or clean != path:
            raise SystemStepError(
                f"{feature}: the agent asks to write {path!r}, outside {manager}'s "
                f"repository folders ({', '.join(folders) or 'none'}); refusing"
            )

    def _download(self, feature: str, manager: str, action: Mapping[str, Any]) -> None:
        url, dest = str(action.get("url", "")), str(action.get("dest", ""))
        self._allowed(feature, manager, dest)
        if not url.startswith(("https://", "http://")):
            raise SystemStepError(f"{feature}: the key URL {url!r} is not http(s)")
        self._say(f"{feature}: downloading the repository key {url}")
        import urllib.request  # only here: it costs a job without keys ~20 ms of start-up

        try:
            # urlopen's default opener uses the environment's proxies (https_proxy, ...).
            with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT) as response:  # noqa: S310
                content = response.read(MAX_KEY_BYTES + 1)
                landed = response.geturl()
        except (OSError, ValueError) as exc:
            raise SystemStepError(
                f"{feature}: cannot fetch the repository key {url}: {exc}"
            ) from None
        if url.startswith("https://") and not landed.startswith("https://"):
            raise SystemStepError(
                f"{feature}: {url} redirected to {landed}, which is not https: a signing "
                "key is never taken over plain http"
            )
        if len(content) > MAX_KEY_BYTES:
            raise SystemStepError(f"{feature}: {url} is over 1 MiB: not a signing key")
        if b"BEGIN PGP PUBLIC KEY BLOCK" not in content and not content.startswith(b"\x99"):
            raise SystemStepError(f"{feature}: {url} is not an OpenPGP key ({len(content)} bytes)")
        self._install_file(feature, manager, dest, content)

    def _install_file(self, feature: str, manager: str, dest: str, content: bytes) -> None:
        self._allowed(feature, manager, dest)
        with tempfile.TemporaryDirectory(prefix="runner-agent-hook-") as folder:
            temp = os.path.join(folder, "file")
            with open(temp, "wb") as handle:
                handle.write(content)
            done = self._call(self._argv(["install", "-D", "-m", "0644", temp, dest]))
        if done.returncode != 0:
            raise SystemStepError(f"{feature}: cannot write {dest}: {done.stdout.strip()[-500:]}")

    def _run(self, feature: str, manager: str, action: Mapping[str, Any]) -> None:
        argv = [str(a) for a in action.get("argv", [])]
        env = {str(k): str(v) for k, v in dict(action.get("env", {})).items()}
        if not argv:
            raise SystemStepError(f"{feature}: the agent left a command with no argv")
        asked = tuple(str(p) for p in action.get("packages", []))
        self._held_to_manager(feature, manager, argv, env, asked)
        purpose = "refreshing the index" if action.get("purpose") == "refresh" else "installing"
        packages = ", ".join(asked)
        self._say(f"{feature}: {purpose}{' ' + packages if packages else ''} with {manager}")
        done = self._call(self._argv(argv, env), env=env, stream=feature)
        if done.returncode == 0:
            return
        explained = None
        from agent.platform import model, packagers

        try:
            packager = packagers.get(manager)
            failure = packagers.Failure(
                output=done.stdout, returncode=done.returncode, packages=asked
            )
            explained = packager.explain(failure)
        except (model.PlatformError, KeyError, ValueError, TypeError):
            explained = None
        tail = "\n".join(done.stdout.strip().splitlines()[-5:])
        raise SystemStepError(
            f"{feature}: {purpose} with {manager} failed (exit {done.returncode}): "
            f"{explained or tail}"
        )

    @staticmethod
    def _held_to_manager(
        feature: str, manager: str, argv: list[str], env: Mapping[str, str], asked: tuple[str, ...]
    ) -> None:
        # What runs as root here is the package manager's own binary, as the platform
        # package names it, with only the variables that package itself would set
        # (APT_CONFIG, PERL5OPT, PATH... would run other code as root).
        from agent.platform import model
        from agent.platform import packagers as known

        binary = known.BINARIES.get(manager)
        if binary is None or argv[0] != binary:
            raise SystemStepError(
                f"{feature}: the agent asks to run {argv[0]!r}, which is not {manager}'s "
                f"binary ({binary or 'unknown manager'}); refusing"
            )
        try:
            commands = known.install_commands(manager, list(asked) or ["placeholder"])  # type: ignore[arg-type]
        except (model.PlatformError, KeyError, ValueError, TypeError):
            commands = []
        allowed = {name for command in commands for name, _ in command.env}
        bad = sorted(k for k in env if k not in allowed)
        if bad:
            raise SystemStepError(
                f"{feature}: the agent asks to set {', '.join(bad)} for {manager}, which "
                f"{manager}'s own commands never set; refusing"
            )

    def _call(
        self, argv: list[str], *, env: Mapping[str, str] | None = None, stream: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        full = dict(self._environ)
        full.update(env or {})
        lines: list[str] = []
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=full,
                cwd="/",
            )
        except OSError as exc:
            raise SystemStepError(f"cannot run {argv[0]}: {exc.strerror}") from None
        assert proc.stdout is not None
        # The output is read to its end below; the timer bounds a step that never ends.
        timer = threading.Timer(STEP_TIMEOUT, proc.kill)
        timer.daemon = True
        timer.start()
        with proc:
            for raw in proc.stdout:
                # A progress meter redraws with CRs: only its last state is a line.
                parts = [p for p in raw.rstrip(b"\r\n").split(b"\r") if p.strip()]
                if not parts:
                    continue
                line = parts[-1].decode("utf-8", errors="replace").rstrip()
                lines.append(line)
                del lines[:-200]  # the tail is what a failure shows
                if stream is not None:
                    self._say(f"  {stream}: {line}")
            proc.wait()
        timer.cancel()
        return subprocess.CompletedProcess(argv, proc.returncode, "\n".join(lines), "")
