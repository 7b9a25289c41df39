"""``runner-agent serve`` and ``runner-agent status``."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from typing import Any

from agent.cli import client, common
from agent.config import loading


def add_parsers(sub: Any, config_arg: Callable[[argparse.ArgumentParser], None]) -> None:
    """Register ``serve`` and ``status``."""
    serve = sub.add_parser("serve", help="run the daemon", description="Run the daemon.")
    config_arg(serve)
    serve.add_argument(
        "--on-config-error",
        choices=["exit", "degrade"],
        default=None,
        help=(
            "what to do when the configuration is invalid at startup: exit 2 with one line "
            "(default), or run on built-in defaults, not ready, until it is fixed "
            f"(default from ${loading.ENV_ON_CONFIG_ERROR})"
        ),
    )
    serve.set_defaults(run=run_serve)

    status = sub.add_parser(
        "status",
        help="ask a running agent for its status",
        description=(
            "Print a running agent's /v1/status; exit 0 if ready, 1 if not, 3 if unreachable."
        ),
    )
    client.add_arguments(status)
    config_arg(status)
    status.add_argument("--json", action="store_true", help="print the raw JSON")
    status.set_defaults(run=run_status)


def run_serve(args: argparse.Namespace) -> int:
    """Run the daemon until a signal stops it."""
    mode = args.on_config_error or os.environ.get(loading.ENV_ON_CONFIG_ERROR) or "exit"
    if mode not in ("exit", "degrade"):
        return common.fail(
            f"{loading.ENV_ON_CONFIG_ERROR}={mode!r} is not valid; expected 'exit' or 'degrade'",
            common.EXIT_USAGE,
        )
    import signal

    from agent.kits import signals

    # Also here for callers of main(["serve"]); agent.cli did it first for the command.
    signals.catch_early((signal.SIGTERM, signal.SIGINT, signal.SIGHUP))
    from agent import daemon  # the heavy imports, only for serve

    return daemon.serve(
        common.config_path(args), on_config_error="exit" if mode == "exit" else "degrade"
    )


def run_status(args: argparse.Namespace) -> int:
    """Print a running agent's status."""
    socket_path = client.socket_path(args)
    token = client.token(args)
    try:
        status, body = client.request(socket_path, "GET", "/v1/status", token=token)
    except OSError as exc:
        return common.fail(
            f"cannot reach the agent at {socket_path}: {exc.strerror or exc}",
            common.EXIT_UNREACHABLE,
        )
    denied = client.refused(status, body, "job")
    if denied is not None:
        return denied
    if status != 200:
        message = body.get("error", {}).get("message", body) if isinstance(body, dict) else body
        return common.fail(f"status request failed ({status}): {message}")
    if args.json:
        print(json.dumps(body, indent=2))
    else:
        print(
            f"runner-agent {body['version']}  pid {body['pid']}  up {body['uptime_seconds']:.0f} s"
        )
        cfg = body["config"]
        print(f"config: generation {cfg['generation']} from {cfg['source']}")
        for cond in body["conditions"]:
            print(f"  [{'ok' if cond['ok'] else 'FAIL'}] {cond['name']}: {cond['message']}")
        print("ready" if body["ready"] else "NOT READY")
    return common.EXIT_OK if body.get("ready") else common.EXIT_BAD
