"""os-release(5): which distribution a Linux userland is, and which family it belongs to.

Policy: the file is parsed, never sourced. It is shell-compatible ``KEY=value`` lines;
values may be double-quoted (where a backslash escapes a double quote, a backslash, a
dollar sign or a backtick, as in the shell) or single-quoted (taken literally). Comments,
blank lines and lines that are not a plain assignment (an unterminated quote, a space in an
unquoted value, text after a closing quote) are skipped rather than fatal: one odd line
must not hide the ``ID`` above it. ``/etc/os-release`` is read if it exists, else
``/usr/lib/os-release``, as the manual page prescribes; its defaults (``ID=linux``,
``NAME=Linux``) apply when a key is absent or empty.

Families, checked on ``ID`` first and then on each ``ID_LIKE`` entry in order (the file
lists the closest relative first):

- ``debian``: debian, ubuntu; anything like debian or ubuntu (linuxmint, pop, ...);
- ``fedora``: fedora itself;
- ``amazon``: amzn (before rhel: Amazon Linux 2 says it is like centos and rhel);
- ``rhel``: rhel, centos, rocky, almalinux, ol; anything like rhel, centos or fedora;
- ``alpine``: alpine, and anything like it;
- ``suse``: opensuse-leap, opensuse-tumbleweed, sles, sled; anything like suse or opensuse;
- ``arch``: arch, manjaro, endeavouros; anything like arch;
- ``unknown``: the rest.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Literal

Family = Literal["debian", "rhel", "fedora", "amazon", "alpine", "suse", "arch", "unknown"]

DEFAULT_PATHS: tuple[str, ...] = ("/etc/os-release", "/usr/lib/os-release")

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Inside double quotes the shell drops the backslash only before these; elsewhere it stays.
_DOUBLE_QUOTE_ESCAPES = frozenset('"\\$`')
# Unquoted, these would make the shell do something other than assign a plain word.
_UNQUOTED_SPECIAL = frozenset("\"'$`;&|<>()")

# ID values and the family each names.
_BY_ID: dict[str, Family] = {
    "debian": "debian",
    "ubuntu": "debian",
    "fedora": "fedora",
    "amzn": "amazon",
    "rhel": "rhel",
    "centos": "rhel",
    "rocky": "rhel",
    "almalinux": "rhel",
    "ol": "rhel",
    "alpine": "alpine",
    "opensuse-leap": "suse",
    "opensuse-tumbleweed": "suse",
    "sles": "suse",
    "sled": "suse",
    "arch": "arch",
    "manjaro": "arch",
    "endeavouros": "arch",
}

# ID_LIKE values and the family each implies: a derivative of Fedora packages with dnf like
# the enterprise line does, so "like fedora" is rhel, while ID=fedora is fedora itself.
_BY_LIKE: dict[str, Family] = {
    "debian": "debian",
    "ubuntu": "debian",
    "rhel": "rhel",
    "centos": "rhel",
    "fedora": "rhel",
    "alpine": "alpine",
    "suse": "suse",
    "opensuse": "suse",
    "arch": "arch",
}


@dataclass(frozen=True)
class OsRelease:
    """The fields of an os-release file that platform logic uses, plus all raw values."""

    id: str = "linux"
    id_like: tuple[str, ...] = ()
    version_id: str | None = None
    version_codename: str | None = None
    name: str = "Linux"
    pretty_name: str = "Linux"
    # Every assignment as parsed (the named fields above apply the defaults on top).
    values: Mapping[str, str] = field(
        default_factory=lambda: MappingProxyType({}), repr=False, hash=False
    )


def _unquote(raw: str) -> str | None:
    """The shell value of ``raw`` (the text after ``=``), or None when it is not plain."""
    if raw.startswith('"'):
        chars: list[str] = []
        i = 1
        while i < len(raw):
            char = raw[i]
            if char == "\\" and i + 1 < len(raw):
                following = raw[i + 1]
                chars.append(following if following in _DOUBLE_QUOTE_ESCAPES else raw[i : i + 2])
                i += 2
                continue
            if char == '"':
                return "".join(chars) if i == len(raw) - 1 else None
            chars.append(char)
            i += 1
        return None
    if raw.startswith("'"):
        end = raw.find("'", 1)
        return raw[1:end] if end == len(raw) - 1 else None
    chars = []
    i = 0
    while i < len(raw):
        char = raw[i]
        if char == "\\" and i + 1 < len(raw):
            chars.append(raw[i + 1])
            i += 2
            continue
        if char.isspace() or char in _UNQUOTED_SPECIAL:
            return None
        chars.append(char)
        i += 1
    return "".join(chars)


def parse_os_release(text: str) -> OsRelease:
    """Parse the text of an os-release file; lines that are not plain assignments are skipped."""
    values: dict[str, str] = {}
    # Lines end at "\n" only: str.splitlines() would also split a value at U+2028 and kin.
    for line in text.split("\n"):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, raw = line.partition("=")
        if not sep or not _KEY.fullmatch(key):
            continue
        value = _unquote(raw)
        if value is not None:
            values[key] = value  # a later assignment wins, as in the shell
    return OsRelease(
        id=values.get("ID") or "linux",
        id_like=tuple(values.get("ID_LIKE", "").split()),
        version_id=values.get("VERSION_ID") or None,
        version_codename=values.get("VERSION_CODENAME") or None,
        name=values.get("NAME") or "Linux",
        pretty_name=values.get("PRETTY_NAME") or "Linux",
        values=MappingProxyType(values),
    )


def read_os_release(
    paths: Iterable[str | os.PathLike[str]] = DEFAULT_PATHS,
) -> OsRelease | None:
    """Parse the first of ``paths`` that exists; None when none does (not Linux, or bare).

    Blocking file I/O. An existing file that cannot be read raises its ``OSError``:
    falling through to the next path would describe a different file than the system uses.
    """
    for path in paths:
        try:
            data = Path(path).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            continue
        # The format is UTF-8; a stray byte in PRETTY_NAME must not hide the ID.
        return parse_os_release(data.decode("utf-8", errors="replace"))
    return None


def family(osr: OsRelease) -> Family:
    """The family of ``osr``: its ID first, then its ID_LIKE entries, closest first."""
    by_id = _BY_ID.get(osr.id.lower())
    if by_id is not None:
        return by_id
    for like in osr.id_like:
        by_like = _BY_LIKE.get(like.lower())
        if by_like is not None:
            return by_like
    return "unknown"
