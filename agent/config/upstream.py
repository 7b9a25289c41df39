"""The ``upstream`` settings: the agent whose open jobs hold this agent's stop gate.

Policy: in the engine container (``server.role: services``) the agent runs dockerd and
nothing else; the jobs live in the sidecar agent, which the runner's hook talks to. The
engine agent polls that agent's ``GET /v1/jobs/current`` over its unix socket and holds
its own stop gate closed while any job is open there, so dockerd outlives the job
however the supervisor is reached. The socket is the one the runner already has, and the
token (if any) is the job token the runner already holds: the engine container, which job
code can reach through Docker, gains nothing job code does not have.
"""

from __future__ import annotations

from pydantic import Field

from agent.config.fields import RESTART, AbsolutePath, Seconds, Section, SocketPath


class UpstreamSettings(Section):
    """Where the jobs that hold this agent's stop gate are tracked."""

    socket_path: SocketPath | None = Field(
        default=None,
        description=(
            "API socket of the agent that tracks the runner's jobs (the sidecar's "
            "server.socket_path). Set in the engine container: its stop gate is then held "
            "closed while that agent has a job open. Unreachable: the last answer holds "
            "(a job that was open stays open) until it answers again; its socket removed "
            "(an agent removes it only when it stops, after its open jobs): no job is "
            "held. Default none."
        ),
        json_schema_extra=RESTART,
    )
    token_file: AbsolutePath | None = Field(
        default=None,
        description=(
            "File holding that agent's job-scope token, when it has one "
            "(server.job_token_file there). Re-read at every poll, so a rotated token "
            "applies. Default none."
        ),
    )
    poll_seconds: Seconds = Field(
        default=1.0,
        ge=0.1,
        le=60,
        description=(
            "How often, in seconds, the upstream agent's open jobs are read. Default 1 s: "
            "one small request on a local socket. Range 0.1-60 s: a job shorter than the "
            "poll could start and end unseen."
        ),
    )
