"""Local stand-ins for the upstreams of the bundled ``python`` and ``node`` features and
for an npm registry, so the permission tests install real interpreters offline.

- The archives hold REAL binaries repacked in their upstream's layout: the CPython that
  runs these tests (its ``sys.base_prefix``: the executable, libpython, the standard
  library and pip, as python-build-standalone's ``install_only`` tree ``python/``) and
  the node and npm on PATH (as nodejs.org's ``node-v<V>-linux-x64/``).
- The catalog folder overrides the bundled manifests by id with only their versions
  changed to the ones repacked (and their aliases to match); everything else (URLs,
  checksum files, checks, ``writable_homes``) is the bundled manifest's.
- :func:`mirrors` maps each manifest's URL prefix (read from the manifest, never
  written here) to the local server, as ``installer.mirrors`` does for an internal
  mirror; the checksum files are served beside the archives.
- :func:`npm_package` publishes a tiny package with one bin on the local registry.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import io
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from agent.config import paths
from tests.support.server import Server, ok

_DROPPED = {"test", "idlelib", "tkinter", "turtledemo", "lib2to3", "ensurepip", "pydoc_data"}


@dataclass(frozen=True)
class Sources:
    """What the local upstream serves, and the labels that ask for it."""

    catalog: Path
    mirrors: dict[str, str]
    python_version: str
    node_version: str

    @property
    def python_label(self) -> str:
        return "feature:python@" + ".".join(self.python_version.split(".")[:2])

    @property
    def node_label(self) -> str:
        return "feature:node@" + self.node_version.split(".")[0]


def _bundled(ident: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(
        (paths.bundled_catalog() / ident / "feature.yaml").read_text()
    )
    return data


def _linux_x64(data: dict[str, Any]) -> dict[str, Any]:
    """The archive method a default install on this machine takes (node also has npm ones)."""
    [method] = [
        m
        for m in data["install"]
        if m["method"] == "archive" and "linux/x64/glibc" in m["platforms"]
    ]
    return dict(method)


def _prefix(template: str) -> str:
    """The fixed part of a URL template, before its first placeholder."""
    return template.split("{", 1)[0]


def _fill(template: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        template = template.replace("{" + key + "}", value)
    return template


def _pack(files: dict[str, Path | bytes], links: dict[str, str]) -> bytes:
    """A tar.gz of ``files`` (name in the archive -> file on disk, or an executable's
    bytes) and ``links`` (name -> target), every folder above them listed first (0755),
    as upstream archives do."""
    folders: set[str] = set()
    for name in [*files, *links]:
        parts = name.split("/")[:-1]
        folders.update("/".join(parts[: i + 1]) for i in range(len(parts)))
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz", compresslevel=1) as archive:
        for folder in sorted(folders):
            info = tarfile.TarInfo(folder)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            archive.addfile(info)
        for name, source in sorted(files.items()):
            if isinstance(source, bytes):
                info = tarfile.TarInfo(name)
                info.size, info.mode = len(source), 0o755
                archive.addfile(info, io.BytesIO(source))
            else:
                archive.add(source, arcname=name, recursive=False)
        for name, target in sorted(links.items()):
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            archive.addfile(info)
    return out.getvalue()


def _relocatable(base: Path, short: str) -> bytes:
    """The executable, its libpython looked up beside it (``$ORIGIN/../lib``, as
    python-build-standalone links it) instead of at the base's absolute lib folder, which
    the install sandbox and the runner need not see (the bytes of the RUNPATH string are
    overwritten in place: the new one is shorter, NUL-padded)."""
    data = (base / "bin" / f"python{short}").resolve().read_bytes()
    old = f"{base}/lib".encode() + b"\0"
    new = b"$ORIGIN/../lib"
    if old in data and len(new) < len(old):
        data = data.replace(old, new.ljust(len(old), b"\0"))
    return data


def _python_archive() -> bytes:
    """The running CPython as python-build-standalone's ``python/`` tree: its executable,
    libpython, the standard library (no tests, no IDLE, no tkinter) and pip alone in
    site-packages (the running pip, as site-packages of the base holds much more)."""
    base = Path(sys.base_prefix)
    short = f"{sys.version_info.major}.{sys.version_info.minor}"
    stdlib = Path(sysconfig.get_paths(vars={"base": sys.base_prefix})["stdlib"])
    files: dict[str, Path | bytes] = {f"python/bin/python{short}": _relocatable(base, short)}
    for lib in sorted((base / "lib").glob(f"libpython{short}*.so*")):
        files[f"python/lib/{lib.name}"] = lib
    top = f"python/lib/python{short}"
    for folder, dirs, names in os.walk(stdlib):
        rel = Path(folder).relative_to(stdlib)
        if rel == Path("."):
            dirs[:] = [
                d
                for d in dirs
                if d not in _DROPPED and not d.startswith(("config-", "site-", "dist-"))
            ]
            names = [n for n in names if n != "EXTERNALLY-MANAGED"]
        for name in names:
            files[f"{top}/{(rel / name).as_posix()}"] = Path(folder) / name
    pip = importlib.metadata.distribution("pip")
    site_root = Path(str(pip.locate_file("")))
    for item in pip.files or []:
        source = Path(str(pip.locate_file(item)))
        if source.is_file() and "__pycache__" not in source.parts and ".." not in item.parts:
            files[f"{top}/site-packages/{source.relative_to(site_root).as_posix()}"] = source
    return _pack(files, {"python/bin/python3": f"python{short}"})


def _node_archive(top: str) -> bytes:
    """The node and npm on PATH as nodejs.org's ``node-v<V>-linux-x64/`` tree."""
    node = Path(shutil.which("node") or "node").resolve()
    npm_root = Path(shutil.which("npm") or "npm").resolve().parents[1]  # npm/bin/npm-cli.js
    files: dict[str, Path | bytes] = {f"{top}/bin/node": node}
    for folder, _, names in os.walk(npm_root):
        rel = Path(folder).relative_to(npm_root.parent)
        for name in names:
            files[f"{top}/lib/node_modules/{(rel / name).as_posix()}"] = Path(folder) / name
    links = {f"{top}/bin/{t}": f"../lib/node_modules/npm/bin/{t}-cli.js" for t in ("npm", "npx")}
    return _pack(files, links)


def _node_version() -> str:
    done = subprocess.run(
        ["node", "--version"], capture_output=True, text=True, timeout=30, check=True
    )
    return done.stdout.strip().removeprefix("v")


def serve(server: Server, folder: Path) -> Sources:
    """Build both archives, serve them with their checksum files, write the catalog."""
    folder.mkdir(parents=True, exist_ok=True)
    python_version = ".".join(str(p) for p in sys.version_info[:3])
    node_version = _node_version()
    python, node = _bundled("python"), _bundled("node")
    py_method, node_method = _linux_x64(python), _linux_x64(node)
    release = python["versions"][0]["vars"]["release"]
    py_values = {"version": python_version, "release": release,
                 "target": py_method["targets"]["linux/x64/glibc"]}  # fmt: skip
    node_values = {"version": node_version, "target": node_method["targets"]["linux/x64/glibc"]}
    with ThreadPoolExecutor(max_workers=2) as pool:  # zlib lets both compress at once
        py_job = pool.submit(_python_archive)
        node_job = pool.submit(_node_archive, f"node-v{node_version}-linux-x64")
        archives = {"python": py_job.result(), "node": node_job.result()}
    mirrors: dict[str, str] = {}
    for ident, method, values in (
        ("python", py_method, py_values),
        ("node", node_method, node_values),
    ):
        prefix = _prefix(method["url"])
        local = server.url(f"/{ident}/")
        mirrors[prefix] = local
        url = _fill(method["url"], values)
        checksum_url = _fill(method["checksum_url"], values)
        body = archives[ident]
        name = url.rsplit("/", 1)[1]
        server.route("/" + (local + url[len(prefix) :]).split("/", 3)[3], ok(body))
        sums = f"{hashlib.sha256(body).hexdigest()}  {name}\n".encode()
        server.route("/" + (local + checksum_url[len(prefix) :]).split("/", 3)[3], ok(sums))
    python["versions"] = [{"version": python_version, "vars": {"release": release}}]
    python["aliases"] = {"stable": ".".join(python_version.split(".")[:2])}
    node["versions"] = [node_version]
    # The catalog holds only the local version, which methods pinned to others cannot serve.
    node["install"] = [m for m in node["install"] if "versions" not in m]
    node["aliases"] = {"lts": node_version.split(".")[0]}
    catalog = folder / "catalog"
    for ident, data in (("python", python), ("node", node)):
        (catalog / ident).mkdir(parents=True, exist_ok=True)
        (catalog / ident / "feature.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return Sources(catalog, mirrors, python_version, node_version)


def npm_package(server: Server, name: str, version: str = "1.0.0") -> str:
    """Publish ``name`` with a bin ``name`` printing ``<name> <version>`` on the local
    registry; the registry's URL (for ``registry=`` in an .npmrc)."""
    script = f"#!/usr/bin/env node\nconsole.log('{name} {version}');\n"
    manifest = {"name": name, "version": version, "bin": {name: "cli.js"}, "license": "MIT"}
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as archive:
        for member, text, mode in (
            ("package/package.json", json.dumps(manifest), 0o644),
            ("package/cli.js", script, 0o755),
        ):
            data = text.encode()
            info = tarfile.TarInfo(member)
            info.size, info.mode = len(data), mode
            archive.addfile(info, io.BytesIO(data))
    tarball = out.getvalue()
    tarball_url = server.route(f"/npm/{name}/-/{name}-{version}.tgz", ok(tarball))
    integrity = "sha512-" + base64.b64encode(hashlib.sha512(tarball).digest()).decode()
    document = {
        "name": name,
        "dist-tags": {"latest": version},
        "versions": {
            version: {
                **manifest,
                "dist": {
                    "tarball": tarball_url,
                    "shasum": hashlib.sha1(tarball).hexdigest(),  # noqa: S324 - npm's field
                    "integrity": integrity,
                },
            }
        },
    }
    server.route(f"/npm/{name}", ok(json.dumps(document).encode()))
    return server.url("/npm/")
