"""Configuration problems: what is wrong, where, and what was expected.

Policy: every problem names its source (``file:line:column`` or the environment variable),
the key path, the bad value (escaped and short, however big the value was) and the
expected form. pydantic's errors are turned into problems here, with the noise of union
branches and "needs at least one item" echoes dropped, pydantic's type words put as a
person writes YAML ("expected a list", "expected a map"), and a misspelt key answered
with the closest key allowed there.
"""

from __future__ import annotations

import difflib
import reprlib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ValidationError

from agent.config import fields, models

Marks = dict[tuple[str | int, ...], tuple[int, int]]
"""Positions in a YAML file: key path -> (line, column), 1-based."""

Loc = tuple[str | int, ...]

QUOTED = "value_quoted"
"""The error type of a rule whose message already quotes the bad value: no "got ..."."""

Shapes = Mapping[tuple[str | int, ...], str]
"""What a key path holds, in words ("a map of version to platform to sha256"), for the
type errors there; ``"*"`` in a pattern stands for any one key or index."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the configuration."""

    source: str
    path: str
    value: str
    expected: str

    def __str__(self) -> str:
        where = f"{self.path}: " if self.path else ""
        got = f"got {self.value}; " if self.value else ""
        return f"{self.source}: {where}{got}{self.expected}"


class ConfigError(Exception):
    """The configuration cannot be used; :attr:`problems` says why, one per item."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))

    def one_line(self) -> str:
        """The first problem, plus how many more there are: for a single log line."""
        first = str(self.problems[0])
        more = len(self.problems) - 1
        return f"{first} (and {more} more problem{'s' if more > 1 else ''})" if more else first


def dotted(path: tuple[str | int, ...]) -> str:
    """``server.metrics_address``, ``features[1].id``: a key path as people write it."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _unwrap(annotation: Any) -> Any:
    while typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation


def _union(annotation: Any) -> tuple[Any, ...]:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return tuple(a for a in typing.get_args(annotation) if a is not type(None))
    return ()


def _tags(branch: Any) -> set[str]:
    """What pydantic may name ``branch`` by in a location: its class or its literal tag."""
    branch = _unwrap(branch)
    if not (isinstance(branch, type) and issubclass(branch, BaseModel)):
        return set()
    tags = {branch.__name__}
    for field in branch.model_fields.values():
        if typing.get_origin(field.annotation) is typing.Literal and field.is_required():
            tags.update(str(v) for v in typing.get_args(field.annotation))
    return tags


def walk(model: type[BaseModel], loc: Loc) -> tuple[Loc, list[str] | None]:
    """``loc`` without pydantic's union branch tags, and the keys allowed where it ends.

    The walk follows the model's annotations (models, maps, lists, unions); where it
    cannot, a part that looks like a branch tag (``str``, a class name) is dropped.
    """
    clean: list[str | int] = []
    annotation: Any = model
    parts = list(loc)
    while parts:
        part = parts.pop(0)
        annotation = _unwrap(annotation) if annotation is not None else None
        branches = _union(annotation)
        if branches:
            chosen = [b for b in branches if isinstance(part, str) and part in _tags(b)]
            if chosen:
                annotation = chosen[0]
                continue  # the part was a branch tag
            if _is_union_tag(part):
                annotation = None
                continue
            annotation = branches[0] if len(branches) == 1 else None
            if annotation is not None:
                parts.insert(0, part)
                continue
        elif annotation is None and _is_union_tag(part):
            continue
        clean.append(part)
        origin = typing.get_origin(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            field = annotation.model_fields.get(str(part))
            annotation = field.annotation if field else None
        elif origin in (dict, Mapping):
            annotation = typing.get_args(annotation)[1]
        elif origin in (tuple, list, set, frozenset):
            annotation = typing.get_args(annotation)[0]
        else:
            annotation = None
    annotation = _unwrap(annotation) if annotation is not None else None
    if len(_union(annotation)) == 1:
        annotation = _unwrap(_union(annotation)[0])
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return tuple(clean), list(annotation.model_fields)
    return tuple(clean), None


def _shape(loc: Loc, shapes: Shapes) -> str | None:
    for pattern, words in shapes.items():
        if len(pattern) == len(loc) and all(
            p in ("*", part) for p, part in zip(pattern, loc, strict=True)
        ):
            return words
    return None


_TYPE_WORDS = {
    "list_type": "a list",
    "tuple_type": "a list",
    "set_type": "a list",
    "frozen_set_type": "a list",
    "dict_type": "a map",
    "model_type": "a map",
    "model_attributes_type": "a map",
    "string_type": "a string",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
}


def _expected(err: Any, loc: Loc, model: type[BaseModel], shapes: Shapes) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        # The raw location: its branch tags say which model of a union holds the key.
        _, allowed = walk(model, tuple(err["loc"])[:-1])
        if not allowed:
            return "unknown key"
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return f"unknown key; expected one of: {', '.join(allowed)}{hint}"
    if kind == "missing":
        return "this field is required"
    if kind in _TYPE_WORDS:
        return f"expected {_shape(loc, shapes) or _TYPE_WORDS[kind]}"
    if kind in ("union_tag_invalid", "literal_error"):
        # A misspelt method or option type: the choices are in pydantic's context.
        ctx = err.get("ctx") or {}
        listed = str(ctx.get("expected_tags", ctx.get("expected", ""))).replace(" or ", ",")
        known = [t.strip(" '") for t in listed.split(",") if t.strip(" '")]
        got = ctx.get("tag") if kind == "union_tag_invalid" else err.get("input")
        close = difflib.get_close_matches(str(got), known, n=1, cutoff=0.6)
        if close:
            return f"{err['msg']}; did you mean {close[0]!r}?"
    message = str(err["msg"])
    return message[len("Value error, ") :] if message.startswith("Value error, ") else message


_SHOW = reprlib.Repr()
_SHOW.maxstring = 100
_SHOW.maxother = 100
_SHOW.maxlevel = 2


def show(value: Any) -> str:
    """A bad value as quoted in a message: escaped and short, however big the value."""
    # reprlib bounds the work on huge or deeply nested values; ascii() then escapes the
    # short result so control characters are shown, never written raw into a log line.
    value = _hide_passwords(value)
    text = ascii(_SHOW.repr(value))[1:-1] if isinstance(value, str) else _SHOW.repr(value)
    text = text if isinstance(value, str) else ascii(text)[1:-1]
    return text if len(text) <= 120 else text[:117] + "..."


def _hide_passwords(value: Any, depth: int = 0) -> Any:
    # A proxy's or index's user:password@, wherever it sits in the bad value (a list of
    # URLs, a mapping of indexes). Hidden before reprlib shortens a string: cut in the
    # middle, a URL loses the "@" that marks where its password ends. Only what reprlib
    # can show is visited: no deeper than its levels, no further into a list than its
    # items and the one that makes it write "...".
    if isinstance(value, str):
        return fields.hide_password(value)
    if depth > _SHOW.maxlevel:
        return value
    if isinstance(value, dict):  # reprlib sorts the keys: any of them may be shown
        return {_hide_passwords(k, depth): _hide_passwords(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_hide_passwords(v, depth + 1) for v in value[: _SHOW.maxlist + 1]]
    if isinstance(value, tuple):
        return tuple(_hide_passwords(v, depth + 1) for v in value[: _SHOW.maxtuple + 1])
    return value


_PRIMITIVE_TAGS = frozenset({"str", "int", "float", "bool", "dict", "list"})


def _is_union_tag(part: str | int) -> bool:
    # pydantic names each union branch in the location: "str", "int" or a model class.
    # Field names here are snake_case, so a capitalised part is always a branch tag.
    return isinstance(part, str) and (
        part in _PRIMITIVE_TAGS or part[:1].isupper() or part.startswith("function-")
    )


def _wrong_branch(err: Any, exc: ValidationError) -> bool:
    """A union branch the value plainly is not (a mapping given where str is one option).

    Only dropped when another branch has something more useful to say.
    """
    loc = tuple(err["loc"])
    tags = [i for i, part in enumerate(loc) if _is_union_tag(part)]
    if not tags or tags[-1] != len(loc) - 1 or not str(err["type"]).endswith("_type"):
        return False
    parent = loc[: tags[-1]]
    # Another branch got further into the value, or has a rule to tell (a string that is
    # no version, beside "not a mapping" from the {version, vars} branch): its error is
    # the one that helps.
    return any(
        tuple(o["loc"])[: len(parent)] == parent
        and tuple(o["loc"]) != loc
        and (len(o["loc"]) > len(loc) or not str(o["type"]).endswith("_type"))
        for o in exc.errors(include_url=False)
    )


def problems_from(
    exc: ValidationError,
    *,
    source: str,
    marks: Marks | None = None,
    env_sources: Mapping[tuple[str, ...], str] | None = None,
    model: type[BaseModel] = models.Settings,
    shapes: Shapes | None = None,
) -> list[Problem]:
    """Turn a pydantic error on data from ``source`` into positioned problems."""
    problems = []
    errors = [e for e in exc.errors(include_url=False) if not _wrong_branch(e, exc)]
    locs = [walk(model, tuple(e["loc"]))[0] for e in errors]
    for err, loc in zip(errors, locs, strict=True):
        if err["type"] == "too_short" and any(o[: len(loc)] == loc and o != loc for o in locs):
            continue  # "needs at least 1 item" only echoes the bad items reported below it
        where = locate(loc, source, marks or {}, env_sources or {})
        expected = _expected(err, loc, model, shapes or {})
        # A whole mapping (a model-level rule) says nothing the message does not.
        bad = err.get("input")
        quiet = err["type"] in ("missing", QUOTED) or isinstance(bad, dict)
        value = "" if quiet else show(bad)
        if isinstance(bad, str) and value and value in expected:
            value = ""  # the message quotes it already: say it once
        problems.append(Problem(where, dotted(loc), value, expected))
    return problems


def locate(
    loc: tuple[str | int, ...],
    source: str,
    marks: Marks,
    env_sources: Mapping[tuple[str, ...], str] | None = None,
) -> str:
    """Where ``loc`` came from: an environment variable, ``file:line:col`` or the file."""
    # An environment variable wins (it overrode the file); otherwise the deepest marked
    # prefix in the file; otherwise the file as a whole.
    for end in range(len(loc), 0, -1):
        name = (env_sources or {}).get(tuple(str(p) for p in loc[:end]))
        if name:
            return f"environment variable {name}"
    for end in range(len(loc), -1, -1):
        mark = marks.get(loc[:end])
        if mark:
            return f"{source}:{mark[0]}:{mark[1]}"
    return source
