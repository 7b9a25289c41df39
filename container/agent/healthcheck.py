"""The images' HEALTHCHECK: GET /healthz on the agent's own probe listener.

The address is the one the agent listens on (RUNNER_AGENT_SERVER__METRICS_ADDRESS, else
the image's default given as argv[1]); a wildcard host is reached on loopback. Exit 0
when it answers 200, else 1 (Docker's contract). Run with ``python -I``.
"""

import os
import sys
import urllib.request

address = os.environ.get("RUNNER_AGENT_SERVER__METRICS_ADDRESS") or sys.argv[1]
host, _, port = address.rpartition(":")
if host in ("", "0.0.0.0", "[::]"):  # noqa: S104 - a wildcard to reach, not to bind
    host = "127.0.0.1"
# No proxy: a container's HTTP_PROXY must not carry a loopback probe away.
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
try:
    with opener.open(f"http://{host}:{port}/healthz", timeout=4) as answer:
        sys.exit(0 if answer.status == 200 else 1)
except OSError as exc:
    print(f"healthcheck: http://{host}:{port}/healthz: {exc}", file=sys.stderr)
    sys.exit(1)
