"""Version specs and matching.

Policy:
- a partial version matches as mise does: ``1.2`` matches ``1.2.3`` and never
  ``1.20.0`` (the component tuple must start with the spec's components);
- ``^1.2`` means ``>=1.2,<2`` (``^0.3`` means ``>=0.3,<0.4``, as semver does for 0.x);
  ``~3.12`` means ``>=3.12,<3.13`` and ``~3`` means ``>=3,<4``;
- full ranges (``>=3.10,<3.13``) use PEP 440 specifiers; they contain commas, which a
  runner label cannot, so they are allowed in team config and on the command line only;
- an alias (``latest``, ``lts``, ``stable``, or any the manifest defines) names a spec;
- the highest matching version wins; pre-releases take part only when the spec itself
  names one.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from packaging.version import InvalidVersion, Version

if TYPE_CHECKING:
    from packaging.specifiers import SpecifierSet

SpecKind = Literal["partial", "caret", "tilde", "range", "alias"]

# A version as written in specs and manifests: digits and dots, with an optional
# pre-release/post/dev tail (3.13.0rc1, 1.10.0.post3). ASCII only.
VERSION_RE = re.compile(
    r"(?a:\d{1,9}(?:\.\d{1,9}){0,4}(?:[.-]?(?:a|b|rc|alpha|beta|post|dev)\.?\d{0,9})?)"
)
ALIAS_RE = re.compile(r"(?a:[a-z][a-z0-9-]{0,31})")
_PARTIAL_RE = re.compile(rf"(?a:{VERSION_RE.pattern})(?:\.x)?")
_RANGE_CHARS = re.compile(r"(?a:[0-9A-Za-z.,<>=!~* ]{1,100})")


class VersionSpecError(ValueError):
    """A version spec that cannot be parsed; the message shows the accepted forms."""


@functools.lru_cache(maxsize=4096)
def _version(text: str) -> Version:
    # Catalog versions are a small, fixed set parsed on every resolution: parse once.
    return Version(text)


def parse_version(text: str) -> Version:
    """Parse a concrete version, with an error that says what is expected."""
    try:
        return Version(text)
    except InvalidVersion:
        raise VersionSpecError(
            f"{text!a} is not a version; expected digits and dots such as 20.11.1"
        ) from None


@dataclass(frozen=True)
class Spec:
    """A parsed version spec."""

    kind: SpecKind
    text: str

    @property
    def allows_prerelease(self) -> bool:
        """Whether the spec itself names a pre-release (then pre-releases may match)."""
        if self.kind == "alias":
            return False
        return bool(re.search(r"(?:a|b|rc|alpha|beta|dev)\.?\d*$|(?:a|b|rc|dev)\d", self.text))

    def render(self) -> str:
        """The spec as the user writes it."""
        return self.text

    @property
    def exact(self) -> Version | None:
        """The version a full ``x.y.z`` spec names, which wins over longer ones it prefixes."""
        text = self.text.removesuffix(".x")
        if self.kind != "partial" or self.text.endswith(".x") or len(_release(text)) < 3:
            return None
        return Version(text)

    def matches(self, version: Version) -> bool:
        """Whether ``version`` satisfies this spec (aliases must be expanded first)."""
        if self.kind == "partial":
            spec_v = _version(self.text.removesuffix(".x"))
            want = spec_v.release
            if version.release[: len(want)] != want:
                return False
            if spec_v.pre or spec_v.post is not None or spec_v.dev is not None:
                return version == spec_v
            return True
        if self.kind == "alias":
            raise VersionSpecError(f"alias {self.text!r} must be expanded before matching")
        return self.specifier().contains(version, prereleases=True)

    def specifier(self) -> SpecifierSet:
        """The PEP 440 specifier set of a caret, tilde or range spec (built once)."""
        return _specifier(self.kind, self.text)


@functools.lru_cache(maxsize=1024)
def _specifier(kind: SpecKind, text: str) -> SpecifierSet:
    # Imported on first use: most catalogs and labels use partial versions only, and the
    # agent's resident size is measured against its libraries' own.
    from packaging.specifiers import SpecifierSet

    if kind == "range":
        return SpecifierSet(text)
    base = text[1:]
    release = _release(base)
    if kind == "caret":
        # semver: the first non-zero component may not change (^0.0.3 means <0.0.4).
        nonzero = next((i for i, part in enumerate(release) if part), len(release) - 1)
        upper = _bump(release, nonzero)
    else:  # tilde
        upper = _bump(release, min(1, len(release) - 1))
    return SpecifierSet(f">={base},<{upper}")


def _release(text: str) -> tuple[int, ...]:
    return _version(text).release


def _bump(release: tuple[int, ...], index: int) -> str:
    parts = list(release[: index + 1])
    parts[index] += 1
    return ".".join(str(p) for p in parts)


def parse_spec(text: str, *, allow_ranges: bool) -> Spec:
    """Parse a version spec; ranges (with commas and operators) only if allowed.

    Labels (``allow_ranges=False``) take no whitespace at all; team config and the
    command line may put spaces around a range.
    """
    if allow_ranges:
        text = text.strip()
    elif not text.isascii() or any(c.isspace() or not c.isprintable() for c in text):
        raise VersionSpecError(
            f"{text!a} is not a version spec: a label's spec has no spaces or control characters"
        )
    if _PARTIAL_RE.fullmatch(text):
        return Spec("partial", text)
    if text[:1] in ("^", "~") and VERSION_RE.fullmatch(text[1:]):
        return Spec("caret" if text[0] == "^" else "tilde", text)
    if ALIAS_RE.fullmatch(text):
        return Spec("alias", text)
    if text[:1] in "<>=!~" and _RANGE_CHARS.fullmatch(text):
        if not allow_ranges:
            raise VersionSpecError(
                f"version range {text!a} is not allowed in a runner label (labels cannot "
                "hold commas); use 20, 20.11, ^20, ~3.12 or an alias, or put the range in "
                ".github/runner-config.yml"
            )
        from packaging.specifiers import InvalidSpecifier, SpecifierSet

        try:
            SpecifierSet(text)
        except InvalidSpecifier:
            raise VersionSpecError(
                f"{text!a} is not a version range; expected e.g. '>=3.10,<3.13'"
            ) from None
        return Spec("range", text.replace(" ", ""))
    forms = "20.11.1, 20, 20.11, ^20, ~3.12, an alias such as latest or lts"
    if allow_ranges:
        forms += ", or a range such as >=3.10,<3.13"
    raise VersionSpecError(f"{text!a} is not a version spec; expected {forms}")


def best_match(
    versions: Iterable[str], specs: Iterable[Spec], *, prereleases: bool = False
) -> str | None:
    """The highest of ``versions`` that satisfies every spec, or ``None``."""
    spec_list = list(specs)
    texts = list(versions)
    for spec in spec_list:
        exact = spec.exact
        if exact is not None:
            hit = [t for t in texts if _version(t) == exact]
            if hit and all(s.matches(exact) for s in spec_list):
                return hit[0]
    allow_pre = prereleases or any(s.allows_prerelease for s in spec_list)
    best: tuple[Version, str] | None = None
    for text in texts:
        version = _version(text)
        if version.is_prerelease and not allow_pre:
            continue
        if all(s.matches(version) for s in spec_list) and (best is None or version > best[0]):
            best = (version, text)
    return best[1] if best else None


def sort_versions(versions: Iterable[str]) -> list[str]:
    """Versions from lowest to highest."""
    return sorted(versions, key=Version)


def nearby(versions: Iterable[str], wanted: str, *, limit: int = 4) -> list[str]:
    """Known final versions closest to ``wanted``, nearest first, for "did you mean".

    Closeness compares major, then minor, then patch, so ``python@3.8`` offers 3.9 and
    3.10 before 3.14, and ``1.11.1.0`` offers the 1.11.1.x releases.
    """
    try:
        target = Version(re.sub(r"^[\^~]", "", wanted).removesuffix(".x")).release
    except InvalidVersion:
        target = ()
    finals = [Version(v) for v in versions if not Version(v).is_prerelease]

    def distance(v: Version) -> tuple[int, ...]:
        padded = v.release + (0,) * 4
        want = target + (0,) * 4
        return (*(abs(a - b) for a, b in zip(padded[:4], want[:4], strict=True)), -v.release[0])

    ordered = sorted(finals, key=distance) if target else sorted(finals, reverse=True)
    return [str(v) for v in ordered[:limit]]
