"""Talking to the agent: HTTP/1.1 over its unix socket, JSON bodies, NDJSON streams.

Policy:
- the socket is ``RUNNER_AGENT_SOCKET`` (default ``/run/runner-agent/api.sock``); the
  bearer token is read from the file ``RUNNER_AGENT_TOKEN_FILE`` names (unset: no
  token); a named file that is missing, unreadable or empty is an error naming the file.
  The token never appears in a message;
- an agent that cannot be connected to (no socket, refused, not ready: 503) is
  :class:`NotReady`, which :class:`Waiter` retries with backoff until the wait
  (``RUNNER_AGENT_HOOK_WAIT`` seconds, default 120) is spent, printing a line about
  every 10 s; then the policy (``RUNNER_AGENT_HOOK_UNREACHABLE``: ``fail`` or
  ``continue``) decides;
- an error answer before a stream is :class:`AgentError` with the agent's code, message
  and details;
- a stream's lines are bounded (1 MiB each, 64 MiB in all) and must be JSON objects; a
  stream that ends before its ``result`` (the agent died) is :class:`StreamBroken`,
  which the caller answers by waiting and posting the same request again.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from agent.hook import errors

DEFAULT_SOCKET = "/run/runner-agent/api.sock"
DEFAULT_WAIT = 120.0
MAX_LINE = 1 << 20
MAX_STREAM = 64 << 20
MAX_BODY = 4 << 20
# An install may print nothing for minutes (a big apt transaction); the agent's own
# bounds end it long before this does.
STREAM_TIMEOUT = 3600.0
REQUEST_TIMEOUT = 30.0
_REPORT_EVERY = 10.0


class ClientError(errors.HookError):
    """Talking to the agent failed."""


class NotReady(ClientError):
    """The agent cannot be reached now (no socket, refused, 503): worth waiting for."""


class StreamBroken(ClientError):
    """The stream ended, or broke, before its ``result``."""


class AgentError(ClientError):
    """The agent answered with an error before any stream."""

    def __init__(self, status: int, code: str, message: str, details: dict[str, Any]) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details

    def lines(self) -> list[str]:
        """The message, then what the details add (``problems``, ``available``...)."""
        out = [f"{self.message} ({self.status} {self.code})"]
        problems = self.details.get("problems")
        if isinstance(problems, list):
            out.extend(str(p) for p in problems if str(p) != self.message)
        for key, value in self.details.items():
            if key != "problems":
                shown = ", ".join(map(str, value)) if isinstance(value, list) else value
                out.append(f"{key}: {shown}")
        return out


class TokenError(errors.BadInput):
    """The token file is missing, unreadable or empty."""


class PolicyError(errors.BadInput):
    """``RUNNER_AGENT_HOOK_WAIT`` or ``RUNNER_AGENT_HOOK_UNREACHABLE`` is malformed."""


def read_token(environ: Mapping[str, str]) -> str | None:
    """The job token, from the file ``RUNNER_AGENT_TOKEN_FILE`` names (unset: none)."""
    path = environ.get("RUNNER_AGENT_TOKEN_FILE")
    if not path:
        return None
    try:
        with open(path, "rb") as handle:
            raw = handle.read(64 << 10)
    except OSError as exc:
        raise TokenError(
            f"cannot read the token file {path} (RUNNER_AGENT_TOKEN_FILE): {exc.strerror}; "
            "mount the agent's job token there, readable by the runner's user"
        ) from None
    text = raw.decode("utf-8", errors="replace").strip()
    if not text:
        raise TokenError(
            f"the token file {path} (RUNNER_AGENT_TOKEN_FILE) is empty; it must hold the "
            "agent's job token"
        )
    return text


def wait_seconds(environ: Mapping[str, str]) -> float:
    """``RUNNER_AGENT_HOOK_WAIT``: how long to wait for the agent (0 to 3600 s)."""
    raw = environ.get("RUNNER_AGENT_HOOK_WAIT", "")
    if raw == "":
        return DEFAULT_WAIT
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 3600:
        raise PolicyError(
            f"RUNNER_AGENT_HOOK_WAIT={raw!r} is not a number of seconds from 0 to 3600"
        )
    return value


def unreachable_policy(environ: Mapping[str, str]) -> str:
    """``RUNNER_AGENT_HOOK_UNREACHABLE``: ``fail`` (the default) or ``continue``."""
    value = environ.get("RUNNER_AGENT_HOOK_UNREACHABLE", "") or "fail"
    if value not in ("fail", "continue"):
        raise PolicyError(
            f"RUNNER_AGENT_HOOK_UNREACHABLE={value!r} is not fail or continue: fail stops "
            "the job when the agent cannot be reached, continue runs it without features"
        )
    return value


class UnixConnection(http.client.HTTPConnection):
    """An HTTP connection over the unix socket at ``path``."""

    def __init__(self, path: str, *, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self._path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


class Agent:
    """The agent at one socket, with the job token."""

    def __init__(self, socket_path: str, token: str | None) -> None:
        self.socket_path = socket_path
        self._token = token

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Agent:
        """The agent ``RUNNER_AGENT_SOCKET`` and ``RUNNER_AGENT_TOKEN_FILE`` name."""
        return cls(environ.get("RUNNER_AGENT_SOCKET") or DEFAULT_SOCKET, read_token(environ))

    def _send(
        self, method: str, target: str, body: object, timeout: float
    ) -> tuple[UnixConnection, http.client.HTTPResponse]:
        conn = UnixConnection(self.socket_path, timeout=timeout)
        headers = {"Content-Type": "application/json", "Accept": "application/x-ndjson"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        try:
            conn.request(method, target, body=json.dumps(body).encode(), headers=headers)
            response = conn.getresponse()
        except (FileNotFoundError, ConnectionRefusedError, ConnectionResetError) as exc:
            conn.close()
            raise NotReady(f"{exc.strerror or type(exc).__name__}") from None
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise NotReady(
                f"{getattr(exc, 'strerror', None) or exc or type(exc).__name__}"
            ) from None
        if response.status == 503:
            error = _error(response)
            conn.close()
            raise NotReady(f"the agent is not ready: {error.message}")
        if response.status >= 300:
            error = _error(response)
            conn.close()
            raise error
        return conn, response

    def post(self, target: str, body: object) -> dict[str, Any]:
        """POST a JSON body; the JSON object answered (errors raise)."""
        conn, response = self._send("POST", target, body, REQUEST_TIMEOUT)
        try:
            raw = response.read(MAX_BODY + 1)
        except (OSError, http.client.HTTPException) as exc:
            raise NotReady(f"the answer broke off ({type(exc).__name__})") from None
        finally:
            conn.close()
        try:
            data = json.loads(raw)
        except ValueError:
            raise ClientError(f"the agent at {self.socket_path} answered no JSON") from None
        if not isinstance(data, dict):
            raise ClientError(f"the agent at {self.socket_path} answered no JSON object")
        return data

    def stream(self, target: str, body: object) -> Iterator[dict[str, Any]]:
        """POST a JSON body and yield each JSON line of the NDJSON answer; the stream
        must end with a ``result`` event (else :class:`StreamBroken`). The request is
        sent here, so a :class:`NotReady` comes from this call, not from the iteration."""
        conn, response = self._send("POST", target, body, STREAM_TIMEOUT)
        return self._lines(conn, response)

    def _lines(
        self, conn: UnixConnection, response: http.client.HTTPResponse
    ) -> Iterator[dict[str, Any]]:
        total = 0
        try:
            while True:
                try:
                    raw = response.readline(MAX_LINE + 1)
                except (OSError, http.client.HTTPException) as exc:
                    raise StreamBroken(f"the stream broke off ({type(exc).__name__})") from None
                if not raw:
                    raise StreamBroken("the stream ended before its result")
                total += len(raw)
                if len(raw) > MAX_LINE or total > MAX_STREAM:
                    raise ClientError(
                        f"the agent at {self.socket_path} sent a line over 1 MiB or a stream "
                        "over 64 MiB; see the agent's log"
                    )
                if not raw.endswith(b"\n"):
                    raise StreamBroken("the stream ended inside a line")
                if not raw.strip():
                    continue
                try:
                    data = json.loads(raw)
                except ValueError:
                    raise ClientError(
                        f"the agent at {self.socket_path} sent a line that is not JSON"
                    ) from None
                if not isinstance(data, dict):
                    continue  # not an event: nothing to act on
                yield data
                if data.get("event") == "result":
                    return
        finally:
            conn.close()


def _error(response: http.client.HTTPResponse) -> AgentError:
    try:
        data = json.loads(response.read(MAX_BODY))
    except (ValueError, OSError, http.client.HTTPException):
        data = None
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, dict):
        return AgentError(response.status, "http", f"HTTP {response.status}", {})
    details = error.get("details")
    return AgentError(
        response.status,
        str(error.get("code") or "error"),
        str(error.get("message") or f"HTTP {response.status}"),
        details if isinstance(details, dict) else {},
    )


class Waiter:
    """Retries a call while the agent is :class:`NotReady`, up to ``seconds``, with
    backoff (0.2 s doubling to 2 s), saying so about every 10 s through ``say``."""

    def __init__(
        self,
        seconds: float,
        say: Callable[[str], None],
        *,
        socket_path: str,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.seconds = seconds
        self._say = say
        self._socket = socket_path
        self._clock = clock
        self._sleep = sleep

    def call(self, attempt: Callable[[], Any]) -> Any:
        """``attempt()``'s value; :class:`errors.Unreachable` once the wait is spent."""
        start = self._clock()
        next_report = start + _REPORT_EVERY
        pause = 0.2
        while True:
            try:
                return attempt()
            except NotReady as exc:
                now = self._clock()
                waited = now - start
                if waited >= self.seconds:
                    raise errors.Unreachable(
                        f"the agent at {self._socket} did not answer within "
                        f"{self.seconds:.0f} s ({exc}); check that it runs and that "
                        "RUNNER_AGENT_SOCKET names its API socket"
                    ) from None
                if now >= next_report:
                    self._say(
                        f"waiting for the agent at {self._socket} ({waited:.0f} s of "
                        f"{self.seconds:.0f} s): {exc}"
                    )
                    next_report = now + _REPORT_EVERY
                self._sleep(min(pause, max(0.0, self.seconds - waited)))
                pause = min(2.0, pause * 2)


def socket_of(environ: Mapping[str, str]) -> str:
    """The socket path the environment names (for messages before a token is read)."""
    return environ.get("RUNNER_AGENT_SOCKET") or DEFAULT_SOCKET
