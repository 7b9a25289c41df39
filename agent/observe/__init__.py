"""Observability engines: the agent's metric registry, readiness conditions, loop lag.

Policy: metrics live on the agent's own ``CollectorRegistry`` (never the global one),
so tests and several agents in one process never collide. Collectors must be cheap and
non-blocking, as they run on the event loop inside the /metrics handler.
"""
