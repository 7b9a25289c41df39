"""The progress view: what reaches a terminal or a CI log is escaped."""

from __future__ import annotations

from agent.cli import progressview


def test_progress_lines_show_control_characters_escaped() -> None:
    assert progressview.clean("a\rb\x1b[2Jc") == "a\\x0db\\x1b[2Jc"
    assert progressview.clean("tab\tok") == "tab\\x09ok"
