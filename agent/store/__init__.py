"""The shared tool store: entries in the actions/setup-* tool cache layout, on a volume
that many runner pods share.

Policy: an entry is visible only when complete. Installs stage on the same filesystem,
verify, fsync, rename into place, write the receipt and write the ``.complete`` marker
last; readers trust only entries with a marker and a consistent receipt. Installs of one
entry exclude each other through a lock that lives on the shared volume itself, so every
pod sees it. Everything here is blocking: the daemon calls it from threads.
"""
