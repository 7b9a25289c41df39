"""The catalog as a Markdown table (``runner-agent features list --markdown``).

Policy: every cell comes from the manifests, except the last column, which says how each
feature was verified and is read from a YAML file (``--verified``: id -> {how, by}, where
``by`` names the test), which the test suite keeps honest; a feature that file does not
name says so. The README's catalog table is this output, and CI checks it is current.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import yaml

from agent.catalog import manifest

MAX_VERSIONS = 6


class VerifiedFileError(ValueError):
    """The --verified file is not a mapping of feature ids to text."""


def read_verified(path: Path) -> dict[str, str]:
    """The id -> how-verified text of ``path``: ``id: {how: TEXT, by: TEST}`` entries."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise VerifiedFileError(f"--verified {path}: cannot read it: {exc}") from exc
    expected = "a mapping of feature ids to {how: TEXT, by: TEST}, e.g. 'node: {how: ..., by: ...}'"
    if not isinstance(data, dict):
        raise VerifiedFileError(f"--verified {path}: expected {expected}")
    found: dict[str, str] = {}
    for ident, entry in data.items():
        how = entry.get("how") if isinstance(entry, dict) else None
        if not isinstance(ident, str) or not isinstance(how, str) or not how.strip():
            raise VerifiedFileError(f"--verified {path}: entry {ident!r}: expected {expected}")
        found[ident] = how.strip()
    return found


def platforms_cell(patterns: Sequence[str]) -> str:
    """``linux/x64/glibc, linux/x64/musl, darwin/arm64`` as ``linux x64 (+musl); darwin arm64``."""
    by_os: dict[str, dict[str, set[str]]] = {}
    for pattern in patterns:
        os_name, *rest = pattern.split("/")
        arches = by_os.setdefault(os_name, {})
        if not rest:
            arches.setdefault("any", set()).add("any")
            continue
        arches.setdefault(rest[0], set()).add(rest[1] if len(rest) > 1 else "any")
    parts = []
    for os_name, arches in by_os.items():
        shown = []
        for arch, libcs in arches.items():
            if arch == "any" or os_name != "linux" or libcs in ({"any"}, {"glibc"}):
                shown.append(arch)
            elif libcs == {"musl"}:
                shown.append(f"{arch} (musl)")
            else:
                shown.append(f"{arch} (+musl)")
        parts.append(f"{os_name} {' '.join(shown)}")
    return "; ".join(parts)


def versions_cell(feature: manifest.Feature) -> str:
    versions = feature.version_list()
    if not versions:
        return "the distribution's"
    shown = versions[-MAX_VERSIONS:]
    more = len(versions) - len(shown)
    text = ", ".join(shown) + (f" (+{more} older)" if more else "")
    return f"{text}; default {feature.default}"


def render(features: Mapping[str, manifest.Feature], verified: Mapping[str, str]) -> str:
    """The table, one row per feature in id order."""
    lines = [
        "| feature | versions | platforms | method | verified here |",
        "|---|---|---|---|---|",
    ]
    for ident in sorted(features):
        feature = features[ident]
        method = ", ".join(sorted({m.method for m in feature.install}))
        how = verified.get(ident, "not verified here")
        name = f"[`{ident}`]({feature.documentation_url})" if feature.documentation_url else ident
        cells = [name, versions_cell(feature), platforms_cell(feature.platforms), method, how]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"
