"""TLS trust: the system's CA certificates plus an operator's extra bundle.

Policy: one context per bundle path, built once (loading the system store costs
milliseconds); the extra bundle adds to the system's trust, never replaces it. A bundle
that cannot be loaded raises :class:`TrustError`, which each caller words for its own
setting.
"""

from __future__ import annotations

import functools
import ssl


class TrustError(Exception):
    """The extra CA bundle cannot be loaded; the message says why."""


@functools.lru_cache(maxsize=8)
def context(ca_bundle: str | None) -> ssl.SSLContext:
    """A client context trusting the system's CAs and those in ``ca_bundle``."""
    ctx = ssl.create_default_context()
    if ca_bundle:
        try:
            ctx.load_verify_locations(cafile=ca_bundle)
        except (OSError, ssl.SSLError) as exc:
            raise TrustError(str(exc)) from exc
    return ctx
