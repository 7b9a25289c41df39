"""The value types manifests are made of, each a string checked as it is read.

Policy: what ends up in an argv, a sources file, a path or an environment is narrowed
here to the characters it needs: a package name never starts with ``-`` (it would be
an option), a relative path never leaves the prefix (no ``..``, no leading ``/``), a
line holds no whitespace (a newline would add a line of its own to an apt source), a
sha256 is 64 lowercase hex digits. Each error names the value and what was expected.
"""

from __future__ import annotations

import itertools
import re
from typing import Annotated, Literal

from pydantic import AfterValidator

PackageManager = Literal["apt", "dnf", "yum", "zypper", "apk", "pacman", "brew", "choco", "winget"]

_PACKAGE_RE = re.compile(r"(?a:[A-Za-z0-9@_+][A-Za-z0-9._+:/@={}-]{0,199})")
_SHA256_RE = re.compile(r"(?a:[0-9a-f]{64})")
_PLAIN_RE = re.compile(r"(?a:[A-Za-z0-9._+/-]{1,200})")
_ENV_NAME_RE = re.compile(r"(?a:[A-Za-z_][A-Za-z0-9_]{0,63})")
_COMPONENT_RE = re.compile(r"(?a:[A-Za-z0-9][A-Za-z0-9._+-]{0,63})")
_SEGMENT_RE = re.compile(r"(?a:[A-Za-z0-9._+-]{1,100})")


def _check_package(value: str) -> str:
    if not _PACKAGE_RE.fullmatch(value):
        raise ValueError(
            f"{value!a} is not a package name (letters, digits and ._+:/@=-, not starting with '-')"
        )
    return value


def _check_sha256(value: str) -> str:
    if not _SHA256_RE.fullmatch(value):
        raise ValueError(
            f"{value[:80]!a} is not a sha256: expected 64 lowercase hex digits, got "
            f"{len(value)} characters"
        )
    return value


def _check_relative(value: str) -> str:
    parts = value.split("/")
    if (
        not _PLAIN_RE.fullmatch(value)
        or value.startswith("/")
        or any(p in ("", "..") for p in parts if p != ".")
    ):
        raise ValueError(
            f"{value!a} must be a relative path inside the install prefix (letters, digits "
            "and ._+-/ only)"
        )
    return value


def _check_plain(value: str) -> str:
    if not _PLAIN_RE.fullmatch(value) or value in (".", ".."):
        raise ValueError(f"{value!a}: expected letters, digits and ._+-/ only")
    return value


def _check_component(value: str) -> str:
    # A component's name becomes a folder (licenses/<name>/): one plain name, never a path.
    if not _COMPONENT_RE.fullmatch(value):
        raise ValueError(
            f"{value[:80]!a} is not a component name: expected up to 64 letters, digits and "
            "._+- starting with a letter or digit (no /)"
        )
    return value


def _check_link_target(value: str) -> str:
    # ".." is allowed here, unlike in RelativePath, but only leading: whether the target
    # stays inside the prefix depends on the link's folder, which the model holding both
    # checks. "a/../b" is refused: the kernel resolves "a" first, and a component may
    # ship "a" as a link (self -> .), so text and kernel would disagree.
    parts = value.split("/")
    ups = len(parts) - len(list(itertools.dropwhile(lambda p: p == "..", parts)))
    names = parts[ups:]
    if (
        len(value) > 200
        or not names
        or not all(_SEGMENT_RE.fullmatch(p) and p not in (".", "..") for p in names)
    ):
        raise ValueError(
            f"{value[:80]!a} is not a link target: expected leading ..s then plain names "
            "(no leading /, no empty or . segment, no .. after a name)"
        )
    return value


def _check_line(value: str) -> str:
    # One line of a sources or .repo file: a newline would add a line of its own
    # ("Trusted: yes"), so no whitespace or control characters at all.
    if (
        not value
        or not value.isascii()
        or not value.isprintable()
        or any(c.isspace() for c in value)
    ):
        raise ValueError(f"{value[:80]!a}: expected one word without spaces or control characters")
    return value


def _check_env_name(value: str) -> str:
    if not _ENV_NAME_RE.fullmatch(value):
        raise ValueError(f"{value!a} is not an environment variable name")
    return value


def _check_env_value(value: str) -> str:
    if not value.isprintable():
        raise ValueError(f"{value[:80]!a}: control characters are not allowed in a value")
    return value


def option_text(value: object) -> object:
    # YAML's true/false for a boolean option, spelt as the option's environment sees it.
    return ("true" if value else "false") if isinstance(value, bool) else value


def is_relative_path(value: str) -> bool:
    """Whether ``value`` keeps the rule of :data:`RelativePath` (before the schema runs)."""
    try:
        _check_relative(value)
    except ValueError:
        return False
    return True


PackageName = Annotated[str, AfterValidator(_check_package)]
Sha256 = Annotated[str, AfterValidator(_check_sha256)]
RelativePath = Annotated[str, AfterValidator(_check_relative)]
Plain = Annotated[str, AfterValidator(_check_plain)]
Line = Annotated[str, AfterValidator(_check_line)]
ComponentName = Annotated[str, AfterValidator(_check_component)]
LinkTarget = Annotated[str, AfterValidator(_check_link_target)]
EnvName = Annotated[str, AfterValidator(_check_env_name)]
EnvValue = Annotated[str, AfterValidator(_check_env_value)]
