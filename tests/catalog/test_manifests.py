"""Manifests: the bundled catalog, and every kind of broken manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent.catalog import loading
from agent.config import paths
from tests.catalog import factories

ROOT = Path(__file__).resolve().parents[2]


def test_the_bundled_catalog_loads_clean() -> None:
    catalog = loading.load([paths.bundled_catalog()])
    assert catalog.problems == []
    first = ["cmake", "hello", "jq", "ninja", "node", "python"]
    assert set(first) <= set(catalog.ids())  # tests/catalog/test_hygiene.py checks them all
    methods = {i: {m.method for m in f.install} for i, f in catalog.features.items() if i in first}
    assert methods == {
        "cmake": {"pip"},
        "hello": {"system"},
        "jq": {"system"},
        "ninja": {"pip"},
        "node": {"archive", "npm"},
        "python": {"archive"},
    }


def test_bundled_archives_use_upstream_checksum_files() -> None:
    catalog = loading.load([paths.bundled_catalog()])
    node = catalog.features["node"].install[0]
    python = catalog.features["python"].install[0]
    assert node.checksum_url == "https://nodejs.org/dist/v{version}/SHASUMS256.txt"  # type: ignore[union-attr]
    assert python.checksum_url.endswith("/releases/download/{release}/SHA256SUMS")  # type: ignore[union-attr]


def problems_for(tmp_path: Path, data: dict[str, Any] | str, name: str | None = None) -> list[str]:
    factories.write(tmp_path, data, name)
    factories.write(tmp_path, factories.archive_feature("healthy"))
    catalog = loading.load([tmp_path])
    assert "healthy" in catalog.features  # one bad manifest never takes the rest down
    return [str(p) for p in catalog.problems]


def test_a_missing_field_is_named_with_its_file(tmp_path: Path) -> None:
    data = factories.archive_feature("tool")
    del data["platforms"]
    [problem] = problems_for(tmp_path, data)
    assert problem.startswith(
        f"{tmp_path}/tool/feature.yaml:1:1: platforms: this field is required"
    )


def test_a_wrong_type_is_positioned(tmp_path: Path) -> None:
    [problem] = problems_for(tmp_path, factories.archive_feature("tool", name=["a", "list"]))
    assert "tool/feature.yaml:2:1: name: got ['a', 'list']; expected a string" in problem


def test_an_id_that_differs_from_its_folder_is_refused(tmp_path: Path) -> None:
    [problem] = problems_for(tmp_path, factories.archive_feature("tool"), name="other")
    assert "id 'tool' differs from its folder 'other'" in problem


def test_a_later_folder_overrides_by_id_without_a_problem(tmp_path: Path) -> None:
    factories.write(tmp_path / "one", factories.archive_feature("tool"))
    factories.write(tmp_path / "two", factories.archive_feature("tool", name="Second"))
    catalog = loading.load([tmp_path / "one", tmp_path / "two"])
    assert catalog.problems == []
    assert catalog.features["tool"].name == "Second"


def test_a_dependency_cycle_disables_its_members(tmp_path: Path) -> None:
    problems = problems_for(
        tmp_path,
        factories.archive_feature("a", requires=["b"]),
    )
    assert any("requires 'b'" in p for p in problems)
    factories.write(tmp_path, factories.archive_feature("b", requires=["c>=1"]))
    factories.write(tmp_path, factories.archive_feature("c", requires=["a"]))
    catalog = loading.load([tmp_path])
    assert {p.feature for p in catalog.problems} == {"a", "b", "c"}
    assert any("dependency cycle" in p.message for p in catalog.problems)
    assert "healthy" in catalog.features


def test_an_unknown_dependency_disables_the_feature_and_its_dependents(tmp_path: Path) -> None:
    factories.write(tmp_path, factories.archive_feature("a", requires=["ghost"]))
    factories.write(tmp_path, factories.archive_feature("b", requires=["a"]))
    catalog = loading.load([tmp_path])
    assert {p.feature for p in catalog.problems} == {"a", "b"}


@pytest.mark.parametrize(
    ("checksum", "fragment"),
    [("abc", "got 3 characters"), ("g" * 64, "64 lowercase hex"), ("A" * 64, "64 lowercase hex")],
)
def test_a_bad_checksum_is_refused(tmp_path: Path, checksum: str, fragment: str) -> None:
    data = factories.archive_feature("tool")
    data["install"][0]["sha256"] = {"1.0.0": {"linux/x64": checksum}}
    [problem] = problems_for(tmp_path, data)
    assert "sha256" in problem
    assert fragment in problem


def test_an_unknown_placeholder_is_refused(tmp_path: Path) -> None:
    data = factories.archive_feature("tool")
    data["install"][0]["url"] = "https://example.invalid/{verison}/tool.tar.gz"
    [problem] = problems_for(tmp_path, data)
    assert "unknown placeholder {verison}" in problem
    assert "{version}" in problem


def test_target_is_only_known_when_targets_are_given(tmp_path: Path) -> None:
    data = factories.archive_feature("tool")
    data["install"][0]["url"] = "https://example.invalid/{target}.tar.gz"
    [problem] = problems_for(tmp_path, data)
    assert "the url uses {target} but targets has no entry covering 'linux/x64'" in problem


def test_plain_http_needs_an_explicit_opt_in(tmp_path: Path) -> None:
    data = factories.archive_feature("tool")
    data["install"][0]["url"] = "http://mirror.invalid/{version}.tar.gz"
    [problem] = problems_for(tmp_path, data)
    assert "is not an https URL" in problem
    assert "allow_insecure" in problem
    data["install"][0]["allow_insecure"] = True
    data["install"][0]["checksum_url"] = "http://mirror.invalid/SUMS"
    assert problems_for(tmp_path / "again", data) == []


def test_an_option_default_outside_its_enum_is_refused(tmp_path: Path) -> None:
    data = factories.archive_feature(
        "tool", options={"flavour": {"type": "string", "default": "big", "enum": ["small"]}}
    )
    [problem] = problems_for(tmp_path, data)
    assert "default 'big' is not one of the enum: small" in problem


def test_an_archive_without_any_checksum_is_refused(tmp_path: Path) -> None:
    data = factories.archive_feature("tool")
    del data["install"][0]["checksum_url"]
    [problem] = problems_for(tmp_path, data)
    assert "needs sha256 checksums or a checksum_url" in problem


def test_a_method_outside_the_features_platforms_is_refused(tmp_path: Path) -> None:
    data = factories.archive_feature("tool")
    data["install"][0]["platforms"] = ["windows/x64"]
    [problem] = problems_for(tmp_path, data)
    assert "'windows/x64' is not among the feature's platforms" in problem


def test_a_bad_platform_says_the_spellings(tmp_path: Path) -> None:
    [problem] = problems_for(tmp_path, factories.archive_feature("tool", platforms=["linux/amd64"]))
    assert "'amd64' is not an architecture" in problem


def test_a_package_name_that_would_be_an_option_is_refused(tmp_path: Path) -> None:
    data = factories.archive_feature("tool")
    data["install"] = [
        {
            "method": "system",
            "platforms": ["linux"],
            "packages": {"apt": ["--allow-unauthenticated"]},
        }
    ]
    data.pop("versions")
    data.pop("toolcache_name")
    data["check"] = {"command": ["tool"], "expect": "tool"}
    [problem] = problems_for(tmp_path, data)
    assert "is not a package name" in problem


def test_a_relative_path_cannot_leave_the_prefix(tmp_path: Path) -> None:
    [problem] = problems_for(
        tmp_path, factories.archive_feature("tool", env={"path": ["../../bin"]})
    )
    assert "must be a relative path inside the install prefix" in problem


def test_malformed_yaml_and_non_mappings_are_refused(tmp_path: Path) -> None:
    [problem] = problems_for(tmp_path, "id: [\n", name="broken")
    assert "invalid YAML" in problem
    [problem] = problems_for(tmp_path / "b", "- a list\n", name="listy")
    assert "expected a mapping" in problem


def test_a_system_feature_cannot_promise_a_version(tmp_path: Path) -> None:
    data = {
        "id": "tool",
        "name": "Tool",
        "platforms": ["linux"],
        "install": [{"method": "system", "platforms": ["linux"], "packages": {"apt": ["tool"]}}],
        "check": {"command": ["tool", "--version"], "expect": "{version}"},
    }
    [problem] = problems_for(tmp_path, data)
    assert "a system package's version is the distribution's" in problem


def test_a_user_folder_overrides_the_bundled_feature(tmp_path: Path) -> None:
    factories.write(tmp_path, factories.archive_feature("node"))
    catalog = loading.load([paths.bundled_catalog(), tmp_path])
    assert catalog.features["node"].versions[0] == "1.0.0"
    assert catalog.folders["node"] == tmp_path / "node"


def test_an_unreadable_folder_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    catalog = loading.load([tmp_path / "missing", paths.bundled_catalog()])
    assert "node" in catalog.features
    assert "catalog folder cannot be read" in str(catalog.problems[0])


def components_feature(**method: Any) -> dict[str, Any]:
    data = factories.archive_feature("kit", platforms=["linux/x64/glibc"])
    data["install"] = [
        {
            "method": "archive",
            "platforms": ["linux/x64/glibc"],
            "url": "https://example.invalid/redist/",
            "targets": {"linux/x64/glibc": "linux-x86_64"},
            "strip_components": 1,
            "components": {
                "manifest_url": "https://example.invalid/redist/redistrib_{version}.json",
                "names": ["nvcc", "cudart"],
            },
            **method,
        }
    ]
    return data


def links(made: dict[str, str]) -> dict[str, Any]:
    return {
        "components": {
            "manifest_url": "https://example.invalid/r.json",
            "names": ["nvcc"],
            "links": made,
        }
    }


def test_a_components_method_loads_and_needs_no_pinned_hash(tmp_path: Path) -> None:
    assert problems_for(tmp_path, components_feature()) == []


def test_links_inside_the_prefix_load(tmp_path: Path) -> None:
    made = {"targets/x86_64-linux/include": "../../include", "lib64": "lib", "a/b": "../c/d"}
    assert problems_for(tmp_path, components_feature(**links(made))) == []


@pytest.mark.parametrize(
    ("method", "fragment"),
    [
        (
            {"sha256": {"1.0.0": {"linux": factories.SHA}}},
            "sha256 cannot be combined with components",
        ),
        ({"checksum_url": "https://example.invalid/S"}, "checksum_url cannot be combined"),
        ({"url": "https://example.invalid/redist"}, "ending in /; got 'https://example.invalid"),
        ({"targets": {}}, "targets needs an entry covering 'linux/x64/glibc'"),
        (
            {"components": {"manifest_url": "https://example.invalid/r.json", "names": ["a", "a"]}},
            "components listed twice: a",
        ),
        (
            {"components": {"manifest_url": "http://example.invalid/r.json", "names": ["a"]}},
            "'http://example.invalid/r.json' is not an https URL",
        ),
        (
            {"components": {"manifest_url": "https://example.invalid/{nope}.json", "names": ["a"]}},
            "unknown placeholder {nope}",
        ),
        ({"components": {"manifest_url": "https://x.invalid/r.json", "names": []}}, "at least 1"),
        (
            {"components": {"manifest_url": "https://x.invalid/r.json", "names": ["../etc"]}},
            "'../etc' is not a component name",
        ),
        (
            {"components": {"manifest_url": "https://x.invalid/r.json", "names": ["a/b"]}},
            "'a/b' is not a component name",
        ),
        (links({"lib64": "../lib"}), "the target '../lib' of 'lib64' leaves the prefix"),
        (links({"a/b/c": "../../../x"}), "leaves the prefix"),
        (links({"lib64": "lib64"}), "is the link"),
        (links({"a/b": ".."}), "is not a link target"),
        (links({"a/b/c": "../.."}), "is not a link target"),
        (links({"a/b/c": "../../a"}), "a folder above it"),
        (links({"a": "a/b"}), "below it"),
        (links({"lib64": "/usr/lib"}), "'/usr/lib' is not a link target"),
        (links({"lib64": "./lib"}), "'./lib' is not a link target"),
        (links({"t/l": "../self/../bin"}), "no .. after a name"),
        (links({"../x": "lib"}), "must be a relative path inside the install prefix"),
    ],
)
def test_a_bad_components_method_is_refused_by_name(
    tmp_path: Path, method: dict[str, Any], fragment: str
) -> None:
    [problem] = problems_for(tmp_path, components_feature(**method))
    assert fragment in problem


@pytest.mark.parametrize(
    ("method", "fragment"),
    [
        ({"when": {"flavour": "big"}}, "when names no option of this feature: 'flavour'"),
        ({"when": {"source": "ftp"}}, "option source='ftp': expected one of official, mirror"),
        ({"versions": ["1.0.0", "9.9.9"]}, "versions not in the feature's list: 9.9.9"),
    ],
)
def test_a_methods_when_and_versions_are_checked(
    tmp_path: Path, method: dict[str, Any], fragment: str
) -> None:
    data = factories.archive_feature(
        "tool",
        options={
            "source": {"type": "string", "default": "official", "enum": ["official", "mirror"]}
        },
    )
    data["install"][0].update(method)
    [problem] = problems_for(tmp_path, data)
    assert fragment in problem


def test_a_version_index_needs_methods_that_verify_without_a_pin(tmp_path: Path) -> None:
    data = factories.archive_feature("kit")
    method = data["install"][0]
    del method["checksum_url"]
    method["sha256"] = {
        v: {"linux": factories.SHA, "darwin": factories.SHA} for v in data["versions"]
    }
    data["version_index"] = {"kind": "node", "url": "https://example.invalid/index.json"}
    [problem] = problems_for(tmp_path, data)
    assert "install[0] pins a sha256 per version, which a version only the index lists" in problem


@pytest.mark.parametrize(
    ("index", "fragment"),
    [
        ({"kind": "rubygems", "url": "https://x.invalid/i"}, "'rubygems'"),
        ({"kind": "node", "url": "http://x.invalid/i"}, "is not an https URL"),
    ],
)
def test_a_bad_version_index_is_named(tmp_path: Path, index: dict[str, str], fragment: str) -> None:
    data = components_feature()
    data["version_index"] = index
    [problem] = problems_for(tmp_path, data)
    assert fragment in problem


def test_a_version_index_refuses_versions_with_vars(tmp_path: Path) -> None:
    data = factories.archive_feature("kit")
    data["versions"] = ["1.0.0", {"version": "2.0.0", "vars": {"build": "7"}}]
    data["version_index"] = {"kind": "node", "url": "https://example.invalid/index.json"}
    problems = problems_for(tmp_path, data)
    assert any("versions 2.0.0 carry vars that a node index does not give" in p for p in problems)
