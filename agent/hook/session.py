"""Following one request's stream to its ``result``, through the agent's restarts.

Policy: the request is sent once the agent answers (:class:`agent.hook.client.Waiter`);
each line is shown as it comes. A stream that breaks before its ``result`` (the agent
died or restarted) is answered by waiting for the agent again and sending the SAME body:
``POST /v1/jobs`` is idempotent on the job's key and claim, and an ensure on what the
store holds. All re-sends together get the same wait, counted from the first break.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from agent.hook import client, errors, report


@dataclass
class Outcome:
    """What a stream said: the ``job`` event (if any) and the ``result``."""

    job: dict[str, Any] = field(default_factory=dict)
    result: dict[str, Any] = field(default_factory=dict)
    resends: int = 0


def follow(
    agent: client.Agent,
    target: str,
    body: Mapping[str, Any],
    *,
    wait: float,
    reporter: report.Reporter,
    on_job: Callable[[dict[str, Any]], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Outcome:
    """POST ``body`` to ``target`` and follow its stream (see the module)."""
    outcome = Outcome()
    deadline: float | None = None
    while True:
        left = wait if deadline is None else max(0.0, deadline - clock())
        waiter = client.Waiter(left, reporter.say, socket_path=agent.socket_path)
        try:
            lines = waiter.call(lambda: agent.stream(target, dict(body)))
        except errors.Unreachable:
            if deadline is None:
                raise
            raise errors.Unreachable(
                f"the agent at {agent.socket_path} broke off the stream and did not come "
                f"back within {wait:.0f} s; see its log"
            ) from None
        try:
            for event in lines:
                kind = event.get("event")
                if kind == "job":
                    outcome.job = event
                    if on_job is not None:
                        on_job(event)
                    _tell_sources(event, reporter)
                elif kind == "result":
                    outcome.result = event
                    return outcome
                else:
                    reporter.event(event)
        except client.StreamBroken as exc:
            if deadline is None:
                deadline = clock() + wait
            outcome.resends += 1
            reporter.say(
                f"the agent broke off the stream ({exc}); waiting for it and asking again "
                "(the request is safe to repeat)"
            )


def _tell_sources(event: Mapping[str, Any], reporter: report.Reporter) -> None:
    """Where the job's features came from, and the agent's warnings, in the job's log."""
    sources = event.get("sources")
    if isinstance(sources, dict):
        for source, items in list(sources.items())[:10]:
            names = [str(i) for i in items][:50] if isinstance(items, list) else []
            reporter.say("features from the {}: {}".format(source, ", ".join(names) or "none"))
    warnings = event.get("warnings")
    if isinstance(warnings, list):
        for text in warnings[:20]:
            reporter.warn(str(text))
