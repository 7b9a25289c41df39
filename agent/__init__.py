"""runner-agent: a sidecar daemon for self-hosted GitHub Actions runners.

The package is layered, and the layers only point down (import-linter checks it):

- face: :mod:`agent.cli` and :mod:`agent.daemon` (the one owner of startup and shutdown);
- HTTP: :mod:`agent.http` (probe, metrics and API listeners);
- engines: :mod:`agent.observe` (metrics registry, readiness conditions, loop lag);
- ground: :mod:`agent.config` (settings, loading, reload) and :mod:`agent.kits`
  (task guards, logging).

Importing the package itself is free: nothing heavy is imported here, because the
startup budget of ``runner-agent serve`` is measured against the bare libraries.
"""

__version__ = "0.1.0"
