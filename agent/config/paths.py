"""Where the agent finds the files it ships with.

Policy: an installed wheel carries the bundled feature catalog inside the package
(``agent/_bundled/features``, put there by the build); a source checkout or an editable
install uses the repository's top-level ``features/``. Nothing is looked up relative to
the current directory.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent.parent


def bundled_catalog() -> Path:
    """The folder of the catalog shipped with this agent."""
    installed = _PACKAGE / "_bundled" / "features"
    if installed.is_dir():
        return installed
    return _PACKAGE.parent / "features"
