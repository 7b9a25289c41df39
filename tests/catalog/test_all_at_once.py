"""Manifest authoring: every problem in one load, each at its own line, in YAML's words."""

from __future__ import annotations

from pathlib import Path

from agent.catalog import loading
from tests.catalog import factories


def problems_of(folder: Path, text: str, name: str = "tool") -> list[str]:
    path = folder / name / "feature.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    catalog = loading.load([folder])
    assert name not in catalog.features
    return [str(p).removeprefix(f"{path}:") for p in catalog.problems]


def test_a_manifest_with_four_errors_reports_them_all_at_once(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, factories.FOUR_ERRORS)
    assert [p.split(": ", 2)[:2] for p in problems] == [
        ["3:1", "versoins"],
        ["4:21", "versions[1]"],
        ["6:27", "options.flavour.default"],
        ["10:28", "install[0].platforms[1]"],
    ]
    assert "did you mean 'versions'?" in problems[0]
    assert problems[1].endswith("'1.x' is not a concrete version such as 20.11.1")
    assert problems[2].endswith("default 'big' is not one of the enum: small")
    assert problems[3].endswith(
        "archive method platform 'darwin/arm64' is not among the feature's platforms (linux)"
    )


def test_rule_problems_point_at_their_own_line(tmp_path: Path) -> None:
    text = """\
id: tool
name: Tool
versions: ["1.0.0", "2.0.0", "1.0.0"]
aliases:
  stable: "9"
default: "3"
options:
  ld_preload: {type: string, default: ""}
platforms: [linux]
install:
  - method: archive
    platforms: [linux/x64]
    url: https://example.invalid/{verison}.tar.gz
    sha256:
      "7.0.0": {linux/x64: "%s"}
    checksum_url: https://example.invalid/SUMS
env:
  vars: {TOOL_HOME: "{prefx}"}
""" % ("a" * 64)
    problems = problems_of(tmp_path, text)
    where = [p.split(": ", 2)[:2] for p in problems]
    assert where == [
        ["3:30", "versions[2]"],
        ["5:3", "aliases.stable"],
        ["6:1", "default"],
        ["8:3", "options.ld_preload"],
        ["13:5", "install[0].url"],
        ["15:7", "install[0].sha256.7.0.0"],
        ["18:10", "env.vars.TOOL_HOME"],
    ]
    assert "'1.0.0' is listed twice (also versions[0])" in problems[0]
    assert "unknown placeholder {verison}" in problems[4]
    assert "sha256 given for unknown version '7.0.0'" in problems[5]


def test_a_misspelt_key_is_answered_with_the_closest_one(tmp_path: Path) -> None:
    data = factories.archive_feature("tool")
    data["install"][0]["checksum_ulr"] = data["install"][0].pop("checksum_url")
    data["chekc"] = data.pop("check")
    problems = problems_of(tmp_path, factories_yaml(data))
    method = next(p for p in problems if "checksum_ulr" in p)
    assert "install[0].checksum_ulr: " in method
    assert "expected one of: platforms, env, check, when, versions, method, url" in method
    assert method.endswith("did you mean 'checksum_url'?")
    assert next(p for p in problems if "chekc" in p).endswith("did you mean 'check'?")


def test_a_misspelt_method_is_answered_too(tmp_path: Path) -> None:
    data = factories.archive_feature("tool")
    data["install"][0]["method"] = "archiv"
    [problem] = problems_of(tmp_path, factories_yaml(data))
    assert "install[0]: " in problem
    assert problem.endswith("did you mean 'archive'?")


def test_type_errors_say_a_list_and_a_map(tmp_path: Path) -> None:
    data = factories.archive_feature("tool")
    data["install"][0]["platforms"] = "linux/x64"
    data["install"][0]["sha256"] = ["abc"]
    data["aliases"] = ["stable"]
    problems = problems_of(tmp_path, factories_yaml(data))
    text = "\n".join(problems)
    assert "valid tuple" not in text
    assert "valid dictionary" not in text
    assert any(
        p.endswith("aliases: got ['stable']; expected a map of alias to version") for p in problems
    )
    assert any(
        p.endswith("install[0].platforms: got 'linux/x64'; expected a list") for p in problems
    )
    assert any(
        p.endswith("sha256: got ['abc']; expected a map of version to platform to sha256")
        for p in problems
    )


def test_a_wrong_id_and_a_missing_script_come_with_the_schema_problems(tmp_path: Path) -> None:
    text = """\
id: other
name: Tool
versions: ["1.0.0"]
platforms: [linux]
install:
  - method: script
    platforms: [linux]
    script: setup.sh
toolcache_name: [no]
"""
    problems = problems_of(tmp_path, text)
    assert [p.split(": ", 2)[:2] for p in problems] == [
        ["1:1", "id"],
        ["8:5", "install[0].script"],
        ["9:1", "toolcache_name"],
    ]
    assert "id 'other' differs from its folder 'tool'" in problems[0]
    assert "'setup.sh' is not a file in" in problems[1]


def factories_yaml(data: dict[str, object]) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False)
