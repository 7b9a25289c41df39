"""Field types and the base of every settings group: addresses, durations, sizes,
absolute paths, and the ``x-restart-required`` marker.

Policy: each type names the bad value and the expected form in its error, and refuses
what YAML would otherwise coerce silently (``true`` as a number of seconds).
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ByteSize, ConfigDict
from pydantic.config import JsonDict

from agent.kits import urls

RESTART: JsonDict = {"x-restart-required": True}
_HOST_RE = re.compile(r"(?a:[A-Za-z0-9]([A-Za-z0-9.-]{0,252}[A-Za-z0-9])?)")


def split_address(value: str) -> tuple[str, int]:
    """Split ``host:port`` (``[v6]:port`` for IPv6) into its parts.

    Raises ``ValueError`` with the expected form when ``value`` is not such an address.
    """
    expected = "expected host:port, e.g. 127.0.0.1:9102, 0.0.0.0:9102 or [::1]:9102"
    host, sep, port_text = value.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ValueError(expected)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{host!r} is not an IPv6 address; {expected}") from None
    elif ":" in host:
        raise ValueError(f"IPv6 hosts need brackets; {expected}")
    if not host.startswith("[") and ":" not in host and not _HOST_RE.fullmatch(host):
        raise ValueError(f"host {host!r} is not an IP address or host name; {expected}")
    port = int(port_text)
    if not 0 < port < 65536:
        raise ValueError(f"port {port} is out of range 1-65535; {expected}")
    return host, port


def _check_address(value: str) -> str:
    split_address(value)
    return value


def _check_absolute(value: Path) -> Path:
    if not value.is_absolute():
        raise ValueError("expected an absolute path")
    return value


def _check_size(value: Any) -> Any:
    # ByteSize alone says "could not parse value and unit" for -5: say what is wanted.
    negative = (isinstance(value, (int, float)) and not isinstance(value, bool) and value <= 0) or (
        isinstance(value, str) and value.strip().startswith(("-", "0 "))
    )
    if negative:
        raise ValueError("expected a size above 0: bytes, or with a unit such as 64KiB or 50GiB")
    return value


def _no_bool(value: Any) -> Any:
    # pydantic's lax mode reads true as 1: a grace of "true" seconds is a mistake to show.
    if isinstance(value, bool):
        raise ValueError("expected a number, not true/false")
    return value


def _group(value: Any) -> Any:
    # Environment values are strings: "123" is a gid, not a group named "123".
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if isinstance(value, bool) or (isinstance(value, int) and value < 0):
        raise ValueError("expected a group id (0 or more) or a group name")
    return value


SOCKET_PATH_LIMIT = 107
"""The longest unix socket path Linux takes (sun_path is 108 bytes, NUL included)."""


def _check_socket_path(value: Path) -> Path:
    size = len(os.fsencode(value))
    if size > SOCKET_PATH_LIMIT:
        raise ValueError(
            f"{str(value)!r} is {size} bytes; a unix socket path may have at most "
            f"{SOCKET_PATH_LIMIT}: choose a shorter path"
        )
    return value


Address = Annotated[str, AfterValidator(_check_address)]
Seconds = Annotated[float, BeforeValidator(_no_bool)]
Group = Annotated[int | str, BeforeValidator(_group)]
Size = Annotated[ByteSize, BeforeValidator(_check_size)]
AbsolutePath = Annotated[Path, AfterValidator(_check_absolute)]
SocketPath = Annotated[Path, AfterValidator(_check_absolute), AfterValidator(_check_socket_path)]


class Section(BaseModel):
    # Deferred: each group's validator is built once, inside Settings' (on the first
    # validation), not again at import for every group (startup budget, see the README).
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, defer_build=True)


REDACTED = "[redacted]"
"""What stands for a hidden credential in what the configuration shows (as in logs)."""


def hide_password(text: str) -> str:
    """``text`` with the credentials of every URL in it replaced by ``[redacted]``
    (``https://user:[redacted]@host/``, ``https://[redacted]@host/`` for a token): for
    what people read, never for use. See :mod:`agent.kits.urls` for the rules."""
    return urls.hide_url(text, mask=REDACTED)
