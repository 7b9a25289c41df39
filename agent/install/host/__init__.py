"""``system`` steps on the host: OS packages with the host's package manager.

:mod:`~agent.install.host.executor` runs a step (repository keys, index refresh, the
install, the check, or the manager's "already installed" query when the feature has no
check) through the manager's own module in :mod:`agent.platform.packagers`, which also
explains its failures; :mod:`~agent.install.host.wiring` binds the executor to the
store's downloads and lock backend (the package cache shared across hosts). Only host
mode runs these; in a sidecar they are handed back to the runner. Blocking: run it in a
thread.
"""
