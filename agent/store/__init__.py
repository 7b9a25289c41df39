"""The shared tool store: entries in the actions/setup-* tool cache layout, on a volume
that many runner pods share. This package is the cache itself; what produces entries is
:mod:`agent.install`.

Policy: an entry is visible only when complete. Installs stage on the same filesystem,
verify, fsync, rename into place, write the receipt and write the ``.complete`` marker
last (:mod:`~agent.store.publishing`); readers trust only entries with a marker and a
consistent receipt (:mod:`~agent.store.entries`). Installs of one entry exclude each
other through a lock that lives on the shared volume itself, so every pod sees it
(:mod:`~agent.store.locks`). Around that: the layout and its format
(:mod:`~agent.store.layout`), receipts, in-use leases, the inventory, eviction,
verification, the install logs, the janitor and its metrics exporter. Everything here
is blocking: the daemon calls it from threads.
"""
