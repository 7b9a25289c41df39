"""The install protocol end to end: a real HTTP server, real archives, the real manifest."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import tarfile
from pathlib import Path

import pytest
import yaml

from agent.catalog import loading
from agent.install import plans, protocol
from agent.store import entries, layout, receipts
from tests.support import fixtures
from tests.support.server import Server, fail, ok, stalled, truncated


def listing(root: Path) -> list[str]:
    """Every path under the store except its scratch areas (staging, logs, locks)."""
    skip = ("/.runner-agent/staging", "/.runner-agent/logs", "/.runner-agent/locks")
    out = []
    for folder, dirs, files in os.walk(root):
        rel = "/" + os.path.relpath(folder, root)
        if rel.startswith(skip):
            continue
        out += [f"{rel}/{n}" for n in dirs + files]
    return sorted(out)


def test_a_cold_install_then_a_warm_hit(tmp_path: Path, http_server: Server) -> None:
    tarball = fixtures.serve_node(http_server)
    first = fixtures.ensure_node(tmp_path, http_server)
    [done] = first.installed
    assert not done.cached
    entry = done.entry
    assert entry.path == tmp_path / "node" / "20.11.1" / "x64"
    assert (entry.path / "bin" / "node").is_file()
    assert entry.marker.exists()
    assert first.path == [str(entry.path / "bin")]
    receipt = done.receipt
    assert receipt.check == "ok: v20.11.1"
    assert receipt.sources[0].url.endswith("/dist/v20.11.1/node-v20.11.1-linux-x64.tar.gz")
    assert receipt.env == {"path": ["bin"], "vars": {}}
    assert str(tmp_path) not in entry.receipt.read_text()  # nothing absolute in the entry
    log = (tmp_path / ".runner-agent" / "logs" / f"{entry.key}.log").read_text()
    assert [line.split()[1] for line in log.splitlines()] == [
        "stage",
        "checksum",
        "download",
        "extract",
        "check",
        "publish",
    ]
    second = fixtures.ensure_node(tmp_path, http_server)
    assert second.installed[0].cached
    assert http_server.count(tarball) == 1
    assert not list((tmp_path / ".runner-agent" / "staging").iterdir())


def test_a_second_entry_reuses_the_download_cache(tmp_path: Path, http_server: Server) -> None:
    tarball = fixtures.serve_node(http_server)
    fixtures.ensure_node(tmp_path / "one", http_server)
    store = tmp_path / "one"
    # Same artifact, another entry folder: drop the entry and install again.
    entry = layout.Store(store).entry("node", "20.11.1", "x64")
    entry.marker.unlink()
    fixtures.ensure_node(store, http_server)
    assert http_server.count(tarball) == 1


def test_a_half_published_entry_is_replaced(tmp_path: Path, http_server: Server) -> None:
    fixtures.serve_node(http_server)
    entry = layout.Store(tmp_path).entry("node", "20.11.1", "x64")
    entry.path.mkdir(parents=True)
    (entry.path / "partial").write_text("from a process that died before its marker")
    [done] = fixtures.ensure_node(tmp_path, http_server).installed
    assert not done.cached
    assert not (entry.path / "partial").exists()
    assert (entry.path / "bin" / "node").exists()


def test_a_failing_check_publishes_nothing(tmp_path: Path, http_server: Server) -> None:
    body = fixtures.fake_node("9.9.9")  # prints v9.9.9 where v20.11.1 is expected
    http_server.route(
        "/dist/v20.11.1/node-v20.11.1-linux-x64.tar.gz",
        ok(body),
    )

    sums = f"{hashlib.sha256(body).hexdigest()}  node-v20.11.1-linux-x64.tar.gz\n"
    http_server.route("/dist/v20.11.1/SHASUMS256.txt", ok(sums.encode()))
    # The tarball's top folder is named for 9.9.9; strip-components does not care.
    with pytest.raises(protocol.InstallError) as info:
        fixtures.ensure_node(tmp_path, http_server)
    assert info.value.step == "check"
    assert "expected it to print 'v20.11.1'" in str(info.value)
    assert not (tmp_path / "node").exists()


def _hostile(name: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:

        def add(info: tarfile.TarInfo, data: bytes = b"") -> None:
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        if name == "traversal":
            add(tarfile.TarInfo("../../evil"), b"x")
        elif name == "absolute":
            add(tarfile.TarInfo("/tmp/runner-agent-evil"), b"x")
        elif name == "symlink-escape":
            link = tarfile.TarInfo("link")
            link.type, link.linkname = tarfile.SYMTYPE, "../../.."
            add(link)
            add(tarfile.TarInfo("link/pwned"), b"x")
        elif name == "hardlink":
            link = tarfile.TarInfo("passwd")
            link.type, link.linkname = tarfile.LNKTYPE, "/etc/passwd"
            add(link)
        elif name == "device":
            dev = tarfile.TarInfo("dev")
            dev.type, dev.devmajor, dev.devminor = tarfile.CHRTYPE, 1, 3
            add(dev)
        elif name == "setuid":
            info = tarfile.TarInfo("bin/tool")
            info.mode = 0o4755
            add(info, b"#!/bin/sh\n")
    return buffer.getvalue()


@pytest.mark.parametrize(
    "kind", ["traversal", "absolute", "symlink-escape", "hardlink", "device", "setuid"]
)
def test_hostile_archives_are_refused_and_the_store_is_unchanged(
    tmp_path: Path, http_server: Server, kind: str
) -> None:
    store = tmp_path / "store"
    fixtures.serve_node(http_server)
    fixtures.ensure_node(store, http_server)  # something already cached must survive
    before = listing(store)
    body = _hostile(kind)
    catalog = fixtures.archive_catalog(tmp_path / "cat", "evil", body)
    http_server.route("/x/evil-1.0.0.tar.gz", ok(body))
    with pytest.raises(protocol.InstallError) as info:
        plans.ensure_plan(
            layout.Store(store),
            fixtures.plan_for(catalog, "evil", store),
            options=fixtures.options(http_server),
        )
    assert info.value.step == "extract"
    assert "refused" in str(info.value)
    after = [p for p in listing(store) if "/.runner-agent/downloads/" not in p]
    assert after == [p for p in before if "/.runner-agent/downloads/" not in p]
    assert not Path("/tmp/runner-agent-evil").exists()
    assert not list((store / ".runner-agent" / "staging").iterdir())


@pytest.mark.parametrize(
    ("replies", "step", "fragment"),
    [
        ([truncated(b"x" * 4096)], "download", "gave up after"),
        ([ok(b"not the archive at all")], "download", "sha256"),
        ([stalled(b"x" * 4096, seconds=5)], "download", "gave up after"),
    ],
)
def test_bad_transfers_fail_cleanly(
    tmp_path: Path,
    http_server: Server,
    replies: list,
    step: str,
    fragment: str,  # type: ignore[type-arg]
) -> None:
    body = fixtures.tar_gz({"bin/tool": (b"#!/bin/sh\n", 0o755)})
    catalog = fixtures.archive_catalog(tmp_path / "cat", "tool", body)
    http_server.route("/x/tool-1.0.0.tar.gz", *replies)
    store = tmp_path / "store"
    with pytest.raises(protocol.InstallError) as info:
        plans.ensure_plan(
            layout.Store(store),
            fixtures.plan_for(catalog, "tool", store),
            options=fixtures.options(http_server, attempts=2, stall_timeout=0.3),
        )
    assert info.value.step == step
    assert fragment in str(info.value)
    assert not (store / "tool").exists()
    assert not list((store / ".runner-agent" / "downloads").rglob(".*.partial"))


def test_a_500_then_a_200_installs(tmp_path: Path, http_server: Server) -> None:
    body = fixtures.tar_gz({"bin/tool": (b"#!/bin/sh\n", 0o755)})
    catalog = fixtures.archive_catalog(tmp_path / "cat", "tool", body)
    path = "/x/tool-1.0.0.tar.gz"
    http_server.route(path, fail(500), ok(body))
    store = tmp_path / "store"
    done = plans.ensure_plan(
        layout.Store(store),
        fixtures.plan_for(catalog, "tool", store),
        options=fixtures.options(http_server),
    )
    assert http_server.count(path) == 2
    assert done.installed[0].entry.marker.exists()


def test_receipts_are_json_with_sources_and_sizes(tmp_path: Path, http_server: Server) -> None:
    fixtures.serve_node(http_server)
    [done] = fixtures.ensure_node(tmp_path, http_server).installed
    data = json.loads(done.entry.receipt.read_text())
    assert data["feature"] == "node"
    assert data["platform"]["arch"] == "x64"
    assert data["sources"][0]["size"] > 0
    assert len(data["sources"][0]["sha256"]) == 64
    assert data["size"] == receipts.tree_size(done.entry.path)


def install_lone_binary(
    tmp_path: Path, http_server: Server, body: bytes, **method: str
) -> entries.Installed:
    """The one-feature catalog's lone binary, its method given ``method``, installed."""
    catalog = fixtures.archive_catalog(tmp_path / "cat", "tool", body, fmt="bin")
    if method:
        manifest = tmp_path / "cat" / "tool" / "feature.yaml"
        data = yaml.safe_load(manifest.read_text())
        data["install"][0].update(method)
        manifest.write_text(yaml.safe_dump(data))
        catalog = loading.load([tmp_path / "cat"])
        assert catalog.problems == []
    http_server.route("/x/tool-1.0.0.bin", ok(body))
    store = tmp_path / "store"
    [done] = plans.ensure_plan(
        layout.Store(store),
        fixtures.plan_for(catalog, "tool", store),
        options=fixtures.options(http_server),
    ).installed
    return done


def test_a_lone_binary_keeps_its_name(tmp_path: Path, http_server: Server) -> None:
    body = b"#!/bin/sh\necho tool 1.0.0\n"
    done = install_lone_binary(tmp_path, http_server, body)
    binary = done.entry.path / "tool-1.0.0.bin"
    assert binary.read_bytes() == body
    assert os.access(binary, os.X_OK)


def test_a_lone_binary_gets_the_manifest_s_name(tmp_path: Path, http_server: Server) -> None:
    # yq_linux_amd64 on the release page, yq on PATH.
    done = install_lone_binary(tmp_path, http_server, b"#!/bin/sh\necho 1\n", binary_name="tool")
    assert sorted(p.name for p in done.entry.path.iterdir()) == ["tool"]
    assert os.access(done.entry.path / "tool", os.X_OK)


def test_binary_name_is_refused_for_an_archive_url(tmp_path: Path) -> None:
    fixtures.archive_catalog(tmp_path / "cat", "tool", b"x")
    manifest = tmp_path / "cat" / "tool" / "feature.yaml"
    data = yaml.safe_load(manifest.read_text())
    data["install"][0]["binary_name"] = "tool"
    manifest.write_text(yaml.safe_dump(data))
    [problem] = loading.load([tmp_path / "cat"]).problems
    assert "binary_name 'tool' is for a URL that is a lone executable" in str(problem)


def secret_mirror_options(server: Server) -> protocol.Options:
    """example.invalid mirrored at the test server's /x/, behind user:password@."""
    mirror = server.url("/x/").replace("http://", "http://user:p@ss-secret@", 1)
    return fixtures.options(server, mirrors=(("https://example.invalid/", mirror),))


def test_a_mirrors_password_stays_out_of_the_receipt_and_the_install_log(
    tmp_path: Path, http_server: Server
) -> None:
    body = fixtures.tar_gz({"bin/tool": (b"#!/bin/sh\necho tool 1.0.0\n", 0o755)}, top="tool")
    catalog = fixtures.archive_catalog(tmp_path / "cat", "tool", body)
    url = http_server.route("/x/tool-1.0.0.tar.gz", ok(body))
    store = tmp_path / "store"

    [done] = plans.ensure_plan(
        layout.Store(store),
        fixtures.plan_for(catalog, "tool", store),
        options=secret_mirror_options(http_server),
    ).installed

    assert http_server.headers("/x/tool-1.0.0.tar.gz")[0]["Authorization"].startswith("Basic ")
    assert done.receipt.sources[0].url == url.replace("http://", "http://user:***@", 1)
    assert "ss-secret" not in done.entry.receipt.read_text()
    log = store / ".runner-agent" / "logs" / f"{done.entry.key}.log"
    assert "user:***@" in log.read_text()
    assert "ss-secret" not in log.read_text()


def test_a_failed_install_at_a_mirror_does_not_show_its_password(
    tmp_path: Path, http_server: Server
) -> None:
    catalog = fixtures.archive_catalog(tmp_path / "cat", "tool", b"x")
    http_server.route("/x/tool-1.0.0.tar.gz", fail(404))
    store = tmp_path / "store"

    with pytest.raises(protocol.InstallError) as info:
        plans.ensure_plan(
            layout.Store(store),
            fixtures.plan_for(catalog, "tool", store),
            options=secret_mirror_options(http_server),
        )

    assert "HTTP 404" in str(info.value)
    assert "ss-secret" not in str(info.value)
    assert info.value.log is not None
    assert "ss-secret" not in Path(info.value.log).read_text()


def test_an_install_errors_message_has_url_credentials_hidden() -> None:
    # A tool's output or an exception's text may quote an index's URL.
    error = protocol.InstallError("tool", "pip", "https://u:s3cret@127.0.0.1/simple/ refused")
    assert "s3cret" not in str(error)
    assert error.detail == "https://u:***@127.0.0.1/simple/ refused"
    assert "s3cret" not in str(pickle.loads(pickle.dumps(error)))  # noqa: S301 - our own bytes
