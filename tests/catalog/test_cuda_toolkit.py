"""The bundled cuda feature installed by a running agent from a loopback mirror shaped
like NVIDIA's redist site: ``redistrib_<release>.json`` in NVIDIA's form (the release's
real components, versions and relative paths, recorded from nixpkgs' verbatim copies in
data/cuda-redist.json; sha256 and size those of the archives served here), and at each
relative path an archive laid out as NVIDIA's: one top folder
``<component>-<platform>-<version>-archive/`` with bin/, include/, lib/ and a LICENSE.

The toolkit is the union of its components in one entry; a component that does not hash
as the JSON says is refused and nothing is published; the driver's CUDA picks the
release."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from agent.catalog import cuda, requests, resolver, versions
from agent.platform import model
from agent.store import layout, receipts
from tests.catalog.test_mirror_installs import CATALOG, HERE, build_archive, ensure
from tests.support.agentproc import Starter
from tests.support.server import Server, ok

DATA = json.loads((Path(__file__).parent / "data" / "cuda-redist.json").read_text())
SITE = "https://developer.download.nvidia.com/"


def plan(version: str, store: Path, target: model.Platform = HERE) -> dict[str, Any]:
    result = resolver.resolve(
        [requests.parse(f"feature:cuda@{version}")], CATALOG, target, store_root=str(store)
    )
    [entry] = result.features
    return entry


def component_files(name: str, release: str, version: str) -> dict[str, tuple[bytes, int]]:
    """What the component's archive holds, below its top folder."""
    major_minor = ".".join(release.split(".")[:2])
    files = {"LICENSE": (f"{name} license\n".encode(), 0o644)}
    if name == "cuda_nvcc":
        nvcc = (
            "#!/bin/sh\necho 'nvcc: NVIDIA (R) Cuda compiler driver'\n"
            f"echo 'Cuda compilation tools, release {major_minor}, V{version}'\n"
        )
        files["bin/nvcc"] = (nvcc.encode(), 0o755)
        files["include/crt/host_config.h"] = (b"/* nvcc */\n", 0o644)
    elif name == "cuda_cudart":
        files["include/cuda_runtime.h"] = (b"/* cudart */\n", 0o644)
        files["lib/libcudart.so.12"] = (b"\x7fELF", 0o755)
        files["lib/stubs/libcuda.so"] = (b"\x7fELF", 0o755)
    else:
        files[f"include/{name}.h"] = (f"/* {name} */\n".encode(), 0o644)
    return files


def serve_release(
    release: str, server: Server, *, tamper: str | None = None
) -> tuple[dict[str, str], dict[str, Any]]:
    """Serve the release's JSON and its components for linux-x86_64; the mirrors to set
    and the JSON served. ``tamper`` names a component served with other bytes."""
    recorded = DATA["releases"][release]
    document: dict[str, Any] = {
        "release_date": recorded["release_date"],
        "release_label": release,
        "release_product": "cuda",
    }
    for name, entry in recorded["components"].items():
        listed = entry["linux-x86_64"]
        top = listed["relative_path"].rsplit("/", 1)[-1].removesuffix(".tar.xz")
        files = component_files(name, release, entry["version"])
        body = build_archive("tar.xz", {f"{top}/{k}": v for k, v in files.items()})
        document[name] = {
            "name": name,
            "license": "CUDA Toolkit",
            "license_path": f"{name}/LICENSE.txt",
            "version": entry["version"],
            "linux-x86_64": {
                "relative_path": listed["relative_path"],
                "sha256": hashlib.sha256(body).hexdigest(),
                "md5": hashlib.md5(body, usedforsecurity=False).hexdigest(),
                "size": str(len(body)),  # NVIDIA writes sizes as strings
            },
        }
        served = body if name != tamper else body[:-1] + bytes([body[-1] ^ 1])
        server.route(f"/compute/cuda/redist/{listed['relative_path']}", ok(served))
    index = json.dumps(document).encode()
    server.route(f"/compute/cuda/redist/redistrib_{release}.json", ok(index))
    return {SITE: server.url("/")}, document


@pytest.mark.parametrize("release", ["12.8.1", "13.0.2"])
async def test_the_toolkit_installs_as_one_entry_from_an_nvidia_shaped_mirror(
    release: str, start_agent: Starter, http_server: Server
) -> None:
    config = start_agent.base_config()
    store = Path(config["cache"]["root"])
    entry = plan(release, store)
    mirrors, document = serve_release(release, http_server)
    config["installer"] = {"mirrors": mirrors}
    agent = start_agent.start(config)
    result = await ensure(agent, {"requests": [f"feature:cuda@{release}"]})
    assert result["ok"] is True, result
    [installed] = result["features"]
    assert installed["result"] == "installed"
    prefix = Path(installed["entry"])
    assert prefix == Path(entry["prefix"])
    [action] = entry["actions"]
    taken = [n for n in [*action["names"], *action["optional"]] if n in document]
    if release.startswith("13."):
        assert {"cuda_crt", "libnvvm"} <= set(taken)  # the optional ones 13.0 lists
    for name in taken:
        assert (prefix / "licenses" / name / "LICENSE").read_text() == f"{name} license\n"
    assert (prefix / "include" / "cuda_runtime.h").is_file()
    assert (prefix / "lib" / "stubs" / "libcuda.so").is_file()
    # Where nvcc.profile and CMake look, as NVIDIA's local installer lays it out.
    assert (prefix / "targets/x86_64-linux/include/cuda_runtime.h").is_file()
    assert (prefix / "targets/x86_64-linux/lib/stubs/libcuda.so").is_file()
    assert (prefix / "lib64" / "libcudart.so.12").is_file()
    assert not any(p.name.endswith("-archive") for p in prefix.iterdir())
    # Every component is a source of the receipt, with the JSON's sha256 and size.
    key = layout.Store(store).entry("cuda", release, "x64")
    receipt = receipts.read(key)
    assert receipt is not None
    listed = {
        "https://developer.download.nvidia.com/compute/cuda/redist/"
        + document[n]["linux-x86_64"]["relative_path"]: document[n]["linux-x86_64"]
        for n in taken
    }
    manifest, *archives = receipt.sources
    assert manifest.url.endswith(".json")  # the components' manifest, which a lock pins
    got = {s.url.replace(http_server.url("/"), SITE): s for s in archives}
    assert set(got) == set(listed)
    for url, source in got.items():
        assert source.sha256 == listed[url]["sha256"]
        assert source.size == int(listed[url]["size"])
    # The check, as a job runs it, with what the result exports.
    env = os.environ | {"PATH": os.pathsep.join([*result["path"], "/usr/bin", "/bin"])}
    done = subprocess.run(
        entry["check"]["argv"], env=env, capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr
    assert entry["check"]["expect"] in done.stdout
    assert result["env"]["CUDA_HOME"] == str(prefix)


async def test_a_component_that_does_not_hash_as_listed_is_refused(
    start_agent: Starter, http_server: Server
) -> None:
    config = start_agent.base_config()
    store = Path(config["cache"]["root"])
    entry = plan("12.8.1", store)
    mirrors, document = serve_release("12.8.1", http_server, tamper="libcublas")
    config["installer"] = {"mirrors": mirrors}
    agent = start_agent.start(config)
    result = await ensure(agent, {"requests": ["feature:cuda@12.8.1"]})
    assert result["ok"] is False
    text = json.dumps(result)
    assert document["libcublas"]["linux-x86_64"]["sha256"] in text  # the JSON's hash
    assert "libcublas-linux-x86_64-12.8.4.1-archive.tar.xz" in text
    assert not Path(entry["prefix"]).exists()  # nothing half-made is published


@pytest.mark.parametrize(
    ("driver", "release"),
    # 12.2 and 12.4 run no release cleanly: the highest of their major, through minor
    # compatibility, not the latest (13.0.2), which needs a newer major.
    [
        ("13.0", "13.0.2"),
        ("12.9", "12.8.1"),
        ("12.6", "12.6.3"),
        ("12.4", "12.8.1"),
        ("12.2", "12.8.1"),
    ],
)
def test_the_drivers_cuda_picks_the_release(driver: str, release: str, tmp_path: Path) -> None:
    target = model.Platform(
        os="linux", arch="x64", libc="glibc", package_manager="apt", cuda_driver=driver
    )
    result = resolver.resolve(
        [requests.parse("feature:cuda")], CATALOG, target, store_root=str(tmp_path)
    )
    assert [f["version"] for f in result.features] == [release]


def test_a_release_above_the_drivers_major_is_refused(tmp_path: Path) -> None:
    target = model.Platform(os="linux", arch="x64", libc="glibc", cuda_driver="12.8")
    with pytest.raises(resolver.ResolutionError, match=r"needs a driver for CUDA 13\.0"):
        resolver.resolve(
            [requests.parse("feature:cuda@13.0.2")], CATALOG, target, store_root=str(tmp_path)
        )


def test_an_older_minor_driver_gets_its_majors_release_with_the_compatibility_warning(
    tmp_path: Path,
) -> None:
    target = model.Platform(os="linux", arch="x64", libc="glibc", cuda_driver="12.2")
    result = resolver.resolve(
        [requests.parse("feature:cuda")], CATALOG, target, store_root=str(tmp_path)
    )
    assert [f["version"] for f in result.features] == ["12.8.1"]
    assert any("minor-version compatibility" in w for w in result.warnings)


def test_a_dependents_spec_no_clean_release_meets_falls_back_to_the_drivers_major() -> None:
    # A 12.6 driver runs 12.6.3 cleanly, but a dependent wants >=12.8: 12.8.1 runs with
    # the warning, where 13.0.2 (the plain latest) would not run at all.
    feature = CATALOG.features["cuda"]
    target = model.Platform(os="linux", arch="x64", libc="glibc", cuda_driver="12.6")
    wanted = [versions.parse_spec(">=12.8", allow_ranges=True)]
    assert cuda.default_version(feature, feature.versions, None, wanted, target) == "12.8.1"
    assert cuda.default_version(feature, feature.versions, None, [], target) == "12.6.3"
