"""Configuration problems: what is wrong, where, and what was expected.

Policy: every problem names its source (``file:line:column`` or the environment variable),
the key path, the bad value (escaped and short, however big the value was) and the
expected form. pydantic's errors are turned into problems here, with the noise of union
branches and "needs at least one item" echoes dropped.
"""

from __future__ import annotations

import reprlib
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from agent.config import models

Marks = dict[tuple[str | int, ...], tuple[int, int]]
"""Positions in a YAML file: key path -> (line, column), 1-based."""


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


def _fields_at(model: type[BaseModel], loc: tuple[str | int, ...]) -> list[str] | None:
    """The field names allowed at ``loc`` (the parent of an unknown key), if a model."""
    parts = list(loc)
    while parts:
        field = model.model_fields.get(str(parts.pop(0)))
        annotation = field.annotation if field else None
        if typing.get_origin(annotation) is dict and parts:
            # A map of models (services.<name>): the key is a name, the value a model.
            parts.pop(0)
            annotation = typing.get_args(annotation)[1]
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return list(model.model_fields)


_SHOW = reprlib.Repr()
_SHOW.maxstring = 100
_SHOW.maxother = 100
_SHOW.maxlevel = 2


def show(value: Any) -> str:
    """A bad value as quoted in a message: escaped and short, however big the value."""
    # reprlib bounds the work on huge or deeply nested values; ascii() then escapes the
    # short result so control characters are shown, never written raw into a log line.
    text = ascii(_SHOW.repr(value))[1:-1] if isinstance(value, str) else _SHOW.repr(value)
    text = text if isinstance(value, str) else ascii(text)[1:-1]
    return text if len(text) <= 120 else text[:117] + "..."


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
    # Another branch got further into the value: its error is the one that helps.
    return any(
        tuple(o["loc"])[: len(parent)] == parent and len(o["loc"]) > len(loc)
        for o in exc.errors(include_url=False)
    )


def problems_from(
    exc: ValidationError,
    *,
    source: str,
    marks: Marks | None = None,
    env_sources: Mapping[tuple[str, ...], str] | None = None,
    model: type[BaseModel] = models.Settings,
) -> list[Problem]:
    """Turn a pydantic error on data from ``source`` into positioned problems."""
    problems = []
    errors = [e for e in exc.errors(include_url=False) if not _wrong_branch(e, exc)]
    locs = [tuple(e["loc"]) for e in errors]
    for err in errors:
        loc = tuple(p for p in err["loc"] if not _is_union_tag(p))
        if err["type"] == "too_short" and any(o[: len(loc)] == loc and o != loc for o in locs):
            continue  # "needs at least 1 item" only echoes the bad items reported below it
        where = locate(loc, source, marks or {}, env_sources or {})
        expected = err["msg"]
        if err["type"] == "extra_forbidden":
            allowed = _fields_at(model, loc[:-1])
            expected = "unknown key" + (
                f"; expected one of: {', '.join(allowed)}" if allowed else ""
            )
        elif err["type"] == "missing":
            expected = "this field is required"
        elif expected.startswith("Value error, "):
            expected = expected[len("Value error, ") :]
        # A whole mapping (a model-level rule) says nothing the message does not.
        bad = err.get("input")
        value = "" if err["type"] == "missing" or isinstance(bad, dict) else show(bad)
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
