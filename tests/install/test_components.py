"""Component archives from a JSON manifest of NVIDIA's redistrib form: what is read from
the manifest (and what is refused, by name), and how components are laid into one
entry (folders merge, each LICENSE kept apart, a path two components ship differently
fails naming both, links are never followed)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

from agent.install import components
from agent.install.fetch import downloads, extracting
from agent.platform import plans as wire
from agent.store import installlog, layout, receipts
from tests.catalog.test_mirror_installs import build_archive
from tests.support.server import Server, ok

DATA = Path(__file__).parents[1] / "catalog" / "data" / "cuda-redist.json"
BASE = "https://developer.download.nvidia.com/compute/cuda/redist/"


def action(**changes: Any) -> wire.ComponentsAction:
    made: wire.ComponentsAction = {
        "action": "components",
        "manifest_url": BASE + "redistrib_12.8.1.json",
        "base_url": BASE,
        "platform": "linux-x86_64",
        "names": ["cuda_nvcc", "cuda_cudart"],
        "optional": ["cuda_crt"],
        "dest": "/store/cuda/12.8.1/x64",
        "strip_components": 1,
    }
    made.update(changes)  # type: ignore[typeddict-item]
    return made


def real_release(release: str) -> dict[str, Any]:
    """The components of ``release`` as NVIDIA's JSON lists them (the subset recorded from
    nixpkgs' verbatim copies), with the JSON's own top-level fields and string sizes."""
    recorded = json.loads(DATA.read_text())["releases"][release]
    document: dict[str, Any] = {
        "release_date": recorded["release_date"],
        "release_label": release,
        "release_product": "cuda",
    }
    for name, entry in recorded["components"].items():
        shaped = {"name": name, "license": "CUDA Toolkit", "version": entry["version"]}
        for platform, listed in entry.items():
            if isinstance(listed, dict):
                shaped[platform] = {**listed, "size": str(listed["size"])}
        document[name] = shaped
    return document


def test_the_real_manifests_components_are_read_with_their_urls_sha256_and_sizes() -> None:
    body = json.dumps(real_release("12.8.1")).encode()
    found, absent = components.parse(body, action())
    nvcc = found[0]
    assert nvcc.name == "cuda_nvcc"
    assert nvcc.url == BASE + "cuda_nvcc/linux-x86_64/cuda_nvcc-linux-x86_64-12.8.93-archive.tar.xz"
    assert nvcc.sha256 == "9961b3484b6b71314063709a4f9529654f96782ad39e72bf1e00f070db8210d3"
    assert nvcc.size == 79015464
    assert nvcc.format == "tar.xz"
    assert [c.name for c in found] == ["cuda_nvcc", "cuda_cudart"]
    assert absent == ["cuda_crt"]  # split out of cuda_nvcc in 13.0 only


def test_an_optional_component_is_taken_where_the_release_lists_it() -> None:
    body = json.dumps(real_release("13.0.2")).encode()
    found, absent = components.parse(body, action(platform="linux-sbsa"))
    assert [c.name for c in found] == ["cuda_nvcc", "cuda_cudart", "cuda_crt"]
    assert absent == []
    assert "/linux-sbsa/cuda_crt-linux-sbsa-13.0.88-archive.tar.xz" in found[2].url


def test_a_required_component_the_release_lacks_is_named_with_what_it_has() -> None:
    body = json.dumps(real_release("12.8.1")).encode()
    with pytest.raises(components.ComponentError) as caught:
        components.parse(body, action(names=["cuda_nvcc", "cuda_nope"]))
    message = str(caught.value)
    assert "no 'cuda_nope' for 'linux-x86_64'" in message
    assert "redistrib_12.8.1.json" in message
    assert "cuda_cccl" in message  # what the release lists
    assert "cuda_nvcc" in message


def test_a_platform_the_release_lacks_is_named() -> None:
    body = json.dumps(real_release("12.8.1")).encode()
    with pytest.raises(components.ComponentError, match="lists nothing for that platform"):
        components.parse(body, action(platform="linux-ppc64le"))


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"not json", "is not JSON"),
        (b"[1, 2]", "is a JSON list; expected an object of components"),
        (b'{"cuda_nvcc": {"linux-x86_64": "x"}}', "is not an object with relative_path"),
    ],
)
def test_a_manifest_of_the_wrong_shape_is_refused(body: bytes, expected: str) -> None:
    with pytest.raises(components.ComponentError, match=expected):
        components.parse(body, action(names=["cuda_nvcc"], optional=[]))


GOOD = {"relative_path": "cuda_nvcc/linux-x86_64/a.tar.xz", "sha256": "a" * 64, "size": "10"}


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"relative_path": "../../etc/a.tar.xz"}, "relative_path is '../../etc/a.tar.xz'"),
        ({"relative_path": "/etc/a.tar.xz"}, "expected a relative path of plain names"),
        ({"relative_path": "cuda_nvcc//a.tar.xz"}, "expected a relative path"),
        ({"relative_path": "cuda_nvcc/a.exe"}, "ending in .tar.xz"),
        ({"relative_path": "a\nb.tar.xz"}, "relative_path is 'a\\nb.tar.xz'"),
        ({"relative_path": 7}, "relative_path is '7'"),
        ({"sha256": "A" * 64}, "sha256 is 'AAAA"),
        ({"sha256": None}, "sha256 is 'None'"),
        ({"size": "-1"}, "size is '-1'; expected a byte count"),
        ({"size": True}, "size is 'True'"),
        ({"size": "9" * 40}, "expected a byte count"),
    ],
)
def test_a_bad_value_in_the_manifest_is_named(change: dict[str, Any], expected: str) -> None:
    body = json.dumps({"cuda_nvcc": {"linux-x86_64": {**GOOD, **change}}}).encode()
    with pytest.raises(components.ComponentError) as caught:
        components.parse(body, action(names=["cuda_nvcc"], optional=[]))
    assert expected in str(caught.value)
    assert "cuda_nvcc.linux-x86_64" in str(caught.value)


def unpacked(root: Path, files: dict[str, str]) -> Path:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    return root


def test_components_merge_into_one_tree_with_each_license_kept_apart(tmp_path: Path) -> None:
    tree = tmp_path / "entry"
    tree.mkdir()
    owners: dict[str, str] = {}
    nvcc = unpacked(tmp_path / "a", {"bin/nvcc": "nvcc", "include/crt/host.h": "h", "LICENSE": "A"})
    cudart = unpacked(
        tmp_path / "b", {"include/cuda_runtime.h": "rt", "lib/libcudart.so": "so", "LICENSE": "B"}
    )
    components.lay_in(nvcc, tree, "cuda_nvcc", owners)
    components.lay_in(cudart, tree, "cuda_cudart", owners)
    assert (tree / "bin/nvcc").read_text() == "nvcc"
    assert (tree / "include/crt/host.h").is_file()
    assert (tree / "include/cuda_runtime.h").is_file()
    assert (tree / "lib/libcudart.so").is_file()
    assert (tree / "licenses/cuda_nvcc/LICENSE").read_text() == "A"
    assert (tree / "licenses/cuda_cudart/LICENSE").read_text() == "B"
    assert not (tree / "LICENSE").exists()


def test_a_path_two_components_ship_alike_is_kept_once(tmp_path: Path) -> None:
    tree = tmp_path / "entry"
    tree.mkdir()
    owners: dict[str, str] = {}
    components.lay_in(unpacked(tmp_path / "a", {"include/same.h": "x"}), tree, "one", owners)
    components.lay_in(unpacked(tmp_path / "b", {"include/same.h": "x"}), tree, "two", owners)
    assert (tree / "include/same.h").read_text() == "x"


def test_a_path_two_components_ship_differently_fails_naming_both(tmp_path: Path) -> None:
    tree = tmp_path / "entry"
    tree.mkdir()
    owners: dict[str, str] = {}
    components.lay_in(unpacked(tmp_path / "a", {"include/x/same.h": "1"}), tree, "one", owners)
    with pytest.raises(components.ComponentError) as caught:
        components.lay_in(unpacked(tmp_path / "b", {"include/x/same.h": "2"}), tree, "two", owners)
    assert "two and one both ship include/x/same.h with different contents" in str(caught.value)
    assert (tree / "include/x/same.h").read_text() == "1"


def test_a_folder_where_another_component_put_a_file_fails(tmp_path: Path) -> None:
    tree = tmp_path / "entry"
    tree.mkdir()
    owners: dict[str, str] = {}
    components.lay_in(unpacked(tmp_path / "a", {"lib/stubs": "file"}), tree, "one", owners)
    with pytest.raises(components.ComponentError, match="ships the folder lib/stubs, where one"):
        components.lay_in(unpacked(tmp_path / "b", {"lib/stubs/x.so": "so"}), tree, "two", owners)


def test_a_link_is_moved_as_a_link_and_never_merged_through(tmp_path: Path) -> None:
    tree = tmp_path / "entry"
    tree.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    owners: dict[str, str] = {}
    first = unpacked(tmp_path / "a", {"lib/real.so": "so"})
    os.symlink("real.so", first / "lib" / "libx.so")
    # A component whose "include" is a link: extraction refuses links that leave the
    # entry, but even an inner one must not become a door that the next component's
    # files are written through.
    os.symlink("lib", first / "include")
    components.lay_in(first, tree, "one", owners)
    assert os.readlink(tree / "lib" / "libx.so") == "real.so"
    second = unpacked(tmp_path / "b", {"include/cuda.h": "h"})
    with pytest.raises(components.ComponentError, match="ships the folder include"):
        components.lay_in(second, tree, "two", owners)
    assert not (tree / "lib" / "cuda.h").exists()
    assert list(outside.iterdir()) == []


def test_a_manifest_nested_too_deeply_is_refused_by_name() -> None:
    with pytest.raises(components.ComponentError, match="nests too deeply"):
        components.parse(b"[" * 200_000, action())


def test_a_component_name_that_is_a_path_is_refused() -> None:
    body = json.dumps(real_release("12.8.1")).encode()
    with pytest.raises(components.ComponentError, match=r"'\.\./cuda_nvcc' is not a plain name"):
        components.parse(body, action(names=["../cuda_nvcc"]))


def test_licenses_are_never_written_through_a_link_a_component_ships(tmp_path: Path) -> None:
    tree = tmp_path / "entry"
    tree.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    first = tmp_path / "a"
    first.mkdir()
    os.symlink(outside, first / "licenses")
    components.lay_in(first, tree, "one", {})
    with pytest.raises(components.ComponentError, match="ships licenses as a file or link"):
        components.lay_in(unpacked(tmp_path / "b", {"LICENSE": "B"}), tree, "two", {})
    assert list(outside.iterdir()) == []


CUDA_LINKS = {
    "targets/x86_64-linux/include": "../../include",
    "targets/x86_64-linux/lib": "../../lib",
    "lib64": "lib",
}


def test_links_give_the_layout_nvcc_looks_for(tmp_path: Path) -> None:
    files = {"include/cuda_runtime.h": "rt", "lib/stubs/libcuda.so": "so"}
    tree = unpacked(tmp_path / "entry", files)
    components.make_links(tree, CUDA_LINKS)
    components.make_links(tree, CUDA_LINKS)  # again: the same links stand
    assert (tree / "targets/x86_64-linux/include/cuda_runtime.h").read_text() == "rt"
    assert (tree / "targets/x86_64-linux/lib/stubs/libcuda.so").is_file()
    assert os.readlink(tree / "lib64") == "lib"
    assert not (tree / "targets").is_symlink()


@pytest.mark.parametrize(
    ("files", "planted", "made", "expected"),
    [
        ({"include/a.h": "a"}, None, {"lib64": "lib"}, "no component ships lib"),
        ({"lib/a.so": "a", "lib64": "x"}, None, {"lib64": "lib"}, "already ships lib64"),
        ({"lib/a.so": "a"}, ("lib64", "elsewhere"), {"lib64": "lib"}, "already ships lib64"),
        # A folder on the link's way that a component shipped as a link: never followed.
        ({"lib/a.so": "a"}, ("targets", "/"), {"targets/x/lib": "../../lib"}, "as a file or link"),
        # A target reached through a link a component ships.
        ({"real/a.h": "a"}, ("include", "real"), {"inc": "include/a.h"}, "passes through a link"),
        ({"lib/a.so": "a"}, None, {"lib64": "../lib"}, "does not stay inside the entry"),
        ({"lib/a.so": "a"}, None, {"../lib64": "lib"}, "does not stay inside the entry"),
        ({"lib/a.so": "a"}, None, {"lib64": "/etc"}, "does not stay inside the entry"),
        # ".." after a name: the kernel resolves "self" (a link to ".") first, so the
        # text's "../bin" would be the kernel's "../../bin", outside the entry.
        ({"bin/a": "a"}, ("self", "."), {"t/l": "../self/../bin"}, "does not stay inside"),
    ],
)
def test_a_link_that_cannot_be_made_safely_is_refused_by_name(
    tmp_path: Path,
    files: dict[str, str],
    planted: tuple[str, str] | None,
    made: dict[str, str],
    expected: str,
) -> None:
    tree = unpacked(tmp_path / "entry", files)
    if planted is not None:
        os.symlink(planted[1], tree / planted[0])
    with pytest.raises(components.ComponentError, match=expected):
        components.make_links(tree, made)
    assert not (tree / "lib64").is_symlink() or planted == ("lib64", "elsewhere")


# --- install: served by a real HTTP server -------------------------------------------

POLICY = downloads.Policy(
    connect_timeout=2.0,
    stall_timeout=0.5,
    attempts=2,
    backoff_initial=0.01,
    backoff_max=0.05,
    user_agent="runner-agent-test",
)


def serve(server: Server, parts: dict[str, dict[str, str]], *, size_off: int = 0) -> str:
    """Serve each component (name -> files below its top folder) and the manifest listing
    them; the base URL. ``size_off`` is added to every size the manifest lists."""
    document: dict[str, Any] = {"release_label": "12.8.1"}
    for name, files in parts.items():
        top = f"{name}-linux-x86_64-1.0-archive"
        laid = {f"{top}/{k}": (v.encode(), 0o644) for k, v in files.items()}
        body = build_archive("tar.xz", laid)
        path = f"{name}/linux-x86_64/{top}.tar.xz"
        server.route(f"/redist/{path}", ok(body))
        document[name] = {
            "name": name,
            "linux-x86_64": {
                "relative_path": path,
                "sha256": hashlib.sha256(body).hexdigest(),
                "size": str(len(body) + size_off),
            },
        }
    server.route("/redist/redistrib_12.8.1.json", ok(json.dumps(document).encode()))
    return server.url("/redist/")


TWO = {
    "cuda_nvcc": {"bin/nvcc": "nvcc" * 100, "LICENSE": "A"},
    "cuda_cudart": {"include/cuda_runtime.h": "rt" * 100, "LICENSE": "B"},
}


def install(
    tmp_path: Path,
    base: str,
    *,
    run: str = "one",
    limits: extracting.Limits | None = None,
    links: dict[str, str] | None = None,
) -> tuple[Path, list[receipts.Source]]:
    store = layout.Store(tmp_path / "store")
    staging = tmp_path / run / "staging"
    tree = tmp_path / run / "tree"
    tree.mkdir(parents=True)
    made = action(
        manifest_url=base + "redistrib_12.8.1.json", base_url=base, names=list(TWO), optional=[]
    )
    if links is not None:
        made["links"] = links
    sources = components.install(
        made,
        staging=staging,
        tree=tree,
        cache=downloads.DownloadCache(tmp_path / "downloads"),
        policy=POLICY,
        limits=limits or extracting.Limits(),
        log=installlog.InstallLog(store, store.entry("cuda", "12.8.1", "x64")),
    )
    return tree, sources


def test_components_install_once_and_a_second_install_is_served_from_the_cache(
    tmp_path: Path, http_server: Server
) -> None:
    base = serve(http_server, TWO)

    tree, sources = install(tmp_path, base, links={"lib64": "include"})
    again, _ = install(tmp_path, base, run="two")

    assert (tree / "bin/nvcc").is_file()
    assert (tree / "licenses/cuda_cudart/LICENSE").read_text() == "B"
    assert os.readlink(tree / "lib64") == "include"
    assert (again / "include/cuda_runtime.h").is_file()
    assert [s.url.rsplit("/", 1)[-1] for s in sources] == [
        "redistrib_12.8.1.json",  # first: a lock file pins the manifest
        "cuda_nvcc-linux-x86_64-1.0-archive.tar.xz",
        "cuda_cudart-linux-x86_64-1.0-archive.tar.xz",
    ]
    for source in sources[1:]:
        assert http_server.count(source.url.removeprefix(http_server.url("/")[:-1])) == 1
    assert http_server.count("/redist/redistrib_12.8.1.json") == 2  # the manifest is not cached


def test_an_archive_whose_size_differs_from_the_manifests_is_refused(
    tmp_path: Path, http_server: Server
) -> None:
    base = serve(http_server, TWO, size_off=1)
    with pytest.raises(components.ComponentError, match="the components' manifest lists"):
        install(tmp_path, base)


def test_the_byte_cap_is_shared_by_all_components_of_the_entry(
    tmp_path: Path, http_server: Server
) -> None:
    base = serve(http_server, TWO)
    # Each component alone (401 and 201 bytes) fits; the two together do not: the second
    # gets what the first left (99 bytes).
    with pytest.raises(extracting.UnsafeArchive, match=r"cuda_cudart-linux.* the limit is 99"):
        install(tmp_path, base, limits=extracting.Limits(max_total_bytes=500))
