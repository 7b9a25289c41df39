"""Metrics of the jobs this agent serves.

Policy: ``runner_agent_job_info`` carries the job's repository, workflow, job and run id
as labels, which come from the job (bounded in length by the API), and exists only while
the job is open, so its cardinality is the number of runners this agent serves; counts and
times use a fixed result set only.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_SETUP_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
_ENERGY_BUCKETS = (100, 1e3, 1e4, 3e4, 1e5, 3e5, 1e6, 3e6, 1e7, 3e7, 1e8)
"""Joules: a minute idle on one GPU is ~5e3, an hour of training on eight ~2e7."""
_BUSY_BUCKETS = (1, 10, 60, 300, 900, 1800, 3600, 7200, 14400, 28800, 57600, 115200)


class JobMetrics:
    """Job metrics on the agent's registry."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        """Register on ``registry`` (``None``: count without exporting, as tests do)."""
        self.info = Gauge(
            "runner_agent_job_info",
            "1 while a job runs on a runner this agent serves, labelled with the job.",
            ["repository", "workflow", "job", "run_id"],
            registry=registry,
        )
        self.jobs = Counter(
            "runner_agent_jobs",
            "Jobs that ended, by result: succeeded, failed, cancelled, unknown (as the "
            "job-completed hook said), abandoned (a later job of the runner superseded it) "
            "or expired (runner.job_max_seconds passed).",
            ["result"],
            registry=registry,
        )
        self.gpu_energy = Histogram(
            "runner_agent_job_gpu_energy_joules",
            "Energy a job's GPUs used from its start to its end, in joules (the energy "
            "counter's delta, summed over the GPUs its runner sees).",
            buckets=_ENERGY_BUCKETS,
            registry=registry,
        )
        self.gpu_busy = Histogram(
            "runner_agent_job_gpu_busy_seconds",
            "GPU utilisation integrated over a job, in GPU-seconds (1 GPU fully busy for "
            "a minute is 60; summed over the GPUs its runner sees).",
            buckets=_BUSY_BUCKETS,
            registry=registry,
        )
        self.setup_seconds = Histogram(
            "runner_agent_job_setup_seconds",
            "Time from a job's start to its features being ready (the job-started hook's "
            "request), in seconds.",
            buckets=_SETUP_BUCKETS,
            registry=registry,
        )
