"""Every interval, timeout, size and count in the settings has a floor and a ceiling, and
says why: ``server.config_poll_seconds: 1e-9`` was accepted and then cost a full core."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.config import models
from tests.support.agentproc import run_cli as cli

# Numbers that are not quantities: an id, an expected HTTP status, a feature option's value.
NOT_QUANTITIES = {
    "server.socket_group",
    "services.*.user",
    "services.*.params.group",
    "features.profiles.*.features[].options.*",
}


BOUND = {"ge": "minimum", "le": "maximum", "gt": "exclusiveMinimum", "lt": "exclusiveMaximum"}


def numeric_fields() -> Iterator[tuple[str, dict[str, Any]]]:
    schema = models.Settings.model_json_schema()
    defs = schema["$defs"]
    seen: set[str] = set()

    def walk(node: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
        if "$ref" in node:
            yield from walk(defs[node["$ref"].rsplit("/", 1)[-1]], path)
            return
        # A size's schema is a union (a number or "64KiB"); its bounds sit beside it as
        # ge/le, which pydantic enforces for both forms.
        outer = {BOUND.get(k, k): v for k, v in node.items() if k in BOUND}
        for key in ("anyOf", "oneOf", "allOf"):
            for sub in node.get(key, []):
                yield from walk({**sub, **outer} if "type" in sub else sub, path)
        if node.get("type") in ("number", "integer") and path not in seen:
            seen.add(path)
            yield path, node
        for name, sub in node.get("properties", {}).items():
            yield from walk(sub, f"{path}.{name}" if path else name)
        for sub in node.get("patternProperties", {}).values():
            yield from walk(sub, f"{path}.*")
        if isinstance(node.get("additionalProperties"), dict):
            yield from walk(node["additionalProperties"], f"{path}.*")
        if isinstance(node.get("items"), dict):
            yield from walk(node["items"], f"{path}[]")

    yield from walk(schema, "")


def descriptions() -> dict[str, str]:
    """Each field's description, found again by path (the walk above loses it at $ref)."""
    schema = models.Settings.model_json_schema()
    defs = schema["$defs"]
    out: dict[str, str] = {}

    def walk(node: dict[str, Any], path: str) -> None:
        if "$ref" in node:
            walk(defs[node["$ref"].rsplit("/", 1)[-1]], path)
            return
        for key in ("anyOf", "oneOf", "allOf"):
            for sub in node.get(key, []):
                walk(sub, path)
        for name, sub in node.get("properties", {}).items():
            child = f"{path}.{name}" if path else name
            if "description" in sub:
                out[child] = sub["description"]
            walk(sub, child)
        for sub in node.get("patternProperties", {}).values():
            walk(sub, f"{path}.*")
        if isinstance(node.get("additionalProperties"), dict):
            walk(node["additionalProperties"], f"{path}.*")
        if isinstance(node.get("items"), dict):  # a list's item: its own words, or the list's
            item = node["items"]
            if "description" in item or path in out:
                out[f"{path}[]"] = item.get("description", out.get(path, ""))
            walk(item, f"{path}[]")

    walk(schema, "")
    return out


FIELDS = sorted(numeric_fields())


def test_the_walk_finds_the_settings_numbers() -> None:
    paths = {path for path, _ in FIELDS}
    assert {
        "server.config_poll_seconds",
        "cache.janitor_interval_seconds",
        "cache.size_budget",
        "installer.step_timeout_seconds",
        "services.*.restart.backoff_initial_seconds",
        "services.*.health.interval_seconds",
    } <= paths


@pytest.mark.parametrize(("path", "node"), FIELDS, ids=[path for path, _ in FIELDS])
def test_every_quantity_has_a_floor_a_ceiling_and_a_reason(path: str, node: dict[str, Any]) -> None:
    if path in NOT_QUANTITIES:
        return
    assert "minimum" in node or "exclusiveMinimum" in node, f"{path} has no minimum"
    assert "maximum" in node or "exclusiveMaximum" in node, f"{path} has no maximum"
    description = descriptions().get(path, "")
    assert re.search(r"\b(Range|At least|At most|Between)\b", description), (
        f"{path}: the description should state its bounds and why: {description!r}"
    )


@pytest.mark.parametrize(
    ("yaml_text", "fragment"),
    [
        ("server:\n  config_poll_seconds: 1.0e-9\n", "server.config_poll_seconds"),
        ("cache:\n  janitor_interval_seconds: 0.001\n", "cache.janitor_interval_seconds"),
        ("installer:\n  step_timeout_seconds: 1.0e12\n", "installer.step_timeout_seconds"),
        ("server:\n  max_request_bytes: 1TiB\n", "server.max_request_bytes"),
        (
            "services:\n  d:\n    command: [sleep, '1']\n    health:\n"
            "      {kind: exec, command: ['true'], interval_seconds: 0.000001}\n",
            "interval_seconds",
        ),
    ],
)
def test_an_out_of_range_setting_is_refused_with_its_name(
    tmp_path: Path, yaml_text: str, fragment: str
) -> None:
    config = tmp_path / "agent.yaml"
    config.write_text(yaml_text)
    proc = cli("config", "validate", str(config))
    assert proc.returncode == 1, proc.stdout
    assert fragment in proc.stderr
    assert re.search(r"greater than|less than", proc.stderr), proc.stderr
