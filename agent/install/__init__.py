"""The install engine: turns a plan's steps into entries of the store, and OS packages
on the host.

Layout:

- :mod:`~agent.install.coordinator`: one install per entry however many ask, at most
  ``installer.parallelism`` at once, each in a worker process; what the daemon owns;
- :mod:`~agent.install.plans`: the one plan runner (round by round) and the one result
  builder, used by the API, ``runner-agent ensure --local`` and preinstall;
- :mod:`~agent.install.protocol`: lock, stage, fetch, extract, build, check, publish;
- :mod:`~agent.install.methods`, :mod:`~agent.install.sandbox`,
  :mod:`~agent.install.running`, :mod:`~agent.install.checking`: the pip, npm and script
  builds, the script sandbox, the step runner and the feature's check;
- :mod:`agent.install.fetch`: downloads, the HTTP transport, proxies and trust, archive
  extraction;
- :mod:`agent.install.host`: ``system`` steps with the host's package manager;
- :mod:`~agent.install.workers` and :mod:`~agent.install.inprocess`: the worker processes
  (the daemon) and in-process threads (the CLI, tests, benches).

Policy: the engine takes plans as data and never imports the catalog, HTTP or the
daemon; the cache itself (layout, locks, receipts, eviction) is :mod:`agent.store`'s.
Everything but the coordinator and the plan runner blocks: they run it in threads or
worker processes.
"""
