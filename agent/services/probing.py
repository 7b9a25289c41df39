"""Health checks: an HTTP request (unix socket or TCP), a TCP connect, or a command.

Policy: a check either passes or fails with a message saying what it saw; it never
raises. Each is bounded by its ``timeout_seconds``: a hung daemon accepts a connection
(the kernel queues it) and then never answers, so only the timeout sees it. HTTP checks
send one HTTP/1.0 request with ``Connection: close`` and read at most 64 KiB back; an
``exec`` check runs in a worker thread with its process group killed at the timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from dataclasses import dataclass

from agent.config import models
from agent.config import services as specs
from agent.kits import procs

_MAX_RESPONSE = 64 * 1024


@dataclass(frozen=True)
class Result:
    """One health check's outcome."""

    ok: bool
    message: str
    seconds: float
    at: float
    """Unix time the check finished."""


async def check(health: specs.HttpHealth | specs.TcpHealth | specs.ExecHealth) -> Result:
    """Run one check of ``health``; never raises (cancellation aside)."""
    started = time.monotonic()
    try:
        async with asyncio.timeout(health.timeout_seconds):
            if isinstance(health, specs.HttpHealth):
                ok, message = await _http(health)
            elif isinstance(health, specs.TcpHealth):
                ok, message = await _tcp(health)
            else:
                ok, message = await _exec(health)
    except TimeoutError:
        ok, message = False, f"no answer within {health.timeout_seconds:g} s"
    except OSError as exc:
        ok, message = False, f"cannot connect: {exc.strerror or exc}"
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
        ok, message = False, f"bad response: {exc}"
    return Result(ok=ok, message=message, seconds=time.monotonic() - started, at=time.time())


async def _http(health: specs.HttpHealth) -> tuple[bool, str]:
    if health.socket is not None:
        reader, writer = await asyncio.open_unix_connection(str(health.socket))
        host = "localhost"
    else:
        assert health.address is not None
        host, port = models.split_address(health.address)
        reader, writer = await asyncio.open_connection(host, port)
    try:
        request = (
            f"{health.method} {health.path} HTTP/1.0\r\nHost: {host}\r\n"
            "User-Agent: runner-agent\r\nConnection: close\r\n\r\n"
        )
        writer.write(request.encode("ascii"))
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            return False, f"not an HTTP response: {status_line[:80]!r}"
        status = int(parts[1])
        length = None
        for header in header_lines:
            name, _, value = header.partition(":")
            if name.strip().lower() == "content-length" and value.strip().isdigit():
                length = int(value.strip())
        body = b""
        if health.method != "HEAD":
            if length is not None:
                body = await reader.readexactly(min(length, _MAX_RESPONSE))
            else:
                body = await reader.read(_MAX_RESPONSE)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    text = body.decode("utf-8", "replace").strip()
    if status != health.expect_status:
        return False, f"HTTP {status} (expected {health.expect_status}): {text[:80]!r}"
    if health.expect_body is not None and text != health.expect_body.strip():
        return False, f"HTTP {status} with body {text[:80]!r} (expected {health.expect_body!r})"
    return True, f"HTTP {status}" + (f" {text[:40]}" if text else "")


async def _tcp(health: specs.TcpHealth) -> tuple[bool, str]:
    host, port = models.split_address(health.address)
    _, writer = await asyncio.open_connection(host, port)
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True, f"connected to {health.address}"


async def _exec(health: specs.ExecHealth) -> tuple[bool, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNNER_AGENT_")}
    try:
        # The thread enforces the timeout itself (killing the group), a little after ours.
        done = await asyncio.to_thread(
            procs.run, health.command, env=env, timeout=health.timeout_seconds + 0.5, tail=4096
        )
    except procs.ProcError as exc:
        return False, str(exc)
    if done.ok:
        return True, "exited 0"
    return False, done.describe(limit=200)
