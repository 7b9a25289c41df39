"""What API handlers reach into: the engines, behind one app key."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from agent.catalog import loading as catalog_loading
from agent.config import reloading
from agent.observe import conditions
from agent.services import supervisor
from agent.store import janitor


@dataclass(frozen=True)
class Context:
    """The engines the API serves."""

    reloader: reloading.Reloader
    conditions: conditions.Conditions
    started: float
    catalog: Callable[[], catalog_loading.Catalog | None] = lambda: None
    """The catalog in force, or ``None`` while it first loads."""
    services: Callable[[], supervisor.Supervisor | None] = lambda: None
    """The service supervisor, or ``None`` before it starts."""
    cache: Callable[[], janitor.Janitor | None] = lambda: None
    """The store's janitor (cache management), or ``None`` before it starts."""


CONTEXT = web.AppKey("context", Context)
