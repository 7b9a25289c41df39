"""What an install fetches, verified, as the lock file pins it: a components' manifest
pinned by its own sha256, what ``artifacts.observe`` records for ``features lock`` (the
plan's URL, not a mirror's, and the bytes' sha256 and size, left in the download cache),
and a locked download whose hash or size differ refused naming both. Served by a real
loopback HTTP server (tests/install/test_components.py's manifest and archives)."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any

import pytest

from agent.install import artifacts, components
from agent.install.fetch import downloads, extracting, transport
from agent.platform import plans as wire
from agent.store import installlog, layout, receipts
from tests.install.test_components import BASE, POLICY, TWO, action, serve
from tests.support import fixtures
from tests.support.server import Server, ok

MANIFEST = "redistrib_12.8.1.json"


def files_in(cache: downloads.DownloadCache) -> list[Path]:
    """Every file under the cache, temporary ones included."""
    return sorted(p for p in cache.root.rglob("*") if p.is_file()) if cache.root.exists() else []


def served(base: str) -> bytes:
    """The manifest's body as the server serves it (one request of its own)."""
    return downloads.fetch_document(base + MANIFEST, policy=POLICY)


def components_action(base: str, **changes: Any) -> wire.ComponentsAction:
    made = {"manifest_url": base + MANIFEST, "base_url": base, "names": list(TWO), "optional": []}
    return action(**{**made, **changes})


def step_of(*actions: wire.ToolAction) -> wire.ToolStep:
    return {
        "id": "cuda", "name": "CUDA", "version": "12.8.1", "round": 1, "toolcache_name": "cuda",
        "requested_by": ["label feature:cuda@12.8.1"], "options": {},
        "env": {"path": [], "vars": {}}, "check": None, "method": "archive",
        "prefix": "/store/cuda/12.8.1/x64", "actions": list(actions),
    }  # fmt: skip


ARCHIVES = [f"/redist/{n}/linux-x86_64/{n}-linux-x86_64-1.0-archive.tar.xz" for n in TWO]
"""The paths of the component archives :func:`serve` routes for :data:`TWO`."""


@dataclasses.dataclass
class Entry:
    """Where one components install lays its entry, stages, and caches its downloads."""

    root: Path

    @property
    def tree(self) -> Path:
        return self.root / "run" / "tree"

    @property
    def staging(self) -> Path:
        return self.root / "run" / "staging"

    @property
    def cache(self) -> downloads.DownloadCache:
        return downloads.DownloadCache(self.root / "downloads")

    def install(self, made: wire.ComponentsAction) -> list[receipts.Source]:
        store = layout.Store(self.root / "store")
        self.tree.mkdir(parents=True)
        return components.install(
            made,
            staging=self.staging,
            tree=self.tree,
            cache=self.cache,
            policy=POLICY,
            limits=extracting.Limits(),
            log=installlog.InstallLog(store, store.entry("cuda", "12.8.1", "x64")),
        )


# --- a components' manifest pinned by its sha256 --------------------------------------


def test_a_manifest_with_the_locked_sha256_installs(tmp_path: Path, http_server: Server) -> None:
    base = serve(http_server, TWO)
    body = served(base)
    digest = hashlib.sha256(body).hexdigest()
    entry = Entry(tmp_path)

    sources = entry.install(components_action(base, manifest_sha256=digest))

    assert (entry.tree / "bin/nvcc").is_file()
    assert (entry.tree / "include/cuda_runtime.h").is_file()
    # The receipt names the manifest first, by its hash: what a lock pins.
    assert sources[0] == receipts.Source(base + MANIFEST, digest, len(body))
    assert [s.url.rsplit("/", 1)[-1] for s in sources[1:]] == [
        "cuda_nvcc-linux-x86_64-1.0-archive.tar.xz",
        "cuda_cudart-linux-x86_64-1.0-archive.tar.xz",
    ]
    assert [http_server.count(p) for p in ARCHIVES] == [1, 1]


def test_a_manifest_that_changed_since_the_lock_is_refused_naming_both_hashes(
    tmp_path: Path, http_server: Server
) -> None:
    base = serve(http_server, TWO)
    actual = hashlib.sha256(served(base)).hexdigest()
    locked = "0" * 64
    entry = Entry(tmp_path)

    with pytest.raises(transport.LockViolation) as caught:
        entry.install(components_action(base, manifest_sha256=locked))

    message = str(caught.value)
    assert locked in message
    assert actual in message
    assert "the lock file pins" in message
    assert "the components' manifest's sha256" in message
    assert base + MANIFEST in message
    assert (caught.value.locked, caught.value.actual) == (locked, actual)
    assert not caught.value.transient
    # Refused before any component downloads: nothing in the entry, staging or cache.
    assert list(entry.tree.iterdir()) == []
    assert not entry.staging.exists()
    assert files_in(entry.cache) == []
    assert [http_server.count(p) for p in ARCHIVES] == [0, 0]


# --- observe: what the lock records ---------------------------------------------------


def test_observe_records_a_components_manifest_by_the_plans_url_sha256_and_size(
    tmp_path: Path, http_server: Server
) -> None:
    serve(http_server, TWO)
    body = served(http_server.url("/redist/"))
    # The plan names the upstream; the mirror serves it.
    policy = dataclasses.replace(POLICY, mirrors=((BASE, http_server.url("/redist/")),))
    cache = downloads.DownloadCache(tmp_path / "downloads")

    found = artifacts.observe(step_of(components_action(BASE)), cache, policy)

    assert found == [receipts.Source(BASE + MANIFEST, hashlib.sha256(body).hexdigest(), len(body))]
    assert http_server.url("/") not in found[0].url
    # The manifest pins each component's hash: the archives are not fetched to lock it.
    assert [http_server.count(p) for p in ARCHIVES] == [0, 0]
    assert files_in(cache) == []


def test_observe_refuses_a_components_manifest_that_changed_since_the_lock(
    tmp_path: Path, http_server: Server
) -> None:
    serve(http_server, TWO)
    policy = dataclasses.replace(POLICY, mirrors=((BASE, http_server.url("/redist/")),))
    made = components_action(BASE, manifest_sha256="1" * 64)

    with pytest.raises(transport.LockViolation, match="the lock file pins 1111"):
        artifacts.observe(step_of(made), downloads.DownloadCache(tmp_path / "d"), policy)


def test_observe_refuses_a_manifest_that_lacks_a_component_the_step_needs(
    tmp_path: Path, http_server: Server
) -> None:
    serve(http_server, TWO)
    policy = dataclasses.replace(POLICY, mirrors=((BASE, http_server.url("/redist/")),))
    made = components_action(BASE, names=["cuda_nvcc", "cuda_nope"])

    with pytest.raises(components.ComponentError, match="lists no 'cuda_nope'"):
        artifacts.observe(step_of(made), downloads.DownloadCache(tmp_path / "d"), policy)


def test_observe_records_a_download_by_the_upstream_url_and_leaves_it_in_the_cache(
    tmp_path: Path, http_server: Server
) -> None:
    tarball = fixtures.serve_node(http_server)
    body = fixtures.fake_node("20.11.1")
    [step] = fixtures.node_plan(tmp_path / "store")["features"]
    [download] = [a for a in step["actions"] if a["action"] == "download"]
    assert "checksum_url" in download  # the checksum file form
    assert "sha256" not in download
    policy = fixtures.options(http_server).policy
    cache = downloads.DownloadCache(tmp_path / "downloads")

    found = artifacts.observe(step, cache, policy)

    digest = hashlib.sha256(body).hexdigest()
    assert found == [receipts.Source(download["url"], digest, len(body))]
    assert http_server.url("/") not in found[0].url  # the plan's URL, not the mirror's
    hit = cache.get(digest)
    assert hit is not None
    assert hit.read_bytes() == body
    assert http_server.count(tarball) == 1

    again = artifacts.observe(step, cache, policy)

    assert again == found
    assert http_server.count(tarball) == 1  # served from the download cache


# --- fetch: a locked download --------------------------------------------------------

BODY = b"locked archive " * 700
DIGEST = hashlib.sha256(BODY).hexdigest()


def locked(url: str, **changes: Any) -> wire.DownloadAction:
    made: wire.DownloadAction = {
        "action": "download",
        "url": url,
        "file": "tool.tgz",
        "sha256": DIGEST,
        "size": len(BODY),
        "locked": True,
    }
    made.update(changes)  # type: ignore[typeddict-item]
    return made


@pytest.fixture
def mirrored(http_server: Server) -> downloads.Policy:
    """POLICY with upstream.invalid mirrored at the server's /mirror/."""
    return dataclasses.replace(
        POLICY, mirrors=(("https://upstream.invalid/", http_server.url("/mirror/")),)
    )


UPSTREAM = "https://upstream.invalid/v1/tool.tgz"


def test_a_locked_download_of_the_locked_bytes_is_fetched(
    tmp_path: Path, http_server: Server, mirrored: downloads.Policy
) -> None:
    http_server.route("/mirror/v1/tool.tgz", ok(BODY))
    cache = downloads.DownloadCache(tmp_path / "downloads")

    artifact = artifacts.fetch(locked(UPSTREAM), cache, mirrored)

    assert (artifact.sha256, artifact.size) == (DIGEST, len(BODY))
    assert artifact.path.read_bytes() == BODY


def test_a_locked_download_whose_sha256_differs_is_refused_naming_both(
    tmp_path: Path, http_server: Server, mirrored: downloads.Policy
) -> None:
    changed = bytes([BODY[0] ^ 1]) + BODY[1:]  # as long as the locked bytes, but others
    actual = hashlib.sha256(changed).hexdigest()
    http_server.route("/mirror/v1/tool.tgz", ok(changed))
    cache = downloads.DownloadCache(tmp_path / "downloads")

    with pytest.raises(transport.LockViolation) as caught:
        artifacts.fetch(locked(UPSTREAM), cache, mirrored)

    message = str(caught.value)
    assert f"its sha256 is {actual}, but the lock file pins {DIGEST}" in message
    assert "runner-agent features lock --upgrade" in message
    assert (caught.value.locked, caught.value.actual) == (DIGEST, actual)
    assert isinstance(caught.value.__cause__, transport.ChecksumMismatch)
    assert not caught.value.transient
    assert http_server.count("/mirror/v1/tool.tgz") == 1  # not retried
    assert files_in(cache) == []


def test_a_locked_download_that_outgrows_the_locked_size_stops_there(
    tmp_path: Path, http_server: Server, mirrored: downloads.Policy
) -> None:
    http_server.route("/mirror/v1/tool.tgz", ok(BODY * 3))
    cache = downloads.DownloadCache(tmp_path / "downloads")

    with pytest.raises(transport.LockViolation) as caught:
        artifacts.fetch(locked(UPSTREAM), cache, mirrored)

    assert f"its size is over {len(BODY)}, but the lock file pins {len(BODY)}" in str(caught.value)
    assert files_in(cache) == []


def test_a_locked_download_is_refused_even_when_the_checksum_file_was_changed_to_match(
    tmp_path: Path, http_server: Server, mirrored: downloads.Policy
) -> None:
    changed = b"republished archive " * 700
    actual = hashlib.sha256(changed).hexdigest()
    http_server.route("/mirror/v1/tool.tgz", ok(changed))
    http_server.route("/mirror/v1/SHASUMS256.txt", ok(f"{actual}  tool.tgz\n".encode()))
    cache = downloads.DownloadCache(tmp_path / "downloads")
    action = locked(UPSTREAM, checksum_url="https://upstream.invalid/v1/SHASUMS256.txt")

    with pytest.raises(transport.LockViolation) as caught:
        artifacts.fetch(action, cache, mirrored)

    message = str(caught.value)
    assert actual in message
    assert f"but the lock file pins {DIGEST}" in message
    assert files_in(cache) == []


def test_an_unlocked_download_whose_sha256_differs_is_a_plain_checksum_mismatch(
    tmp_path: Path, http_server: Server, mirrored: downloads.Policy
) -> None:
    http_server.route("/mirror/v1/tool.tgz", ok(b"something else"))
    action = locked(UPSTREAM)
    del action["locked"], action["size"]

    with pytest.raises(transport.ChecksumMismatch) as caught:
        artifacts.fetch(action, downloads.DownloadCache(tmp_path / "downloads"), mirrored)

    assert not isinstance(caught.value, transport.LockViolation)
    assert "lock file" not in str(caught.value)


def test_a_locked_download_whose_size_differs_is_refused_naming_both(
    tmp_path: Path, http_server: Server, mirrored: downloads.Policy
) -> None:
    http_server.route("/mirror/v1/tool.tgz", ok(BODY))
    cache = downloads.DownloadCache(tmp_path / "downloads")

    with pytest.raises(transport.LockViolation) as caught:
        artifacts.fetch(locked(UPSTREAM, size=len(BODY) + 1), cache, mirrored)

    message = str(caught.value)
    assert f"its size is {len(BODY)}, but the lock file pins {len(BODY) + 1}" in message
    assert (caught.value.locked, caught.value.actual) == (str(len(BODY) + 1), str(len(BODY)))
    assert not caught.value.transient


def test_a_locked_size_is_checked_on_a_cache_hit_too(
    tmp_path: Path, http_server: Server, mirrored: downloads.Policy
) -> None:
    http_server.route("/mirror/v1/tool.tgz", ok(BODY))
    cache = downloads.DownloadCache(tmp_path / "downloads")
    artifacts.fetch(locked(UPSTREAM), cache, mirrored)

    with pytest.raises(transport.LockViolation, match="its size is"):
        artifacts.fetch(locked(UPSTREAM, size=len(BODY) - 1), cache, mirrored)

    assert http_server.count("/mirror/v1/tool.tgz") == 1
