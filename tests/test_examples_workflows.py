"""The example workflows (examples/workflows) and team file: they parse, every feature
they ask for follows the agent's real label grammar and resolves against the bundled
catalog, and each uses the way of asking it is there to show."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.catalog import loading, requests, resolver, team
from agent.config import models, paths
from tests.support import fixtures

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
WORKFLOWS = EXAMPLES / "workflows"
ACTION = ROOT / ".github" / "actions" / "ensure" / "action.yml"
ENSURE_USES = re.compile(r"^(\./|[A-Za-z0-9-]+/runner-agent/)\.github/actions/ensure(@[\w.-]+)?$")


def workflow(name: str) -> dict[str, Any]:
    data = yaml.safe_load((WORKFLOWS / name).read_text())
    assert isinstance(data, dict)
    assert data["jobs"], f"{name} has no jobs"
    return data


def steps(data: dict[str, Any]) -> list[dict[str, Any]]:
    return [step for job in data["jobs"].values() for step in job["steps"]]


def ensure_steps(data: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for s in steps(data) if ENSURE_USES.match(str(s.get("uses", "")))]


def resolves(wanted: list[requests.Request]) -> list[str]:
    """Each request's feature and version, resolved against the bundled catalog."""
    catalog = loading.load([paths.bundled_catalog()])
    assert catalog.problems == []
    plan = resolver.resolve(wanted, catalog, fixtures.LINUX, store_root="/s").to_data()
    return sorted(f"{f['id']}@{f['version']}" for f in plan["features"])


def test_there_is_one_workflow_per_way_of_asking() -> None:
    assert sorted(p.name for p in WORKFLOWS.iterdir()) == [
        "ensure.yml",
        "labels.yml",
        "team-file.yml",
    ]


def test_the_labels_workflow_routes_on_feature_labels_the_agent_mirrors() -> None:
    text = (WORKFLOWS / "labels.yml").read_text()
    [job] = workflow("labels.yml")["jobs"].values()
    labels = job["runs-on"]
    assert "self-hosted" in labels
    wanted = requests.from_labels(labels)
    assert [r.render() for r in wanted] == ["feature:node@20"]
    assert resolves(wanted) == ["node@20.19.6"]
    # The agent's config shown in the comment lists the same labels, and is valid.
    block = re.search(r"^#   runner:\n((?:#     .*\n)+)", text, re.MULTILINE)
    assert block is not None, "labels.yml shows no runner.labels snippet"
    snippet = "runner:\n" + "".join(line[3:] + "\n" for line in block[1].splitlines())
    settings = models.Settings.model_validate(yaml.safe_load(snippet))
    feature_labels = [label for label in labels if label.startswith(requests.PREFIX)]
    assert settings.runner.labels == feature_labels
    assert ensure_steps(workflow("labels.yml")) == []


def test_the_ensure_workflow_asks_in_the_label_grammar() -> None:
    data = workflow("ensure.yml")
    [step] = ensure_steps(data)
    assert step["uses"].startswith("your-org/runner-agent/")  # the placeholder the comment explains
    words = step["with"]["features"].split()
    wanted = [requests.parse(word, source="cli") for word in words]
    assert resolves(wanted) == ["cmake@3.31.6", "ninja@1.13.2", "python@3.12.12"]
    names = [s.get("uses", "") for s in steps(data)]
    assert names.index("actions/checkout@v4") < names.index(step["uses"])


def test_the_team_file_workflow_ensures_after_checkout() -> None:
    data = workflow("team-file.yml")
    [step] = ensure_steps(data)
    assert "features" not in (step.get("with") or {})  # the team file alone
    names = [s.get("uses", "") for s in steps(data)]
    assert names.index("actions/checkout@v4") < names.index(step["uses"])


def test_the_example_team_file_is_valid_and_resolves() -> None:
    config = team.load(EXAMPLES / "runner-config.yml")
    wanted = team.merged_requests(team=config, settings=models.FeaturesSettings())
    assert resolves(wanted) == ["ninja@1.13.2", "node@20.19.6", "python@3.12.12"]
    staging = team.merged_requests(
        team=config, settings=models.FeaturesSettings(environment="staging")
    )
    assert "node@22.21.1" in resolves(staging)


@pytest.mark.parametrize("name", ["ensure.yml", "team-file.yml"])
def test_the_ensure_steps_pass_only_inputs_the_action_has(name: str) -> None:
    action = yaml.safe_load(ACTION.read_text())
    assert action["runs"]["using"] == "composite"
    inputs = set(action["inputs"])
    assert {"features", "team"} <= inputs
    for step in ensure_steps(workflow(name)):
        assert set(step.get("with") or {}) <= inputs
