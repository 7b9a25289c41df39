"""The README's CLI summary names every command, sub-command and option the parser has."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from agent.cli import build_parser

README = Path(__file__).resolve().parents[2] / "README.md"
IMPLIED = {"--help", "-h", "--config"}  # every command takes --config; said once above it


def summary() -> dict[str, str]:
    text = README.read_text()
    block = text[text.index("```\nrunner-agent serve") + 4 :]
    block = block[: block.index("```")]
    lines: dict[str, str] = {}
    current = ""
    for line in block.splitlines():
        if line.startswith("runner-agent "):
            current = line.split()[1]
            lines[current] = lines.get(current, "") + " " + line
        elif line.startswith(" ") and current:
            lines[current] += " " + line
    return lines


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def options(parser: argparse.ArgumentParser) -> set[str]:
    found = set()
    for action in parser._actions:
        for flag in action.option_strings:
            if flag.startswith("--"):
                found.add(flag)
    for sub in subparsers(parser).values():
        found |= options(sub)
    return found - IMPLIED


def test_every_command_and_option_is_in_the_readme_summary() -> None:
    lines = summary()
    for name, parser in subparsers(build_parser()).items():
        assert name in lines, f"README's CLI summary has no line for {name}"
        shown = lines[name]
        for sub in subparsers(parser):
            assert re.search(rf"\b{re.escape(sub)}\b", shown), f"{name} {sub} is not shown"
        for flag in options(parser):
            assert flag in shown, f"{name} {flag} is not in the README's CLI summary"
