"""What API handlers reach into: the engines the daemon owns, behind one app key."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from agent.catalog import loading as catalog_loading
from agent.config import reloading
from agent.github import contents, joblabels
from agent.gpu import engine as gpu_engine
from agent.install import coordinator
from agent.jobs import registry
from agent.observe import conditions
from agent.services import supervisor
from agent.store import janitor


@dataclass(frozen=True)
class Context:
    """The engines the API serves; the daemon builds, reloads and stops them."""

    reloader: reloading.Reloader
    conditions: conditions.Conditions
    started: float
    installs: coordinator.Coordinator
    """The install coordinator (ensure, preinstall)."""
    jobs: registry.Jobs
    """The jobs engine: open jobs, their secrets and leases."""
    catalog: Callable[[], catalog_loading.Catalog | None] = lambda: None
    """The catalog in force, or ``None`` while it first loads."""
    services: Callable[[], supervisor.Supervisor | None] = lambda: None
    """The service supervisor, or ``None`` before it starts."""
    cache: Callable[[], janitor.Janitor | None] = lambda: None
    """The store's janitor (cache management), or ``None`` before it starts."""
    team_configs: contents.TeamConfigs | None = None
    """Team configs at a job's commit, from GitHub (used when github credentials are set)."""
    job_labels: joblabels.JobLabels | None = None
    """The labels a job asked for, from GitHub's jobs API (when credentials are set)."""
    gpu: Callable[[], gpu_engine.Gpu | None] = lambda: None
    """The GPU engine, or ``None`` before it starts."""


CONTEXT = web.AppKey("context", Context)
