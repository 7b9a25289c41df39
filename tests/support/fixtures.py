"""Archives, manifests and catalogs that the store tests install from a local server."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path
from typing import Any

import yaml

from agent.catalog import loading, requests, resolver
from agent.config import paths
from agent.install import plans, protocol
from agent.install.fetch import downloads
from agent.platform import model
from agent.store import layout
from tests.support.server import Server, ok

LINUX = model.Platform(os="linux", arch="x64", libc="glibc", package_manager="apt")


def tar_gz(files: dict[str, tuple[bytes, int]], *, top: str | None = None) -> bytes:
    """A tar.gz of ``name -> (content, mode)``, optionally under one top folder."""
    buffer = io.BytesIO()
    # mtime=0: the same files give the same bytes (gzip's header carries the time).
    with (
        gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w") as tar,
    ):
        for name, (content, mode) in files.items():
            info = tarfile.TarInfo(f"{top}/{name}" if top else name)
            info.size = len(content)
            info.mode = mode
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def fake_node(version: str) -> bytes:
    """What node's upstream tarball looks like, with a shell script as the binary."""
    script = f"#!/bin/sh\necho v{version}\n".encode()
    return tar_gz(
        {"bin/node": (script, 0o755), "README.md": (b"node\n", 0o644)},
        top=f"node-v{version}-linux-x64",
    )


def serve_node(server: Server, version: str = "20.11.1") -> str:
    """Serve node's tarball and SHASUMS256.txt under /dist/ as nodejs.org lays them out."""
    body = fake_node(version)
    name = f"node-v{version}-linux-x64.tar.gz"
    server.route(f"/dist/v{version}/{name}", ok(body))
    sums = f"{hashlib.sha256(body).hexdigest()}  {name}\n{'0' * 64}  other.tar.gz\n"
    server.route(f"/dist/v{version}/SHASUMS256.txt", ok(sums.encode()))
    return f"/dist/v{version}/{name}"


def node_plan(store_root: Path, version: str = "20.11.1") -> dict[str, Any]:
    """The bundled catalog's real plan for node@version on linux/x64/glibc."""
    catalog = loading.load([paths.bundled_catalog()])
    plan = resolver.resolve(
        [requests.parse(f"feature:node@{version}")], catalog, LINUX, store_root=str(store_root)
    )
    return plan.to_data()


def options(server: Server, **policy: Any) -> protocol.Options:
    """Installer options that send nodejs.org and example.invalid to the test server."""
    mirrors = (
        ("https://nodejs.org/dist/", server.url("/dist/")),
        ("https://example.invalid/", server.url("/x/")),
    )
    settings = {"mirrors": mirrors, "backoff_initial": 0.01, "stall_timeout": 1.0, **policy}
    return protocol.Options(lock_timeout=60, policy=downloads.Policy(**settings))


def ensure_node(store_root: Path, server: Server, version: str = "20.11.1") -> plans.Ensured:
    return plans.ensure_plan(
        layout.Store(store_root), node_plan(store_root, version), options=options(server)
    )


def archive_catalog(
    folder: Path, ident: str, body: bytes, *, fmt: str = "tar.gz"
) -> loading.Catalog:
    """A one-feature catalog whose archive (pinned by sha256) the test server serves."""
    data = {
        "id": ident,
        "name": ident,
        "versions": ["1.0.0"],
        "platforms": ["linux"],
        "toolcache_name": ident,
        "install": [
            {
                "method": "archive",
                "platforms": ["linux"],
                "url": f"https://example.invalid/{ident}-{{version}}.{fmt}",
                "sha256": {"1.0.0": {"linux": hashlib.sha256(body).hexdigest()}},
            }
        ],
        "env": {"path": ["bin"]},
    }
    (folder / ident).mkdir(parents=True, exist_ok=True)
    (folder / ident / "feature.yaml").write_text(yaml.safe_dump(data))
    return loading.load([folder])


def plan_for(catalog: loading.Catalog, ident: str, store_root: Path) -> dict[str, Any]:
    return resolver.resolve(
        [requests.parse(f"feature:{ident}")], catalog, LINUX, store_root=str(store_root)
    ).to_data()


# One process that ensures node from the test server into a store (after a barrier time,
# with posix locks or leases of the given lifetime) and prints its receipt's time.
ENSURE = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from tests.support import fixtures
    from agent.store import layout, locks
    from agent.install import plans
    from agent.install import protocol
    from agent.install.fetch import downloads

    store, base = Path(sys.argv[1]), sys.argv[2]
    barrier, lease = float(sys.argv[3]), float(sys.argv[4])
    mirrors = (("https://nodejs.org/dist/", base + "/dist/"),)
    options = protocol.Options(
        lock_timeout=120, policy=downloads.Policy(mirrors=mirrors, backoff_initial=0.01)
    )
    backend = locks.LeaseLocks(ttl=lease, poll=0.02) if lease else locks.PosixLocks()
    plan = fixtures.node_plan(store)
    while time.time() < barrier:
        time.sleep(0.001)
    print("go", flush=True)
    done = plans.ensure_plan(layout.Store(store), plan, options=options, lock_backend=backend)
    print(json.dumps({"created": done.installed[0].receipt.created}))
    """
)


def spawn(
    store: Path, server: Server, barrier: float, *, lease: float = 0.0
) -> subprocess.Popen[str]:
    """Start :data:`ENSURE` in its own process (``lease`` 0: posix locks)."""
    env = {**os.environ, "no_proxy": "127.0.0.1", "PYTHONPATH": str(Path.cwd())}
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            ENSURE,
            str(store),
            server.url("").rstrip("/"),
            str(barrier),
            str(lease),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
