"""Network settings for real: a forward proxy on loopback and a TLS server signed by a
CA of the test's own, for the agent's downloads and for pip and npm."""

from __future__ import annotations

import hashlib
import os
import shutil
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.catalog import loading, requests, resolver
from agent.config import paths
from agent.install import plans, protocol
from agent.install.fetch import downloads, network
from agent.store import layout
from tests.support import fixtures
from tests.support.proxy import SOURCE, ForwardProxy
from tests.support.server import Reply, Server, ok

BODY = fixtures.tar_gz({"bin/tool": (b"#!/bin/sh\necho tool 1.0.0\n", 0o755)}, top="tool")


@pytest.fixture(scope="module")
def test_ca(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ssl.SSLContext]:
    """A CA of our own and a server certificate for 127.0.0.1 signed by it."""
    folder = tmp_path_factory.mktemp("ca")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    key = ["-newkey", "rsa:2048", "-nodes"]
    openssl("req", "-x509", *key, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=runner-agent test CA")  # fmt: skip
    openssl("req", *key, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    signer = ["-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial"]
    openssl("x509", "-req", "-in", "server.csr", *signer, "-out", "server.pem", "-days", "2",
            "-extfile", "san.ext")  # fmt: skip
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(folder / "server.pem", folder / "server.key")
    return folder / "ca.pem", context


@pytest.fixture
def proxy() -> Iterator[ForwardProxy]:
    with ForwardProxy() as running:
        yield running


def _ensure(tmp_path: Path, server: Server, net: network.Network) -> plans.Ensured:
    catalog = fixtures.archive_catalog(tmp_path / "catalog", "tool", BODY)
    store = tmp_path / "store"
    plan = fixtures.plan_for(catalog, "tool", store)
    mirrors = (("https://example.invalid/", server.url("/x/")),)
    policy = downloads.Policy(mirrors=mirrors, backoff_initial=0.01, attempts=1, network=net)
    options = protocol.Options(lock_timeout=60, policy=policy)
    return plans.ensure_plan(layout.Store(store), plan, options=options)


def test_archive_downloads_go_through_the_configured_proxy(
    tmp_path: Path, proxy: ForwardProxy
) -> None:
    with Server(only_from=SOURCE) as server:
        server.route("/x/tool-1.0.0.tar.gz", ok(BODY))
        with pytest.raises(protocol.InstallError, match="403"):
            _ensure(tmp_path / "direct", server, network.Network(http_proxy="", no_proxy=""))
        assert server.refused == 1
        assert proxy.count("GET") == 0

        done = _ensure(tmp_path / "proxied", server, network.Network(http_proxy=proxy.url))
        assert done.installed[0].receipt.sources[0].sha256 == hashlib.sha256(BODY).hexdigest()
        assert proxy.count("GET") == 1
        assert server.refused == 1


def test_no_proxy_sends_a_host_direct(tmp_path: Path, proxy: ForwardProxy) -> None:
    with Server() as server:
        server.route("/x/tool-1.0.0.tar.gz", ok(BODY))
        net = network.Network(http_proxy=proxy.url, no_proxy="localhost,127.0.0.1")
        _ensure(tmp_path, server, net)
        assert proxy.count("GET") == 0
        assert server.count("/x/tool-1.0.0.tar.gz") == 1


def test_https_through_the_proxy_trusts_the_extra_ca_only_when_configured(
    tmp_path: Path, proxy: ForwardProxy, test_ca: tuple[Path, ssl.SSLContext]
) -> None:
    ca_pem, server_tls = test_ca
    with Server(only_from=SOURCE, tls=server_tls) as server:
        server.route("/x/tool-1.0.0.tar.gz", ok(BODY))
        untrusted = network.Network(https_proxy=proxy.url)
        with pytest.raises(protocol.InstallError) as caught:
            _ensure(tmp_path / "untrusted", server, untrusted)
        assert "TLS certificate not trusted" in str(caught.value)
        assert "installer.ca_bundle" in str(caught.value)

        trusted = network.Network(https_proxy=proxy.url, ca_bundle=str(ca_pem))
        _ensure(tmp_path / "trusted", server, trusted)
        assert proxy.count("CONNECT") == 2
        assert server.count("/x/tool-1.0.0.tar.gz") == 1


def test_a_ca_bundle_without_certificates_is_named(tmp_path: Path) -> None:
    bogus = tmp_path / "not-a-ca.pem"
    bogus.write_text("hello\n")
    net = network.Network(ca_bundle=str(bogus))
    with pytest.raises(network.NetworkError, match="holds no PEM certificate"):
        net.environment(tmp_path)


def test_pip_and_npm_go_through_the_proxy(tmp_path: Path, proxy: ForwardProxy) -> None:
    """The index and registry come from pip's and npm's own configuration; the proxy
    setting reaches them (counted as CONNECT tunnels at the proxy)."""
    catalog = loading.load([paths.bundled_catalog()])
    store = tmp_path / "store"
    plan = resolver.resolve(
        [requests.parse("feature:ninja")], catalog, fixtures.LINUX, store_root=str(store)
    )
    net = network.Network(https_proxy=proxy.url, http_proxy=proxy.url, no_proxy="")
    options = protocol.Options(lock_timeout=60, policy=downloads.Policy(network=net))
    plans.ensure_plan(layout.Store(store), plan.to_data(), options=options)
    assert proxy.count("CONNECT") >= 1
    if shutil.which("npm") is None:
        assert os.environ.get("CI", "").lower() != "true", "CI installs npm"
        return
    before = proxy.count("CONNECT")
    (tmp_path / "features" / "semver").mkdir(parents=True)
    (tmp_path / "features" / "semver" / "feature.yaml").write_text(
        "id: semver\nname: semver\nversions: ['7.6.3']\nplatforms: [linux]\n"
        "install:\n  - method: npm\n    platforms: [linux]\n    packages: ['semver@{version}']\n"
        "env: {path: [bin]}\n"
    )
    npm_plan = resolver.resolve(
        [requests.parse("feature:semver")],
        loading.load([tmp_path / "features"]),
        fixtures.LINUX,
        store_root=str(store),
    )
    plans.ensure_plan(layout.Store(store), npm_plan.to_data(), options=options)
    assert proxy.count("CONNECT") > before


def test_independent_features_install_in_parallel_up_to_the_setting(tmp_path: Path) -> None:
    catalog_dir = tmp_path / "catalog"
    for ident in ("one", "two", "three"):
        fixtures.archive_catalog(catalog_dir, ident, BODY)
    catalog = loading.load([catalog_dir])
    labels = [requests.parse(f"feature:{i}") for i in ("one", "two", "three")]

    def run(parallelism: int, store: Path) -> int:
        plan = resolver.resolve(labels, catalog, fixtures.LINUX, store_root=str(store))
        with Server() as server:
            for ident in ("one", "two", "three"):
                server.route(f"/x/{ident}-1.0.0.tar.gz", Reply(body=BODY, delay=0.5))
            mirrors = (("https://example.invalid/", server.url("/x/")),)
            policy = downloads.Policy(mirrors=mirrors, network=network.Network(no_proxy="*"))
            options = protocol.Options(lock_timeout=60, policy=policy)
            done = plans.ensure_plan(
                layout.Store(store), plan.to_data(), options=options, parallelism=parallelism
            )
            assert [i.receipt.feature for i in done.installed] == ["one", "three", "two"]
            return server.max_in_flight

    assert run(1, tmp_path / "serial") == 1
    assert run(2, tmp_path / "parallel") == 2


def test_the_no_proxy_setting_replaces_the_environments(
    tmp_path: Path, proxy: ForwardProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(name, "*")  # an image that bypasses every proxy
    with Server(only_from=SOURCE) as server:
        server.route("/x/tool-1.0.0.tar.gz", ok(BODY))
        _ensure(tmp_path, server, network.Network(http_proxy=proxy.url, no_proxy=""))
        assert proxy.count("GET") == 1
        assert server.refused == 0


def test_a_named_pip_index_is_the_setting_plus_the_step_s_path() -> None:
    settings = network.Network(pip_indexes=(("pytorch", "https://mirror.test/whl/"),))
    assert settings.pip_index("pytorch", "cu128") == "https://mirror.test/whl/cu128"
    assert settings.pip_index("pytorch", "") == "https://mirror.test/whl"


def test_an_unconfigured_pip_index_names_the_setting_to_set() -> None:
    with pytest.raises(network.NetworkError) as caught:
        network.Network().pip_index("pytorch", "cu128")
    assert "installer.pip_indexes.pytorch" in str(caught.value)


@pytest.mark.parametrize(
    ("indexes", "fragment"),
    [({"PyTorch": "https://mirror.test/whl"}, "pip_indexes.PyTorch"),
     ({"pytorch": "ftp://mirror.test/whl"}, "is not an index URL")],
)  # fmt: skip
def test_a_bad_pip_index_setting_is_named(indexes: dict[str, str], fragment: str) -> None:
    from pydantic import ValidationError

    from agent.config import installer

    with pytest.raises(ValidationError) as caught:
        installer.InstallerSettings(pip_indexes=indexes)
    shown = str(caught.value).replace("\n", " ")
    assert fragment.split(".")[-1] in shown
