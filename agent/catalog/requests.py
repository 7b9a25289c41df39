"""Feature requests: the ``feature:`` label grammar and its canonical rendering.

Grammar (ASCII only, so look-alike letters never pass)::

    feature:<id>[@<spec>][;<option>=<value>]...

- ``<id>``: a letter or digit, then letters, digits and ``-``; at most 64; matched
  case-insensitively and kept in lower case;
- ``<spec>``: in labels, ``20.11.1``, ``20``, ``20.11``, ``^20``, ``~3.12`` or an alias;
  full ranges (``>=3.10,<3.13``) only in team config and on the command line;
- ``<option>``: a letter, then letters, digits and ``_``; ``<value>``: letters, digits
  and ``._+:-``, at most 128.

Labels that do not start with ``feature:`` are not ours and are ignored. A malformed
``feature:`` label is an error that quotes it (escaped, so control characters are
shown, never acted on) with the grammar. Nothing outside these alphabets can reach a
path, an argv or an environment variable.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from agent.catalog import versions

PREFIX = "feature:"
MAX_LABEL_LENGTH = 256
MAX_FEATURES = 32
MAX_OPTIONS = 16

ID_RE = re.compile(r"(?a:[a-z0-9][a-z0-9-]{0,63})")
OPTION_RE = re.compile(r"(?a:[A-Za-z][A-Za-z0-9_]{0,63})")
VALUE_RE = re.compile(r"(?a:[A-Za-z0-9._+:-]{0,128})")
GRAMMAR = (
    "feature:<id>[@<version>][;<option>=<value>...], "
    "e.g. feature:node@20 or feature:python@3.12;pip=true"
)


class RequestError(ValueError):
    """A request that does not follow the grammar; the message quotes it."""


@dataclass(frozen=True)
class Request:
    """One requested feature."""

    id: str
    spec: versions.Spec | None = None
    options: tuple[tuple[str, str], ...] = ()
    source: str = "label"
    """Where it came from, for messages: ``label``, ``team``, ``profile:<name>``, ``cli``."""

    @property
    def option_map(self) -> dict[str, str]:
        """The options as a dict."""
        return dict(self.options)

    def render(self) -> str:
        """The canonical ``feature:`` form (options sorted)."""
        text = PREFIX + self.id
        if self.spec is not None:
            text += "@" + self.spec.render()
        for key, value in self.options:
            text += f";{key}={value}"
        return text

    def merged_with(self, later: Request) -> Request:
        """``later`` wins: its spec if it has one, its options key by key."""
        options = dict(self.options) | dict(later.options)
        return Request(
            id=self.id,
            spec=later.spec if later.spec is not None else self.spec,
            options=tuple(sorted(options.items())),
            source=later.source,
        )


def _quote(text: str) -> str:
    shown = text if len(text) <= 80 else text[:77] + "..."
    return ascii(shown)


def parse(text: str, *, allow_ranges: bool = False, source: str = "label") -> Request:
    """Parse ``feature:<id>[@spec][;k=v]`` (the prefix is optional outside labels)."""
    if len(text) > MAX_LABEL_LENGTH:
        raise RequestError(
            f"{_quote(text)} is {len(text)} characters; the limit is {MAX_LABEL_LENGTH}"
        )
    body = text[len(PREFIX) :] if text[: len(PREFIX)].lower() == PREFIX else text
    head, *option_parts = body.split(";")
    ident, at, spec_text = head.partition("@")
    ident = ident.lower() if ident.isascii() else ident
    if not ID_RE.fullmatch(ident):
        raise RequestError(
            f"{_quote(text)}: {_quote(ident)} is not a feature id (letters, digits and '-'); "
            f"expected {GRAMMAR}"
        )
    spec = None
    if at:
        try:
            spec = versions.parse_spec(spec_text, allow_ranges=allow_ranges)
        except versions.VersionSpecError as exc:
            raise RequestError(f"{_quote(text)}: {exc}") from None
    if len(option_parts) > MAX_OPTIONS:
        raise RequestError(f"{_quote(text)}: more than {MAX_OPTIONS} options")
    options: dict[str, str] = {}
    for part in option_parts:
        key, eq, value = part.partition("=")
        if not eq or not OPTION_RE.fullmatch(key) or not VALUE_RE.fullmatch(value):
            raise RequestError(
                f"{_quote(text)}: option {_quote(part)} is not <name>=<value> (name: letters, "
                f"digits, '_'; value: letters, digits and ._+:-); expected {GRAMMAR}"
            )
        if key in options:
            raise RequestError(f"{_quote(text)}: option {key!r} is given twice")
        options[key] = value
    return Request(id=ident, spec=spec, options=tuple(sorted(options.items())), source=source)


def from_labels(labels: Iterable[str]) -> list[Request]:
    """The feature requests among runner labels; other labels are ignored.

    Several labels for one feature merge when they agree; two that ask for different
    versions or option values are an error. Raises :class:`RequestError` listing every
    problem at once.
    """
    problems: list[str] = []
    found: dict[str, Request] = {}
    for label in labels:
        if label[: len(PREFIX)].lower() != PREFIX:
            continue
        try:
            request = parse(label)
        except RequestError as exc:
            problems.append(str(exc))
            continue
        earlier = found.get(request.id)
        if earlier is not None:
            # Runner labels have no order that means anything: two that disagree are a
            # mistake to show, not a tie to break.
            clash = (earlier.spec and request.spec and earlier.spec != request.spec) or any(
                earlier.option_map.get(k, v) != v for k, v in request.options
            )
            if clash:
                problems.append(
                    f"{earlier.render()!a} and {request.render()!a} ask for {request.id} "
                    "differently; keep one label per feature"
                )
                continue
            request = earlier.merged_with(request)
        found[request.id] = request
    if len(found) > MAX_FEATURES:
        problems.append(f"{len(found)} features requested; the limit is {MAX_FEATURES}")
    if problems:
        raise RequestError("\n".join(problems))
    return list(found.values())


def from_mapping(entry: Mapping[str, object], *, source: str) -> Request:
    """A request written as a mapping in team config: ``{id, version, options}``.

    Each part is checked on its own, so a ``;`` in a version or an option value cannot
    smuggle in another option.
    """
    ident = entry.get("id")
    version = entry.get("version")
    options = entry.get("options") or {}
    if not isinstance(ident, str) or not ID_RE.fullmatch(ident.lower()):
        raise RequestError(
            f"feature entry id {ident!a} is not a feature id (letters, digits and '-')"
        )
    ident = ident.lower()
    spec = None
    if version is not None:
        if not isinstance(version, str):
            raise RequestError(
                f"feature {ident!r}: version {version!a} must be a string; quote it "
                "(3.10 unquoted is the number 3.1)"
            )
        try:
            spec = versions.parse_spec(version, allow_ranges=True)
        except versions.VersionSpecError as exc:
            raise RequestError(f"feature {ident!r}: {exc}") from None
    if not isinstance(options, Mapping):
        raise RequestError(f"feature {ident!r}: 'options' must be a mapping of name to value")
    pairs: dict[str, str] = {}
    for key, value in options.items():
        text = _option_text(value)
        if not isinstance(key, str) or not OPTION_RE.fullmatch(key) or not VALUE_RE.fullmatch(text):
            raise RequestError(
                f"feature {ident!r}: option {key!a}={text!a} is not <name>=<value> (name: "
                "letters, digits, '_'; value: letters, digits and ._+:-)"
            )
        pairs[key] = text
    return Request(id=ident, spec=spec, options=tuple(sorted(pairs.items())), source=source)


def _option_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@dataclass
class Merger:
    """Merges requests from several sources by id; later sources win."""

    requests: dict[str, Request] = field(default_factory=dict)
    overrides: list[str] = field(default_factory=list)
    """One line per request a later one changed, for the plan's warnings and the log: a
    profile's pin replaced by the team file's range is easy to miss otherwise."""

    def add(self, items: Iterable[Request]) -> None:
        """Fold ``items`` in, after everything added before."""
        for item in items:
            old = self.requests.get(item.id)
            if old is None:
                self.requests[item.id] = item
                continue
            merged = old.merged_with(item)
            if (merged.spec, merged.options) != (old.spec, old.options):
                self.overrides.append(
                    f"{old.render()} (from {old.source}) is overridden by {item.render()} "
                    f"(from {item.source}): using {merged.render()}"
                )
            self.requests[item.id] = merged

    def result(self) -> list[Request]:
        """The merged requests, in first-seen order."""
        return list(self.requests.values())
