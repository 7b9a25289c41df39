"""Team configuration: ``.github/runner-config.yml`` and the agent's feature profiles.

A repository asks for features in one file::

    extends: [gpu-base]            # profiles from the agent config's features.profiles
    features:
      - node@20                    # the label grammar, without the feature: prefix
      - id: python                 # or a mapping, where full ranges are allowed
        version: ">=3.10,<3.13"
        options: {pip: true}
    environments:                  # overrides, chosen by the agent's features.environment
      staging:
        features: [node@22]

Policy: the merge order is profiles (each one's own ``extends`` first, depth first),
then the file's ``features``, then the selected environment, then the job's labels;
later wins, merged by feature id (spec replaced, options key by key). An ``extends``
cycle and an unknown profile are errors that say what exists; an environment the file does
not define is no override, and the plan's warnings say so, as they name every request a
later one overrode.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from agent.catalog import requests
from agent.config import loading as config_loading
from agent.config import models as config_models


class FeatureEntry(BaseModel):
    """A feature written as a mapping."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    version: str | None = None
    options: dict[str, str | bool | int] = Field(default_factory=dict)


def _entry_request(
    entry: str | FeatureEntry | config_models.ProfileFeature | Mapping[str, Any], source: str
) -> requests.Request:
    if isinstance(entry, FeatureEntry | config_models.ProfileFeature):
        entry = entry.model_dump(exclude_none=True)
    if isinstance(entry, Mapping):
        return requests.from_mapping(entry, source=source)
    return requests.parse(entry, allow_ranges=True, source=source)


def _check_entry(value: str | FeatureEntry) -> str | FeatureEntry:
    try:
        _entry_request(value, "team")
    except requests.RequestError as exc:
        raise ValueError(str(exc)) from None
    return value


Entry = Annotated[str | FeatureEntry, AfterValidator(_check_entry)]


class Environment(BaseModel):
    """Overrides for one environment."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    extends: tuple[str, ...] = ()
    features: tuple[Entry, ...] = ()


class TeamConfig(BaseModel):
    """The contents of ``.github/runner-config.yml``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    extends: tuple[str, ...] = Field(default=(), description="Profiles to start from.")
    features: tuple[Entry, ...] = Field(default=(), description="Features this repository needs.")
    environments: dict[str, Environment] = Field(
        default_factory=dict, description="Overrides selected by the agent's features.environment."
    )


class TeamError(ValueError):
    """A team configuration that cannot be used; one problem per line."""


def load(path: Path) -> TeamConfig:
    """Load and validate a team configuration file, with positioned errors."""
    text = config_loading.read_text(path)
    data, marks = config_loading.parse_yaml(text, source=str(path))
    return parse(data, source=str(path), marks=marks)


def parse(data: Any, *, source: str, marks: config_loading.Marks | None = None) -> TeamConfig:
    """Validate already-parsed team configuration data."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise config_loading.ConfigError(
            [
                config_loading.Problem(
                    source,
                    "",
                    config_loading.show(data),
                    "expected a mapping with extends, features and environments",
                )
            ]
        )
    try:
        return TeamConfig.model_validate(data)
    except ValidationError as exc:
        raise config_loading.ConfigError(
            config_loading.problems_from(exc, source=source, marks=marks, model=TeamConfig)
        ) from exc


def _profile_requests(
    name: str,
    profiles: Mapping[str, config_models.Profile],
    trail: tuple[str, ...],
    out: requests.Merger,
) -> None:
    if name in trail:
        raise TeamError(f"extends cycle: {' -> '.join((*trail, name))}")
    profile = profiles.get(name)
    if profile is None:
        known = ", ".join(sorted(profiles)) or "none are configured"
        raise TeamError(f"unknown profile {name!r} in extends; profiles: {known}")
    for parent in profile.extends:
        _profile_requests(parent, profiles, (*trail, name), out)
    out.add(_entry_request(e, f"profile:{name}") for e in profile.features)


@dataclass(frozen=True)
class Merged:
    """The merged requests, and notes for the plan's warnings: which request overrode
    which, and an environment the file does not define."""

    requests: list[requests.Request]
    notes: list[str]


def merge(
    *,
    team: TeamConfig | None,
    settings: config_models.FeaturesSettings,
    labels: Sequence[str] = (),
    extra: Sequence[requests.Request] = (),
) -> Merged:
    """Merge profiles, the team file, its environment, ``extra`` and the job's labels.

    An environment the file does not define is no override (the note says so), not an
    error: one agent setting applies to every repository, and most define no
    environments at all."""
    merger = requests.Merger()
    notes: list[str] = []
    try:
        if team is not None:
            for name in team.extends:
                _profile_requests(name, settings.profiles, (), merger)
            merger.add(_entry_request(e, "team") for e in team.features)
            env_name = settings.environment
            env = team.environments.get(env_name) if env_name else None
            if env_name and env is None and team.environments:
                known = ", ".join(sorted(team.environments))
                notes.append(
                    f"environment {env_name!r} (features.environment) is not defined in the "
                    f"team configuration (it defines {known}): no environment override applies"
                )
            if env is not None:
                for name in env.extends:
                    _profile_requests(name, settings.profiles, (), merger)
                merger.add(_entry_request(e, f"environment:{env_name}") for e in env.features)
        merger.add(extra)
        merger.add(requests.from_labels(labels))
    except requests.RequestError as exc:
        raise TeamError(str(exc)) from None
    return Merged(merger.result(), notes + merger.overrides)


def merged_requests(
    *,
    team: TeamConfig | None,
    settings: config_models.FeaturesSettings,
    labels: Sequence[str] = (),
    extra: Sequence[requests.Request] = (),
) -> list[requests.Request]:
    """:func:`merge`'s requests alone."""
    return merge(team=team, settings=settings, labels=labels, extra=extra).requests


def check_profiles(settings: config_models.FeaturesSettings) -> list[str]:
    """Problems in the agent config's profiles (grammar, cycles, unknown parents)."""
    problems: list[str] = []
    for name, profile in sorted(settings.profiles.items()):
        for entry in profile.features:
            try:
                _entry_request(entry, f"profile:{name}")
            except requests.RequestError as exc:
                problems.append(f"features.profiles.{name}: {exc}")
        try:
            _profile_requests(name, settings.profiles, (), requests.Merger())
        except TeamError as exc:
            problems.append(f"features.profiles.{name}: {exc}")
        except requests.RequestError:
            pass
    return problems
