"""Version indexes against a real loopback server standing for the upstream (through
installer.mirrors, as a mirror would serve it): a version only the index lists resolves
(``runner-agent plan feature:node@19``), the index is cached on the store for its TTL,
and an unreachable one falls back (to the stale copy, else to the catalog's versions)
with a note that says so.

Payloads: ``tests/catalog/data/indexes/node-dist-index.json`` is a verbatim published
copy of nodejs.org's dist/index.json (see that folder's README); the node@19 case adds,
in the same shape, one entry for v19.9.0 (a real release, 2023-04-10), since the copy
stops at v14."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from agent.catalog import loading, requests, resolver
from agent.config import paths
from agent.install.fetch import downloads
from agent.platform import model
from agent.sources import indexes
from tests.support.agentproc import run_cli
from tests.support.server import Server, fail, ok

DATA = Path(__file__).parents[1] / "catalog" / "data" / "indexes" / "node-dist-index.json"
REAL = json.loads(DATA.read_text())
NODE19 = {"version": "v19.9.0", "date": "2023-04-10", "files": ["linux-x64"], "lts": False}
SERVED = json.dumps([NODE19, *REAL]).encode()
HERE = model.Platform(os="linux", arch="x64", libc="glibc", package_manager="apt")
BUNDLED = loading.load([paths.bundled_catalog()])


def catalog() -> loading.Catalog:
    return BUNDLED


@pytest.fixture(autouse=True)
def no_failures_remembered() -> Iterator[None]:
    # A failed fetch is not retried for a minute in this process: each test starts clean.
    indexes._FAILED.clear()
    yield
    indexes._FAILED.clear()


def lookup(server: Server, store: Path, *, ttl: float = 3600.0) -> indexes.VersionIndexes:
    mirrors = (("https://nodejs.org/dist/", server.url("/dist/")),)
    policy = downloads.Policy(attempts=1, connect_timeout=2.0, stall_timeout=1.0, mirrors=mirrors)
    return indexes.VersionIndexes(store_root=store, policy=policy, ttl=ttl)


def mirrored_config(tmp_path: Path, mirrors: dict[str, str]) -> Path:
    """An agent config with its store under ``tmp_path`` and these mirrors."""
    config = tmp_path / "agent.yaml"
    data = {"cache": {"root": str(tmp_path / "store")}, "installer": {"mirrors": mirrors}}
    config.write_text(yaml.safe_dump(data))
    return config


def plan(spec: str, found: indexes.VersionIndexes) -> resolver.Plan:
    wanted = [requests.parse(f"feature:node@{spec}")]
    bundled = catalog()
    looked = found.lookup(resolver.wanting_index(wanted, bundled))
    return resolver.resolve(
        wanted,
        bundled,
        HERE,
        store_root="/store",
        notes=looked.warnings,
        indexed=looked.versions,
    )


def test_a_version_only_the_index_lists_resolves_and_the_index_is_cached(
    tmp_path: Path, http_server: Server
) -> None:
    http_server.route("/dist/index.json", ok(SERVED))
    found = lookup(http_server, tmp_path)

    [node] = plan("19", found).features
    assert node["version"] == "19.9.0"
    [download, _extract] = node["actions"]
    assert download["url"] == "https://nodejs.org/dist/v19.9.0/node-v19.9.0-linux-x64.tar.gz"
    assert download["checksum_url"] == "https://nodejs.org/dist/v19.9.0/SHASUMS256.txt"

    # From the published copy as it is: 13.x, which the catalog does not list.
    assert plan("13", found).features[0]["version"] == "13.14.0"
    assert http_server.count("/dist/index.json") == 1  # the second plan read the store
    assert list((tmp_path / ".runner-agent" / "indexes").glob("*.json"))


def test_a_version_the_catalog_lists_never_fetches_the_index(
    tmp_path: Path, http_server: Server
) -> None:
    http_server.route("/dist/index.json", ok(SERVED))
    assert plan("20", lookup(http_server, tmp_path)).features[0]["version"] == "20.19.6"
    assert http_server.count("/dist/index.json") == 0


def test_an_expired_index_is_fetched_again(tmp_path: Path, http_server: Server) -> None:
    http_server.route("/dist/index.json", ok(SERVED))
    found = lookup(http_server, tmp_path, ttl=60)
    plan("19", found)
    [cached] = (tmp_path / ".runner-agent" / "indexes").glob("*.json")
    old = time.time() - 120
    os.utime(cached, (old, old))
    plan("19", found)
    assert http_server.count("/dist/index.json") == 2


def test_an_unreachable_index_falls_back_to_the_stale_copy_with_a_note(
    tmp_path: Path, http_server: Server
) -> None:
    http_server.route("/dist/index.json", ok(SERVED), fail(503))
    found = lookup(http_server, tmp_path, ttl=60)
    plan("19", found)
    [cached] = (tmp_path / ".runner-agent" / "indexes").glob("*.json")
    old = time.time() - 120
    os.utime(cached, (old, old))

    again = plan("19", found)
    assert again.features[0]["version"] == "19.9.0"
    assert any("could not be refreshed" in w and "HTTP 503" in w for w in again.warnings)


def test_no_index_and_no_copy_leaves_the_catalog_s_versions_and_says_why(
    tmp_path: Path, http_server: Server
) -> None:
    http_server.route("/dist/index.json", ok(b"<html>not an index</html>"))
    wanted = [requests.parse("feature:node@19")]
    bundled = catalog()
    looked = lookup(http_server, tmp_path).lookup(resolver.wanting_index(wanted, bundled))
    assert looked.versions == {}
    [warning] = looked.warnings
    assert "node: its version index could not be read" in warning
    assert "only the catalog's versions are known" in warning
    assert not (tmp_path / ".runner-agent" / "indexes").exists() or not list(
        (tmp_path / ".runner-agent" / "indexes").glob("*.json")
    )  # a bad payload is never cached


def test_runner_agent_plan_resolves_node_19_against_a_served_index(
    tmp_path: Path, http_server: Server
) -> None:
    http_server.route("/dist/index.json", ok(SERVED))
    config = tmp_path / "agent.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "cache": {"root": str(tmp_path / "store")},
                "installer": {"mirrors": {"https://nodejs.org/dist/": http_server.url("/dist/")}},
            }
        )
    )
    proc = run_cli(
        "plan", "feature:node@19", "--os", "linux", "--arch", "x64", "--config", str(config)
    )
    assert proc.returncode == 0, proc.stderr
    [node] = json.loads(proc.stdout)["features"]
    assert node["version"] == "19.9.0"

    # Another store, no copy there, and an upstream that has no index: the catalog's list.
    http_server.route("/dist/index.json", fail(404))
    config.write_text(config.read_text().replace(str(tmp_path / "store"), str(tmp_path / "b")))
    missing = run_cli("plan", "feature:node@19", "--os", "linux", "--config", str(config))
    assert missing.returncode == 1
    assert "node@19: no known version matches" in missing.stderr
    assert "note: node: its version index could not be read" in missing.stderr
    assert "HTTP 404" in missing.stderr


def _cached(store: Path) -> Path:
    [cached] = (store / ".runner-agent" / "indexes").glob("*.json")
    return cached


@pytest.mark.parametrize("change", ["future", "writable", "linked"])
def test_a_cached_copy_that_is_not_believable_is_fetched_again(
    tmp_path: Path, http_server: Server, change: str
) -> None:
    http_server.route("/dist/index.json", ok(SERVED))
    found = lookup(http_server, tmp_path)
    plan("19", found)
    cached = _cached(tmp_path)
    # What a job that can write the store could plant: only 19.0.0, said to be fresh.
    cached.write_text(json.dumps([{"version": "v19.0.0"}]))
    if change == "future":
        ahead = time.time() + 10 * 365 * 86400
        os.utime(cached, (ahead, ahead))
    elif change == "writable":
        cached.chmod(0o666)
    else:
        os.link(cached, tmp_path / "hardlink")

    assert plan("19", found).features[0]["version"] == "19.9.0"
    assert http_server.count("/dist/index.json") == 2


def test_a_failed_fetch_is_not_retried_at_once(tmp_path: Path, http_server: Server) -> None:
    http_server.route("/dist/index.json", fail(503))
    found = lookup(http_server, tmp_path)
    wanted = [requests.parse("feature:node@19")]
    for _ in range(5):
        looked = found.lookup(resolver.wanting_index(wanted, BUNDLED))
        assert looked.versions == {}
    # The lookups' policy tries once; the four after the failure do not try at all.
    assert http_server.count("/dist/index.json") == 1


def test_gh_resolves_a_release_only_its_github_releases_list_names(
    tmp_path: Path, http_server: Server
) -> None:
    # GET /repos/gocardless/business/releases as dependabot recorded it, with one release
    # object of the same shape added for gh v2.60.1 (a real release, 2024-10-29).
    published = json.loads((DATA.parent / "github-business-releases.json").read_text())
    release = dict(published[-1], tag_name="v2.60.1", name="GitHub CLI 2.60.1")
    release.update(draft=False, prerelease=False)
    http_server.route("/repos/cli/cli/releases", ok(json.dumps([release, *published]).encode()))
    config = mirrored_config(
        tmp_path, {"https://api.github.com/repos/": http_server.url("/repos/")}
    )
    proc = run_cli(
        "plan", "feature:gh@2.60", "--os", "linux", "--arch", "x64", "--config", str(config)
    )
    assert proc.returncode == 0, proc.stderr
    [gh] = json.loads(proc.stdout)["features"]
    assert gh["version"] == "2.60.1"
    [download, _extract] = gh["actions"]
    base = "https://github.com/cli/cli/releases/download/v2.60.1"
    assert download["url"] == f"{base}/gh_2.60.1_linux_amd64.tar.gz"
    assert download["checksum_url"] == f"{base}/gh_2.60.1_checksums.txt"
    assert http_server.count("/repos/cli/cli/releases") == 1


def test_python_resolves_a_newer_patch_with_the_release_tag_its_index_gives(
    tmp_path: Path, http_server: Server
) -> None:
    # Two releases in GitHub's REST shape (that of github-business-releases.json), their
    # assets named as python-build-standalone names them; 3.14.1 is a real CPython release.
    def release(tag: str, versions: list[str]) -> dict[str, object]:
        names = [
            f"cpython-{v}+{tag}-x86_64-unknown-linux-gnu-install_only.tar.gz" for v in versions
        ]
        return {
            "tag_name": tag,
            "draft": False,
            "prerelease": False,
            "assets": [{"name": n, "state": "uploaded"} for n in [*names, "SHA256SUMS"]],
        }

    served = [release("20251202", ["3.14.1", "3.13.10"]), release("20251031", ["3.14.0"])]
    http_server.route(
        "/repos/astral-sh/python-build-standalone/releases", ok(json.dumps(served).encode())
    )
    config = mirrored_config(
        tmp_path, {"https://api.github.com/repos/": http_server.url("/repos/")}
    )
    proc = run_cli(
        "plan", "feature:python@3.14.1", "--os", "linux", "--arch", "x64", "--config", str(config)
    )
    assert proc.returncode == 0, proc.stderr
    [python] = json.loads(proc.stdout)["features"]
    assert python["version"] == "3.14.1"
    [download, _extract] = python["actions"]
    base = "https://github.com/astral-sh/python-build-standalone/releases/download/20251202"
    name = "cpython-3.14.1+20251202-x86_64-unknown-linux-gnu-install_only.tar.gz"
    assert download["url"] == f"{base}/{name}"
    assert download["checksum_url"] == f"{base}/SHA256SUMS"
    # A version the catalog lists keeps the catalog's own tag, and fetches nothing.
    listed = run_cli(
        "plan", "feature:python@3.14.0", "--os", "linux", "--arch", "x64", "--config", str(config)
    )
    assert "/20251031/" in json.loads(listed.stdout)["features"][0]["actions"][0]["url"]
    assert http_server.count("/repos/astral-sh/python-build-standalone/releases") == 1


def test_a_dependency_s_requirement_the_catalog_does_not_meet_consults_the_index(
    tmp_path: Path, http_server: Server
) -> None:
    from tests.catalog import factories

    http_server.route("/dist/index.json", ok(SERVED))
    ours = tmp_path / "catalog"
    factories.write(ours, factories.archive_feature("kit", requires=["node>=19,<20"]))
    both = loading.load([paths.bundled_catalog(), ours])
    wanted = [requests.parse("feature:kit@1.0.0")]
    assert [f.id for f in resolver.wanting_index(wanted, both)] == ["node"]
    looked = lookup(http_server, tmp_path / "store").lookup(resolver.wanting_index(wanted, both))
    resolved = resolver.resolve(wanted, both, HERE, store_root="/store", indexed=looked.versions)
    assert {f["id"]: f["version"] for f in resolved.features}["node"] == "19.9.0"
    # What the catalog's own list meets needs no index.
    assert resolver.wanting_index([requests.parse("feature:node@20")], both) == []
