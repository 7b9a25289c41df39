"""The jobs engine: what the agent holds for the jobs it serves.

Today: :mod:`~agent.jobs.leases`, the in-use leases that keep a running job's entries
from eviction (one lease, one refresher and one deadline per job). No aiohttp here: the
HTTP layer exposes it, and the daemon owns its lifecycle.
"""
