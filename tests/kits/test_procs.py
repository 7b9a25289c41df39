"""The step executor: a command that is done is done, whatever its children hold."""

from __future__ import annotations

import os
import time

from agent.kits import procs


def test_a_command_done_while_its_child_holds_the_pipe_is_not_a_timeout() -> None:
    started = time.monotonic()
    done = procs.run(["sh", "-c", "sleep 120 & echo parent done"], env=dict(os.environ), timeout=30)
    assert done.ok
    assert "parent done" in done.output
    assert time.monotonic() - started < 10
