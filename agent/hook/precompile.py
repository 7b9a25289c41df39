"""``runner-agent-hook precompile``: add bytecode for THIS interpreter to the zipapp.

Why: the zipapp ships source, since the runner's Python may be any 3.8+, and zipimport
cannot write bytecode, so every job start compiled every module again: a third of the
hook's time. Run by the runner's own ``python3`` once (in the runner image's build, or by
``runner-agent hook install`` on a runner host), it writes a copy whose every ``X.py``
has an ``X.pyc`` beside it.

Policy:
- the bytecode is unchecked-hash (PEP 552): nothing depends on file times, and zipimport
  loads it without reading the source again. Another interpreter finds a magic number it
  does not know and falls back to the source, so a precompiled zipapp still runs anywhere;
- the sources are kept as they are; entries are written sorted, with the fixed time and
  mode of :mod:`agent.hook.build`, behind the same interpreter line; the result replaces
  the output by rename, never writing through what is there.
"""

from __future__ import annotations

import os
import py_compile
import stat
import tempfile
import zipfile

from agent.hook import errors

_STAMP = (1980, 1, 1, 0, 0, 0)
_SHEBANG = b"#!/usr/bin/env python3\n"
MAX_ENTRIES = 1000
MAX_BYTES = 16 << 20


class PrecompileError(errors.BadInput):
    """The zipapp could not be read, compiled or written."""


def _sources(path: str) -> list[tuple[str, bytes]]:
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            if len(infos) > MAX_ENTRIES or sum(i.file_size for i in infos) > MAX_BYTES:
                raise PrecompileError(f"{path} is not the hook's zipapp: it is too large")
            return [
                (i.filename, archive.read(i))
                for i in infos
                if not i.filename.endswith(".pyc") and not i.is_dir()
            ]
    except (OSError, zipfile.BadZipFile) as exc:
        raise PrecompileError(f"cannot read the zipapp {path}: {exc}") from exc


def _bytecode(name: str, source: bytes, scratch: str) -> bytes:
    src = os.path.join(scratch, "module.py")
    out = os.path.join(scratch, "module.pyc")
    with open(src, "wb") as handle:
        handle.write(source)
    try:
        py_compile.compile(
            src,
            cfile=out,
            dfile=name,  # tracebacks name the module's place in the zipapp
            doraise=True,
            invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
        )
    except py_compile.PyCompileError as exc:
        raise PrecompileError(f"cannot compile {name}: {exc.msg}") from exc
    with open(out, "rb") as handle:
        return handle.read()


def precompile(source: str, output: str) -> str:
    """Write ``output``: the zipapp ``source`` with bytecode for this interpreter."""
    entries = _sources(source)
    with tempfile.TemporaryDirectory(prefix="runner-agent-hook-") as scratch:
        files = dict(entries)
        for name, data in entries:
            if name.endswith(".py"):
                files[name + "c"] = _bytecode(name, data, scratch)
    folder = os.path.dirname(os.path.abspath(output))
    temp = ""
    try:
        fd, temp = tempfile.mkstemp(prefix=".runner-agent-hook-", suffix=".tmp", dir=folder)
        with os.fdopen(fd, "wb") as handle:
            handle.write(_SHEBANG)
            with zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_DEFLATED) as archive:
                for name in sorted(files):
                    info = zipfile.ZipInfo(name, date_time=_STAMP)
                    info.external_attr = (stat.S_IFREG | 0o644) << 16
                    info.compress_type = zipfile.ZIP_DEFLATED
                    archive.writestr(info, files[name])
        os.chmod(temp, 0o755)  # noqa: S103 - a program, run by the runner's user
        os.replace(temp, output)
    except OSError as exc:
        raise PrecompileError(f"cannot write {output}: {exc}") from exc
    finally:
        if temp and os.path.exists(temp):
            os.unlink(temp)
    return output
