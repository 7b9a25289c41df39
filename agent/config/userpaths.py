"""Per-user defaults for an agent that does not run as root.

Policy: the built-in paths (``/run/runner-agent/api.sock``, ``/var/lib/runner-agent/store``)
are for a root service and a pod; an ordinary user cannot create them, and an agent
that cannot bind its socket or prepare its store is never ready. So without root, and
only for settings left unset, the defaults follow the XDG base directories, the way
well-behaved per-user daemons do:

- the socket: ``$XDG_RUNTIME_DIR/runner-agent/api.sock``; where that is unset (``su``,
  cron, containers), ``$XDG_STATE_HOME/runner-agent/api.sock`` or
  ``~/.local/state/runner-agent/api.sock``. Never a predictable path in ``/tmp``, which
  another user could take first. The folder is created mode 0700 when the agent binds.
- the store: ``$XDG_DATA_HOME/runner-agent/store`` or
  ``~/.local/share/runner-agent/store``.

The CLI loads settings through the same rule, so both sides find the same socket. An
XDG variable that is not an absolute path is ignored, as the XDG specification says.
"""

from __future__ import annotations

import os
import pwd
from collections.abc import Mapping
from pathlib import Path
from typing import Any

SOCKET = "api.sock"


def _home(environ: Mapping[str, str]) -> Path:
    home = environ.get("HOME", "")
    if home.startswith("/"):
        return Path(home)
    try:
        return Path(pwd.getpwuid(os.geteuid()).pw_dir)
    except KeyError:
        # A uid with no passwd entry (Kubernetes' runAsUser in an image that lacks it):
        # container runtimes give such a process HOME=/, and so does this.
        return Path("/")


def _xdg(environ: Mapping[str, str], name: str, fallback: str) -> Path:
    value = environ.get(name, "")
    if value.startswith("/"):
        return Path(value)
    return _home(environ) / fallback


def socket_path(environ: Mapping[str, str]) -> Path:
    """The per-user API socket (see the module's policy)."""
    runtime = environ.get("XDG_RUNTIME_DIR", "")
    if runtime.startswith("/") and os.path.isdir(runtime):
        return Path(runtime) / "runner-agent" / SOCKET
    return _xdg(environ, "XDG_STATE_HOME", ".local/state") / "runner-agent" / SOCKET


def store_root(environ: Mapping[str, str]) -> Path:
    """The per-user store root (see the module's policy)."""
    return _xdg(environ, "XDG_DATA_HOME", ".local/share") / "runner-agent" / "store"


def defaults(environ: Mapping[str, str], *, euid: int | None = None) -> dict[str, Any]:
    """Settings data for the defaults that differ without root (empty as root)."""
    if (os.geteuid() if euid is None else euid) == 0:
        return {}
    return {
        "server": {"socket_path": str(socket_path(environ))},
        "cache": {"root": str(store_root(environ))},
    }


def is_per_user(path: Path, environ: Mapping[str, str]) -> bool:
    """Whether ``path`` is this user's default socket (its folder is made 0700)."""
    return os.geteuid() != 0 and path == socket_path(environ)
