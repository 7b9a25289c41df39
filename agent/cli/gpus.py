"""``runner-agent gpu [clear UUID | clear --all]``: the GPUs a running agent sees, this runner's
scope, their health and the driver's CUDA; ``clear`` drops a GPU's verdict (admin) once
the GPU is fixed. Exit codes: 0 healthy (or no GPU), 1 unhealthy or unknown (or the
agent refused), 3 the agent could not be reached, 4 the token was refused.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from agent.cli import client, common


def add_parsers(sub: Any, config_arg: Callable[[argparse.ArgumentParser], None]) -> None:
    """Register ``gpu``."""
    gpu = sub.add_parser(
        "gpu",
        help="show the GPUs, this runner's scope, their health and the driver's CUDA",
        description="Ask a running agent about its GPUs (default: show).",
    )
    client.add_arguments(gpu)
    config_arg(gpu)
    gpu.add_argument("--json", action="store_true", help="print the raw JSON")
    gpu.set_defaults(run=run_show)
    gsub = gpu.add_subparsers(dest="gpu_command", metavar="SUBCOMMAND")
    clear = gsub.add_parser(
        "clear",
        help="clear a GPU's verdict once it is fixed (admin; --all for every verdict)",
        description="Clear a GPU's verdict (admin): it counts as healthy again.",
    )
    which = clear.add_mutually_exclusive_group(required=True)
    which.add_argument("uuid", nargs="?", default=None, help="the GPU's UUID (GPU-...)")
    which.add_argument("--all", action="store_true", help="clear every verdict")
    client.add_arguments(clear)
    config_arg(clear)
    clear.set_defaults(run=run_clear)


def _call(
    args: argparse.Namespace, method: str, target: str, scope: client.Scope, body: Any = None
) -> Any | int:
    answer = client.call(args, method, target, scope, body)
    return answer if isinstance(answer, int) else answer[1]


def run_show(args: argparse.Namespace) -> int:
    answer = _call(args, "GET", "/v1/gpu", "job")
    if isinstance(answer, int):
        return answer
    if args.json:
        print(json.dumps(answer, indent=2))
    else:
        print(_render(answer))
    return common.EXIT_OK if answer["health"] in ("healthy", "off") else common.EXIT_BAD


def _render(answer: dict[str, Any]) -> str:
    lines = [f"backend: {answer['backend']} ({answer['state']})"]
    if answer["backend"] == "fake":
        lines[0] += ": a replayed H200, not hardware"
    if answer.get("driver_version"):
        lines.append(
            f"driver: {answer['driver_version']}, runs CUDA up to {answer['cuda_driver_version']}"
        )
    lines.append(f"health: {answer['health']}: {answer['health_message']}")
    if answer["devices"]:
        lines.append("")
        lines.append(f"{'GPU':<4} {'UUID':<41} {'BUS ID':<17} {'SCOPE':<6} {'HEALTH':<9} MODEL")
        for d in answer["devices"]:
            health = "lost" if d["lost"] else "ok" if d["healthy"] else "UNHEALTHY"
            scope = "yes" if d["in_scope"] else "-"
            mig = " (MIG)" if d["mig"] else ""
            lines.append(
                f"{d['index']:<4} {d['uuid']:<41} {d['pci_bus_id']:<17} {scope:<6} "
                f"{health:<9} {d['name']}{mig}"
            )
    for verdict in answer["verdicts"]:
        lines.append(f"verdict: {verdict['message']}")
    return "\n".join(lines)


def run_clear(args: argparse.Namespace) -> int:
    answer = _call(args, "POST", "/v1/gpu/health/clear", "admin", {"uuid": args.uuid})
    if isinstance(answer, int):
        return answer
    for verdict in answer["cleared"]:
        print(f"cleared: {verdict['message']}")
    if not answer["cleared"]:
        print("no verdict to clear")
    return common.EXIT_OK
