"""``runner-agent services [ls | logs NAME | restart NAME | stop NAME | start NAME]``.

Talks to a running agent over its API socket: ``ls`` and ``logs`` need the job scope,
``restart``, ``stop`` and ``start`` the admin scope (``--token-file``, or the socket's
file mode when no admin token is configured). Exit codes: 0 done, 1 the agent refused
(unknown service), 3 the agent could not be reached, 4 the token was refused.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from agent.cli import client, common


def add_parsers(sub: Any, config_arg: Callable[[argparse.ArgumentParser], None]) -> None:
    """Register ``services``."""
    services = sub.add_parser(
        "services",
        help="list supervised services, show their output, restart, stop or start one",
        description="Ask a running agent about its supervised services (default: ls).",
    )
    ssub = services.add_subparsers(dest="services_command", metavar="SUBCOMMAND")

    def common_args(parser: argparse.ArgumentParser) -> None:
        client.add_arguments(parser)
        config_arg(parser)

    common_args(services)
    services.add_argument("--json", action="store_true", help="print the raw JSON")
    services.set_defaults(run=run_ls)
    listing = ssub.add_parser("ls", help="list services and their state")
    common_args(listing)
    listing.add_argument("--json", action="store_true", help="print the raw JSON")
    listing.set_defaults(run=run_ls)
    logs = ssub.add_parser("logs", help="print a service's last output lines")
    logs.add_argument("name")
    logs.add_argument("-n", "--lines", type=int, default=100, help="how many (default 100)")
    common_args(logs)
    logs.set_defaults(run=run_logs)
    for verb, text in (
        ("restart", "restart a service now (admin)"),
        ("stop", "stop a service; it stays down until started (admin)"),
        ("start", "start a service, also one that is failed (admin)"),
    ):
        command = ssub.add_parser(verb, help=text, description=text.capitalize() + ".")
        command.add_argument("name")
        common_args(command)
        command.set_defaults(run=run_command, verb=verb)


def _ago(when: float | None) -> str:
    if when is None:
        return "-"
    seconds = max(0.0, time.time() - when)
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def run_ls(args: argparse.Namespace) -> int:
    """List services."""
    answer = client.call(args, "GET", "/v1/services")
    if isinstance(answer, int):
        return answer
    _, body = answer
    if getattr(args, "json", False):
        print(json.dumps(body, indent=2))
        return common.EXIT_OK
    print(f"{'NAME':<16} {'STATE':<11} {'UP':<3} {'PID':>7} {'UPTIME':>7} {'RESTARTS':>8}  LAST")
    for svc in body["services"]:
        restarts = sum(svc["restarts"].values())
        health = svc["last_health"]
        last = health["message"] if health else (svc["last_exit"] or svc["message"])
        uptime = _ago(time.time() - svc["uptime_seconds"]) if svc["uptime_seconds"] else "-"
        print(
            f"{svc['name']:<16} {svc['state']:<11} {'yes' if svc['up'] else 'no':<3} "
            f"{svc['pid'] or '-':>7} {uptime:>7} {restarts:>8}  {last}"
        )
    print("ready" if body["ready"] else f"NOT READY: {body['message']}")
    return common.EXIT_OK


def run_logs(args: argparse.Namespace) -> int:
    """Print a service's last lines."""
    answer = client.call(args, "GET", f"/v1/services/{args.name}/logs?lines={args.lines}")
    if isinstance(answer, int):
        return answer
    for line in answer[1]["lines"]:
        # RFC 3339 in UTC on the wire; the local clock on a terminal.
        stamp = datetime.fromisoformat(line["time"]).astimezone().strftime("%H:%M:%S")
        out = sys.stderr if line["stream"] == "stderr" else sys.stdout
        print(f"{stamp} {line['text']}", file=out)
    return common.EXIT_OK


def run_command(args: argparse.Namespace) -> int:
    """restart, stop or start a service."""
    answer = client.call(args, "POST", f"/v1/services/{args.name}/{args.verb}", "admin")
    if isinstance(answer, int):
        return answer
    svc = answer[1]
    print(f"{args.verb} requested for {svc['name']} (was {svc['state']}: {svc['message']})")
    return common.EXIT_OK
