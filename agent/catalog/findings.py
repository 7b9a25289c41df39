"""Every problem of a manifest at once: rules that collect, not rules that raise.

Policy: a manifest's rules (a method platform outside the feature's, an option default
outside its enum, a placeholder no context provides...) add a finding with the key path
of what is wrong and go on, so one load reports them all; the findings are raised as one
pydantic :class:`~pydantic.ValidationError` with a line error per finding, which pydantic
carries up with the path prefixed, and the config problems then place each one at its
own line and column of the file.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

from agent.config import problems

Loc = problems.Loc


class Findings:
    """Problems found by a model's rules, each with the key path it is about."""

    def __init__(self) -> None:
        self.items: list[tuple[Loc, str, Any]] = []

    def add(self, loc: Loc, message: str, value: Any = None) -> None:
        """Record a problem at ``loc`` (relative to the model being checked)."""
        self.items.append((loc, message, value))

    def check(self, loc: Loc, rule: Callable[[], object]) -> None:
        """Run ``rule``; a ``ValueError`` it raises becomes a finding at ``loc``."""
        try:
            rule()
        except ValueError as exc:
            self.add(loc, str(exc))

    def line_errors(self) -> list[InitErrorDetails]:
        """The findings as pydantic line errors."""
        return [
            {
                # The message quotes the value where it matters: no "got ..." before it.
                "type": PydanticCustomError(problems.QUOTED, message),
                "loc": loc,
                "input": value,
            }
            for loc, message, value in self.items
        ]

    def raise_if_any(self, title: str) -> None:
        """Raise every finding as one :class:`ValidationError`."""
        if self.items:
            raise ValidationError.from_exception_data(title, self.line_errors())


def reraise(title: str, exc: ValidationError, found: Findings) -> ValidationError:
    """``exc``'s errors and the findings, as one error (what a wrap validator raises)."""
    kept: list[InitErrorDetails] = [
        {
            "type": PydanticCustomError(str(err["type"]), str(err["msg"])),
            "loc": tuple(err["loc"]),
            "input": err.get("input"),
        }
        for err in exc.errors(include_url=False)
    ]
    return ValidationError.from_exception_data(title, kept + found.line_errors())
