"""Building the single-file zipapp ``runner-agent-hook.pyz`` that runner images copy in.

Policy: the archive holds source only (no bytecode: the runner's Python may be any 3.8+),
``agent/hook/**`` and ``agent/platform/**`` (``.py`` files), a minimal ``agent/__init__.py``
of its own (the real one is a docstring and a version today, but whatever it grows
must not reach the runner), and a ``__main__.py`` that runs :func:`agent.hook.main.main`.
The interpreter line is ``/usr/bin/env python3``; the wrappers run it as ``python3 -I``.
Entries are sorted and stamped with one fixed time and mode, so the same sources give
the same bytes.
"""

from __future__ import annotations

import os
import stat
import subprocess
import zipfile
from pathlib import Path

NAME = "runner-agent-hook.pyz"
_STAMP = (1980, 1, 1, 0, 0, 0)
_ROOT = Path(__file__).resolve().parent.parent.parent
_PACKAGE_INIT = (
    b'"""runner-agent, as shipped in the job hook\'s zipapp: the hook and the platform."""\n'
)
# Plain old syntax before the version check, so an older python3 gets one line, not a
# SyntaxError from a module it cannot compile.
_MAIN = b"""\"\"\"runner-agent-hook: the job hook (see agent.hook.main).\"\"\"
import sys

if sys.version_info < (3, 8):
    sys.stderr.write(
        "runner-agent: the job hook needs Python 3.8 or newer; this python3 is %d.%d: "
        "install a newer python3 in the runner image\\n" % sys.version_info[:2]
    )
    sys.exit(1)

from agent.hook import main

sys.exit(main.main())
"""


def _sources() -> list[tuple[str, bytes]]:
    files: list[tuple[str, bytes]] = [("__main__.py", _MAIN), ("agent/__init__.py", _PACKAGE_INIT)]
    for package in ("agent/hook", "agent/platform"):
        for path in sorted((_ROOT / package).rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            files.append((path.relative_to(_ROOT).as_posix(), path.read_bytes()))
    return sorted(files)


class BuildError(Exception):
    """The zipapp could not be precompiled by the interpreter named; the message says why."""


def build_zipapp(dest: Path, *, python: str | None = None) -> Path:
    """Write the zipapp into the folder ``dest`` (or to ``dest`` itself when it names a
    ``.pyz`` file); its path. With ``python`` (the runner's interpreter, an absolute
    path), it then adds that interpreter's bytecode (``precompile``, see
    :mod:`agent.hook.precompile`), so the hook does not compile itself at every job."""
    target = dest if dest.suffix == ".pyz" else dest / NAME
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(f".{target.name}.tmp")
    with temp.open("wb") as handle:
        handle.write(b"#!/usr/bin/env python3\n")
        with zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for name, data in _sources():
                info = zipfile.ZipInfo(name, date_time=_STAMP)
                info.external_attr = (stat.S_IFREG | 0o644) << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                archive.writestr(info, data)
    os.chmod(temp, 0o755)  # noqa: S103 - a program, run by the runner's user
    if python is not None:
        done = subprocess.run(
            [python, "-I", str(temp), "precompile", "--output", str(temp)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if done.returncode != 0:
            temp.unlink()
            raise BuildError(
                f"{python} could not precompile the hook (exit {done.returncode}): "
                f"{(done.stderr or done.stdout).strip()[-500:]}"
            )
    os.replace(temp, target)
    return target


if __name__ == "__main__":
    import sys

    print(build_zipapp(Path(sys.argv[1] if len(sys.argv) > 1 else "dist")))
