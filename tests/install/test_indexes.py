"""``installer.pip_index_url`` and ``installer.npm_registry`` reach pip and npm: a PEP 503
index and an npm registry, both on loopback and counted, serving packages the test builds."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
import stat
import subprocess
import tarfile
import zipfile
from pathlib import Path

import pytest
import yaml

from agent.catalog import loading, requests, resolver
from agent.install import plans, protocol
from agent.install.fetch import downloads, network
from agent.store import layout
from tests.support import fixtures
from tests.support.server import Reply, Server, ok

TOOL = b"#!/bin/sh\necho ra-probe 1.0.0\n"


def _wheel() -> bytes:
    """ra_probe 1.0.0, py3-none-any, shipping a shell script into bin/."""
    files = {
        "ra_probe/__init__.py": b"",
        "ra_probe-1.0.0.data/scripts/ra-probe": TOOL,
        "ra_probe-1.0.0.dist-info/METADATA": (
            b"Metadata-Version: 2.1\nName: ra-probe\nVersion: 1.0.0\n"
        ),
        "ra_probe-1.0.0.dist-info/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = []
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append("ra_probe-1.0.0.dist-info/RECORD,,")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            info = zipfile.ZipInfo(name)
            mode = 0o755 if "scripts" in name else 0o644
            info.external_attr = (stat.S_IFREG | mode) << 16  # pip wants the file type too
            archive.writestr(info, data)
        archive.writestr("ra_probe-1.0.0.dist-info/RECORD", "\n".join(record) + "\n")
    return buffer.getvalue()


ESCAPE = f"/etc/ra-npm-escape-{os.getpid()}"
POSTINSTALL = (
    f"id -u > installed-by; if (echo x > {ESCAPE}) 2>/dev/null; then echo escaped > outcome; "
    "else echo refused > outcome; fi"
)


def _npm_tarball() -> bytes:
    package = {
        "name": "ra-probe",
        "version": "1.0.0",
        "bin": {"ra-probe": "bin/ra-probe"},
        "scripts": {"postinstall": POSTINSTALL},
    }
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data, mode in (
            ("package/package.json", json.dumps(package).encode(), 0o644),
            ("package/bin/ra-probe", TOOL, 0o755),
        ):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _catalog(folder: Path, method: str) -> loading.Catalog:
    (folder / "ra-probe").mkdir(parents=True)
    (folder / "ra-probe" / "feature.yaml").write_text(
        yaml.safe_dump(
            {
                "id": "ra-probe",
                "name": "probe",
                "versions": ["1.0.0"],
                "platforms": ["linux"],
                "install": [
                    {"method": method, "platforms": ["linux"], "packages": ["ra-probe=={version}"]}
                    if method == "pip"
                    else {
                        "method": method,
                        "platforms": ["linux"],
                        "packages": ["ra-probe@{version}"],
                    }
                ],
                "env": {"path": ["bin"]},
                "check": {"command": ["ra-probe"], "expect": "ra-probe 1.0.0"},
            }
        )
    )
    return loading.load([folder])


def _ensure(tmp_path: Path, method: str, net: network.Network) -> plans.Ensured:
    catalog = _catalog(tmp_path / "catalog", method)
    store = tmp_path / "store"
    plan = resolver.resolve(
        [requests.parse("feature:ra-probe")], catalog, fixtures.LINUX, store_root=str(store)
    )
    options = protocol.Options(lock_timeout=60, policy=downloads.Policy(network=net))
    return plans.ensure_plan(layout.Store(store), plan.to_data(), options=options)


def test_pip_installs_from_the_configured_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    previous = os.umask(0)
    try:
        done = _pip_from_loopback_index(tmp_path)
    finally:
        os.umask(previous)
    name = "ra_probe-1.0.0-py3-none-any.whl"
    [entry] = done.installed
    assert entry.receipt.check == "ok: ra-probe 1.0.0"
    assert entry.receipt.sources[0].url.endswith(name)
    # pip ran under umask 0 (as agents in some containers do): nothing published may be
    # writable by anyone but the agent.
    loose = [
        p for p in entry.entry.path.rglob("*") if not p.is_symlink() and p.stat().st_mode & 0o022
    ]
    assert loose == []


def _pip_from_loopback_index(tmp_path: Path) -> plans.Ensured:
    wheel = _wheel()
    name = "ra_probe-1.0.0-py3-none-any.whl"
    with Server() as server:
        digest = hashlib.sha256(wheel).hexdigest()
        link = f'<a href="{server.url("/files/" + name)}#sha256={digest}">{name}</a>'
        page = f"<html><body>{link}</body></html>".encode()
        server.route(
            "/simple/ra-probe/", Reply(body=page, headers=(("Content-Type", "text/html"),))
        )
        server.route(f"/files/{name}", ok(wheel))
        net = network.Network(pip_index_url=server.url("/simple/"), no_proxy="127.0.0.1")
        done = _ensure(tmp_path, "pip", net)
        assert server.count(f"/files/{name}") == 1
    return done


def test_npm_installs_from_the_configured_registry(tmp_path: Path) -> None:
    if shutil.which("npm") is None:
        pytest.skip("needs npm")
    tarball = _npm_tarball()
    with Server() as server:
        url = server.url("/ra-probe/-/ra-probe-1.0.0.tgz")
        integrity = "sha512-" + base64.b64encode(hashlib.sha512(tarball).digest()).decode()
        packument = {
            "name": "ra-probe",
            "dist-tags": {"latest": "1.0.0"},
            "versions": {
                "1.0.0": {
                    "name": "ra-probe",
                    "version": "1.0.0",
                    "bin": {"ra-probe": "bin/ra-probe"},
                    "scripts": {"postinstall": POSTINSTALL},
                    "hasInstallScript": True,
                    "dist": {
                        "tarball": url,
                        "shasum": hashlib.sha1(tarball).hexdigest(),  # noqa: S324 - npm's field
                        "integrity": integrity,
                    },
                }
            },
        }
        server.route("/ra-probe", ok(json.dumps(packument).encode()))
        server.route("/ra-probe/-/ra-probe-1.0.0.tgz", ok(tarball))
        net = network.Network(npm_registry=server.url("/"), no_proxy="127.0.0.1")
        done = _ensure(tmp_path, "npm", net)
        assert server.count("/ra-probe/-/ra-probe-1.0.0.tgz") == 1
    [entry] = done.installed
    assert entry.receipt.check == "ok: ra-probe 1.0.0"
    ran = subprocess.run(
        [entry.entry.path / "bin" / "ra-probe"], capture_output=True, text=True, check=True
    )
    assert ran.stdout == "ra-probe 1.0.0\n"
    # The package's postinstall is registry code: as root it ran, sandboxed, as another
    # user, and could not write outside; without root it did not run at all.
    package = entry.entry.path / "lib" / "node_modules" / "ra-probe"
    assert not os.path.exists(ESCAPE)
    if os.geteuid() == 0:
        assert int((package / "installed-by").read_text()) != 0
        assert (package / "outcome").read_text() == "refused\n"
        assert (package / "outcome").stat().st_uid == 0  # the agent's again
    else:
        assert not (package / "installed-by").exists()
