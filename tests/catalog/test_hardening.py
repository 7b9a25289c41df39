"""Manifests and requests that must fail at load or parse time, never later."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent.catalog import loading, requests, resolver
from agent.platform import model
from tests.catalog import factories

LINUX = model.Platform(os="linux", arch="x64", libc="glibc", package_manager="apt")


def load_one(tmp_path: Path, data: dict[str, Any] | str, name: str | None = None) -> list[str]:
    factories.write(tmp_path, data, name)
    return [str(p) for p in loading.load([tmp_path]).problems]


def system_feature(ident: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": ident,
        "name": ident,
        "platforms": ["linux"],
        "install": [{"method": "system", "platforms": ["linux"], "packages": {"apt": [ident]}}],
        **extra,
    }


def test_an_installs_after_cycle_disables_both(tmp_path: Path) -> None:
    factories.write(tmp_path, factories.archive_feature("aa", installs_after=["bb"]))
    factories.write(tmp_path, factories.archive_feature("bb", installs_after=["aa"]))
    catalog = loading.load([tmp_path])
    assert {p.feature for p in catalog.problems} == {"aa", "bb"}
    assert "dependency cycle" in catalog.problems[0].message


@pytest.mark.parametrize(
    ("gpu", "fragment"),
    [
        ({"cuda": "{major}.{minor}"}, "unknown placeholder {major}"),
        ({"cuda": "{os}"}, "expected a CUDA version"),
    ],
)
def test_gpu_needs_are_checked_at_load(tmp_path: Path, gpu: dict[str, str], fragment: str) -> None:
    [problem] = load_one(tmp_path, system_feature("tool", gpu=gpu))
    assert fragment in problem


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (lambda d: d["env"].update(path=["bin\n/tmp/evil"]), "must be a relative path"),
        (lambda d: d["env"].update(vars={"BAD NAME": "1"}), "is not an environment variable name"),
        (lambda d: d["env"].update(vars={"OK": "a\nLD_PRELOAD=x"}), "control characters"),
        (
            lambda d: d.update(versions=[{"version": "1.0.0", "vars": {"rel": ".."}}]),
            "expected letters",
        ),
        (lambda d: d["install"][0].update(url="https://x.invalid/{version}\n.tar.gz"), "one word"),
        (
            lambda d: d.update(options={"prefix": {"type": "string", "default": "x"}}),
            "would set the variable PREFIX, which options may not set",
        ),
        (
            lambda d: d.update(
                options={
                    "flavour": {"type": "string", "default": "a"},
                    "FLAVOUR": {"type": "string", "default": "b"},
                }
            ),
            "both become FLAVOUR",
        ),
        (lambda d: d.update(default="9.9"), "default '9.9' matches no known version"),
        (
            lambda d: d.update(aliases={"next": "2.1"}),
            "alias 'next' -> '2.1' matches no known version",
        ),
        (
            lambda d: d["install"][0].update(
                checksum_url=None, sha256={"1.0.0": {"linux/x64": "a" * 64}}
            ),
            "no sha256 for",
        ),
    ],
)
def test_unsafe_or_unresolvable_manifests_fail_at_load(
    tmp_path: Path, change: Any, fragment: str
) -> None:
    data = factories.archive_feature("tool")
    change(data)
    problems = load_one(tmp_path, data)
    assert problems, "the manifest should not load"
    assert fragment in problems[0]


@pytest.mark.parametrize(
    ("option", "variable", "rule"),
    [
        ("ld_preload", "LD_PRELOAD", "names starting LD_"),
        ("pythonpath", "PYTHONPATH", "names starting PYTHON"),
        ("node_options", "NODE_OPTIONS", "names starting NODE_"),
        ("bash_env", "BASH_ENV", "BASH_ENV is read by"),
        ("pip_index_url", "PIP_INDEX_URL", "names starting PIP_"),
        ("npm_config_registry", "NPM_CONFIG_REGISTRY", "names starting NPM_"),
        ("git_ssh_command", "GIT_SSH_COMMAND", "names starting GIT_"),
        ("ifs", "IFS", "IFS is read by"),
        ("ps4", "PS4", "PS4 is read by"),
        ("shellopts", "SHELLOPTS", "SHELLOPTS is read by"),
        ("env", "ENV", "ENV is read by"),
        ("home", "HOME", "HOME is read by"),
        ("path", "PATH", "PATH is read by"),
        ("java_tool_options", "JAVA_TOOL_OPTIONS", "JAVA_TOOL_OPTIONS is read by"),
        ("bash_xtracefd", "BASH_XTRACEFD", "names starting BASH_"),
        ("sslkeylogfile", "SSLKEYLOGFILE", "SSLKEYLOGFILE is read by"),
        ("cc", "CC", "CC is read by"),
        ("cflags", "CFLAGS", "CFLAGS is read by"),
        ("cmake_args", "CMAKE_ARGS", "names starting CMAKE_"),
    ],
)
def test_options_cannot_become_names_loaders_and_package_managers_read(
    tmp_path: Path, option: str, variable: str, rule: str
) -> None:
    data = factories.archive_feature("tool")
    data["options"] = {option: {"type": "string", "default": ""}}
    [problem] = load_one(tmp_path, data)
    assert f"option {option!r} would set the variable {variable}" in problem
    assert rule in problem


@pytest.mark.parametrize("option", ["flavour", "with_docs", "install_tools", "ldflags_extra"])
def test_ordinary_option_names_stay_allowed(tmp_path: Path, option: str) -> None:
    data = factories.archive_feature("tool")
    data["options"] = {option: {"type": "string", "default": ""}}
    assert load_one(tmp_path, data) == []


def test_an_apt_source_line_cannot_carry_a_second_line(tmp_path: Path) -> None:
    data = system_feature("tool")
    data["install"][0]["apt_repositories"] = [
        {
            "name": "evil",
            "uri": "https://x.invalid/apt\nTrusted: yes",
            "suites": ["stable"],
            "key_url": "https://x.invalid/key.asc",
        }
    ]
    [problem] = load_one(tmp_path, data)
    assert "one word without spaces or control characters" in problem


def test_package_names_are_checked_for_their_manager(tmp_path: Path) -> None:
    data = system_feature("tool")
    data["install"][0]["packages"] = {"apt": ["@jq"]}
    [problem] = load_one(tmp_path, data)
    assert "is not acceptable for apt" in problem


def test_a_missing_script_is_found_at_load(tmp_path: Path) -> None:
    data = factories.archive_feature("tool")
    data["install"] = [{"method": "script", "platforms": ["linux"], "script": "setup.sh"}]
    [problem] = load_one(tmp_path, data)
    assert "'setup.sh' is not a file" in problem


def test_huge_and_aliased_manifests_are_refused(tmp_path: Path) -> None:
    [problem] = load_one(tmp_path, "# pad\n" * 60_000, name="huge")
    assert "a manifest is at most" in problem
    [problem] = load_one(tmp_path / "b", "id: &a x\nname: *a\n", name="aliased")
    assert "aliases are not supported" in problem


# --- resolution ---------------------------------------------------------------------------


def test_an_unknown_libc_is_never_taken_for_glibc(tmp_path: Path) -> None:
    data = factories.archive_feature("tool", platforms=["linux/x64/glibc"])
    data["install"][0]["platforms"] = ["linux/x64/glibc"]
    catalog = factories.catalog_of(tmp_path, data)
    target = model.Platform(os="linux", arch="x64")
    with pytest.raises(resolver.ResolutionError) as info:
        resolver.resolve([requests.parse("feature:tool")], catalog, target, store_root="/s")
    assert "the target's libc is unknown: give libc (glibc or musl)" in info.value.problems[0]


def test_a_dependency_keeps_the_default_when_it_allows_it(tmp_path: Path) -> None:
    catalog = factories.catalog_of(
        tmp_path,
        factories.archive_feature("py", default="1.2"),
        factories.archive_feature("app", requires=["py>=1.0"]),
        factories.archive_feature("new", requires=["py>=2"]),
    )

    def version_of(*labels: str) -> str:
        plan = resolver.resolve(
            [requests.parse(label) for label in labels], catalog, LINUX, store_root="/s"
        )
        return next(f["version"] for f in plan.features if f["id"] == "py")

    assert version_of("feature:py") == "1.2.0"
    assert version_of("feature:py", "feature:app") == "1.2.0"
    assert version_of("feature:app") == "1.2.0"
    assert version_of("feature:new") == "2.0.0"  # the default is ruled out: newest allowed


def test_problems_come_out_in_one_order(tmp_path: Path) -> None:
    catalog = factories.catalog_of(tmp_path, factories.archive_feature("tool"))
    labels = ["feature:zzz", "feature:tool@9", "feature:aaa"]
    orders = set()
    for rotation in range(3):
        wanted = [requests.parse(x) for x in labels[rotation:] + labels[:rotation]]
        with pytest.raises(resolver.ResolutionError) as info:
            resolver.resolve(wanted, catalog, LINUX, store_root="/s")
        orders.add(tuple(info.value.problems))
    assert len(orders) == 1


def test_options_that_change_an_install_get_their_own_folder(tmp_path: Path) -> None:
    data = factories.archive_feature(
        "tool", options={"extras": {"type": "boolean", "default": False}}
    )
    data["install"] = [{"method": "pip", "platforms": ["linux"], "packages": ["tool=={version}"]}]
    catalog = factories.catalog_of(tmp_path, data)

    def prefix(label: str) -> str:
        plan = resolver.resolve([requests.parse(label)], catalog, LINUX, store_root="/s")
        return str(plan.features[0]["prefix"])

    assert prefix("feature:tool@1.2") == "/s/tool/1.2.0/x64"
    assert prefix("feature:tool@1.2;extras=false") == "/s/tool/1.2.0/x64"
    variant = prefix("feature:tool@1.2;extras=true")
    assert variant.startswith("/s/tool/1.2.0/x64-")
    assert variant != "/s/tool/1.2.0/x64"


# --- requests ---------------------------------------------------------------------------


def test_two_labels_that_disagree_are_an_error() -> None:
    with pytest.raises(requests.RequestError, match="ask for node differently"):
        requests.from_labels(["feature:node@18", "feature:node@20"])
    with pytest.raises(requests.RequestError, match="ask for node differently"):
        requests.from_labels(["feature:node;a=1", "feature:node;a=2"])
    [merged] = requests.from_labels(["feature:node@20", "feature:node;a=1"])
    assert merged.render() == "feature:node@20;a=1"


@pytest.mark.parametrize(
    "entry",
    [
        {"id": "python", "version": "3.12;evil=1"},
        {"id": "python", "options": {"pip": "true;other=x"}},
        {"id": "python@3.12;x=1"},
        {"id": "python", "version": 3.10},
    ],
)
def test_team_mappings_cannot_smuggle_parts(entry: dict[str, Any]) -> None:
    with pytest.raises(requests.RequestError):
        requests.from_mapping(entry, source="team")
