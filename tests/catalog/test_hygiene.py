"""Catalog hygiene: the bundled features, each checked for what a user relies on.

Every manifest validates; every URL template renders, for every declared platform and
every known version, into an https URL with no placeholder left; every pinned hash has
the shape of a sha256; toolcache names are unique; every feature says what it is and
where its documentation lives; the dependency graph has no cycle; and ``runner-agent
plan`` succeeds for every feature on every platform it declares (the CLI in this
process, with its own argument parsing and output).
"""

from __future__ import annotations

import functools
import itertools
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent import cli
from agent.catalog import loading, manifest, methods, patterns, requests, resolver
from agent.config import paths
from agent.platform import model

# Every concrete platform a manifest can name (patterns cover subsets of these).
_LINUX_ARCHES = ("x64", "arm64", "arm", "ppc64", "s390x", "riscv64", "ia32")
CONCRETE: tuple[tuple[str, str, str | None], ...] = (
    *[("linux", arch, libc) for arch in _LINUX_ARCHES for libc in ("glibc", "musl")],
    ("darwin", "x64", None),
    ("darwin", "arm64", None),
    ("windows", "x64", None),
    ("windows", "arm64", None),
    ("windows", "ia32", None),
)
# The package manager a system method is planned with, per OS, when it names several.
_MANAGERS_BY_OS = {
    "linux": ("apt", "dnf", "yum", "zypper", "apk", "pacman"),
    "darwin": ("brew",),
    "windows": ("winget", "choco"),
}
_SHA256 = re.compile(r"[0-9a-f]{64}")
_DEMOS = {"hello"}
_REQUIREMENT_ID = re.compile(
    r"[a-z0-9][a-z0-9-]*"
)  # "python>=3.10" requires python  # OS-package demos, not developer tools


@functools.cache
def catalog() -> loading.Catalog:
    return loading.load([paths.bundled_catalog()])


def feature_ids() -> list[str]:
    return sorted(catalog().features)


def platform_pattern(os_name: str, arch: str, libc: str | None) -> str:
    return "/".join(p for p in (os_name, arch, libc) if p)


def covered(feature: manifest.Feature) -> list[tuple[str, str, str | None]]:
    return [
        each
        for each in CONCRETE
        if any(patterns.covers(p, platform_pattern(*each)) for p in feature.platforms)
    ]


def managers(feature: manifest.Feature, os_name: str) -> list[str | None]:
    """The package managers to plan a system method with on ``os_name`` (None: no system)."""
    named: set[str] = set()
    for method in feature.install:
        if isinstance(method, methods.SystemMethod):
            named |= set(method.packages)
    found = [m for m in _MANAGERS_BY_OS[os_name] if m in named]
    return list(found) or [None]


def targets(feature: manifest.Feature) -> Iterator[model.Platform]:
    for os_name, arch, libc in covered(feature):
        for manager in managers(feature, os_name):
            yield model.Platform(
                os=os_name,  # type: ignore[arg-type]
                arch=arch,  # type: ignore[arg-type]
                libc=libc,  # type: ignore[arg-type]
                package_manager=manager,  # type: ignore[arg-type]
            )


def strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from strings(item)


def test_every_manifest_validates() -> None:
    assert catalog().problems == []
    folders = sorted(p.parent.name for p in paths.bundled_catalog().glob("*/feature.yaml"))
    assert folders == feature_ids()


def test_the_catalog_has_25_features_20_of_them_developer_tools() -> None:
    ids = feature_ids()
    assert len(ids) >= 25, ids
    assert len(set(ids) - _DEMOS) >= 20


@pytest.mark.parametrize("ident", feature_ids())
def test_every_url_renders_for_every_platform_and_version(ident: str, tmp_path: Path) -> None:
    feature = catalog().features[ident]
    assert covered(feature), f"{ident} declares no platform this test knows"
    versions = feature.version_list() or [None]
    planned = 0
    for target, version in itertools.product(list(targets(feature)), versions):
        spec = f"feature:{ident}@{version}" if version else f"feature:{ident}"
        plan = resolver.resolve(
            [requests.parse(spec)], catalog(), target, store_root=str(tmp_path / "store")
        )
        [entry] = [f for f in plan.features if f["id"] == ident]
        for action in entry["actions"]:
            for key in ("url", "checksum_url", "index_url"):
                if key in action:
                    url = action[key]
                    assert url.startswith("https://"), (ident, target.triple, key, url)
        leftover = [s for s in strings(entry) if re.search(r"\{[a-z_]+\}", s)]
        assert leftover == [], (ident, target.triple, version, leftover)
        planned += 1
    assert planned >= len(versions)


@pytest.mark.parametrize("ident", feature_ids())
def test_every_pinned_hash_is_a_sha256_for_a_known_version(ident: str) -> None:
    feature = catalog().features[ident]
    known = set(feature.version_list())
    for method in feature.install:
        if isinstance(method, methods.ArchiveMethod):
            for version, pins in method.sha256.items():
                assert version in known, (ident, version)
                for pattern, digest in pins.items():
                    assert _SHA256.fullmatch(digest), (ident, version, pattern, digest)


def test_every_toolcache_name_is_unique() -> None:
    features = catalog().features.values()
    names = [f.toolcache_name for f in features if f.toolcache_name]
    assert len(names) == len(set(names)), names
    # The store folder is the toolcache name or else the id: one folder, one feature, also
    # on a case-insensitive filesystem (macOS runners).
    folders = [(f.toolcache_name or f.id).lower() for f in features]
    assert len(folders) == len(set(folders)), sorted(folders)


@pytest.mark.parametrize("ident", feature_ids())
def test_every_feature_says_what_it_is_and_where_its_documentation_is(ident: str) -> None:
    feature = catalog().features[ident]
    assert len(feature.description) >= 40, ident
    assert feature.documentation_url, ident
    assert feature.documentation_url.startswith("https://"), feature.documentation_url
    assert feature.check is not None or all(m.check for m in feature.install), ident


def test_the_dependency_graph_is_acyclic() -> None:
    features = catalog().features
    edges = {
        ident: {_REQUIREMENT_ID.match(r)[0] for r in f.requires} | set(f.installs_after)  # type: ignore[index]
        for ident, f in features.items()
    }
    done: set[str] = set()

    def visit(ident: str, path: tuple[str, ...]) -> None:
        assert ident not in path, " -> ".join((*path, ident))
        if ident in done:
            return
        for after in edges.get(ident, ()):
            visit(after, (*path, ident))
        done.add(ident)

    for ident in features:
        visit(ident, ())
    for ident, needs in edges.items():
        assert needs <= set(features), (ident, needs - set(features))


def plan_cases() -> list[tuple[str, str, str | None]]:
    cases = []
    for ident in feature_ids():
        feature = catalog().features[ident]
        for target in targets(feature):
            cases.append((ident, platform_pattern(target.os, target.arch, target.libc),
                          target.package_manager))  # fmt: skip
    return cases


def test_runner_agent_plan_succeeds_for_every_feature_on_every_declared_platform(
    capsys: pytest.CaptureFixture[str],
) -> None:
    failed = []
    cases = plan_cases()
    for ident, pattern, manager in cases:
        os_name, arch, *rest = pattern.split("/")
        argv = ["plan", f"feature:{ident}", "--os", os_name, "--arch", arch]
        argv += ["--libc", rest[0]] if rest else []
        argv += ["--package-manager", manager] if manager else []
        code = cli.main(argv)
        out, err = capsys.readouterr()
        if code != 0:
            failed.append(f"{' '.join(argv)}: exit {code}: {err.strip()[-300:]}")
            continue
        plan = json.loads(out)
        # The feature asked for, after whatever it requires (python for pytorch).
        assert [f["id"] for f in plan["features"]][-1] == ident, (argv, plan["features"])
    assert failed == [], "\n".join(failed)
    assert len(cases) >= len(feature_ids())


def test_every_opt_in_method_plans_on_its_platforms_and_versions() -> None:
    """A method chosen by option (when) is planned, for each of its platforms and each
    version it serves, with exactly those options: the step uses that method."""
    failed = []
    seen = 0
    for ident in feature_ids():
        feature = catalog().features[ident]
        for method in feature.install:
            if not method.when:
                continue
            options = "".join(f";{k}={v}" for k, v in method.when.items())
            for target in targets(feature):
                if not any(patterns.matches(p, target) for p in method.platforms):
                    continue
                for version in method.versions or feature.version_list():
                    label = f"feature:{ident}@{version}{options}"
                    try:
                        plan = resolver.resolve(
                            [requests.parse(label)], catalog(), target, store_root="/s"
                        )
                    except resolver.ResolutionError as exc:
                        failed.append(f"{label} on {target.triple}: {exc}")
                        continue
                    [step] = [f for f in plan.features if f["id"] == ident]
                    assert step["method"] == method.method, (label, target.triple)
                    seen += 1
    assert failed == [], "\n".join(failed)
    assert seen > 0
