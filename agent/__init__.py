"""runner-agent: a sidecar daemon for self-hosted GitHub Actions runners.

The package is layered, and the layers only point down (import-linter checks it):

- face: :mod:`agent.cli` (argument parsing, output formats) and :mod:`agent.daemon`
  (the one owner of startup, the engines' lifecycles and shutdown);
- HTTP: :mod:`agent.http` (probe, metrics and API listeners), which only exposes the
  engines the daemon hands it;
- engines: :mod:`agent.jobs` (the jobs' in-use leases), :mod:`agent.install` (the
  install coordinator, plan runner, methods, fetching, host packages), and below it
  :mod:`agent.store` (the shared tool cache), :mod:`agent.catalog` (manifests, labels,
  resolution; pure), :mod:`agent.services` (the supervisor) and :mod:`agent.observe`
  (metrics registry, readiness conditions, loop lag);
- ground: :mod:`agent.config` (settings, loading, reload) and :mod:`agent.platform`
  (os-release, arch, libc, package managers), on :mod:`agent.kits` (task guards,
  logging, the step executor, progress, backoff). ``platform`` and ``kits`` use the
  standard library only.

Importing the package itself is free: nothing heavy is imported here, because the
startup budget of ``runner-agent serve`` is measured against the bare libraries.
"""

__version__ = "0.1.0"
