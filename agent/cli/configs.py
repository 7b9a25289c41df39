"""``runner-agent config validate | schema | show | reference``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.cli import common
from agent.config import loading


def add_parsers(sub: Any, config_arg: Callable[[argparse.ArgumentParser], None]) -> None:
    """Register ``config`` and its sub-commands."""
    config = sub.add_parser("config", help="validate, show or describe configuration")
    csub = config.add_subparsers(dest="config_command", required=True, metavar="SUBCOMMAND")
    validate = csub.add_parser(
        "validate",
        help="check a config file, or a team configuration with --team",
        description=(
            "Check an agent config file (with the RUNNER_AGENT_* environment applied), or "
            "with --team a repository's .github/runner-config.yml; exit 0 if valid, 1 with "
            "one line per problem if not."
        ),
    )
    validate.add_argument("file", type=Path, nargs="?")
    validate.add_argument(
        "--team", type=Path, default=None, help="a team configuration file to check"
    )
    config_arg(validate)
    validate.set_defaults(run=run_validate)
    schema = csub.add_parser(
        "schema",
        help="print a JSON Schema",
        description="Print the JSON Schema of the agent's config file (or, with --team, of "
        "the team configuration), for editors.",
    )
    schema.add_argument("--team", action="store_true", help="the team configuration's schema")
    schema.set_defaults(run=run_schema)
    show = csub.add_parser(
        "show",
        help="print the effective configuration",
        description="Print the effective configuration (defaults, file, environment) as YAML, "
        "with secrets redacted.",
    )
    config_arg(show)
    show.set_defaults(run=run_show)
    reference = csub.add_parser(
        "reference",
        help="print the configuration reference (Markdown)",
        description="Print every setting with its type, default, bounds and description, "
        "as Markdown: docs/configuration.md is this command's output.",
    )
    reference.set_defaults(run=run_reference)


def run_reference(args: argparse.Namespace) -> int:
    """Print the configuration reference."""
    from agent.config import reference

    sys.stdout.write(reference.render())
    return common.EXIT_OK


def run_schema(args: argparse.Namespace) -> int:
    """Print a JSON Schema."""
    if args.team:
        from agent.catalog import team

        schema = team.TeamConfig.model_json_schema()
    else:
        from agent.config import models

        schema = models.Settings.model_json_schema()
    print(json.dumps(schema, indent=2))
    return common.EXIT_OK


def run_validate(args: argparse.Namespace) -> int:
    """Check an agent config file or a team configuration."""
    from agent.catalog import team
    from agent.config import reloading

    if args.team is not None:
        try:
            team.load(args.team)
        except loading.ConfigError as exc:
            for problem in exc.problems:
                print(problem, file=sys.stderr)
            return common.EXIT_BAD
        print(f"{args.team}: valid")
        return common.EXIT_OK
    if args.file is None:
        return common.fail("config validate needs FILE or --team FILE", common.EXIT_USAGE)
    try:
        loaded = reloading.load_snapshot(args.file, generation=1)
    except loading.ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return common.EXIT_BAD
    profile_problems = team.check_profiles(loaded.settings.features)
    for text in profile_problems:
        print(f"{args.file}: {text}", file=sys.stderr)
    if profile_problems:
        return common.EXIT_BAD
    print(f"{args.file}: valid")
    return common.EXIT_OK


def run_show(args: argparse.Namespace) -> int:
    """Print the effective configuration."""
    import yaml

    from agent.config import reloading

    try:
        loaded = reloading.load_snapshot(common.config_path(args), generation=1)
    except loading.ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return common.EXIT_BAD
    data = loaded.settings.shown()
    print(
        f"# effective configuration from {loaded.source}; token values and URL passwords "
        "are never shown"
    )
    print(yaml.safe_dump(data, sort_keys=False), end="")
    return common.EXIT_OK
