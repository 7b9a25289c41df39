"""The bundled archive features installed for real by a running agent, from a loopback
mirror that serves archives shaped like the upstream's.

For each archive feature, the plan for this machine (linux/x64/glibc) names the upstream
URLs; the test builds, at the same paths, an archive of the same format with the same
top folder (what ``strip_components`` removes) and the tool at the path the manifest
puts on PATH, and the checksum file in the upstream's own format (GNU lines with other
files listed, BSD lines, a bare digest). The agent's ``installer.mirrors`` sends the
upstream hosts to the loopback server, so the real download, checksum, extraction, entry
and check run as they would against the upstream. The tool itself is a script that
answers the check as the real one does: the real binaries cannot be fetched here.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import tarfile
import urllib.parse
import zipfile
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from agent.catalog import loading, methods, patterns, requests, resolver
from agent.config import paths
from agent.platform import model
from tests.support.agentproc import Agent, Starter
from tests.support.server import Server, ok

CATALOG = loading.load([paths.bundled_catalog()])
HERE = model.Platform(os="linux", arch="x64", libc="glibc", package_manager="apt")

# The upstream's checksum file, by feature: "gnu" lines ('<sha256>  <name>', other
# files listed too), "bsd" lines ('SHA256 (<name>) = <sha256>'), "bare" (one digest).
CHECKSUM_FORMAT: dict[str, str] = {
    "dotnet": "dotnet-sha512",  # {runtime}-sha.txt: sha512, one space, CRLF, a header
    "gh": "gnu",  # gh_{version}_checksums.txt (GoReleaser)
    "git-lfs": "clearsigned",  # sha256sums.asc: shasum -b lines inside a PGP clearsign
    "go": "bare",  # go{version}.{target}.tar.gz.sha256
    "java": "gnu-one",  # <archive>.sha256.txt
    "helm": "gnu-one",  # helm-v{version}-{target}.tar.gz.sha256sum: its own line alone
    "kubectl": "bare",  # kubectl.sha256
    "node": "gnu",  # SHASUMS256.txt
    "python": "gnu",  # SHA256SUMS
    "rust": "gnu-one",  # rust-{version}-{target}.tar.gz.sha256
    "terraform": "gnu",  # terraform_{version}_SHA256SUMS
    "yq": "rhash-bsd",  # checksums-bsd: a BSD line per algorithm (SHA256, SHA512, ...)
}
# Members named ./x, as the upstream's tar lists them.
MEMBER_PREFIX: dict[str, str] = {"dotnet": "./"}
# The archive's top folder as the upstream names it (where strip_components is 1).
TOP_FOLDER: dict[str, str] = {
    "node": "node-v{version}-linux-x64",
    "python": "python",
    "rust": "rust-{version}-x86_64-unknown-linux-gnu",
    "helm": "linux-amd64",
    "gh": "gh_{version}_linux_amd64",
    "git-lfs": "git-lfs-{version}",
    "go": "go",
    "java": "jdk-{version}+{build}",
}


# Archives whose sha256 the manifest pins (the upstream publishes no checksum file): the
# test serves its archive under a copy of the manifest whose pin for this machine is the
# served archive's (a catalog path loaded after the bundled one), all else unchanged.
PINNED_TOP_FOLDER: dict[str, str] = {
    "cudnn": "cudnn-linux-x86_64-{version}_cuda{cuda}-archive",
    "gcloud-cli": "google-cloud-sdk",
    "protoc": "",  # bin/ and include/ at the zip's root
}


def archive_features(*, pinned: bool = False) -> list[str]:
    found = []
    for ident, feature in sorted(CATALOG.features.items()):
        if any(
            isinstance(m, methods.ArchiveMethod)
            and m.components is None  # the cuda toolkit: tests/catalog/test_cuda_toolkit.py
            and (m.checksum_url is None) == pinned
            and any(p.startswith("linux") for p in m.platforms)
            for m in feature.install
        ):
            found.append(ident)
    return found


def test_every_archive_feature_has_an_upstream_shape() -> None:
    assert sorted(CHECKSUM_FORMAT) == archive_features()
    assert sorted(PINNED_TOP_FOLDER) == archive_features(pinned=True)


def plan_here(ident: str, store: Path) -> dict[str, Any]:
    plan = resolver.resolve(
        [requests.parse(f"feature:{ident}")], CATALOG, HERE, store_root=str(store)
    )
    [entry] = [f for f in plan.features if f["id"] == ident]
    return entry


def tool_script(expect: str) -> bytes:
    # Answers the check's command with what the real tool prints.
    return f"#!/bin/sh\necho '{expect}'\n".encode()


def build_archive(fmt: str, files: dict[str, tuple[bytes, int]]) -> bytes:
    buffer = io.BytesIO()
    if fmt in ("tar.gz", "tar.xz"):
        with tarfile.open(fileobj=buffer, mode="w:gz" if fmt == "tar.gz" else "w:xz") as tar:
            for name, (content, mode) in files.items():
                info = tarfile.TarInfo(name)
                info.size, info.mode = len(content), mode
                tar.addfile(info, io.BytesIO(content))
    elif fmt == "zip":
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for name, (content, mode) in files.items():
                info = zipfile.ZipInfo(name)
                info.external_attr = (0o100000 | mode) << 16
                archive.writestr(info, content)
    else:
        raise AssertionError(f"no builder for {fmt}")
    return buffer.getvalue()


def checksum_file(fmt: str, name: str, body: bytes) -> bytes:
    digest = hashlib.sha256(body).hexdigest()
    if fmt == "dotnet-sha512":
        other = hashlib.sha512(b"another file").hexdigest()
        lines = [
            "Hash: SHA512",
            "",
            f"{other} another-{name}",
            f"{hashlib.sha512(body).hexdigest()} {name}",
        ]
        return ("\r\n".join(lines) + "\r\n").encode()
    if fmt == "gnu":
        other = hashlib.sha256(b"another file").hexdigest()
        return f"{other}  another-{name}\n{digest}  {name}\n".encode()
    if fmt == "gnu-one":
        return f"{digest}  {name}\n".encode()
    if fmt == "clearsigned":
        lines = ["-----BEGIN PGP SIGNED MESSAGE-----", "Hash: SHA256", ""]
        lines += [f"{'2' * 64} *another-{name}", f"{digest} *{name}"]
        lines += ["-----BEGIN PGP SIGNATURE-----", "", "iQIzBAEBCAAdFiEE", "=abcd"]
        lines += ["-----END PGP SIGNATURE-----"]
        return ("\n".join(lines) + "\n").encode()
    if fmt == "rhash-bsd":
        sha512 = hashlib.sha512(body).hexdigest()
        lines = [f"SHA256 ({name}) = {digest}", f"SHA512 ({name}) = {sha512}"]
        lines += [f"SHA3-256 ({name}) = {'ab' * 32}", f"SHA256 (another-{name}) = {'1' * 64}"]
        return ("\n".join(lines) + "\n").encode()
    if fmt == "bsd":
        return f"SHA256 (another-{name}) = {'1' * 64}\nSHA256 ({name}) = {digest}\n".encode()
    if fmt == "bare":
        return f"{digest}\n".encode()
    raise AssertionError(f"no checksum format {fmt}")


def serve_upstream(ident: str, entry: dict[str, Any], server: Server) -> dict[str, str]:
    """Serve the plan's download at its upstream path; returns the mirrors to set."""
    download = next(a for a in entry["actions"] if a["action"] == "download")
    extract = next((a for a in entry["actions"] if a["action"] == "extract"), None)
    check = entry["check"]
    command = check["argv"][0]
    prefix = Path(entry["prefix"])
    on_path = [Path(p).relative_to(prefix) for p in entry["env"]["path"]]
    inside = str(on_path[0] / command) if on_path else command
    script = tool_script(check["expect"])
    mirrors: dict[str, str] = {}

    def route(url: str, body: bytes) -> None:
        parts = urllib.parse.urlsplit(url)
        base = f"{parts.scheme}://{parts.netloc}/"
        mirrors[base] = server.url(f"/{parts.netloc}/")
        server.route(f"/{parts.netloc}{parts.path}", ok(body))

    if extract is None or extract["format"] == "binary":
        body = script
    else:
        strip = extract["strip_components"]
        fill = {
            "version": entry["version"],
            **CATALOG.features[ident].version_vars(entry["version"]),
        }
        folders = {**TOP_FOLDER, **PINNED_TOP_FOLDER}
        top = folders[ident].format(**fill) if strip else ""
        assert strip <= 1, f"{ident}: add the upstream's nested folders for strip {strip}"
        lead = f"{top}/" if top else MEMBER_PREFIX.get(ident, "")
        files = {f"{lead}{inside}": (script, 0o755), f"{lead}LICENSE": (b"license\n", 0o644)}
        for name, content in checked_files(ident, entry["version"]).items():
            files[f"{lead}{name}"] = (content, 0o644)
        if extract.get("merge"):
            # Component folders, each with its manifest.in; the tool in the first.
            first = extract["merge"][0]
            files = {
                f"{lead}{first}/{inside}": (script, 0o755),
                f"{lead}install.sh": (b"#!/bin/sh\n", 0o755),
            }
            for folder in extract["merge"]:
                files[f"{lead}{folder}/manifest.in"] = (f"file:{folder}.txt\n".encode(), 0o644)
                files[f"{lead}{folder}/share/{folder}.txt"] = (b"part\n", 0o644)
        body = build_archive(extract["format"], files)
    route(download["url"], body)
    if ident in PINNED_TOP_FOLDER:
        assert "sha256" in download, f"{ident}: the plan names a checksum file; serve it"
        mirrors["sha256"] = hashlib.sha256(body).hexdigest()
        return mirrors
    assert "checksum_url" in download, f"{ident}: the plan pins a hash; serve that instead"
    route(download["checksum_url"], checksum_file(CHECKSUM_FORMAT[ident], download["file"], body))
    return mirrors


def checked_files(ident: str, version: str) -> dict[str, bytes]:
    """Files a check reads instead of running the tool (cuDNN ships no executable: its
    check reads the version from the header, as it is written upstream)."""
    if ident == "cudnn":
        major, minor, patch = version.split(".")[:3]
        header = f"#define CUDNN_MAJOR {major}\n#define CUDNN_MINOR {minor}\n"
        header += f"#define CUDNN_PATCHLEVEL {patch}\n"
        return {"include/cudnn_version.h": header.encode()}
    return {}


def pinned_overlay(ident: str, version: str, sha256: str, folder: Path) -> Path:
    """A catalog folder with the bundled manifest of ``ident``, its pin for this machine
    and ``version`` replaced by ``sha256`` (the served archive's)."""
    source = paths.bundled_catalog() / ident / "feature.yaml"
    data = yaml.safe_load(source.read_text())
    for method in data["install"]:
        for platform in method.get("sha256", {}).get(version, {}):
            if patterns.matches(platform, HERE):
                method["sha256"][version][platform] = sha256
    (folder / ident).mkdir(parents=True)
    (folder / ident / "feature.yaml").write_text(yaml.safe_dump(data))
    return folder


async def ensure(agent: Agent, body: dict[str, Any]) -> dict[str, Any]:
    connector = aiohttp.UnixConnector(path=str(agent.socket))
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.post("http://agent/v1/ensure", json=body) as resp,
    ):
        lines = [json.loads(line) async for line in resp.content if line.strip()]
    result: dict[str, Any] = lines[-1]
    return result


@pytest.mark.parametrize("ident", archive_features() + archive_features(pinned=True))
async def test_an_archive_feature_installs_from_an_upstream_shaped_mirror(
    ident: str, start_agent: Starter, http_server: Server, tmp_path: Path
) -> None:
    config = start_agent.base_config()
    store = Path(config["cache"]["root"])
    entry = plan_here(ident, store)
    mirrors = serve_upstream(ident, entry, http_server)
    if ident in PINNED_TOP_FOLDER:
        overlay = pinned_overlay(ident, entry["version"], mirrors.pop("sha256"), tmp_path / "c")
        config["catalog"] = {"paths": [str(overlay)]}
    config["installer"] = {"mirrors": mirrors}
    agent = start_agent.start(config)
    result = await ensure(agent, {"requests": [f"feature:{ident}"]})
    assert result["ok"] is True, json.dumps(result)
    [installed] = [f for f in result["features"] if f["id"] == ident]
    assert installed["result"] == "installed"
    assert installed["entry"] == entry["prefix"]
    extract = next((a for a in entry["actions"] if a["action"] == "extract"), {})
    for folder in extract.get("merge", []):  # merged into the entry, not kept as folders
        assert (Path(installed["entry"]) / "share" / f"{folder}.txt").is_file()
        assert not (Path(installed["entry"]) / folder).exists()
    # The check, as a job would run it: with the PATH and variables the result exports.
    env = os.environ | result["env"]
    env["PATH"] = os.pathsep.join([*result["path"], "/usr/bin", "/bin"])
    done = subprocess.run(
        entry["check"]["argv"], env=env, capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr
    assert entry["check"]["expect"] in done.stdout
