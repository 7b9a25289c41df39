"""Following another agent's open jobs, so this agent's stop gate closes for each job.

Policy (see :mod:`agent.config.upstream`):
- The engine container's agent polls the sidecar agent's ``GET /v1/jobs/current`` every
  ``upstream.poll_seconds`` over its unix socket, and holds its stop gate closed (holder
  ``upstream``) while any job is open there; it lets go when none is.
- An upstream that cannot be reached, refuses, or answers nonsense changes nothing: the
  last answer holds, so a job that was open keeps dockerd up (bounded, as every gate wait,
  by the service's ``stop.gate_max_wait_seconds``), and the ``upstream`` condition says
  why. Before the first answer the gate is not held: nothing runs yet.
- One exception: the socket file gone. An agent removes its socket only when it stops,
  and it stops only once its open jobs completed (or ``runner.shutdown_wait_seconds``
  passed); an agent that crashed leaves it behind (refused connections). So a vanished
  socket lets go, and a pod's engine stops when its sidecar does, not a gate wait later.
- The gate is held or let go when the answer changes (and when the supervisor starts),
  not at every poll: an operator's ``force`` open stands until the upstream's jobs do
  change.
- Everything is bounded: each request by a timeout under the poll interval's reach, the
  answer by :data:`MAX_ANSWER_BYTES` and :data:`MAX_JOBS`, the token file by
  :data:`MAX_TOKEN_BYTES`. The token is never logged; an error names the setting, not the
  value. No failure of a poll ends the follower: it is logged and the next poll comes.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from agent.config.upstream import UpstreamSettings
from agent.kits import secretfiles
from agent.services.gating import StopGate

logger = logging.getLogger(__name__)

HOLDER = "upstream"
MAX_ANSWER_BYTES = 4 * 1024 * 1024
MAX_JOBS = 1024
MAX_TOKEN_BYTES = 4096


class UpstreamError(Exception):
    """The upstream agent's open jobs could not be read; the message says why and what to
    set."""


class SocketGone(UpstreamError):
    """The upstream's socket file is gone: that agent stopped (see the module)."""


@dataclass(frozen=True)
class OpenJob:
    """One job open on the upstream agent: its id (a new job is a change), and what the
    gate's reason says."""

    id: str
    runner: str
    repository: str
    job: str

    def describe(self) -> str:
        """E.g. ``octo/app job build on runner-1``."""
        return f"{self.repository or '?'} job {self.job or '?'} on {self.runner or '?'}"


def parse_jobs(raw: bytes) -> list[OpenJob]:
    """The jobs of a ``GET /v1/jobs/current`` answer; :class:`UpstreamError` if it is not
    one."""
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise UpstreamError(f"the answer is not JSON ({str(exc)[:200]})") from exc
    jobs = data.get("jobs") if isinstance(data, dict) else None
    if not isinstance(jobs, list):
        raise UpstreamError('the answer has no "jobs" list; is the socket a runner-agent\'s?')
    if len(jobs) > MAX_JOBS:
        raise UpstreamError(f"the answer lists {len(jobs)} jobs, more than {MAX_JOBS}")
    found = []
    for item in jobs:
        if not isinstance(item, dict):
            raise UpstreamError(f"a job in the answer is {type(item).__name__}, not an object")
        found.append(
            OpenJob(
                id=str(item.get("id", ""))[:200],
                runner=str(item.get("runner_name", ""))[:200],
                repository=str(item.get("repository", ""))[:200],
                job=str(item.get("job", ""))[:200],
            )
        )
    return found


def _read_token(path: Path) -> str:
    try:
        raw = secretfiles.read(path, "upstream.token_file", limit=MAX_TOKEN_BYTES, single_line=True)
    except secretfiles.SecretFileError as exc:
        raise UpstreamError(f"{exc}; expected the upstream agent's job token") from exc
    return raw.decode()


class Follower:
    """Polls the upstream agent and holds ``gate()`` closed while it has jobs open."""

    def __init__(
        self,
        settings: Callable[[], UpstreamSettings],
        gate: Callable[[], StopGate | None],
        on_state: Callable[[bool, str], None],
    ) -> None:
        self._settings = settings
        self._gate = gate
        self._on_state = on_state
        self.jobs: list[OpenJob] | None = None
        """The last answer: ``None`` before the first one."""
        self.answered = False
        """Whether the upstream ever answered: a socket missing before that is more likely
        a wrong path or a volume not mounted than an agent that stopped."""

    async def run(self) -> None:
        """Poll until cancelled."""
        async with aiohttp.ClientSession(
            connector=aiohttp.UnixConnector(path=str(self._path())),
            timeout=aiohttp.ClientTimeout(total=None),
        ) as session:
            while True:
                try:
                    await self.poll(session)
                except Exception:  # a bug must not leave the gate unwatched: log, go on
                    logger.exception("upstream poll failed; polling on")
                    self._on_state(False, "the last poll failed (see the log); polling on")
                await asyncio.sleep(self._settings().poll_seconds)

    async def poll(self, session: aiohttp.ClientSession) -> None:
        """Read the upstream once and act on the answer (see the module)."""
        try:
            jobs = await self.read(session)
        except SocketGone as exc:
            if self.jobs:
                logger.info("%s: that agent stopped; letting go of the stop gate", exc)
            self._answer([])
            if self.answered:
                self._on_state(True, f"{exc} (that agent stopped): no job is held")
            else:
                self._on_state(
                    False,
                    f"{exc} yet: is upstream.socket_path right, and the agent's socket "
                    "folder mounted here?",
                )
        except UpstreamError as exc:
            kept = "no job" if not self.jobs else f"{len(self.jobs)} open job(s)"
            self._on_state(False, f"{exc}; the stop gate keeps the last answer ({kept})")
        else:
            self.answered = True
            self._answer(jobs)
            self._on_state(True, f"{len(jobs)} job(s) open on the agent at {self._path()}")

    def _answer(self, jobs: list[OpenJob]) -> None:
        changed = jobs != self.jobs
        self.jobs = jobs
        if changed:
            self.resync()

    def _path(self) -> Path:
        path = self._settings().socket_path
        assert path is not None, "a follower runs only with upstream.socket_path set"
        return path

    async def read(self, session: aiohttp.ClientSession) -> list[OpenJob]:
        """One poll: the upstream's open jobs, or :class:`UpstreamError`."""
        settings = self._settings()
        headers = {}
        if settings.token_file is not None:
            try:
                token = await asyncio.wait_for(
                    asyncio.to_thread(_read_token, settings.token_file), timeout=5
                )
            except TimeoutError as exc:
                raise UpstreamError(
                    f"reading upstream.token_file {settings.token_file} took over 5 s"
                ) from exc
            headers["Authorization"] = f"Bearer {token}"
        # A request may take the poll's time and a little more, never forever.
        timeout = aiohttp.ClientTimeout(total=min(30.0, max(2.0, 2 * settings.poll_seconds)))
        where = f"the agent at {settings.socket_path}"
        try:
            async with session.get(
                "http://localhost/v1/jobs/current", headers=headers, timeout=timeout
            ) as resp:
                status = resp.status
                raw = bytearray()
                async for chunk in resp.content.iter_chunked(64 * 1024):
                    raw += chunk
                    if len(raw) > MAX_ANSWER_BYTES:
                        raise UpstreamError(f"{where} answered more than {MAX_ANSWER_BYTES} bytes")
        except TimeoutError as exc:
            raise UpstreamError(f"{where} did not answer within {timeout.total:.0f} s") from exc
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, FileNotFoundError):
                raise SocketGone(f"no socket at {settings.socket_path}") from exc
            raise UpstreamError(f"cannot reach {where}: {exc}") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamError(f"cannot reach {where}: {exc}") from exc
        if status in (401, 403):
            raise UpstreamError(
                f"{where} refused the request ({status}): set upstream.token_file to its "
                "job token file"
            )
        if status != 200:
            raise UpstreamError(f"{where} answered HTTP {status} to GET /v1/jobs/current")
        return parse_jobs(bytes(raw))

    def resync(self) -> None:
        """Hold or let go of the gate as the last answer says (also once the supervisor,
        and so the gate, exists)."""
        gate = self._gate()
        if gate is None or self.jobs is None:
            return
        if self.jobs:
            more = f" and {len(self.jobs) - 1} more" if len(self.jobs) > 1 else ""
            gate.close(f"upstream job {self.jobs[0].describe()} is open{more}", holder=HOLDER)
        elif HOLDER in gate.holders:
            gate.open("no job is open upstream", holder=HOLDER)
