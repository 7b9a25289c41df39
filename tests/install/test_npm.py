"""The npm method for real: a small package with a bin, from npm's configured registry."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import uuid
from pathlib import Path

import pytest
import yaml

from agent.catalog import loading, requests, resolver
from agent.install import plans, protocol
from agent.install.fetch import downloads, network
from agent.platform import model
from agent.store import layout
from tests.support.server import Server, ok

LINUX = model.Platform(os="linux", arch="x64", libc="glibc", package_manager="apt")


@pytest.fixture
def catalog(tmp_path: Path) -> loading.Catalog:
    if shutil.which("npm") is None or shutil.which("node") is None:
        pytest.skip("needs node and npm")
    folder = tmp_path / "features" / "semver"
    folder.mkdir(parents=True)
    (folder / "feature.yaml").write_text(
        yaml.safe_dump(
            {
                "id": "semver",
                "name": "semver CLI",
                "versions": ["7.6.3"],
                "platforms": ["linux"],
                "toolcache_name": "semver",
                "install": [
                    {"method": "npm", "platforms": ["linux"], "packages": ["semver@{version}"]}
                ],
                "env": {"path": ["bin"]},
                "check": {"command": ["semver", "1.2.3"], "expect": "1.2.3"},
            }
        )
    )
    return loading.load([tmp_path / "features"])


def test_an_npm_package_with_a_bin_installs_and_runs_from_elsewhere(
    tmp_path: Path, catalog: loading.Catalog
) -> None:
    store = tmp_path / "store"
    plan = resolver.resolve(
        [requests.parse("feature:semver")], catalog, LINUX, store_root=str(store)
    )
    try:
        done = plans.ensure_plan(
            layout.Store(store), plan.to_data(), options=protocol.Options(lock_timeout=60)
        )
    except protocol.InstallError as exc:
        if "ENOTFOUND" in str(exc) and os.environ.get("CI", "").lower() != "true":
            pytest.skip("the npm registry is unreachable from here")
        raise
    [entry] = done.installed
    assert entry.receipt.check == "ok: 1.2.3"
    link = entry.entry.path / "bin" / "semver"
    assert link.is_symlink()
    assert not os.path.isabs(os.readlink(link))
    copy = tmp_path / "elsewhere"
    shutil.copytree(entry.entry.path, copy, symlinks=True)
    node_dir = Path(shutil.which("node") or "/usr/bin/node").parent
    proc = subprocess.run(
        ["semver", "-r", "^7", "7.1.0"],
        env={"PATH": f"{copy / 'bin'}:{node_dir}:/usr/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert proc.stdout.strip() == "7.1.0"
    assert not list((store / ".runner-agent" / "staging").iterdir())


def test_steps_get_a_clean_environment_that_keeps_proxies_and_ca_bundles() -> None:
    from agent.install import running

    env = running.environment(
        {"FLAVOUR": "big"},
        base={
            "PATH": "/usr/bin",
            "https_proxy": "http://proxy:3128",
            "NODE_EXTRA_CA_CERTS": "/etc/ssl/extra.pem",
            "PIP_INDEX_URL": "https://mirror/simple",
            "GITHUB_TOKEN": "secret",
            "AWS_SECRET_ACCESS_KEY": "secret",
        },
    )
    assert env == {
        "PATH": "/usr/bin",
        "https_proxy": "http://proxy:3128",
        "NODE_EXTRA_CA_CERTS": "/etc/ssl/extra.pem",
        "PIP_INDEX_URL": "https://mirror/simple",
        "FLAVOUR": "big",
    }


def _tgz(files: dict[str, str]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"package/{name}")
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def serve_lurker(http_server: Server, marker: str) -> str:
    """Serve the package ``lurker``, whose postinstall tries every way out of its
    sandbox; return the registry's URL."""
    lurk = (
        f"setsid bash -c 'exec -a lurk-{marker} sleep 300' &\n"
        f"bash -c '(exec -a lurk-{marker} sleep 301 &); exit 0' &\n"
        "trap '' TERM\n"
        f"exec setsid bash -c \"trap '' TERM; exec -a lurk-{marker} sleep 302\"\n"
    )
    package = {"name": "lurker", "version": "1.0.0", "scripts": {"postinstall": "sh lurk.sh"}}
    tarball = _tgz({"package.json": json.dumps(package), "lurk.sh": lurk})
    url = http_server.route("/lurker/-/lurker-1.0.0.tgz", ok(tarball))
    packument = {
        "name": "lurker",
        "dist-tags": {"latest": "1.0.0"},
        "versions": {
            "1.0.0": {
                **package,
                "hasInstallScript": True,
                "dist": {"tarball": url, "shasum": hashlib.sha1(tarball).hexdigest()},  # noqa: S324
            }
        },
    }
    http_server.route("/lurker", ok(json.dumps(packument).encode()))
    return http_server.url("/")


def ensure_lurker(tmp_path: Path, registry: str, run_timeout: float) -> plans.Ensured:
    folder = tmp_path / "features" / "lurker"
    folder.mkdir(parents=True)
    (folder / "feature.yaml").write_text(
        yaml.safe_dump(
            {
                "id": "lurker",
                "name": "lurker",
                "versions": ["1.0.0"],
                "platforms": ["linux"],
                "install": [
                    {"method": "npm", "platforms": ["linux"], "packages": ["lurker@{version}"]}
                ],
            }
        )
    )
    store = tmp_path / "store"
    plan = resolver.resolve(
        [requests.parse("feature:lurker")],
        loading.load([tmp_path / "features"]),
        LINUX,
        store_root=str(store),
    )
    options = protocol.Options(
        lock_timeout=60,
        run_timeout=run_timeout,
        policy=downloads.Policy(network=network.Network(npm_registry=registry)),
    )
    return plans.ensure_plan(layout.Store(store), plan.to_data(), options=options)


def lurkers(marker: str) -> list[str]:
    return [p for p in os.listdir("/proc") if p.isdigit() and marker.encode() in _cmdline(p)]


needs_npm_as_root = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("npm") is None or shutil.which("node") is None,
    reason="the npm lifecycle sandbox needs root, node and npm",
)


@needs_npm_as_root
def test_a_lifecycle_script_leaves_nothing_behind_past_the_timeout(
    tmp_path: Path, http_server: Server
) -> None:
    marker = uuid.uuid4().hex
    registry = serve_lurker(http_server, marker)
    with pytest.raises(protocol.InstallError) as caught:
        ensure_lurker(tmp_path, registry, run_timeout=8)
    assert "did not finish within 8 s" in str(caught.value)
    assert http_server.count("/lurker/-/lurker-1.0.0.tgz") >= 1  # the script did get to run
    assert lurkers(marker) == []


@needs_npm_as_root
def test_a_lifecycle_script_dies_with_the_process_running_the_install(
    tmp_path: Path, http_server: Server
) -> None:
    marker = uuid.uuid4().hex
    registry = serve_lurker(http_server, marker)
    code = (
        "from pathlib import Path\n"
        "from tests.install.test_npm import ensure_lurker\n"
        f"ensure_lurker(Path({str(tmp_path)!r}), {registry!r}, run_timeout=600)\n"
    )
    installer = subprocess.Popen([sys.executable, "-c", code], cwd=Path(__file__).parents[2])
    try:
        deadline = time.monotonic() + 60
        while len(lurkers(marker)) < 3 and time.monotonic() < deadline:
            assert installer.poll() is None, "the install ended early"
            time.sleep(0.1)
        assert len(lurkers(marker)) >= 3, "the lifecycle script never got going"
    finally:
        installer.send_signal(signal.SIGKILL)
        installer.wait(timeout=30)
    deadline = time.monotonic() + 10
    while lurkers(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert lurkers(marker) == []


def _cmdline(pid: str) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""
