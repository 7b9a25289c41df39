"""Loading a catalog from folders of manifests.

Policy:
- folders load in order (the bundled catalog first, then ``catalog.paths``); a later
  folder's feature replaces an earlier one of the same id;
- a manifest that fails (bad YAML, a schema error, an id that differs from its folder, a
  script method whose script is missing) disables that feature alone, with a problem
  that names the file, line and column; the rest of the catalog serves;
- every problem of a manifest comes out of one load (schema and rules together, the id
  and the scripts too), in the order of the file, each once;
- after loading, a feature whose hard dependency is unknown, disabled or part of a cycle
  (of ``requires`` or ``installs_after``) is disabled too, with the reason;
- loading reads files and is blocking: the daemon calls it from a thread.
"""

from __future__ import annotations

import graphlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from agent.catalog import manifest, values
from agent.config import loading as config_loading
from agent.config import models as config_models
from agent.config import paths

logger = logging.getLogger(__name__)
MANIFEST = "feature.yaml"
MAX_MANIFEST_BYTES = 256 * 1024


@dataclass(frozen=True)
class Problem:
    """Why one feature is disabled."""

    feature: str
    source: str
    message: str

    def __str__(self) -> str:
        return f"{self.source}: {self.message}"


@dataclass
class Catalog:
    """The features that loaded, and the problems of those that did not."""

    features: dict[str, manifest.Feature] = field(default_factory=dict)
    folders: dict[str, Path] = field(default_factory=dict)
    """The folder each feature was loaded from (scripts live there)."""
    problems: list[Problem] = field(default_factory=list)

    def ids(self) -> list[str]:
        """Feature ids, sorted."""
        return sorted(self.features)


def load_manifest(path: Path) -> manifest.Feature:
    """Load and validate ``<folder>/<id>/feature.yaml``.

    Raises :class:`~agent.config.loading.ConfigError` with every problem found, in the
    order of the file: the schema's, the rules', an id that differs from the folder's
    name and a script method whose script is not in the folder.
    """
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise config_loading.ConfigError(
            [config_loading.Problem(str(path), "", "", f"cannot be read: {exc.strerror}")]
        ) from exc
    if size > MAX_MANIFEST_BYTES:
        raise config_loading.ConfigError(
            [
                config_loading.Problem(
                    str(path),
                    "",
                    "",
                    f"is {size} bytes; a manifest is at most {MAX_MANIFEST_BYTES}",
                )
            ]
        )
    text = config_loading.read_text(path)
    data, marks = config_loading.parse_yaml(text, source=str(path))
    if not isinstance(data, dict):
        raise config_loading.ConfigError(
            [
                config_loading.Problem(
                    f"{path}:1:1", "", "", "expected a mapping (id, name, versions, install...)"
                )
            ]
        )
    found = _folder_problems(path, data, marks)
    try:
        feature = manifest.Feature.model_validate(data)
    except ValidationError as exc:
        found += config_loading.problems_from(
            exc, source=str(path), marks=marks, model=manifest.Feature, shapes=manifest.SHAPES
        )
        raise config_loading.ConfigError(_in_file_order(found)) from exc
    if found:
        raise config_loading.ConfigError(_in_file_order(found))
    return feature


def _folder_problems(
    path: Path, data: dict[str, Any], marks: config_loading.Marks
) -> list[config_loading.Problem]:
    """What the manifest's folder says against it: its name, and the scripts it holds."""
    found = []
    folder = path.parent

    def problem(loc: tuple[str | int, ...], message: str) -> None:
        where = config_loading.locate(loc, str(path), marks)
        found.append(config_loading.Problem(where, config_loading.dotted(loc), "", message))

    ident = data.get("id")
    if isinstance(ident, str) and ident != folder.name:
        problem(("id",), f"id {ident!r} differs from its folder {folder.name!r}; they must match")
    install = data.get("install")
    for i, method in enumerate(install if isinstance(install, list) else []):
        if not isinstance(method, dict) or method.get("method") != "script":
            continue
        script = method.get("script", "install.sh")
        if not isinstance(script, str) or not values.is_relative_path(script):
            continue  # not a path the schema accepts: it says so
        if not (folder / script).is_file():
            problem(
                ("install", i, "script"), f"script method: {script!r} is not a file in {folder}"
            )
    return found


def _in_file_order(found: list[config_loading.Problem]) -> list[config_loading.Problem]:
    def position(item: config_loading.Problem) -> tuple[int, int]:
        parts = item.source.rsplit(":", 2)
        if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
            return int(parts[1]), int(parts[2])
        return 0, 0

    return sorted(found, key=position)  # stable: one position keeps pydantic's order


def folders_for(settings: config_models.CatalogSettings) -> list[Path]:
    """The catalog folders the settings name, bundled first."""
    return ([paths.bundled_catalog()] if settings.bundled else []) + list(settings.paths)


def load(folders: Iterable[Path], *, log: bool = True, features: Iterable[Path] = ()) -> Catalog:
    """Load every ``<folder>/<id>/feature.yaml`` of ``folders``, later folders winning.

    ``features``: single feature folders (``<id>/feature.yaml``) loaded after them, as
    ``features validate`` checks them. ``log``: log each problem (the daemon); a command
    that prints them passes False, so that each is shown once.
    """
    catalog = Catalog()
    for folder in folders:
        _load_folder(folder, catalog)
    for entry in features:
        _load_entry(entry, catalog)
    _check_dependencies(catalog)
    for problem in catalog.problems if log else ():
        logger.error(
            "feature %s disabled: %s", problem.feature, problem, extra={"feature": problem.feature}
        )
    return catalog


def _load_folder(folder: Path, catalog: Catalog) -> None:
    try:
        entries = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError as exc:
        catalog.problems.append(
            Problem("*", str(folder), f"catalog folder cannot be read: {exc.strerror}")
        )
        return
    for entry in entries:
        if (entry / MANIFEST).is_file():
            _load_entry(entry, catalog)


def _load_entry(entry: Path, catalog: Catalog) -> None:
    try:
        feature = load_manifest(entry / MANIFEST)
    except config_loading.ConfigError as exc:
        for item in exc.problems:
            catalog.problems.append(Problem(entry.name, item.source, _problem_text(item)))
        catalog.features.pop(entry.name, None)
        return
    if feature.id in catalog.features:
        logger.info(
            "feature %s from %s overrides %s", feature.id, entry.parent, catalog.folders[feature.id]
        )
    catalog.features[feature.id] = feature
    catalog.folders[feature.id] = entry


def _problem_text(item: config_loading.Problem) -> str:
    where = f"{item.path}: " if item.path else ""
    got = f"got {item.value}; " if item.value else ""
    return f"{where}{got}{item.expected}"


def _check_dependencies(catalog: Catalog) -> None:
    changed = True
    while changed:  # disabling one feature can disable those that need it
        changed = False
        for ident, feature in sorted(catalog.features.items()):
            for text in feature.requires:
                dep = manifest.parse_requirement(text).id
                if dep not in catalog.features:
                    catalog.problems.append(
                        Problem(
                            ident,
                            str(catalog.folders[ident] / MANIFEST),
                            f"requires {dep!r}, which is not in the catalog or is disabled",
                        )
                    )
                    del catalog.features[ident]
                    changed = True
                    break
    # installs_after is soft, but a cycle in it (or through it) has no order at all.
    graph = {
        ident: {manifest.parse_requirement(r).id for r in f.requires}
        | {a for a in f.installs_after if a in catalog.features}
        for ident, f in catalog.features.items()
    }
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as exc:
        cycle = exc.args[1]
        for ident in sorted(set(cycle)):
            catalog.problems.append(
                Problem(
                    ident,
                    str(catalog.folders[ident] / MANIFEST),
                    f"dependency cycle: {' -> '.join(cycle)}",
                )
            )
            catalog.features.pop(ident, None)
        _check_dependencies(catalog)
