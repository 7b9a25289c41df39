"""Synthetic manifests for catalog tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from agent.catalog import loading

SHA = "a" * 64


def archive_feature(ident: str, **overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": ident,
        "name": ident.title(),
        "versions": ["1.0.0", "1.2.0", "1.20.0", "2.0.0", "2.1.0rc1"],
        "platforms": ["linux", "darwin/arm64"],
        "toolcache_name": ident,
        "install": [
            {
                "method": "archive",
                "platforms": ["linux/x64", "linux/arm64", "darwin/arm64"],
                "url": "https://example.invalid/{version}/" + ident + "-{os}-{arch}.tar.gz",
                "checksum_url": "https://example.invalid/{version}/SHA256SUMS",
                "strip_components": 1,
            }
        ],
        "env": {"path": ["bin"], "vars": {ident.upper().replace("-", "_") + "_HOME": "{prefix}"}},
        "check": {"command": [ident, "--version"], "expect": "{version}"},
    }
    data.update(overrides)
    return data


def write(folder: Path, data: dict[str, Any] | str, name: str | None = None) -> Path:
    ident = name or (data["id"] if isinstance(data, dict) else "broken")
    path = folder / ident / "feature.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


def catalog_of(folder: Path, *features: dict[str, Any]) -> loading.Catalog:
    for data in features:
        write(folder, data)
    return loading.load([folder])


# A manifest with four problems, one per line: a misspelt key (3:1), a version that is not
# concrete (4:21), a default outside its enum (6:27), a method platform the feature does
# not have (10:28).
FOUR_ERRORS = """\
id: tool
name: Tool
versoins: ["1.0.0"]
versions: ["1.0.0", "1.x"]
options:
  flavour: {type: string, default: big, enum: [small]}
platforms: [linux]
install:
  - method: archive
    platforms: [linux/x64, darwin/arm64]
    url: https://example.invalid/{version}.tar.gz
    checksum_url: https://example.invalid/{version}/SHA256SUMS
check: {command: [tool], expect: "{version}"}
"""
