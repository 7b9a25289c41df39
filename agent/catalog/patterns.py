"""Platform patterns in manifests: ``linux``, ``linux/x64`` or ``linux/x64/glibc``.

Policy: a pattern with fewer parts matches any value of the parts it leaves out, so
``linux/x64`` covers glibc and musl alike. Parts use the tool cache's spelling.
"""

from __future__ import annotations

from typing import Annotated, get_args

from pydantic import AfterValidator

from agent.platform import model

_OSES = get_args(model.OS)
_ARCHES = get_args(model.Arch)
_LIBCS = get_args(model.Libc)


def _check(value: str) -> str:
    parts = value.split("/")
    expected = (
        f"expected os[/arch[/libc]] with os in {', '.join(_OSES)}, arch in "
        f"{', '.join(_ARCHES)} and libc in {', '.join(_LIBCS)}"
    )
    if not 1 <= len(parts) <= 3 or parts[0] not in _OSES:
        raise ValueError(f"{value!a} is not a platform; {expected}")
    if len(parts) > 1 and parts[1] not in _ARCHES:
        raise ValueError(f"{value!a}: {parts[1]!r} is not an architecture; {expected}")
    if len(parts) > 2 and (parts[0] != "linux" or parts[2] not in _LIBCS):
        raise ValueError(f"{value!a}: a libc applies to linux only; {expected}")
    return value


Pattern = Annotated[str, AfterValidator(_check)]


def matches(pattern: str, target: model.Platform) -> bool:
    """Whether ``pattern`` covers ``target``.

    A target whose libc is unknown matches only patterns that name no libc: a glibc
    build is never assumed for a machine that may be Alpine.
    """
    parts = pattern.split("/")
    wanted = (target.os, target.arch, target.libc)
    return all(p == w for p, w in zip(parts, wanted, strict=False))


def covers(outer: str, inner: str) -> bool:
    """Whether every platform ``inner`` matches is matched by ``outer``."""
    out, inn = outer.split("/"), inner.split("/")
    return len(out) <= len(inn) and inn[: len(out)] == out


def lookup(table: dict[str, str], target: model.Platform) -> str | None:
    """The value of the most specific pattern in ``table`` that matches ``target``."""
    best: tuple[int, str] | None = None
    for pattern, value in table.items():
        if matches(pattern, target):
            depth = pattern.count("/")
            if best is None or depth > best[0]:
                best = (depth, value)
    return best[1] if best else None
