"""The startup floor: the least a process built on the agent's libraries can do.

``python bench/floor.py PORT`` imports aiohttp (``aiohttp.web``), prometheus_client,
pydantic (``BaseModel``, so pydantic_core is loaded, as any use of pydantic needs) and
yaml, binds 127.0.0.1:PORT and answers every GET with 200: /metrics with
prometheus_client's default registry (so a mixed /healthz + /metrics load is comparable),
any other path with a small JSON body, until SIGTERM or SIGINT. It runs on asyncio's
default event loop and does nothing else, so ``bench/startup.py`` can compare the agent's
time to its first /healthz, its memory and its latency against it.
"""

from __future__ import annotations

import asyncio
import signal
import sys

import prometheus_client
import yaml
from aiohttp import web
from prometheus_client.aiohttp import make_aiohttp_handler
from pydantic import BaseModel

# Touch each import once so none is optimised away by a reader's eye.
_LIBS = (prometheus_client.REGISTRY, yaml.safe_load, BaseModel)


async def _ok(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _serve(port: int) -> None:
    app = web.Application()
    app.router.add_get("/metrics", make_aiohttp_handler(prometheus_client.REGISTRY))
    app.router.add_get("/{tail:.*}", _ok)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def main(argv: list[str]) -> int:
    """Serve on the port in ``argv[1]`` until a stop signal."""
    if len(argv) != 2 or not argv[1].isdigit():
        print("usage: floor.py PORT", file=sys.stderr)
        return 2
    asyncio.run(_serve(int(argv[1])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
