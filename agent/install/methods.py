"""Turning a plan's ``run`` action into files in the staging tree, per method.

- ``pip``: ``pip install --target`` with a report, so the receipt names every wheel
  and its sha256. Wheels for a runtime Python (the feature requires ``python``) are
  installed with that Python when it can run here; their scripts' shebangs become
  ``/usr/bin/env python3``, so they run on the ``python`` entry wherever the volume is
  mounted, never on the agent's venv.
- ``npm``: ``npm install --global --prefix``; bin/ must hold relative links only.
- ``script``: see :mod:`agent.install.sandbox`.

Policy: every command runs through :mod:`agent.kits.procs` in the clean environment of
:mod:`agent.install.running` plus the network settings; its output goes into the install
log; a failure names the method and quotes the end of the output. Every step is held to
the entry's size limit, and a volume that filled up is named as the cause
(:mod:`agent.install.watching`).
"""

from __future__ import annotations

import collections
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from agent.install import running, sandbox, watching
from agent.install.fetch import network
from agent.platform import plans as wire
from agent.store import installlog, layout, receipts


@dataclass(frozen=True)
class Build:
    """Where and how one ``run`` action builds."""

    step: wire.ToolStep
    staging: Path
    tree: Path
    timeout: float
    network: network.Network
    log: installlog.InstallLog
    native: bool
    """The target is the platform the agent runs on (its tools may run)."""
    script: sandbox.ScriptSettings
    max_entry_bytes: int = watching.DEFAULT_MAX_ENTRY_BYTES

    def limit(self, action: wire.RunAction) -> int:
        """The entry's size limit: the manifest's own, else ``installer.max_entry_bytes``."""
        return action.get("max_entry_bytes") or self.max_entry_bytes

    def environment(self, action: wire.RunAction) -> dict[str, str]:
        """The clean environment, the network settings, then the action's own variables."""
        extra = {**self.network.environment(self.staging), **action["env"]}
        return running.environment(extra)

    def run(self, name: str, argv: list[str], env: dict[str, str], cwd: Path, *, limit: int) -> str:
        """Run one command, keeping its output in the log either way; its staging folder
        may grow to ``limit`` bytes."""
        lines: collections.deque[str] = collections.deque(maxlen=2000)
        what = f"{name} install"
        try:
            output = running.run(
                argv,
                env=env,
                cwd=cwd,
                timeout=self.timeout,
                on_line=lambda x: lines.append(x[:2000]),
                watch=watching.SizeWatch(self.staging, limit, what=what),
            )
        except running.RunError:
            watching.check_volume(self.staging, "\n".join(lines), what=what, failed=True)
            raise
        finally:
            self.log.output(name, "\n".join(lines))
        watching.check_volume(self.staging, output, what=what, failed=False)
        return output


# pip settings that say how to reach an index, not where packages come from.
_PIP_TRANSPORT = frozenset({"PIP_CERT", "PIP_CLIENT_CERT", "PIP_TIMEOUT", "PIP_RETRIES",
                            "PIP_PROXY", "PIP_TRUSTED_HOST"})  # fmt: skip


def _one_index(env: dict[str, str], url: str) -> dict[str, str]:
    """``env`` for a pip that installs from ``url`` alone: the whole install from that
    index (PyTorch's serves the dependencies too), with no other source pip could take a
    same-named package from (dependency confusion): no configuration file (pip.conf's
    extra-index-url, find-links) and no PIP_* setting but how to reach the index."""
    kept = {k: v for k, v in env.items() if not k.startswith("PIP_") or k in _PIP_TRANSPORT}
    return {**kept, "PIP_CONFIG_FILE": os.devnull, "PIP_INDEX_URL": url}


def pip(build: Build, action: wire.RunAction) -> list[receipts.Source]:
    """pip install --target the staging tree; the wheels it took, for the receipt."""
    report = build.staging / "pip-report.json"
    argv = running.resolve_argv(action["argv"], prefix=build.step["prefix"], staging=build.tree)
    interpreter = action.get("interpreter")
    if interpreter and build.native:
        if not os.access(interpreter, os.X_OK):
            raise layout.StoreError(
                f"the python entry's interpreter {interpreter} is missing; ensure the "
                "python feature first (the plan installs it in an earlier round)"
            )
        argv[0] = interpreter
    argv[argv.index("install") + 1 : argv.index("install") + 1] = [
        "--report",
        str(report),
        "--no-warn-script-location",
    ]
    env = build.environment(action)
    index = action.get("index")
    if index is not None:
        env = _one_index(env, build.network.pip_index(index["name"], index["path"]))
    output = build.run("pip", argv, env, build.staging, limit=build.limit(action))
    build.log.step("pip", f"with {argv[0]}: {build.log.last_line(output)}")
    _portable_shebangs(build.tree, {argv[0], sys.executable})
    try:
        data = json.loads(report.read_text())
    except (OSError, ValueError):
        return []
    sources = []
    for item in data.get("install", []):
        info = item.get("download_info", {})
        hashes = info.get("archive_info", {}).get("hashes", {})
        sha = hashes.get("sha256") or info.get("archive_info", {}).get("hash", "").partition("=")[2]
        sources.append(receipts.Source(url=info.get("url", ""), sha256=sha, size=0))
    return sources


def _portable_shebangs(tree: Path, interpreters: set[str]) -> None:
    """Point console scripts written by pip at ``python3`` on PATH, not at the absolute
    interpreter that ran pip (which does not exist where the entry is mounted)."""
    folder = tree / "bin"
    if not folder.is_dir():
        return
    heads = {f"#!{i}".encode() for i in interpreters}
    for path in folder.iterdir():
        if path.is_symlink() or not path.is_file():
            continue
        with open(path, "rb") as handle:
            first = handle.readline()
            if first.rstrip(b"\n") not in heads:
                continue
            rest = handle.read()
        path.write_bytes(b"#!/usr/bin/env python3\n" + rest)


def npm(build: Build, action: wire.RunAction) -> None:
    """npm install --global --prefix the staging tree: bin/ holds relative links into
    lib/node_modules, so the entry works wherever the volume is mounted.

    Packages' lifecycle scripts are code from the registry: as root they run in the
    script sandbox (:mod:`agent.install.sandbox`), like a feature's own script; an agent
    that is not root cannot confine them and skips them (``--ignore-scripts``) unless
    ``installer.script_isolation`` is ``none``.
    """
    argv = running.resolve_argv(action["argv"], prefix=build.step["prefix"], staging=build.tree)
    env = build.environment(action)
    env.setdefault("npm_config_cache", str(build.staging / "npm-cache"))  # not the agent's HOME
    confine = build.script.isolation == "sandbox"
    if confine and os.geteuid() != 0:
        argv.append("--ignore-scripts")
        build.log.step("npm", "not root: lifecycle scripts skipped (--ignore-scripts)")
        confine = False
    if confine:
        (build.staging / "npm-cache").mkdir(exist_ok=True)
        output = sandbox.run_confined(
            argv,
            what="npm install",
            prefix=build.step["prefix"],
            staging=build.staging,
            tree=build.tree,
            env=env,
            settings=build.script,
            timeout=build.timeout,
            on_output=lambda text: build.log.output("npm", text),
            network="host",  # npm's install needs its registry, whatever scripts get
            max_entry_bytes=build.limit(action),
        )
    else:
        output = build.run("npm", argv, env, build.staging, limit=build.limit(action))
    build.log.step("npm", build.log.last_line(output))
    bin_dir = build.tree / "bin"
    for link in bin_dir.iterdir() if bin_dir.is_dir() else ():
        if link.is_symlink() and os.path.isabs(os.readlink(link)):
            raise layout.StoreError(
                f"npm left an absolute link {link.name} -> {os.readlink(link)}; the entry "
                "would break where the volume is mounted elsewhere"
            )


def script(build: Build, action: wire.RunAction) -> None:
    """Run the feature's script in the sandbox, with PREFIX the staging tree."""
    output = sandbox.run_script(
        action,
        prefix=build.step["prefix"],
        staging=build.staging,
        tree=build.tree,
        env=build.environment(action),
        settings=build.script,
        timeout=build.timeout,
        on_output=lambda text: build.log.output("script", text),
        max_entry_bytes=build.limit(action),
    )
    build.log.step("script", build.log.last_line(output))
