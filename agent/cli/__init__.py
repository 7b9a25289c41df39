"""The ``runner-agent`` command line.

Exit codes (every command):

- 0: success (``serve``: stopped by a signal; ``status``: the agent is ready);
- 1: the thing checked is not good: an invalid file for ``config validate``, an agent
  that is not ready for ``status``, requests that cannot be resolved for ``plan`` or
  installed for ``ensure``, or an unknown feature for ``features show`` (``serve`` never
  exits 1: it retries a taken probe port with backoff);
- 2: usage error, or ``serve`` met an invalid configuration with ``--on-config-error
  exit``;
- 3: the agent could not be reached (``status``, ``ensure``, ``services``);
- 4: the agent refused the token (401) or its scope (403); the message names the
  setting (``server.job_token_file`` or ``server.admin_token_file``). Every command that
  talks to the agent finds its socket and its token by one rule (:mod:`agent.cli.client`).

Policy: commands other than ``serve`` import only what they need, so they start fast;
``serve`` imports the daemon, which binds its probe listener before anything else, and
builds only its own parser (every other command's costs its time to the first /healthz).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from agent.kits import gcpause, signals

# The daemon must never die of a signal that arrives while it imports (a sidecar that
# exits non-zero gets its pod deleted): record them now, before the heavy imports below,
# and let the daemon replay them once its event loop handles signals. The collector waits
# too, until the probe listener is bound (see agent.kits.gcpause).
if sys.argv[1:2] == ["serve"]:
    signals.catch_early((signal.SIGTERM, signal.SIGINT, signal.SIGHUP))
    gcpause.pause()

# pydantic scans every installed distribution's entry points for plugins when the first
# model class is built (tens of ms in a full venv, on the path to the first /healthz); the
# agent uses no pydantic plugin. Set before agent.config imports pydantic.
os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")

from agent import __version__
from agent.cli import serving
from agent.config import loading

EXIT_OK = 0
EXIT_BAD = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_AUTH = 4


def config_arg(parser: argparse.ArgumentParser) -> None:
    """Add ``--config`` to ``parser``."""
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help=f"YAML config file (default: ${loading.ENV_CONFIG}, else built-in defaults)",
    )


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The argument parser for every sub-command (only ``serve``'s when ``command`` is it)."""
    parser = argparse.ArgumentParser(
        prog="runner-agent",
        description="Sidecar daemon for self-hosted GitHub Actions runners.",
        epilog=(
            "Exit codes: 0 ok, 1 check failed, 2 usage or config error, 3 agent unreachable, "
            "4 token refused."
        ),
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serving.add_parsers(sub, config_arg)
    if command == "serve":
        return parser
    from agent.cli import (
        cache,
        catalogs,
        configs,
        ensuring,
        gpus,
        hooking,
        registering,
        servicing,
    )

    configs.add_parsers(sub, config_arg)
    catalogs.add_parsers(sub, config_arg)
    ensuring.add_parsers(sub, config_arg)
    servicing.add_parsers(sub, config_arg)
    cache.add_parsers(sub, config_arg)
    hooking.add_parsers(sub, config_arg)
    gpus.add_parsers(sub, config_arg)
    registering.add_parsers(sub, config_arg)
    sub.add_parser("version", help="print the version", description="Print the version.")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``runner-agent`` console script."""
    given = sys.argv[1:] if argv is None else argv
    if given[:1] != ["serve"] and argv is None:
        # A client command piped into head ends quietly when the reader goes, as Unix
        # tools do, not with a BrokenPipeError traceback. (serve keeps Python's default:
        # a closed log pipe must not kill the daemon.)
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    args = build_parser(given[0] if given else None).parse_args(argv)
    if args.command == "version":
        print(f"runner-agent {__version__}")
        return EXIT_OK
    return int(args.run(args))
