"""The Pythons the hook's tests run it on: the system's, and pyenv's 3.8 and 3.7 when
this machine has them (the floor and one below it)."""

from __future__ import annotations

import os
from pathlib import Path

SYSTEM = Path("/usr/bin/python3")


def pyenv(version: str) -> Path | None:
    """pyenv's ``python<version>`` by absolute path (never the shim), if installed."""
    root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv") / "versions"
    for folder in sorted(root.glob(f"{version}.*"), reverse=True):
        candidate = folder / "bin" / f"python{version}"
        if candidate.is_file():
            return candidate
    return None
