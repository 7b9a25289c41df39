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


def test_a_password_holding_at_signs_is_redacted_whole() -> None:
    text = "proxy HTTPS://ci:p@ss@w0rd@127.0.0.1:3128 refused"
    assert logs.redact(text) == "proxy HTTPS://ci:[redacted]@127.0.0.1:3128 refused"


def test_a_token_given_as_the_user_name_is_redacted() -> None:
    text = "cloning https://ghp_s3cr3t@example.invalid/o/r.git failed"
    assert logs.redact(text) == "cloning https://[redacted]@example.invalid/o/r.git failed"
    # Other schemes name a user there, not a secret.
    assert logs.redact("ssh://git@example.invalid/o/r") == "ssh://git@example.invalid/o/r"


def test_a_url_and_a_token_parameter_in_one_line_are_both_redacted() -> None:
    text = "GET https://u:s3cr3t@example.invalid/x?token=t0k3n"
    assert logs.redact(text) == "GET https://u:[redacted]@example.invalid/x?token=[redacted]"


def test_a_logged_record_has_a_mirrors_credentials_redacted() -> None:
    url = "https://u:p@ss@127.0.0.1:8080/a.tgz"
    record = logging.LogRecord(
        "agent.x", logging.WARNING, __file__, 1, "download of %s failed", (url,), None
    )
    record.mirror = "https://t0k3n@127.0.0.1:8080/"
    logs.Redact().filter(record)
    line = logs.JsonFormatter().format(record)
    assert "p@ss" not in line
    assert "t0k3n" not in line
    assert "https://u:[redacted]@127.0.0.1:8080/a.tgz" in line
