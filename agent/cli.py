"""The ``runner-agent`` command line.

Exit codes (every command):

- 0: success (``serve``: stopped by a signal; ``status``: the agent is ready);
- 1: the thing checked is not good: an invalid file for ``config validate``, an agent
  that is not ready for ``status``, or ``serve`` could not listen on its probe address;
- 2: usage error, or ``serve`` met an invalid configuration with ``--on-config-error
  exit``;
- 3: ``status`` could not reach the agent.

Policy: commands other than ``serve`` import only what they need, so they start fast;
``serve`` imports the daemon, which binds its probe listener before anything else.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

# pydantic scans every installed distribution's entry points for plugins when the first
# model class is built (tens of ms in a full venv, on the path to the first /healthz); the
# agent uses no pydantic plugin. Set before agent.config imports pydantic.
os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")

from agent import __version__
from agent.config import loading

EXIT_OK = 0
EXIT_BAD = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3


def _config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help=f"YAML config file (default: ${loading.ENV_CONFIG}, else built-in defaults)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every sub-command."""
    parser = argparse.ArgumentParser(
        prog="runner-agent",
        description="Sidecar daemon for self-hosted GitHub Actions runners.",
        epilog="Exit codes: 0 ok, 1 check failed, 2 usage or config error, 3 agent unreachable.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the daemon", description="Run the daemon.")
    _config_arg(serve)
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

    status = sub.add_parser(
        "status",
        help="ask a running agent for its status",
        description=(
            "Print a running agent's /v1/status; exit 0 if ready, 1 if not, 3 if unreachable."
        ),
    )
    status.add_argument(
        "--socket",
        type=Path,
        default=None,
        help=f"API socket (default: ${loading.ENV_SOCKET}, else the configured one)",
    )
    status.add_argument("--token-file", type=Path, default=None, help="bearer token file")
    _config_arg(status)
    status.add_argument("--json", action="store_true", help="print the raw JSON")

    config = sub.add_parser("config", help="validate, show or describe configuration")
    csub = config.add_subparsers(dest="config_command", required=True, metavar="SUBCOMMAND")
    validate = csub.add_parser(
        "validate",
        help="check a config file",
        description="Check a config file (with the RUNNER_AGENT_* environment applied); "
        "exit 0 if valid, 1 with one line per problem if not.",
    )
    validate.add_argument("file", type=Path)
    csub.add_parser(
        "schema",
        help="print the config file's JSON Schema",
        description="Print the JSON Schema of the config file, for editors.",
    )
    show = csub.add_parser(
        "show",
        help="print the effective configuration",
        description="Print the effective configuration (defaults, file, environment) as YAML, "
        "with secrets redacted.",
    )
    _config_arg(show)

    sub.add_parser("version", help="print the version", description="Print the version.")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``runner-agent`` console script."""
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    if args.command == "status":
        return _status(args)
    if args.command == "config":
        return _config(args)
    print(f"runner-agent {__version__}")
    return EXIT_OK


def _config_path(args: argparse.Namespace) -> Path | None:
    path: Path | None = args.config
    return path if path is not None else loading.config_path_from_env()


def _serve(args: argparse.Namespace) -> int:
    mode = args.on_config_error or os.environ.get(loading.ENV_ON_CONFIG_ERROR) or "exit"
    if mode not in ("exit", "degrade"):
        print(
            f"runner-agent: {loading.ENV_ON_CONFIG_ERROR}={mode!r} is not valid; "
            "expected 'exit' or 'degrade'",
            file=sys.stderr,
        )
        return EXIT_USAGE
    from agent import daemon  # the heavy imports, only for serve

    return daemon.serve(_config_path(args), on_config_error="exit" if mode == "exit" else "degrade")


def _config(args: argparse.Namespace) -> int:
    if args.config_command == "schema":
        from agent.config import models

        print(json.dumps(models.Settings.model_json_schema(), indent=2))
        return EXIT_OK
    from agent.config import reloading

    path = args.file if args.config_command == "validate" else _config_path(args)
    try:
        loaded = reloading.load_snapshot(path, generation=1)
    except loading.ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return EXIT_BAD
    if args.config_command == "validate":
        print(f"{path}: valid")
        return EXIT_OK
    import yaml

    data = loaded.settings.model_dump(mode="json")
    print(f"# effective configuration from {loaded.source}; token values are never shown")
    print(yaml.safe_dump(data, sort_keys=False), end="")
    return EXIT_OK


def _status(args: argparse.Namespace) -> int:
    from agent.config import models

    socket_path: Path | None = args.socket
    if socket_path is None:
        env = os.environ.get(loading.ENV_SOCKET)
        if env:
            socket_path = Path(env)
        else:
            try:
                socket_path = loading.load(_config_path(args)).server.socket_path
            except loading.ConfigError:
                socket_path = models.ServerSettings().socket_path
    token = None
    if args.token_file is not None:
        try:
            token = args.token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            print(f"runner-agent: cannot read {args.token_file}: {exc.strerror}", file=sys.stderr)
            return EXIT_USAGE
    try:
        status, body = _unix_get(socket_path, "/v1/status", token=token)
    except OSError as exc:
        print(
            f"runner-agent: cannot reach the agent at {socket_path}: {exc.strerror or exc}",
            file=sys.stderr,
        )
        return EXIT_UNREACHABLE
    if status != 200:
        message = body.get("error", {}).get("message", body) if isinstance(body, dict) else body
        print(f"runner-agent: status request failed ({status}): {message}", file=sys.stderr)
        return EXIT_BAD
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
    return EXIT_OK if body.get("ready") else EXIT_BAD


def _unix_get(path: Path, target: str, *, token: str | None) -> tuple[int, Any]:
    """GET ``target`` over the unix socket at ``path`` with the standard library."""
    import http.client
    import socket

    class _Conn(http.client.HTTPConnection):
        def connect(self) -> None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout)
            sock.connect(str(path))
            self.sock = sock

    conn = _Conn("localhost", timeout=10)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        conn.request("GET", target, headers=headers)
        response = conn.getresponse()
        raw = response.read()
    finally:
        conn.close()
    try:
        return response.status, json.loads(raw)
    except ValueError:
        return response.status, raw.decode(errors="replace")
