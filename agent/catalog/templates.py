"""URL and text templates in manifests: ``{version}``, ``{arch}``, ``{target}``...

Policy: a template may only use the placeholders its context provides; anything else
(an unknown name, an attribute or index lookup, a conversion or format spec) is a
manifest error found when the catalog loads, never a KeyError at install time.
"""

from __future__ import annotations

import string
from collections.abc import Iterable, Mapping

from packaging.version import Version

BUILTIN = frozenset({"version", "major", "minor", "patch", "os", "arch", "libc"})


class TemplateError(ValueError):
    """A template that uses something its context does not provide."""


def fields(template: str) -> set[str]:
    """The placeholder names of ``template``; raises on anything but plain names."""
    names: set[str] = set()
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise TemplateError(f"template {template!r} is malformed: {exc}") from None
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if not name.isidentifier() or spec or conversion:
            raise TemplateError(
                f"template {template!r}: {{{name}}} must be a plain placeholder name"
            )
        names.add(name)
    return names


def check(template: str, allowed: Iterable[str], *, where: str = "") -> None:
    """Raise :class:`TemplateError` if ``template`` uses a name outside ``allowed``.

    ``where`` prefixes the message; leave it out where the problem's key path says it.
    """
    allowed_set = set(allowed)
    unknown = sorted(fields(template) - allowed_set)
    if unknown:
        raise TemplateError(
            f"{where + ': ' if where else ''}unknown placeholder {{{unknown[0]}}} in {template!r}; "
            f"known: {', '.join('{' + a + '}' for a in sorted(allowed_set))}"
        )


def version_fields(version: str) -> dict[str, str]:
    """``version``, ``major``, ``minor`` and ``patch`` for a concrete version."""
    release = (*Version(version).release, 0, 0)
    return {
        "version": version,
        "major": str(release[0]),
        "minor": str(release[1]),
        "patch": str(release[2]),
    }


class MissingValue(ValueError):
    """A template names a value this version does not have (a version the catalog does
    not list, whose vars came from nowhere)."""


def render(template: str, values: Mapping[str, str]) -> str:
    """Fill ``template``; every name was checked at load time, against the versions the
    catalog lists (:class:`MissingValue` for one that lacks a var)."""
    try:
        return template.format_map(dict(values))
    except KeyError as exc:
        raise MissingValue(
            f"{template[:200]!a} needs {{{exc.args[0]}}}, which version "
            f"{values.get('version', '?')} does not have: the catalog does not list it, and "
            "neither its version index nor the lock gave it; run runner-agent features "
            "lock --upgrade to lock a version that has it"
        ) from None
