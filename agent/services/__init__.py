"""Supervised services (dockerd and others): the supervisor engine.

Policy: specs come from the config layer (:mod:`agent.config.services`) as data; this
engine runs them, one guarded task per service (:mod:`.supervising`), under one
:class:`~.supervisor.Supervisor` that the daemon starts, reloads and shuts down. It never
imports HTTP, the daemon, the catalog, the store or installs; what it knows reaches the
API, metrics (:mod:`.exporting`) and readiness through the daemon.
"""
