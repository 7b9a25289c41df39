"""Log formats: JSON lines and text lines carry their context, with control characters escaped."""

from __future__ import annotations

import json
import logging

from agent.kits import logs


def test_json_log_lines_carry_context() -> None:
    record = logging.LogRecord("agent.x", logging.WARNING, __file__, 1, "hello %s", ("you",), None)
    record.condition = "api"
    line = json.loads(logs.JsonFormatter().format(record))
    assert line["level"] == "warning"
    assert line["logger"] == "agent.x"
    assert line["message"] == "hello you"
    assert line["condition"] == "api"
    assert line["timestamp"].endswith("Z")
    assert "T" in line["timestamp"]


def test_text_log_lines_append_context() -> None:
    record = logging.LogRecord("agent.x", logging.INFO, __file__, 1, "hi", (), None)
    record.port = 9102
    assert logs.TextFormatter().format(record).endswith("agent.x: hi port=9102")


def test_text_logs_escape_control_characters() -> None:
    record = logging.LogRecord("agent.x", logging.INFO, __file__, 1, "reload", (), None)
    record.reason = "line\nforged: yes"
    assert "\n" not in logs.TextFormatter().format(record)


def test_a_urls_password_is_redacted_and_the_rest_kept() -> None:
    text = "fetching https://bot:s3cr3t@wheels.invalid/whl/cu128 via http://p:x@proxy:3128 now"
    assert logs.redact(text) == (
        "fetching https://bot:[redacted]@wheels.invalid/whl/cu128 via "
        "http://p:[redacted]@proxy:3128 now"
    )
    assert logs.redact("https://host.invalid/a:b@c") == "https://host.invalid/a:b@c"
