"""Logging setup: one JSON object per line (the default) or text for humans.

Policy: the root logger gets exactly one handler, on stderr, replaced in place on
reload so the format and level can change while running. JSON lines carry
``timestamp`` (RFC 3339, UTC), ``level``, ``logger``, ``message``, any context passed
through ``extra=`` and, for errors, ``exception``. Values that are not JSON types are
rendered with ``str()`` rather than dropped. Every record passes :class:`Redact` first:
credentials (``Authorization``, ``Cookie``, bearer tokens, ``token=`` parameters, a URL's
``user:password@`` or bare ``token@``, see :mod:`agent.kits.urls`) are replaced by
``[redacted]`` in the message, the traceback and string context, whoever logged them: a
library that quotes a raw request (aiohttp's parser does) must not put a token in the log.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
import traceback
from typing import Any, Literal

from agent.kits import urls

LogFormat = Literal["json", "text"]

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = frozenset(
    vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None)).keys()
) | {"message", "asctime", "taskName"}

_HANDLER_NAME = "runner-agent"


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON object on one line."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "timestamp": _rfc3339(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                payload[key] = value
        if record.exc_info:
            # exc_text: the traceback as Redact left it.
            payload["exception"] = record.exc_text or self.formatException(record.exc_info)
        return json.dumps(payload, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """Human-readable lines, with context fields appended as ``key=value``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extra = {
            k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")
        }
        if extra:
            line += " " + " ".join(f"{k}={_plain(v)}" for k, v in extra.items())
        return line


REDACTED = "[redacted]"

# A header's value ends at a line break, also one written as an escape in a repr
# (b'...\r\nCookie: ...'), or at a quote.
_END = r"(?:[^\r\n\\'\"]|\\(?![rn'\"]))*"
_SECRETS = re.compile(
    # No \b before a name: in a repr, "\nCookie" is a word character then the name.
    r"(?P<h>authorization\s*[:=]\s*|cookie\s*[:=]\s*|x-(?:api-key|auth-token)\s*[:=]\s*)"
    + _END
    + r"|(?P<b>bearer\s+)[^\s'\"\\,;]+"
    + r"|(?P<q>[?&;\s](?:access_)?token=)[^&\s'\"\\]+",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    """``text`` with every credential it shows replaced by ``[redacted]``."""
    # A URL's userinfo (a proxy's, an index's, a mirror's) first, by the rules every
    # other place that shows URLs follows: a password holding "@", a bare token.
    text = urls.hide_urls(text, mask=REDACTED)
    return _SECRETS.sub(lambda m: (m["h"] or m["b"] or m["q"]) + REDACTED, text)


class Redact(logging.Filter):
    """Redact credentials from a record before any handler formats it."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: emit() reports it as logging does
            return True
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
            record.exc_text = redact("".join(traceback.format_exception(*record.exc_info)))
            record.exc_text = record.exc_text.rstrip("\n")
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        for key, value in record.__dict__.items():
            if key not in _STANDARD and isinstance(value, str):
                record.__dict__[key] = redact(value)
        return True


_REDACT = Redact()


def _plain(value: object) -> str:
    # Context values may come from requests: a newline in one must not forge a log line.
    text = str(value)
    return text if text.isprintable() else ascii(text)


def _rfc3339(created: float) -> str:
    seconds = int(created)
    millis = int((created - seconds) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def configure(*, fmt: LogFormat, level: str) -> None:
    """Install (or swap) the agent's single stderr handler with ``fmt`` and ``level``."""
    root = logging.getLogger()
    handler = next((h for h in root.handlers if h.get_name() == _HANDLER_NAME), None)
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        handler.set_name(_HANDLER_NAME)
        root.addHandler(handler)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    if _REDACT not in handler.filters:
        handler.addFilter(_REDACT)
    root.setLevel(level.upper())
    # aiohttp's access log is one line per probe: far too chatty for a sidecar that
    # is scraped every few seconds. Request metrics cover what it would say.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
