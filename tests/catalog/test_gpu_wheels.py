"""pytorch and tensorflow installed by a running agent from loopback package indexes
shaped like theirs. pytorch: from one shaped like
PyTorch's: one PEP 503 simple index per build variant (``<base>/cu128/torch/``), wheels
named as PyTorch names them (``torch-<version>+cu128-cp313-cp313-manylinux_2_28_x86_64``)
and carrying ``torch.__version__``. The real wheels are gigabytes and the real index is
not reachable here; the variant the resolver picks from the driver decides the path the
agent's pip asks, and installer.pip_indexes.pytorch points at the loopback base.

The python feature it requires is served as python-build-standalone lays it out, with a
``bin/python3`` that runs this machine's interpreter (pip runs on it, for the wheels of
the python entry's version), and answers ``--version`` as the entry's version would.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import urllib.parse
import zipfile
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from agent.catalog import loading, requests, resolver
from agent.config import paths
from agent.platform import model
from tests.support.agentproc import Agent, Starter
from tests.support.server import Reply, Server, ok

CATALOG = loading.load([paths.bundled_catalog()])
HTML = (("Content-Type", "text/html"),)
pytestmark = pytest.mark.timeout(300)


def wheel(name: str, version: str, tag: str, files: dict[str, str]) -> tuple[str, bytes]:
    """A wheel file name and its bytes, with METADATA, WHEEL and RECORD."""
    dist = f"{name}-{version}.dist-info"
    members = dict(files)
    members[f"{dist}/METADATA"] = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    members[f"{dist}/WHEEL"] = (
        f"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: false\nTag: {tag}\n"
    )
    record = []
    for path, text in members.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        record.append(f"{path},sha256={digest.decode()},{len(text.encode())}")
    members[f"{dist}/RECORD"] = "\n".join([*record, f"{dist}/RECORD,,"]) + "\n"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path, text in members.items():
            archive.writestr(path, text)
    return f"{name}-{version}-{tag}.whl", buffer.getvalue()


def serve_index(
    server: Server, base: str, variant: str, name: str, files: list[tuple[str, bytes]]
) -> None:
    """A PEP 503 project page at <base>[/<variant>]/<name>/ and its files beside it."""
    folder = f"{base}/{variant}/{name}" if variant else f"{base}/{name}"
    links = []
    for filename, body in files:
        quoted = urllib.parse.quote(filename)
        server.route(f"{folder}/{quoted}", ok(body))
        sha = hashlib.sha256(body).hexdigest()
        links.append(f'<a href="{quoted}#sha256={sha}">{filename}</a><br/>')
    page = f"<!DOCTYPE html><html><body>{''.join(links)}</body></html>"
    server.route(f"{folder}/", Reply(body=page.encode(), headers=HTML))


def python_archive(version: str) -> bytes:
    wrapper = (
        "#!/bin/sh\n"
        f'if [ "$1" = --version ]; then echo "Python {version}"; exit 0; fi\n'
        f'RA_TEST_PYTHON_ENTRY={version} exec {sys.executable} "$@"\n'
    ).encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, content in (("python/bin/python3", wrapper), ("python/lib/README", b"lib\n")):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(content), 0o755
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def serve_python(server: Server, entry: dict[str, Any]) -> dict[str, str]:
    download = next(a for a in entry["actions"] if a["action"] == "download")
    body = python_archive(entry["version"])
    mirrors = {}
    for url, content in (
        (download["url"], body),
        (
            download["checksum_url"],
            f"{hashlib.sha256(body).hexdigest()}  {download['file']}\n".encode(),
        ),
    ):
        parts = urllib.parse.urlsplit(url)
        mirrors[f"{parts.scheme}://{parts.netloc}/"] = server.url(f"/{parts.netloc}/")
        server.route(f"/{parts.netloc}{parts.path}", ok(content))
    return mirrors


async def ensure(agent: Agent, label: str) -> dict[str, Any]:
    connector = aiohttp.UnixConnector(path=str(agent.socket))
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.post("http://agent/v1/ensure", json={"requests": [label]}) as resp,
    ):
        lines = [json.loads(line) async for line in resp.content if line.strip()]
    result: dict[str, Any] = lines[-1]
    return result


# The replayed H200 capture's driver reports CUDA 13.0 (nvmlSystemGetCudaDriverVersion
# 13000): the cu130 build; without a GPU, the cpu build.
@pytest.mark.parametrize(
    ("backend", "driver", "variant"), [("fake", "13.0", "cu130"), ("off", None, "cpu")]
)
async def test_pytorch_installs_the_driver_s_variant_from_a_pytorch_shaped_index(
    start_agent: Starter, http_server: Server, backend: str, driver: str | None, variant: str
) -> None:
    target = model.Platform(
        os="linux", arch="x64", libc="glibc", package_manager="apt", cuda_driver=driver
    )
    config = start_agent.base_config()
    store = config["cache"]["root"]
    plan = resolver.resolve([requests.parse("feature:pytorch")], CATALOG, target, store_root=store)
    python, torch = plan.features  # the python feature first: its interpreter runs pip
    assert (python["id"], torch["id"]) == ("python", "pytorch")
    [run] = torch["actions"]
    assert run["index"] == {"name": "pytorch", "path": variant}
    short = "".join(python["version"].split(".")[:2])
    version = f"{torch['version']}+{variant}"
    tag = f"cp{short}-cp{short}-manylinux_2_28_x86_64"
    # Importable only through the python entry's interpreter, as a cp313 wheel is.
    init = (
        "import os\n"
        f'assert os.environ.get("RA_TEST_PYTHON_ENTRY") == "{python["version"]}", "not the entry"\n'
        f'__version__ = "{version}"\n'
    )
    files = [wheel("torch", version, tag, {"torch/__init__.py": init})]
    # Another variant's wheel of the same version, which the agent must not take.
    other = "cu126" if variant == "cpu" else "cpu"
    decoy = [wheel("torch", f"{torch['version']}+{other}", tag, {"torch/__init__.py": "x = 1\n"})]
    serve_index(http_server, "/whl", variant, "torch", files)
    serve_index(http_server, "/whl", other, "torch", decoy)
    config["installer"] = {
        "mirrors": serve_python(http_server, python),
        "pip_indexes": {"pytorch": http_server.url("/whl")},
        # The sandbox covers /tmp, where this test's store (and its python entry) lives.
        "script_isolation": "none",
    }
    config["gpu"] = {"backend": backend}
    # A decoy of the same version where pip's own settings would also look (find-links
    # and a configuration file's extra index): the named index must be the only source.
    decoys = start_agent.workdir / "decoys"
    decoys.mkdir()
    # +zzz sorts above +cu130 and +cpu: pip would take it from any source it reads.
    name, body = wheel(
        "torch", f"{torch['version']}+zzz", tag, {"torch/__init__.py": "decoy = 1\n"}
    )
    (decoys / name).write_bytes(body)
    pip_conf = decoys / "pip.conf"
    pip_conf.write_text(f"[global]\nfind-links = {decoys}\n")
    agent = start_agent.start(
        config, env={"PIP_FIND_LINKS": str(decoys), "PIP_CONFIG_FILE": str(pip_conf)}
    )
    result = await ensure(agent, f"feature:pytorch@{torch['version']}")
    assert result["ok"] is True, json.dumps(result)[-1500:]
    assert http_server.count(f"/whl/{variant}/torch/") >= 1
    assert http_server.count(f"/whl/{other}/torch/") == 0
    installed = {f["id"]: f for f in result["features"]}
    entry = Path(installed["pytorch"]["entry"])
    assert (entry / "torch" / "__init__.py").read_text() == init
    # The check, as a job runs it.
    env = {**os.environ, "PATH": os.pathsep.join([*result["path"], "/usr/bin", "/bin"])}
    env["PYTHONPATH"] = str(entry)
    done = subprocess.run(
        torch["check"]["argv"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert torch["check"]["expect"] in done.stdout


async def test_pytorch_without_its_index_set_fails_naming_the_setting(
    start_agent: Starter, http_server: Server
) -> None:
    target = model.Platform(os="linux", arch="x64", libc="glibc", package_manager="apt")
    config = start_agent.base_config()
    plan = resolver.resolve(
        [requests.parse("feature:pytorch")], CATALOG, target, store_root=config["cache"]["root"]
    )
    config["installer"] = {"mirrors": serve_python(http_server, plan.features[0])}
    agent = start_agent.start(config)
    result = await ensure(agent, "feature:pytorch")
    assert result["ok"] is False
    assert "installer.pip_indexes.pytorch" in json.dumps(result)


async def test_tensorflow_installs_with_its_cuda_wheels_from_a_pypi_shaped_index(
    start_agent: Starter, http_server: Server
) -> None:
    """tensorflow and the NVIDIA wheels of its and-cuda extra, from the index pip is
    configured with (installer.pip_index_url here: a loopback one laid out as PyPI's
    simple API), for the python entry's version."""
    target = model.Platform(os="linux", arch="x64", libc="glibc", package_manager="apt")
    config = start_agent.base_config()
    plan = resolver.resolve(
        [requests.parse("feature:tensorflow")], CATALOG, target, store_root=config["cache"]["root"]
    )
    python, tf = plan.features
    assert (python["id"], tf["id"]) == ("python", "tensorflow")
    [run] = tf["actions"]
    short = "".join(python["version"].split(".")[:2])
    wanted = [a for a in run["argv"] if "==" in a]
    assert len(wanted) == 13  # tensorflow and the 12 NVIDIA wheels of and-cuda
    for requirement in wanted:
        name, _, version = requirement.partition("==")
        if name == "tensorflow":
            tag = f"cp{short}-cp{short}-manylinux_2_17_x86_64.manylinux2014_x86_64"
            init = (
                "import os\n"
                f'assert os.environ.get("RA_TEST_PYTHON_ENTRY") == "{python["version"]}"\n'
                f'__version__ = "{version}"\n'
            )
            files = {"tensorflow/__init__.py": init}
        else:
            tag = "py3-none-manylinux2014_x86_64"
            files = {f"nvidia/{name}.txt": version}
        serve_index(
            http_server, "/simple", "", name, [wheel(name.replace("-", "_"), version, tag, files)]
        )
    config["installer"] = {
        "mirrors": serve_python(http_server, python),
        "pip_index_url": http_server.url("/simple/"),
        "script_isolation": "none",  # the sandbox covers /tmp, where this store lives
    }
    agent = start_agent.start(config)
    result = await ensure(agent, "feature:tensorflow")
    assert result["ok"] is True, json.dumps(result)[-1500:]
    entry = Path({f["id"]: f for f in result["features"]}["tensorflow"]["entry"])
    assert (entry / "tensorflow" / "__init__.py").is_file()
    assert (entry / "nvidia" / "nvidia-cudnn-cu12.txt").read_text() == "9.3.0.75"
