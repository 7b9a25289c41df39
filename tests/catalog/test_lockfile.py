"""The lock file's format (strict, bounded, canonical) and resolution with a lock: locked
versions win, artifacts come from the lock, a catalog that pins another hash is refused
naming both, and a version the catalog dropped still resolves, with a warning."""

from __future__ import annotations

import json

import pytest

from agent.catalog import loading, lockfile, planning, requests, resolver
from agent.config import paths
from agent.platform import model

HERE = model.Platform(os="linux", arch="x64", libc="glibc", package_manager="apt")
ARM = model.Platform(os="linux", arch="arm64", libc="glibc", package_manager="apt")
BUNDLED = loading.load([paths.bundled_catalog()])
SHA = "ab" * 32
NODE_URL = "https://nodejs.org/dist/v20.11.1/node-v20.11.1-linux-x64.tar.gz"


def node_lock(version: str = "20.11.1", url: str = NODE_URL, sha: str = SHA) -> lockfile.Lock:
    lock = lockfile.Lock()
    lock.put(
        "node",
        version,
        "linux/x64/glibc",
        lockfile.Entry("archive", (lockfile.Artifact(url, sha, 1234),)),
    )
    return lock


def plan(*texts: str, lock: lockfile.Lock | None, target: model.Platform = HERE) -> resolver.Plan:
    wanted = [requests.parse(t, allow_ranges=True, source="cli") for t in texts]
    return resolver.resolve(wanted, BUNDLED, target, store_root="/store", lock=lock)


def test_a_lock_round_trips_sorted_and_byte_identical() -> None:
    lock = node_lock()
    lock.put("jq", "1.7.1", "linux/x64/glibc", lockfile.Entry("archive", ()))
    lock.put("ruff", "0.6.9", "linux/x64/glibc", lockfile.Entry("pip"))
    text = lock.dump()
    assert text.endswith("}\n")
    assert list(json.loads(text)["features"]) == ["jq", "node", "ruff"]
    again = lockfile.parse(text)
    assert again.dump() == text
    assert again.entry("node", "20.11.1", "linux/x64/glibc") == lock.entry(
        "node", "20.11.1", "linux/x64/glibc"
    )
    assert len(again) == 3


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda d: d.update(lockVersion=2), "lockVersion is '2'"),
        (lambda d: d.update(extra=1), "unknown keys ['extra']"),
        (lambda d: d["features"]["node"]["20.11.1"]["linux/x64/glibc"]["artifacts"][0].update(
            sha256="XYZ"), "sha256 is 'XYZ'; expected 64 lowercase hex"),
        (lambda d: d["features"]["node"]["20.11.1"]["linux/x64/glibc"]["artifacts"][0].update(
            url="https://u:secret@mirror.invalid/x.tgz"), "holds credentials"),
        (lambda d: d["features"]["node"]["20.11.1"]["linux/x64/glibc"]["artifacts"][0].update(
            url="file:///etc/passwd"), "has scheme 'file'"),
        (lambda d: d["features"]["node"]["20.11.1"]["linux/x64/glibc"]["artifacts"][0].update(
            size=-1), "size is '-1'"),
        (lambda d: d["features"]["node"]["20.11.1"]["linux/x64/glibc"].update(method="curl"),
         "method is 'curl'"),
        (lambda d: d["features"]["node"].update({"not a version": {}}), "not a version"),
        (lambda d: d["features"].update({"../x": {}}), "not a feature id"),
        (lambda d: d["features"]["node"]["20.11.1"].update({"linux x64": {}}),
         "not a platform key"),
    ],
)  # fmt: skip
def test_a_bad_lock_names_the_place_and_what_was_expected(change: object, named: str) -> None:
    data = json.loads(node_lock().dump())
    change(data)  # type: ignore[operator]
    with pytest.raises(lockfile.LockError) as caught:
        lockfile.parse(json.dumps(data), source="repo/.github/runner-agent.lock")
    assert named in str(caught.value)
    assert str(caught.value).startswith("repo/.github/runner-agent.lock: ")
    assert "secret" not in str(caught.value)


def test_a_lock_is_bounded_and_must_be_json() -> None:
    with pytest.raises(lockfile.LockError, match="over the limit"):
        lockfile.parse(b" " * (lockfile.MAX_BYTES + 1))
    with pytest.raises(lockfile.LockError, match="is not JSON"):
        lockfile.parse("{")
    with pytest.raises(lockfile.LockError, match=r"nests too deeply|expected an object"):
        lockfile.parse("[" * 100_000 + "]" * 100_000)
    many = {"lockVersion": 1, "features": {f"f{n}": {} for n in range(lockfile.MAX_FEATURES + 1)}}
    with pytest.raises(lockfile.LockError, match="over the limit"):
        lockfile.from_data(many)


def test_the_locked_version_wins_and_its_artifact_comes_from_the_lock() -> None:
    newest = plan("node@20", lock=None).features[0]["version"]
    assert newest != "20.11.1"  # the catalog knows newer 20.x: the lock holds it back
    [node] = plan("node@20", lock=node_lock()).features
    assert node["version"] == "20.11.1"
    [download, _extract] = node["actions"]
    assert download == {
        "action": "download",
        "url": NODE_URL,
        "file": "node-v20.11.1-linux-x64.tar.gz",
        "sha256": SHA,
        "size": 1234,
        "locked": True,
        # The upstream's checksum file is still read: both must agree.
        "checksum_url": "https://nodejs.org/dist/v20.11.1/SHASUMS256.txt",
    }


def test_a_lock_cannot_move_where_an_artifact_comes_from() -> None:
    # The entry is shared with every repository's jobs: its bytes come from the catalog.
    elsewhere = "https://mirror.invalid/node-v20.11.1-linux-x64.tar.gz"
    with pytest.raises(resolver.ResolutionError) as caught:
        plan("node@20", lock=node_lock(url=elsewhere))
    assert f"from {elsewhere}, the catalog from {NODE_URL}" in str(caught.value)


def test_a_request_the_lock_does_not_meet_resolves_unlocked_with_a_warning() -> None:
    resolved = plan("node@22", lock=node_lock())
    assert resolved.features[0]["version"].startswith("22.")
    assert "checksum_url" in resolved.features[0]["actions"][0]
    assert any(
        "not pinned by the lock: node 22." in w and "(locked: 20.11.1)" in w
        for w in resolved.warnings
    )


def test_a_version_the_catalog_dropped_installs_from_the_lock_with_a_warning() -> None:
    url = "https://nodejs.org/dist/v20.0.99/node-v20.0.99-linux-x64.tar.gz"
    resolved = plan("node@20", lock=node_lock("20.0.99", url))
    [node] = resolved.features
    assert node["version"] == "20.0.99"
    assert node["actions"][0]["url"] == url
    assert any(
        "node 20.0.99 is locked but the catalog does not list it" in w for w in resolved.warnings
    )


def test_a_catalog_that_pins_another_hash_is_refused_naming_both() -> None:
    pinned = plan("protoc@31.1", lock=None).features[0]["actions"][0]["sha256"]
    lock = lockfile.Lock()
    url = "https://github.com/protocolbuffers/protobuf/releases/download/v31.1/protoc-31.1-linux-x86_64.zip"
    lock.put(
        "protoc",
        "31.1",
        "linux/x64/glibc",
        lockfile.Entry("archive", (lockfile.Artifact(url, SHA, 1),)),
    )
    with pytest.raises(resolver.ResolutionError) as caught:
        plan("protoc@31.1", lock=lock)
    assert SHA in str(caught.value)
    assert pinned in str(caught.value)
    assert "features lock --upgrade protoc" in str(caught.value)


def test_another_platform_than_the_locked_one_says_it_is_not_pinned() -> None:
    resolved = plan("node@20", lock=node_lock(), target=ARM)
    [node] = resolved.features
    assert node["version"] == "20.11.1"  # the version is the lock's on every platform
    assert "locked" not in node["actions"][0]
    assert any("not for linux/arm64/glibc" in w for w in resolved.warnings)


def test_an_entry_of_another_method_or_count_is_refused() -> None:
    lock = lockfile.Lock()
    lock.put("node", "20.11.1", "linux/x64/glibc", lockfile.Entry("pip"))
    with pytest.raises(resolver.ResolutionError, match="by pip, the catalog now by archive"):
        plan("node@20", lock=lock)
    lock.put("node", "20.11.1", "linux/x64/glibc", lockfile.Entry("archive", ()))
    with pytest.raises(resolver.ResolutionError, match="lists 0 artifacts"):
        plan("node@20", lock=lock)


def test_options_off_their_default_are_part_of_the_platform_key() -> None:
    assert lockfile.platform_key("linux/x64/glibc", {}) == "linux/x64/glibc"
    assert (
        lockfile.platform_key("linux/x64/glibc", {"B": "2", "A": "1"}) == "linux/x64/glibc;A=1;B=2"
    )
    [node] = plan("node@20", lock=None).features
    assert planning.lock_key(BUNDLED, node, HERE) == "linux/x64/glibc"


def test_a_locked_version_these_methods_do_not_serve_here_is_not_taken() -> None:
    # node from the npm registry on linux/arm64 serves some versions only: a locked one
    # it does not serve gets the same error as without the lock, not a plan that fails.
    unlocked = None
    try:
        plan("node@22;source=npm", lock=None, target=ARM)
    except resolver.ResolutionError as exc:
        unlocked = str(exc)
    assert unlocked is not None
    assert "cannot be installed on linux/arm64/glibc" in unlocked
    lock = lockfile.Lock()
    lock.put("node", "22.21.1", "linux/arm64/glibc;SOURCE=npm", lockfile.Entry("npm"))
    with pytest.raises(resolver.ResolutionError) as caught:
        plan("node@22;source=npm", lock=lock, target=ARM)
    assert str(caught.value) == unlocked


@pytest.mark.parametrize("value", [True, 1.0, "1"])
def test_lock_version_must_be_the_integer_1(value: object) -> None:
    with pytest.raises(lockfile.LockError, match="lockVersion is"):
        lockfile.from_data({"lockVersion": value, "features": {}})


def test_a_password_with_an_unencoded_slash_is_refused_and_never_quoted() -> None:
    data = json.loads(node_lock().dump())
    entry = data["features"]["node"]["20.11.1"]["linux/x64/glibc"]
    entry["artifacts"][0]["url"] = "https://user:s3cr/et@nodejs.org/dist/x.tgz"
    with pytest.raises(lockfile.LockError) as caught:
        lockfile.from_data(data)
    assert "holds credentials" in str(caught.value)
    assert "s3cr" not in str(caught.value)


def test_many_problems_are_cut_to_the_first_fifty() -> None:
    bad = {"lockVersion": 1, "features": {f"-{n}": {} for n in range(200)}}
    with pytest.raises(lockfile.LockError) as caught:
        lockfile.from_data(bad)
    assert len(caught.value.problems) == lockfile.MAX_PROBLEMS + 1
    assert caught.value.problems[-1] == "... and 150 more"


def test_a_version_only_the_lock_vouches_for_gets_an_entry_of_its_own() -> None:
    # protoc pins every hash in the catalog (no checksum file upstream): a version the
    # catalog does not list has nothing but the lock behind it, so no other step (no
    # lock, or another lock) can ever find its entry.
    url = "https://github.com/protocolbuffers/protobuf/releases/download/v30.0/protoc-30.0-linux-x86_64.zip"
    lock = lockfile.Lock()
    lock.put(
        "protoc",
        "30.0",
        "linux/x64/glibc",
        lockfile.Entry("archive", (lockfile.Artifact(url, SHA, 9),)),
    )
    resolved = plan("protoc@30", lock=lock)
    [protoc] = resolved.features
    assert protoc["version"] == "30.0"
    assert protoc["prefix"] == f"/store/protoc/30.0/x64-lock-{SHA[:12]}"
    assert protoc["actions"][0]["sha256"] == SHA
    assert any(
        "protoc 30.0 is locked but the catalog does not list it" in w for w in resolved.warnings
    )
    # node verifies any version against the release's SHASUMS256.txt: the usual entry.
    dropped = plan("node@20.0", lock=node_lock("20.0.99", NODE_URL.replace("20.11.1", "20.0.99")))
    assert dropped.features[0]["prefix"] == "/store/node/20.0.99/x64"


def test_pip_and_npm_features_take_no_version_the_catalog_does_not_list() -> None:
    # They install what the registry serves for the version: nothing the lock can pin.
    [listed] = plan("uv", lock=None).features
    assert listed["method"] == "pip"
    lock = lockfile.Lock()
    lock.put("uv", "0.0.1", "linux/x64/glibc", lockfile.Entry("pip"))
    resolved = plan("uv", lock=lock)
    assert resolved.features[0]["version"] == listed["version"]
    assert any("not pinned by the lock: uv" in w for w in resolved.warnings)


def test_the_lock_gives_a_version_the_vars_its_index_gave() -> None:
    # python 3.14.1 came from python-build-standalone's index with its release tag; the
    # index has moved on since, the lock has not.
    base = "https://github.com/astral-sh/python-build-standalone/releases/download/20251202"
    url = f"{base}/cpython-3.14.1+20251202-x86_64-unknown-linux-gnu-install_only.tar.gz"
    lock = lockfile.Lock()
    entry = lockfile.Entry("archive", (lockfile.Artifact(url, SHA, 9),), (("release", "20251202"),))
    lock.put("python", "3.14.1", "linux/x64/glibc", entry)
    again = lockfile.parse(lock.dump())
    assert again.vars("python", "3.14.1") == {"release": "20251202"}
    resolved = plan("python@3.14", lock=again)
    [python] = resolved.features
    assert python["version"] == "3.14.1"
    assert python["actions"][0]["url"] == url
    assert python["actions"][0]["checksum_url"] == f"{base}/SHA256SUMS"
    assert python["prefix"] == "/store/Python/3.14.1/x64"  # its checksum file verifies it
    assert resolved.vars == {"python": {"release": "20251202"}}
    # Without the vars its URL cannot be made: said so, naming what is missing.
    bare = lockfile.Lock()
    bare.put(
        "python",
        "3.14.1",
        "linux/x64/glibc",
        lockfile.Entry("archive", (lockfile.Artifact(url, SHA, 9),)),
    )
    with pytest.raises(resolver.ResolutionError, match=r"needs \{release\}, which version 3.14.1"):
        plan("python@3.14", lock=bare)


@pytest.mark.parametrize(
    "value", ["../../etc", "a/b", "x?y=1", "%2e%2e", ".hidden", "a b", "x" * 65]
)
def test_a_var_value_that_could_leave_its_url_path_is_refused(value: str) -> None:
    data = json.loads(node_lock().dump())
    data["features"]["node"]["20.11.1"]["linux/x64/glibc"]["vars"] = {"release": value}
    with pytest.raises(lockfile.LockError, match="is not a plain value"):
        lockfile.from_data(data)


def test_option_values_in_a_platform_key_survive_a_round_trip() -> None:
    key = lockfile.platform_key("linux/x64/glibc", {"FLAVOUR": "a b;c", "_X": "1"})
    assert key == "linux/x64/glibc;FLAVOUR=a%20b%3Bc;_X=1"
    lock = lockfile.Lock()
    lock.put("node", "20.11.1", key, lockfile.Entry("pip"))
    assert lockfile.parse(lock.dump()).entry("node", "20.11.1", key) == lockfile.Entry("pip")
