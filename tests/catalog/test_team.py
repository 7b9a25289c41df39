"""Team configuration: profiles, environments, merging, and its errors with positions."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.catalog import requests, team
from agent.config import loading, models


def settings(**kwargs: object) -> models.FeaturesSettings:
    return models.FeaturesSettings.model_validate(kwargs)


PROFILES = {
    "base": {"features": ["jq", "node@20"]},
    "gpu": {"extends": ["base"], "features": [{"id": "python", "version": ">=3.10,<3.13"}]},
}


def rendered(requests: list) -> list[str]:  # type: ignore[type-arg]
    return [r.render() for r in requests]


def load_team(tmp_path: Path, text: str) -> team.TeamConfig:
    path = tmp_path / "runner-config.yml"
    path.write_text(text)
    return team.load(path)


def test_profiles_nest_and_labels_win(tmp_path: Path) -> None:
    config = load_team(
        tmp_path,
        "extends: [gpu]\nfeatures:\n  - node@22\n  - id: cmake\n    options: {fast: true}\n",
    )
    merged = team.merged_requests(
        team=config, settings=settings(profiles=PROFILES), labels=["feature:node@24", "linux"]
    )
    assert rendered(merged) == [
        "feature:jq",
        "feature:node@24",
        "feature:python@>=3.10,<3.13",
        "feature:cmake;fast=true",
    ]
    assert [r.source for r in merged] == ["profile:base", "label", "profile:gpu", "team"]


def test_the_selected_environment_overrides_the_file(tmp_path: Path) -> None:
    config = load_team(
        tmp_path,
        "features: [node@20]\nenvironments:\n  staging:\n    features: [node@22, jq]\n",
    )
    merged = team.merged_requests(team=config, settings=settings(environment="staging"))
    assert rendered(merged) == ["feature:node@22", "feature:jq"]
    plain = team.merged_requests(team=config, settings=settings())
    assert rendered(plain) == ["feature:node@20"]


def test_an_environment_the_file_does_not_define_is_no_override(tmp_path: Path) -> None:
    # features.environment is one agent setting for every repository: a file that defines
    # only staging must not fail every job on a prod runner.
    config = load_team(
        tmp_path, "features: [node@20]\nenvironments:\n  staging: {features: [node@22]}\n"
    )
    merged = team.merge(team=config, settings=settings(environment="prod"))
    assert rendered(merged.requests) == ["feature:node@20"]
    [note] = merged.notes
    assert "environment 'prod' (features.environment) is not defined" in note
    assert "it defines staging" in note
    assert "no environment override applies" in note


def test_a_request_a_later_one_replaces_is_noted_as_an_override(tmp_path: Path) -> None:
    profiles = {"build": {"features": ["cmake@3.29"]}}
    config = load_team(
        tmp_path, "extends: [build]\nfeatures:\n  - id: cmake\n    version: '>=3.30'\n"
    )
    merged = team.merge(team=config, settings=settings(profiles=profiles))
    assert rendered(merged.requests) == ["feature:cmake@>=3.30"]
    assert merged.notes == [
        "feature:cmake@3.29 (from profile:build) is overridden by feature:cmake@>=3.30 "
        "(from team): using feature:cmake@>=3.30"
    ]
    again = [requests.parse("cmake@3.30", source="cli")]
    same = team.merge(team=None, settings=settings(), labels=["feature:cmake@3.30"], extra=again)
    assert same.notes == []  # the same request again overrides nothing


def test_an_extends_cycle_is_an_error() -> None:
    profiles = {"a": {"extends": ["b"]}, "b": {"extends": ["c"]}, "c": {"extends": ["a"]}}
    config = team.parse({"extends": ["a"]}, source="t")
    with pytest.raises(team.TeamError, match=r"extends cycle: a -> b -> c -> a"):
        team.merged_requests(team=config, settings=settings(profiles=profiles))
    assert any("extends cycle" in p for p in team.check_profiles(settings(profiles=profiles)))


def test_an_unknown_profile_lists_the_profiles() -> None:
    config = team.parse({"extends": ["gpus"]}, source="t")
    with pytest.raises(
        team.TeamError, match="unknown profile 'gpus' in extends; profiles: base, gpu"
    ):
        team.merged_requests(team=config, settings=settings(profiles=PROFILES))


def test_an_unknown_key_has_a_line_number(tmp_path: Path) -> None:
    with pytest.raises(loading.ConfigError) as info:
        load_team(tmp_path, "features: [node]\nfeatrues: [jq]\n")
    assert str(info.value.problems[0]).startswith(
        f"{tmp_path / 'runner-config.yml'}:2:1: featrues: got ['jq']; unknown key; "
        "expected one of: extends, features, environments"
    )


def test_a_bad_entry_has_a_line_number(tmp_path: Path) -> None:
    with pytest.raises(loading.ConfigError) as info:
        load_team(tmp_path, "features:\n  - node@20\n  - node@$(id)\n")
    problem = str(info.value.problems[0])
    assert ":3:5: features[1]" in problem
    assert "is not a version spec" in problem


def test_profiles_in_the_agent_config_are_checked() -> None:
    problems = team.check_profiles(
        settings(profiles={"p": {"features": ["node@!"]}, "q": {"extends": ["nope"]}})
    )
    assert len(problems) == 2
    assert problems[0].startswith("features.profiles.p:")
    assert "unknown profile 'nope'" in problems[1]
