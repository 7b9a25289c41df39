"""Catalog load time and plan time.

Run from the repository root with the venv's interpreter::

    .venv/bin/python bench/catalog.py [--synthetic 200] [--runs 30] [--plans 2000]

Method (one process; nothing asserted, a table is printed):

1. Synthetic manifests are written to a temp folder: archive features with per-version
   sha256 tables and URL templates, pip features, and system features, with hard
   dependencies between them, so validation does the same work as for real manifests.
2. Load time: ``agent.catalog.loading.load`` over the bundled catalog plus 19 synthetic
   manifests (25 in all, the size of the planned full catalog), and over the bundled
   catalog plus ``--synthetic`` manifests; median and p90 over ``--runs``. The baseline
   is parsing the same files with ``yaml.load`` (libyaml when present) and nothing else,
   in the same process, so the ratio shows what validation adds on top of reading YAML.
3. Plan time: a 10-feature request (the six bundled features plus four synthetic ones
   with dependencies) resolved ``--plans`` times for linux/x64/glibc with apt;
   p50 and p99.

Targets (from the catalog issue): load <= 50 ms for 25 manifests; plan p99 <= 5 ms.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchkit import pct, timed

from agent.catalog import loading, requests, resolver
from agent.config import paths
from agent.platform import model

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def synthetic(index: int) -> dict[str, object]:
    ident = f"syn{index:03d}"
    kind = index % 3
    base: dict[str, object] = {
        "id": ident,
        "name": f"Synthetic {index}",
        "description": "A generated feature for the benchmark.",
        "platforms": ["linux", "darwin/arm64"],
        "options": {"flavour": {"type": "string", "default": "a", "enum": ["a", "b"]}},
    }
    if index >= 3:
        base["requires"] = [f"syn{index - 3:03d}>=1.0"]
    versions = [
        f"{major}.{minor}.{patch}" for major in (1, 2) for minor in range(4) for patch in (0, 3)
    ]
    if kind == 0:
        base |= {
            "versions": versions,
            "toolcache_name": ident,
            "install": [
                {
                    "method": "archive",
                    "platforms": ["linux/x64", "linux/arm64", "darwin/arm64"],
                    "url": "https://example.invalid/{version}/" + ident + "-{target}.tar.gz",
                    "targets": {
                        "linux/x64": "linux-x64",
                        "linux/arm64": "linux-arm64",
                        "darwin/arm64": "darwin-arm64",
                    },
                    "sha256": {
                        v: {"linux/x64": "ab" * 32, "linux/arm64": "cd" * 32} for v in versions
                    },
                    "checksum_url": "https://example.invalid/{version}/SHA256SUMS",
                    "strip_components": 1,
                }
            ],
            "env": {"path": ["bin"], "vars": {"SYN_HOME": "{prefix}"}},
            "check": {"command": [ident, "--version"], "expect": "{version}"},
        }
    elif kind == 1:
        base |= {
            "versions": versions,
            "toolcache_name": ident,
            "install": [
                {
                    "method": "pip",
                    "platforms": ["linux", "darwin/arm64"],
                    "packages": [ident + "=={version}"],
                }
            ],
            "env": {"path": ["bin"]},
        }
    else:
        base.pop("requires", None)
        base |= {
            "install": [
                {
                    "method": "system",
                    "platforms": ["linux", "darwin/arm64"],
                    "packages": {"apt": [ident], "dnf": [ident], "apk": [ident], "brew": [ident]},
                }
            ],
            "check": {"command": [ident, "--help"], "expect": "usage"},
        }
    return base


def write_synthetic(folder: Path, count: int) -> None:
    for index in range(count):
        target = folder / f"syn{index:03d}" / "feature.yaml"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(yaml.safe_dump(synthetic(index), sort_keys=False))


def parse_only(folders: list[Path]) -> None:
    for folder in folders:
        for path in sorted(folder.glob("*/feature.yaml")):
            yaml.load(path.read_text(), Loader=_Loader)  # noqa: S506 - a safe loader


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--synthetic", type=int, default=200)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--plans", type=int, default=2000)
    args = parser.parse_args()
    bundled = paths.bundled_catalog()
    tmp = Path(tempfile.mkdtemp(prefix="ra-bench-catalog-"))
    try:
        small, large = tmp / "small", tmp / "large"
        bundled_count = len(list(bundled.glob("*/feature.yaml")))
        write_synthetic(small, 25 - bundled_count)
        write_synthetic(large, args.synthetic)
        loading.load([bundled, small])  # warm imports and caches once
        rows = []
        for label, folders, count in (
            ("25 manifests", [bundled, small], 25),
            (
                f"{bundled_count + args.synthetic} manifests",
                [bundled, large],
                bundled_count + args.synthetic,
            ),
        ):
            load = timed(lambda f=folders: loading.load(f), args.runs)
            base = timed(lambda f=folders: parse_only(f), args.runs)
            catalog = loading.load(folders)
            assert not catalog.problems, catalog.problems[:3]
            rows.append(
                (
                    label,
                    count,
                    statistics.median(load),
                    pct(load, 0.9),
                    statistics.median(base),
                )
            )
        catalog = loading.load([bundled, small])
        target = model.Platform(os="linux", arch="x64", libc="glibc", package_manager="apt")
        labels = [f"feature:{i}" for i in ("node", "python", "ninja", "cmake@3", "jq", "hello")]
        labels += [
            "feature:syn006",
            "feature:syn007;flavour=b",
            "feature:syn009@1.2",
            "feature:syn010",
        ]
        wanted = requests.from_labels(labels)
        plan = resolver.resolve(wanted, catalog, target, store_root="/s")
        features_in_plan = len(plan.features)
        samples = timed(
            lambda: resolver.resolve(wanted, catalog, target, store_root="/s").to_json(), args.plans
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"command: {' '.join([sys.executable, *sys.argv])}")
    libyaml = _Loader is not yaml.SafeLoader
    print(
        f"python {sys.version.split()[0]}; libyaml {libyaml}; runs {args.runs}; plans {args.plans}"
    )
    print()
    print("| metric | value | baseline (YAML parse only) | ratio | target | met |")
    print("|---|---:|---:|---:|---:|:---|")
    for label, count, median, p90, base in rows:
        target_text, met = "-", "-"
        if count == 25:
            target_text, met = "<= 50 ms", "target met" if median <= 0.050 else "MISSED"
        ratio = f"{median / base:.1f}x"
        print(
            f"| load {label}, median (ms) | {median * 1e3:.1f} | {base * 1e3:.1f} | {ratio} "
            f"| {target_text} | {met} |"
        )
        print(f"| load {label}, p90 (ms) | {p90 * 1e3:.1f} | - | - | - | - |")
    p50, p99 = pct(samples, 0.5), pct(samples, 0.99)
    name = f"plan, 10 requests -> {features_in_plan} features"
    print(f"| {name}, p50 (ms) | {p50 * 1e3:.2f} | - | - | - | - |")
    met = "target met" if p99 <= 0.005 else "MISSED"
    print(f"| {name}, p99 (ms) | {p99 * 1e3:.2f} | - | - | <= 5 ms | {met} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
