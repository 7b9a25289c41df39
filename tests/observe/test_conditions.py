"""Readiness conditions: what reaches the log when one changes."""

from __future__ import annotations

import logging

import pytest

from agent.observe import conditions


def logged(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    out = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == conditions.__name__]
    caplog.clear()
    return out


def test_a_failing_conditions_new_reason_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    items = conditions.Conditions()
    items.set("api", ok=False, message="starting")
    assert logged(caplog) == [(logging.INFO, "condition api is failing: starting")]
    reason = "cannot bind the API socket /run/x/api.sock: Permission denied"
    items.set("api", ok=False, message=reason)
    # Still starting (it never held): in the log at info, not only in /readyz.
    assert logged(caplog) == [(logging.INFO, f"condition api is failing: {reason}")]
    items.set("api", ok=False, message=reason)
    assert logged(caplog) == []  # the same reason again is not news
    items.set("api", ok=True, message="listening")
    assert logged(caplog) == [(logging.INFO, "condition api is ok: listening")]
    items.set("api", ok=True, message="listening on 2 sockets")
    assert logged(caplog) == []  # an ok condition's message is for /readyz
    items.set("api", ok=False, message="gone")
    assert logged(caplog) == [(logging.WARNING, "condition api is failing: gone")]
    items.set("api", ok=False, message="gone for good")
    assert logged(caplog) == [(logging.WARNING, "condition api is failing: gone for good")]
