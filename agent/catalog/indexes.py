"""Upstream version indexes: the release versions a published index lists.

Parses the payload of one index (nodejs.org/dist/index.json, go.dev/dl/?mode=json, the
PyPI JSON API, an npm packument, GitHub's list of releases, python-build-standalone's
releases with their assets) into the stable release versions it names, each with the
template vars the index gives it (python-build-standalone's ``release``, the build tag
its URLs carry; none for the others). Pure: bytes in, strings out; fetching and caching
are the caller's.

Policy:
- a payload over ``MAX_BYTES``, not UTF-8, not JSON, nested too deep, or not of the
  kind's top-level shape is an error (``VersionIndexError``) that names the source and
  what was expected, and quotes no more than 80 characters of the payload (it quotes
  none today);
- within the shape, an entry of the wrong type, or one whose version is not usable, is
  skipped: an index that grows a field or an odd entry keeps working; if nothing usable
  remains, that is an error;
- a version is usable when it starts with a digit, has only ``[0-9A-Za-z.+-]``, is at
  most 64 characters, parses as a PEP 440 version and is not a pre- or dev release;
- stable only: Go's ``stable: false``, npm's ``-`` pre-releases and deprecated
  versions, PyPI releases with no file left that is not yanked (a file with no
  ``yanked`` key, as the API served before PEP 592, counts as not yanked), GitHub drafts
  and pre-releases are skipped; so are node versions without their ``v``, Go versions
  without their ``go`` and GitHub tags without ``tag_prefix``, which is stripped;
- python-build-standalone: a release's versions are those of its
  ``cpython-<version>+<tag>-<target>-install_only.tar.gz`` assets, the tag being the
  release's own (eight digits); a version in several releases takes the first listed
  (GitHub lists the newest first);
- versions come back as the upstream spells them (after the prefix: ``0.12.01`` stays,
  ``1.20`` gets no ``.0``; they go into URLs), without duplicate strings, highest first
  (ties between equal versions spelled differently, ``1.2`` and ``1.2.0``, by string),
  at most ``MAX_VERSIONS`` of them: the highest.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from typing import Literal

from packaging.version import InvalidVersion, Version

IndexKind = Literal["node", "go", "pypi", "npm", "github-releases", "python-build-standalone"]

MAX_BYTES = 16 * 1024 * 1024
MAX_VERSIONS = 10_000

_VERSION_RE = re.compile(r"(?a:[0-9][0-9A-Za-z.+-]{0,63})")
_MAX_VERSION_CHARS = 64


class VersionIndexError(Exception):
    """The index payload is unusable; the message names the source and what was expected."""


# What each kind's payload must be at the top level, as the error message says it.
_SHAPES: dict[str, str] = {
    "node": 'a JSON list of release objects with "version" (nodejs.org/dist/index.json)',
    "go": 'a JSON list of release objects with "version" and "stable" (go.dev/dl/?mode=json)',
    "pypi": 'a JSON object whose "releases" is an object of version: [files] (PyPI JSON API)',
    "npm": 'a JSON object whose "versions" is an object of version: {...} (an npm packument)',
    "github-releases": (
        'a JSON list of release objects with "tag_name", "draft" and "prerelease" '
        "(GitHub REST releases)"
    ),
    "python-build-standalone": (
        'a JSON list of release objects with "tag_name", "draft", "prerelease" and '
        '"assets" named cpython-<version>+<tag>-<target>-install_only.tar.gz (GitHub REST '
        "releases of python-build-standalone)"
    ),
}
_PBS_TAG = re.compile(r"(?a:[0-9]{8})")
_PBS_ASSET = re.compile(
    r"(?a:cpython-([0-9][0-9A-Za-z.]{0,40})\+([0-9]{8})-[0-9A-Za-z_.+-]{1,120}-install_only\.tar\.gz)"
)


class _ShapeError(Exception):
    """The decoded payload is not of the kind's top-level shape."""


def _json_type(value: object) -> str:
    if isinstance(value, dict):
        return "a JSON object"
    if isinstance(value, list):
        return "a JSON list"
    if isinstance(value, str):
        return "a JSON string"
    if isinstance(value, bool):
        return "a JSON boolean"
    if value is None:
        return "JSON null"
    return "a JSON number"


def _entries(document: object) -> Iterator[dict[str, object]]:
    """The objects of a top-level list; anything else in it is skipped."""
    if not isinstance(document, list):
        raise _ShapeError(_json_type(document))
    for entry in document:
        if isinstance(entry, dict):
            yield entry


def _member(document: object, key: str) -> dict[str, object]:
    """A top-level object's member that must itself be an object."""
    if not isinstance(document, dict):
        raise _ShapeError(_json_type(document))
    member = document.get(key)
    if not isinstance(member, dict):
        found = "missing" if key not in document else _json_type(member)
        raise _ShapeError(f'a JSON object whose "{key}" is {found}')
    return member


def _node(document: object, tag_prefix: str) -> Iterator[object]:
    for entry in _entries(document):
        version = entry.get("version")
        if isinstance(version, str) and version.startswith("v"):
            yield version[1:]


def _go(document: object, tag_prefix: str) -> Iterator[object]:
    for entry in _entries(document):
        version = entry.get("version")
        if entry.get("stable") is True and isinstance(version, str) and version[:2] == "go":
            yield version[2:]


def _pypi(document: object, tag_prefix: str) -> Iterator[object]:
    for version, files in _member(document, "releases").items():
        if isinstance(files, list) and any(
            isinstance(file, dict) and file.get("yanked", False) is False for file in files
        ):
            yield version


def _npm(document: object, tag_prefix: str) -> Iterator[object]:
    for version, manifest in _member(document, "versions").items():
        if not isinstance(manifest, dict) or "-" in version:
            continue
        deprecated = manifest.get("deprecated")
        if not (isinstance(deprecated, str) and deprecated):
            yield version


def _github_releases(document: object, tag_prefix: str) -> Iterator[object]:
    for entry in _entries(document):
        tag = entry.get("tag_name")
        if entry.get("draft") is not False or entry.get("prerelease") is not False:
            continue
        if isinstance(tag, str) and tag.startswith(tag_prefix):
            yield tag[len(tag_prefix) :]


def _python_build_standalone(document: object, tag_prefix: str) -> Iterator[object]:
    for entry in _entries(document):
        tag, assets = entry.get("tag_name"), entry.get("assets")
        if entry.get("draft") is not False or entry.get("prerelease") is not False:
            continue
        if not isinstance(tag, str) or not _PBS_TAG.fullmatch(tag) or not isinstance(assets, list):
            continue
        for asset in assets:
            name = asset.get("name") if isinstance(asset, dict) else None
            found = _PBS_ASSET.fullmatch(name) if isinstance(name, str) else None
            if found is not None and found.group(2) == tag:
                yield found.group(1), {"release": tag}


_EXTRACTORS: dict[str, Callable[[object, str], Iterator[object]]] = {
    "node": _node,
    "go": _go,
    "pypi": _pypi,
    "npm": _npm,
    "github-releases": _github_releases,
    "python-build-standalone": _python_build_standalone,
}
VARS: dict[str, frozenset[str]] = {"python-build-standalone": frozenset({"release"})}
"""The template vars each kind gives its versions (the others give none)."""


def _stable(text: object) -> Version | None:
    """The version ``text`` names, if it is a usable stable release; else None."""
    if not isinstance(text, str) or not _VERSION_RE.fullmatch(text):
        return None
    try:
        version = Version(text)
    except InvalidVersion:
        return None
    if version.is_prerelease or version.is_devrelease:
        return None
    if len(str(version)) > _MAX_VERSION_CHARS:
        return None
    return version


def _decode(kind: str, body: bytes, source: str) -> object:
    if len(body) > MAX_BYTES:
        raise VersionIndexError(
            f"{source}: the {kind} index is {len(body)} bytes, over the limit of "
            f"{MAX_BYTES}; expected {_SHAPES[kind]}"
        )
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise VersionIndexError(
            f"{source}: the {kind} index is not UTF-8 (byte {exc.start}); expected {_SHAPES[kind]}"
        ) from None
    try:
        return json.loads(text)
    except RecursionError:
        raise VersionIndexError(
            f"{source}: the {kind} index is nested too deep to parse; expected {_SHAPES[kind]}"
        ) from None
    except json.JSONDecodeError as exc:
        raise VersionIndexError(
            f"{source}: the {kind} index is not JSON ({exc.msg} at line {exc.lineno} "
            f"column {exc.colno}); expected {_SHAPES[kind]}"
        ) from None
    except ValueError:  # an integer too long to convert, and the like
        raise VersionIndexError(
            f"{source}: the {kind} index is not JSON that can be read; expected {_SHAPES[kind]}"
        ) from None


def parse(kind: IndexKind, body: bytes, *, source: str, tag_prefix: str = "v") -> list[str]:
    """The stable release versions the ``kind`` index ``body`` lists, highest first.

    ``source`` (the index's URL, credentials already hidden by the caller) names the
    payload in errors; ``tag_prefix`` is what GitHub tags carry before the version.
    """
    return list(parse_vars(kind, body, source=source, tag_prefix=tag_prefix))


def parse_vars(
    kind: IndexKind, body: bytes, *, source: str, tag_prefix: str = "v"
) -> dict[str, dict[str, str]]:
    """:func:`parse`, each version with the template vars the index gives it."""
    if kind not in _EXTRACTORS:
        raise ValueError(f"{kind!a} is not an index kind; expected one of {sorted(_SHAPES)}")
    document = _decode(kind, body, source)
    found: dict[str, tuple[Version, dict[str, str]]] = {}
    try:
        for item in _EXTRACTORS[kind](document, tag_prefix):
            candidate, extra = item if isinstance(item, tuple) else (item, {})
            version = _stable(candidate)
            if version is not None and isinstance(candidate, str):
                # The upstream's own spelling: it goes into URLs (v2024.01.15, v1.2.3-1),
                # where PEP 440's normal form (2024.1.15, 1.2.3.post1) would 404.
                found.setdefault(candidate, (version, extra))
    except _ShapeError as exc:
        raise VersionIndexError(
            f"{source}: the {kind} index is {exc}; expected {_SHAPES[kind]}"
        ) from None
    if not found:
        raise VersionIndexError(
            f"{source}: the {kind} index lists no stable release version; "
            f"expected {_SHAPES[kind]}, with at least one stable release"
        )
    ordered = sorted(found.items(), key=lambda item: (item[1][0], item[0]), reverse=True)
    return {text: extra for text, (_, extra) in ordered[:MAX_VERSIONS]}
