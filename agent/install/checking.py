"""Running a feature's check on what an install staged, before anything trusts it.

Policy: the check runs what the install produced (a registry's JavaScript, a script's
output), so it gets no more than the build did: the clean step environment, never the
agent's own, and, where the agent can confine (root, ``script_isolation: sandbox``), the
script sandbox as the unprivileged user with the staged tree read-only to it. The
step's variables that name the final prefix name the staged tree while it runs, and a
pip step built for the python entry finds that entry's interpreter on PATH. A check
that fails, or does not print what the manifest expects, fails the install.
"""

from __future__ import annotations

import os
from pathlib import Path

from agent.install import running, sandbox, watching
from agent.kits import procs
from agent.platform import plans as wire
from agent.store import layout


def run(
    step: wire.ToolStep,
    *,
    staging: Path,
    tree: Path,
    rel_path: list[str],
    timeout: float,
    script: sandbox.ScriptSettings,
    max_entry_bytes: int = watching.DEFAULT_MAX_ENTRY_BYTES,
) -> str:
    """The check's verdict for the receipt (``ok: <first line>``), or raise StoreError."""
    check = step["check"]
    if check is None:
        return "no check declared"
    argv = list(check["argv"])
    shown = " ".join(argv)
    prefix = step["prefix"]
    path = [os.path.normpath(os.path.join(tree, p)) for p in rel_path]
    # A pip feature built for the python entry (pytorch's cp313 wheels) is checked with
    # that entry's python3, not whatever the host's PATH has.
    path += [
        os.path.dirname(a["interpreter"])
        for a in step["actions"]
        if a["action"] == "run" and a.get("interpreter")
    ]
    base = running.environment({})
    env = running.environment(
        {k: v.replace(prefix, str(tree)) for k, v in step["env"]["vars"].items()}
    )
    env["PATH"] = os.pathsep.join([*path, base["PATH"]])
    if script.isolation == "sandbox" and os.geteuid() == 0:
        try:
            output = sandbox.run_confined(
                argv,
                what=f"the check {shown!r}",
                prefix=prefix,
                staging=staging,
                tree=tree,
                env=env,
                settings=script,
                timeout=timeout,
                on_output=lambda _: None,
                writable_tree=False,
                max_entry_bytes=max_entry_bytes,
            )
        except sandbox.ScriptError as exc:
            raise layout.StoreError(f"{exc}; expected it to print {check['expect']!r}") from exc
        returncode = 0
    else:
        try:
            done = procs.run(argv, env=env, cwd=staging, timeout=timeout)
        except procs.ProcError as exc:
            raise layout.StoreError(f"the check {shown!r} could not run: {exc}") from exc
        output, returncode = done.output, done.returncode
    output = output.strip()
    if returncode != 0 or check["expect"] not in output:
        raise layout.StoreError(
            f"the check {shown!r} exited {returncode} and printed {output[:200]!r}; "
            f"expected it to print {check['expect']!r}"
        )
    return f"ok: {output.splitlines()[0][:120] if output else ''}"
