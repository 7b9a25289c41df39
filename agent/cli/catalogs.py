"""``runner-agent features list | show | schema | validate`` and ``runner-agent plan``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.cli import common, locking
from agent.config import loading

if TYPE_CHECKING:  # imported where used: commands start fast
    from agent.catalog import loading as catalog_loading
    from agent.catalog import lockfile, resolver
    from agent.config import models as config_models
    from agent.platform import model
    from agent.sources import indexes


def add_parsers(sub: Any, config_arg: Callable[[argparse.ArgumentParser], None]) -> None:
    """Register ``features`` and ``plan``."""
    features = sub.add_parser("features", help="list, show or describe catalog features")
    fsub = features.add_subparsers(dest="features_command", required=True, metavar="SUBCOMMAND")
    listing = fsub.add_parser(
        "list",
        help="list the catalog's features",
        description="List the features of the catalog (bundled, then catalog.paths), and "
        "those disabled by a bad manifest with the reason.",
    )
    config_arg(listing)
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.add_argument(
        "--markdown", action="store_true", help="print a Markdown table (the README's catalog)"
    )
    listing.add_argument(
        "--verified",
        type=Path,
        metavar="FILE",
        help="with --markdown: a YAML file of feature id -> how it was verified",
    )
    listing.set_defaults(run=run_list)
    show = fsub.add_parser(
        "show", help="show one feature's manifest", description="Print one feature's manifest."
    )
    show.add_argument("id")
    config_arg(show)
    show.set_defaults(run=run_show)
    schema = fsub.add_parser(
        "schema",
        help="print the manifest JSON Schema",
        description="Print the JSON Schema of feature.yaml manifests, for editors.",
    )
    schema.set_defaults(run=run_schema)
    validate = fsub.add_parser(
        "validate",
        help="check feature manifests before they are deployed",
        description="Check the manifests of catalog folders (<folder>/<id>/feature.yaml) or "
        "feature folders (<id>/feature.yaml), with their dependencies against the bundled "
        "catalog, and print every problem as file:line:column: message. Exit 0 when all are "
        "valid, 1 when one is not, 2 when a folder holds no manifest.",
    )
    validate.add_argument("folders", nargs="+", type=Path, metavar="DIR")
    validate.add_argument(
        "--no-bundled",
        action="store_true",
        help="check dependencies against the given folders alone",
    )
    validate.set_defaults(run=run_validate)
    locking.add_parser(fsub, config_arg)

    plan = sub.add_parser(
        "plan",
        help="print the install plan for feature requests",
        description=(
            "Resolve feature requests (labels such as feature:node@20, or id@spec with full "
            "ranges) for a target platform and print the plan as JSON. The target defaults "
            "to this machine; the flags describe another, e.g. --os linux --arch arm64."
        ),
    )
    plan.add_argument("requests", nargs="*", metavar="REQUEST")
    plan.add_argument("--os", help="linux, darwin or windows")
    plan.add_argument("--arch", help="x64, arm64, arm, ppc64, s390x, riscv64 or ia32")
    plan.add_argument("--libc", help="glibc or musl (linux)")
    plan.add_argument("--package-manager", help="apt, dnf, yum, zypper, apk, pacman, brew...")
    plan.add_argument("--cuda-driver", help="the driver's CUDA version, e.g. 12.4")
    plan.add_argument("--team", type=Path, help="a .github/runner-config.yml to merge first")
    plan.add_argument("--environment", help="which environments.<name> of the team file applies")
    config_arg(plan)
    plan.set_defaults(run=run_plan)


def _catalog(args: argparse.Namespace) -> Any:
    from agent.catalog import loading as catalog_loading

    settings = common.settings(args)
    # Not logged: the commands print the problems they concern, once.
    folders = catalog_loading.folders_for(settings.catalog)
    return catalog_loading.load(folders, log=False), settings


def run_list(args: argparse.Namespace) -> int:
    """List features."""
    catalog, _ = _catalog(args)
    rows = []
    for ident in catalog.ids():
        feature = catalog.features[ident]
        rows.append(
            {
                "id": ident,
                "name": feature.name,
                "versions": feature.version_list() or ["system"],
                "default": feature.default if feature.versioned else "system",
                "methods": sorted({m.method for m in feature.install}),
                "platforms": list(feature.platforms),
            }
        )
    disabled = [{"feature": p.feature, "problem": str(p)} for p in catalog.problems]
    if args.markdown:
        from agent.cli import catalogtable

        try:
            verified = catalogtable.read_verified(args.verified) if args.verified else {}
        except catalogtable.VerifiedFileError as exc:
            return common.fail(str(exc), common.EXIT_USAGE)
        sys.stdout.write(catalogtable.render(catalog.features, verified))
        for item in disabled:
            print(f"DISABLED {item['feature']}: {item['problem']}", file=sys.stderr)
        return common.EXIT_OK if not disabled else common.EXIT_BAD
    if args.json:
        print(json.dumps({"features": rows, "disabled": disabled}, indent=2))
        return common.EXIT_OK
    for row in rows:
        versions = row["versions"]
        shown = ", ".join(versions[-3:]) + (" ..." if len(versions) > 3 else "")
        print(f"{row['id']:<12} {row['name']:<20} {'/'.join(row['methods']):<10} {shown}")
    for item in disabled:
        print(f"DISABLED {item['feature']}: {item['problem']}", file=sys.stderr)
    return common.EXIT_OK


def run_show(args: argparse.Namespace) -> int:
    """Show one manifest."""
    import yaml

    from agent.catalog import resolver

    catalog, _ = _catalog(args)
    ident = args.id.lower()
    feature = catalog.features.get(ident)
    if feature is None:
        disabled = [p for p in catalog.problems if p.feature == ident]
        if disabled:
            return common.fail(f"feature {ident!r} is disabled: {disabled[0]}")
        return common.fail(f"unknown feature {ident!r}{resolver.suggest(ident, catalog.ids())}")
    print(f"# {catalog.folders[ident] / 'feature.yaml'}")
    print(
        yaml.safe_dump(feature.model_dump(mode="json", exclude_defaults=True), sort_keys=False),
        end="",
    )
    return common.EXIT_OK


def run_schema(args: argparse.Namespace) -> int:
    """Print the manifest schema."""
    from agent.catalog import manifest

    print(json.dumps(manifest.Feature.model_json_schema(), indent=2))
    return common.EXIT_OK


def run_validate(args: argparse.Namespace) -> int:
    """Check manifests; print every problem."""
    from agent.catalog import loading as catalog_loading
    from agent.config import paths

    def manifests(folder: Path) -> int:
        try:
            return sum(1 for e in folder.iterdir() if (e / catalog_loading.MANIFEST).is_file())
        except OSError:
            return 0

    catalogs: list[Path] = []
    features: list[Path] = []
    for folder in args.folders:
        if (folder / catalog_loading.MANIFEST).is_file():
            features.append(folder)
        elif manifests(folder):
            catalogs.append(folder)
        else:
            return common.fail(
                f"{folder} holds no {catalog_loading.MANIFEST}, nor folders that do; give a "
                "catalog folder (<folder>/<id>/feature.yaml) or a feature folder",
                common.EXIT_USAGE,
            )
    bundled = [] if args.no_bundled else [paths.bundled_catalog()]
    catalog = catalog_loading.load([*bundled, *catalogs], features=features, log=False)
    for problem in catalog.problems:
        print(problem)
    checked = len(features) + sum(manifests(c) for c in catalogs)
    broken = len({p.feature for p in catalog.problems})
    if broken:
        print(
            f"{len(catalog.problems)} problem(s) in {broken} of {checked} manifest(s)",
            file=sys.stderr,
        )
        return common.EXIT_BAD
    print(f"{checked} manifest(s) valid", file=sys.stderr)
    return common.EXIT_OK


def target_platform(args: argparse.Namespace) -> Any:
    """This machine, with whatever the flags override."""
    from agent.platform import detect, model, packagers

    local = detect.detect()
    os_name = model.normalize_os(args.os) if args.os else local.os
    same_os = os_name == local.os
    arch = model.normalize_arch(args.arch) if args.arch else local.arch
    if args.libc and os_name != "linux":
        raise model.PlatformError(f"--libc {args.libc} applies to linux only, not {os_name}")
    libc = args.libc or (local.libc if same_os else ("glibc" if os_name == "linux" else None))
    # Another OS: its usual manager (brew, winget); another Linux needs --package-manager.
    manager = args.package_manager or (
        local.package_manager if same_os else packagers.manager_for("unknown", os=os_name)
    )
    return model.Platform(
        os=os_name,
        arch=arch,
        libc=libc if os_name == "linux" else None,
        package_manager=manager,
        distro=local.distro if same_os and not args.package_manager else None,
        distro_version=local.distro_version if same_os and not args.package_manager else None,
        cuda_driver=args.cuda_driver,
    )


def run_plan(args: argparse.Namespace) -> int:
    """Resolve requests and print the plan."""
    from agent.platform import model

    catalog, settings = _catalog(args)
    try:
        target = target_platform(args)
    except model.PlatformError as exc:
        return common.fail(str(exc), common.EXIT_USAGE)
    features = settings.features
    if args.environment:
        features = features.model_copy(update={"environment": args.environment})
    from agent.sources import indexes

    plan = resolve_cli(
        args.requests,
        args.team,
        catalog,
        target,
        features,
        store_root=str(settings.cache.root),
        version_indexes=indexes.from_settings(settings),
    )
    if isinstance(plan, int):
        return plan
    sys.stdout.write(plan.to_json())
    return common.EXIT_OK


def resolve_cli(
    given: list[str],
    team_path: Path | None,
    catalog: catalog_loading.Catalog,
    target: model.Platform,
    features: config_models.FeaturesSettings,
    *,
    store_root: str,
    version_indexes: indexes.VersionIndexes | None = None,
    lock: lockfile.Lock | None = None,
    lock_artifacts: bool = True,
) -> resolver.Plan | int:
    """The plan for command-line requests (labels, and ``id@spec`` with full ranges) and
    an optional team file, as ``plan`` and ``ensure --local`` build it; or, after printing
    every problem, the exit code."""
    from agent.catalog import requests, resolver, team

    looked = None
    try:
        team_config = team.load(team_path) if team_path else None
        labels = [r for r in given if r.lower().startswith(requests.PREFIX)]
        extra = [
            requests.parse(r, allow_ranges=True, source="cli")
            for r in given
            if not r.lower().startswith(requests.PREFIX)
        ]
        merged = team.merge(team=team_config, settings=features, labels=labels, extra=extra)
        wanting = resolver.wanting_index(merged.requests, catalog, lock)
        looked = version_indexes.lookup(wanting) if wanting and version_indexes else None
        return resolver.resolve(
            merged.requests,
            catalog,
            target,
            store_root=store_root,
            notes=[*merged.notes, *(looked.warnings if looked else [])],
            indexed=looked.versions if looked else None,
            lock=lock,
            lock_artifacts=lock_artifacts,
        )
    except loading.ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return common.EXIT_BAD
    except (requests.RequestError, team.TeamError, resolver.ResolutionError) as exc:
        for line in str(exc).splitlines():
            print(f"runner-agent: {line}", file=sys.stderr)
        for warning in looked.warnings if looked else []:
            print(f"runner-agent: note: {warning}", file=sys.stderr)
        return common.EXIT_BAD
