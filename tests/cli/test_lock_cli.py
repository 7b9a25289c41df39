"""``runner-agent features lock`` against a real loopback server standing for nodejs.org
(through installer.mirrors): the lock records what was downloaded, ``ensure --lock``
installs exactly that, a tampered artifact is refused naming both hashes even when the
checksum file was tampered with too, ``--check`` lists stale entries without the
network, and a locked version the catalog no longer lists installs from the lock."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import yaml

from tests.support import fixtures
from tests.support.agentproc import run_cli
from tests.support.server import Server, ok

NODE_URL = "https://nodejs.org/dist/v20.11.1/node-v20.11.1-linux-x64.tar.gz"
KEY = "linux/x64/glibc"


def config(tmp_path: Path, server: Server, store: str = "store") -> Path:
    path = tmp_path / f"agent-{store}.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "cache": {"root": str(tmp_path / store)},
                "installer": {
                    "mirrors": {"https://nodejs.org/dist/": server.url("/dist/")},
                    "download_attempts": 1,
                },
            }
        )
    )
    return path


def lock_node(tmp_path: Path, server: Server, *extra: str) -> tuple[Path, dict[str, object]]:
    lock = tmp_path / "repo" / ".github" / "runner-agent.lock"
    proc = run_cli(
        "features", "lock", "--features", "node@20.11.1", "--output", str(lock),
        "--platform", KEY, "--config", str(config(tmp_path, server)), *extra,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return lock, json.loads(lock.read_text())


def test_a_lock_round_trips_and_a_tampered_artifact_is_refused(
    tmp_path: Path, http_server: Server
) -> None:
    fixtures.serve_node(http_server)
    body = fixtures.fake_node("20.11.1")
    lock, data = lock_node(tmp_path, http_server)
    assert data == {
        "features": {
            "node": {
                "20.11.1": {
                    KEY: {
                        "artifacts": [
                            {
                                "sha256": hashlib.sha256(body).hexdigest(),
                                "size": len(body),
                                "url": NODE_URL,  # the upstream's, not the mirror's
                            }
                        ],
                        "method": "archive",
                    }
                }
            }
        },
        "lockVersion": 1,
    }
    first = lock.read_bytes()
    # Written again, nothing moves: the file is canonical and the versions are kept.
    lock_node(tmp_path, http_server)
    assert lock.read_bytes() == first
    checked = run_cli(
        "features", "lock", "--check", "--features", "node@20.11.1", "--output", str(lock),
        "--config", str(config(tmp_path, http_server)),
    )  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "the lock is current: 1 entries" in checked.stderr

    # node@20 would be a newer 20.x; the lock installs 20.11.1, from a fresh store.
    installed = run_cli(
        "ensure", "--local", "--lock", str(lock), "feature:node@20",
        "--config", str(config(tmp_path, http_server, "fresh")),
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr
    assert "node/20.11.1/x64/bin" in installed.stdout

    # The mirror now serves other bytes, and a checksum file that agrees with them.
    tampered = body[:-1] + bytes([body[-1] ^ 1])  # as long as the locked bytes
    name = "node-v20.11.1-linux-x64.tar.gz"
    http_server.route(f"/dist/v20.11.1/{name}", ok(tampered))
    sums = f"{hashlib.sha256(tampered).hexdigest()}  {name}\n"
    http_server.route("/dist/v20.11.1/SHASUMS256.txt", ok(sums.encode()))
    refused = run_cli(
        "ensure", "--local", "--lock", str(lock), "feature:node@20",
        "--config", str(config(tmp_path, http_server, "other")),
    )  # fmt: skip
    assert refused.returncode == 1
    assert hashlib.sha256(tampered).hexdigest() in refused.stderr
    assert hashlib.sha256(body).hexdigest() in refused.stderr
    assert "lock file pins" in refused.stderr
    assert not (tmp_path / "other" / "node" / "20.11.1" / "x64").exists()

    # Only the artifact changed (the checksum file agrees with the lock): refused too.
    http_server.route(
        "/dist/v20.11.1/SHASUMS256.txt",
        ok(f"{hashlib.sha256(body).hexdigest()}  {name}\n".encode()),
    )
    artifact_only = run_cli(
        "ensure", "--local", "--lock", str(lock), "feature:node@20",
        "--config", str(config(tmp_path, http_server, "other")),
    )  # fmt: skip
    assert artifact_only.returncode == 1
    assert (
        f"its sha256 is {hashlib.sha256(tampered).hexdigest()}, but the lock file pins"
        in artifact_only.stderr
    )

    # A store whose entry was made from the changed upstream (no lock asked then): the
    # lock refuses that entry rather than taking it as a hit.
    http_server.route("/dist/v20.11.1/SHASUMS256.txt", ok(sums.encode()))
    unlocked = run_cli(
        "ensure", "--local", "feature:node@20.11.1",
        "--config", str(config(tmp_path, http_server, "shared")),
    )  # fmt: skip
    assert unlocked.returncode == 0, unlocked.stderr
    hit = run_cli(
        "ensure", "--local", "--lock", str(lock), "feature:node@20",
        "--config", str(config(tmp_path, http_server, "shared")),
    )  # fmt: skip
    assert hit.returncode == 1
    assert (
        f"the store's entry was made from sha256 {hashlib.sha256(tampered).hexdigest()}"
        in hit.stderr
    )


def test_check_lists_stale_entries_offline(tmp_path: Path, http_server: Server) -> None:
    fixtures.serve_node(http_server)
    lock, data = lock_node(tmp_path, http_server)
    features = data["features"]
    assert isinstance(features, dict)
    entry = features["node"]["20.11.1"][KEY]
    entry["artifacts"][0]["url"] = "https://mirror.invalid/node.tgz"
    features["node"]["20.0.99"] = {KEY: json.loads(json.dumps(entry))}
    features["node"]["20.0.99"][KEY]["artifacts"][0]["url"] = NODE_URL.replace("20.11.1", "20.0.99")
    features["jq"] = {"1.7.1": {KEY: {"artifacts": [], "method": "pip"}}}
    lock.write_text(json.dumps(data))
    paths = ["/dist/v20.11.1/SHASUMS256.txt", "/dist/v20.11.1/node-v20.11.1-linux-x64.tar.gz"]
    before = [http_server.count(p) for p in paths]
    proc = run_cli(
        "features", "lock", "--check", "--features", "node@20.11.1", "python@3.12",
        "--output", str(lock), "--config", str(config(tmp_path, http_server)),
    )  # fmt: skip
    assert proc.returncode == 1
    stale = [line for line in proc.stdout.splitlines() if line.startswith("stale: ")]
    text = "\n".join(stale)
    assert f"node 20.11.1 for {KEY}: the catalog now downloads {NODE_URL}" in text
    assert "python: not locked for linux/x64/glibc" in text
    assert f"jq 1.7.1 for {KEY}: no request uses it" in text
    assert f"node 20.0.99 for {KEY}: no request uses it" in text
    assert "stale entries" in proc.stderr
    assert [http_server.count(p) for p in paths] == before  # --check needs no network


def test_a_version_the_catalog_dropped_installs_from_the_lock(
    tmp_path: Path, http_server: Server
) -> None:
    # 20.0.99 was never a node release: as if the catalog had dropped it since.
    fixtures.serve_node(http_server, "20.0.99")
    body = fixtures.fake_node("20.0.99")
    lock = tmp_path / "runner-agent.lock"
    url = NODE_URL.replace("20.11.1", "20.0.99")
    artifact = {"sha256": hashlib.sha256(body).hexdigest(), "size": len(body), "url": url}
    lock.write_text(
        json.dumps(
            {
                "lockVersion": 1,
                "features": {
                    "node": {"20.0.99": {KEY: {"artifacts": [artifact], "method": "archive"}}}
                },
            }
        )
    )
    proc = run_cli(
        "ensure", "--local", "--lock", str(lock), "feature:node@20.0",
        "--config", str(config(tmp_path, http_server)),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "node 20.0.99 is locked but the catalog does not list it" in proc.stderr
    assert "node/20.0.99/x64/bin" in proc.stdout


def test_a_bad_lock_is_named_before_anything_installs(tmp_path: Path, http_server: Server) -> None:
    lock = tmp_path / "runner-agent.lock"
    lock.write_text('{"lockVersion": 1, "features": {"node": {"20.11.1": {"linux/x64/glibc": 1}}}}')
    proc = run_cli(
        "ensure", "--local", "--lock", str(lock), "feature:node@20",
        "--config", str(config(tmp_path, http_server)),
    )  # fmt: skip
    assert proc.returncode == 1
    assert f"{lock}: features.'node'.'20.11.1'.'linux/x64/glibc': expected an object" in proc.stderr
    assert not (tmp_path / "store" / "node").exists()
    link = tmp_path / "linked.lock"
    link.symlink_to(lock)
    linked = run_cli(
        "ensure", "--local", "--lock", str(link), "feature:node@20",
        "--config", str(config(tmp_path, http_server)),
    )  # fmt: skip
    assert linked.returncode == 1
    assert "cannot be read" in linked.stderr


def test_locking_another_platform_keeps_the_first_and_upgrade_moves_on(
    tmp_path: Path, http_server: Server
) -> None:
    fixtures.serve_node(http_server)
    x64 = fixtures.fake_node("20.11.1")
    arm = x64 + b"arm64"  # any bytes: only their hash and size are recorded
    names = {"linux-x64": x64, "linux-arm64": arm}
    sums = "".join(
        f"{hashlib.sha256(b).hexdigest()}  node-v20.11.1-{n}.tar.gz\n" for n, b in names.items()
    )
    http_server.route("/dist/v20.11.1/node-v20.11.1-linux-arm64.tar.gz", ok(arm))
    http_server.route("/dist/v20.11.1/SHASUMS256.txt", ok(sums.encode()))
    lock, _ = lock_node(tmp_path, http_server)
    # linux/arm64 (no libc given: glibc, what Linux jobs look up) is added, x64 stays.
    added = run_cli(
        "features", "lock", "--features", "node@20.11.1", "--output", str(lock),
        "--platform", "linux/arm64", "--config", str(config(tmp_path, http_server)),
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    data = json.loads(lock.read_text())
    platforms = data["features"]["node"]["20.11.1"]  # type: ignore[index]
    assert sorted(platforms) == ["linux/arm64/glibc", KEY]
    assert platforms["linux/arm64/glibc"]["artifacts"][0]["size"] == len(arm)
    # --upgrade of a feature nobody asked about, or with --check, is a usage error.
    typo = run_cli(
        "features", "lock", "--features", "node@20.11.1", "--output", str(lock),
        "--upgrade", "nodee", "--config", str(config(tmp_path, http_server)),
    )  # fmt: skip
    assert typo.returncode == 2
    assert "--upgrade nodee: no such feature" in typo.stderr
    checking = run_cli(
        "features", "lock", "--check", "--upgrade", "--features", "node@20.11.1",
        "--output", str(lock), "--config", str(config(tmp_path, http_server)),
    )  # fmt: skip
    assert checking.returncode == 2
    # The check covers both platforms the lock has, offline.
    checked = run_cli(
        "features", "lock", "--check", "--features", "node@20.11.1", "--output", str(lock),
        "--config", str(config(tmp_path, http_server)),
    )  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "the lock is current: 2 entries" in checked.stderr


def test_a_version_an_index_gave_is_locked_with_its_vars_and_checks_alone(
    tmp_path: Path, http_server: Server
) -> None:
    tag, name = "20251202", "cpython-3.14.1+20251202-x86_64-unknown-linux-gnu-install_only.tar.gz"
    # python-build-standalone's releases in GitHub's REST shape, its SHA256SUMS and the
    # archive (any bytes: the lock records their hash, nothing runs them).
    release = {"tag_name": tag, "draft": False, "prerelease": False, "assets": [{"name": name}]}
    http_server.route(
        "/repos/astral-sh/python-build-standalone/releases", ok(json.dumps([release]).encode())
    )
    body = b"python archive bytes"
    http_server.route(f"/pbs/{tag}/{name}", ok(body))
    sums = f"{hashlib.sha256(body).hexdigest()}  {name}\n".encode()
    http_server.route(f"/pbs/{tag}/SHA256SUMS", ok(sums))
    path = tmp_path / "agent.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "cache": {"root": str(tmp_path / "store")},
                "installer": {
                    "mirrors": {
                        "https://api.github.com/repos/": http_server.url("/repos/"),
                        "https://github.com/astral-sh/python-build-standalone/releases/download/": (
                            http_server.url("/pbs/")
                        ),
                    },
                    "download_attempts": 1,
                },
            }
        )
    )
    lock = tmp_path / "runner-agent.lock"
    wrote = run_cli(
        "features", "lock", "--features", "python@3.14.1", "--platform", KEY,
        "--output", str(lock), "--config", str(path),
    )  # fmt: skip
    assert wrote.returncode == 0, wrote.stderr
    entry = json.loads(lock.read_text())["features"]["python"]["3.14.1"][KEY]
    assert entry["vars"] == {"release": tag}
    assert entry["artifacts"][0]["sha256"] == hashlib.sha256(body).hexdigest()
    # No requests: each entry is checked against the catalog on its own, offline.
    fetched = http_server.count("/repos/astral-sh/python-build-standalone/releases")
    alone = run_cli("features", "lock", "--check", "--output", str(lock), "--config", str(path))
    assert alone.returncode == 0, alone.stdout + alone.stderr
    assert http_server.count("/repos/astral-sh/python-build-standalone/releases") == fetched
    data = json.loads(lock.read_text())
    data["features"]["python"]["3.14.1"][KEY]["artifacts"][0]["url"] = (
        "https://mirror.invalid/p.tgz"
    )
    lock.write_text(json.dumps(data))
    stale = run_cli("features", "lock", "--check", "--output", str(lock), "--config", str(path))
    assert stale.returncode == 1
    assert "stale: python 3.14.1 for linux/x64/glibc: the catalog now downloads" in stale.stdout
