"""The catalog on the command line: features list/show/schema, plan, config validate --team."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from tests.catalog import factories
from tests.support.agentproc import run_cli as cli


def test_features_list_shows_the_bundled_catalog() -> None:
    proc = cli("features", "list")
    assert proc.returncode == 0
    ids = [line.split()[0] for line in proc.stdout.splitlines()]
    assert ids == sorted(ids)
    assert {"cmake", "hello", "jq", "ninja", "node", "python", "go", "pytorch"} <= set(ids)
    data = json.loads(cli("features", "list", "--json").stdout)
    assert data["disabled"] == []
    assert next(f for f in data["features"] if f["id"] == "jq")["versions"] == ["system"]


def test_a_broken_user_manifest_is_listed_as_disabled(tmp_path: Path) -> None:
    factories.write(tmp_path / "extra", "id: [\n", name="broken")
    factories.write(tmp_path / "extra", factories.archive_feature("mine"))
    config = tmp_path / "agent.yaml"
    config.write_text(f"catalog:\n  paths: [{tmp_path / 'extra'}]\n")
    proc = cli("features", "list", "--config", str(config))
    assert proc.returncode == 0
    assert "mine" in proc.stdout
    assert "DISABLED broken:" in proc.stderr
    assert "invalid YAML" in proc.stderr


def test_features_show() -> None:
    proc = cli("features", "show", "NODE")
    assert proc.returncode == 0
    assert proc.stdout.startswith("# ")
    assert yaml.safe_load(proc.stdout)["toolcache_name"] == "node"
    missing = cli("features", "show", "nodejs")
    assert missing.returncode == 1
    assert "did you mean node?" in missing.stderr


def test_features_schema_is_a_json_schema() -> None:
    schema = json.loads(cli("features", "schema").stdout)
    assert {"id", "versions", "install", "platforms", "gpu", "toolcache_name"} <= set(
        schema["properties"]
    )
    assert schema["additionalProperties"] is False


def test_plan_for_another_platform() -> None:
    proc = cli("plan", "feature:python", "feature:ninja", "--os", "linux", "--arch", "arm64")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["platform"]["arch"] == "arm64"
    assert [f["id"] for f in data["features"]] == ["ninja", "python"]
    python = data["features"][1]
    assert "aarch64-unknown-linux-gnu" in python["actions"][0]["url"]
    again = cli("plan", "feature:python", "feature:ninja", "--os", "linux", "--arch", "arm64")
    assert again.stdout == proc.stdout  # byte-identical


def test_plan_for_macos_from_linux() -> None:
    proc = cli("plan", "feature:node@20", "--os", "darwin", "--arch", "arm64")
    assert proc.returncode == 0, proc.stderr
    [node] = json.loads(proc.stdout)["features"]
    assert node["actions"][0]["url"].endswith("node-v20.19.6-darwin-arm64.tar.gz")


def test_plan_problems_exit_1_with_every_problem() -> None:
    proc = cli("plan", "feature:nodejs", "feature:cmake@2", "feature:jq@1.7")
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 3
    assert all(line.startswith("runner-agent: ") for line in lines)


def test_plan_bad_labels_and_bad_platforms() -> None:
    assert "is not a feature id" in cli("plan", "feature:../x").stderr
    bad = cli("plan", "feature:node", "--arch", "sparc")
    assert bad.returncode == 2
    assert "'sparc'" in bad.stderr


def test_plan_with_a_team_file_and_an_environment(tmp_path: Path) -> None:
    path = tmp_path / "runner-config.yml"
    path.write_text("features: [node@20]\nenvironments:\n  canary:\n    features: [node@22]\n")
    data = json.loads(cli("plan", "--team", str(path), "--environment", "canary").stdout)
    assert data["features"][0]["version"] == "22.21.1"
    labelled = json.loads(cli("plan", "--team", str(path), "feature:node@24").stdout)
    assert labelled["features"][0]["version"] == "24.12.0"


def test_config_validate_team(tmp_path: Path) -> None:
    good = tmp_path / "good.yml"
    good.write_text("features:\n  - node@20\n")
    assert cli("config", "validate", "--team", str(good)).returncode == 0
    bad = tmp_path / "bad.yml"
    bad.write_text("features:\n  - node@20\nextends: nope\n")
    proc = cli("config", "validate", "--team", str(bad))
    assert proc.returncode == 1
    assert f"{bad}:3:1: extends" in proc.stderr


def test_config_validate_checks_profiles(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text("features:\n  profiles:\n    a: {extends: [a]}\n")
    proc = cli("config", "validate", str(path))
    assert proc.returncode == 1
    assert "extends cycle: a -> a" in proc.stderr


def test_the_team_schema_is_printed() -> None:
    schema = json.loads(cli("config", "schema", "--team").stdout)
    assert set(schema["properties"]) == {"extends", "features", "environments"}


def test_plan_for_another_os_uses_its_package_manager() -> None:
    proc = cli("plan", "feature:jq", "--os", "darwin", "--arch", "arm64")
    assert proc.returncode == 0, proc.stderr
    [jq] = json.loads(proc.stdout)["features"]
    assert jq["actions"][-1]["argv"] == ["brew", "install", "jq"]
    bad = cli("plan", "feature:jq", "--os", "darwin", "--libc", "musl")
    assert bad.returncode == 2
    assert "--libc musl applies to linux only" in bad.stderr


def test_an_option_named_for_a_loader_variable_disables_the_feature(tmp_path: Path) -> None:
    # node_options=--inspect-brk once opened a Node inspector inside the npm sandbox.
    data = factories.archive_feature("mine")
    data["options"] = {"node_options": {"type": "string", "default": ""}}
    factories.write(tmp_path / "extra", data)
    config = tmp_path / "agent.yaml"
    config.write_text(f"catalog:\n  paths: [{tmp_path / 'extra'}]\n")
    listed = cli("features", "list", "--config", str(config))
    assert "DISABLED mine:" in listed.stderr
    assert "would set the variable NODE_OPTIONS" in listed.stderr
    assert "names starting NODE_" in listed.stderr
    proc = cli("plan", "feature:mine;node_options=--inspect-brk", "--config", str(config))
    assert proc.returncode == 1
    assert "mine" in proc.stderr
    assert "NODE_OPTIONS" not in proc.stdout


def test_plan_shows_a_request_that_overrides_an_earlier_one() -> None:
    proc = cli("plan", "node@^20", "node@22")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["features"][0]["version"].startswith("22.")
    assert (
        "feature:node@^20 (from cli) is overridden by feature:node@22 (from cli): using "
        "feature:node@22" in data["warnings"]
    )


def test_plan_with_an_environment_the_team_file_does_not_define(tmp_path: Path) -> None:
    path = tmp_path / "runner-config.yml"
    path.write_text("features: [node@20]\nenvironments:\n  staging:\n    features: [node@22]\n")
    proc = cli("plan", "--team", str(path), "--environment", "prod")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["features"][0]["version"].startswith("20.")
    assert any("'prod' (features.environment) is not defined" in w for w in data["warnings"])


def test_features_validate_exits_0_1_and_2(tmp_path: Path) -> None:
    good = tmp_path / "good"
    factories.write(good, factories.archive_feature("mine"))
    proc = cli("features", "validate", str(good))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout == ""
    assert cli("features", "validate", str(good / "mine")).returncode == 0  # a feature folder

    bad = tmp_path / "bad"
    factories.write(bad, factories.FOUR_ERRORS, name="tool")
    factories.write(bad, factories.archive_feature("fine"))
    proc = cli("features", "validate", str(good), str(bad))
    assert proc.returncode == 1
    manifest = bad / "tool" / "feature.yaml"
    assert [line.split(": ")[0] for line in proc.stdout.splitlines()] == [
        f"{manifest}:3:1",
        f"{manifest}:4:21",
        f"{manifest}:6:27",
        f"{manifest}:10:28",
    ]
    assert "did you mean 'versions'?" in proc.stdout

    proc = cli("features", "validate", str(tmp_path / "missing"))
    assert proc.returncode == 2
    assert "holds no feature.yaml" in proc.stderr
    assert cli("features", "validate").returncode == 2


def test_features_list_prints_each_problem_once(tmp_path: Path) -> None:
    factories.write(tmp_path / "extra", factories.FOUR_ERRORS, name="tool")
    config = tmp_path / "agent.yaml"
    config.write_text(f"catalog:\n  paths: [{tmp_path / 'extra'}]\n")
    proc = cli("features", "list", "--config", str(config))
    assert proc.returncode == 0
    output = proc.stdout + proc.stderr
    for fragment in ("versoins", "'1.x' is not a concrete", "default 'big'", "darwin/arm64"):
        assert output.count(fragment) == 1, output
    disabled = [line for line in proc.stderr.splitlines() if line.startswith("DISABLED tool:")]
    assert len(disabled) == 4
