"""``runner-agent github registration-token --url URL --out FILE``: mint a runner
registration token with the agent's GitHub credentials (``github.token_file`` or the
App) and write it to ``FILE`` for ``config.sh --token``.

The chart runs it in an init container of each standalone runner pod, so the runner and
its job code never hold the GitHub credentials, nor a token older than their pod.

Policy: the file is written whole or not at all (a new file, then renamed over ``FILE``;
a link planted at ``FILE`` is replaced, never followed), mode 0640 (the pod's fsGroup
lets the runner's ``config.sh`` read it). The token is never printed; stdout says when
it expires. Exit codes: 0 written, 1 GitHub refused or failed, 2 a bad URL, a bad
config or no credentials.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.cli import common

DEADLINE_SECONDS = 120.0
"""Longest the whole mint may take, retries and rate-limit waits included."""


def add_parsers(sub: Any, config_arg: Callable[[argparse.ArgumentParser], None]) -> None:
    """Register ``github registration-token``."""
    github = sub.add_parser(
        "github",
        help="GitHub tasks done with the agent's credentials (registration-token)",
        description="GitHub tasks done with the agent's GitHub credentials.",
    )
    gsub = github.add_subparsers(dest="github_command", metavar="SUBCOMMAND", required=True)
    mint = gsub.add_parser(
        "registration-token",
        help="mint a runner registration token (for config.sh --token) into a file",
        description=(
            "Mint a runner registration token with github.token_file or the GitHub App, "
            "and write it to --out (mode 0640). Exit 0 written, 1 GitHub failed, 2 bad "
            "input or no credentials."
        ),
    )
    mint.add_argument(
        "--url",
        required=True,
        help="where runners register, as config.sh --url takes it: https://HOST/ORG, "
        "https://HOST/OWNER/REPO or https://HOST/enterprises/ENTERPRISE",
    )
    mint.add_argument("--out", type=Path, required=True, help="the file to write the token to")
    config_arg(mint)
    mint.set_defaults(run=run_registration_token)


def run_registration_token(args: argparse.Namespace) -> int:
    from agent.github import errors, registration

    try:
        registration.scope_of(args.url)
    except registration.BadRunnerUrl as exc:
        return common.fail(str(exc), common.EXIT_USAGE)
    settings = common.settings(args)
    github = settings.github
    try:
        registration.check_api_for(args.url, github.api_url)
    except registration.BadRunnerUrl as exc:
        return common.fail(str(exc), common.EXIT_USAGE)
    if github.token_file is None and github.private_key_file is None:
        return common.fail(
            "no GitHub credentials: set github.token_file, or github.app_id (or "
            "client_id), installation_id and private_key_file",
            common.EXIT_USAGE,
        )
    out: Path = args.out
    if not out.parent.is_dir():
        return common.fail(f"--out {out}: its folder does not exist", common.EXIT_USAGE)
    try:
        minted = asyncio.run(_mint(settings, args.url))
    except errors.GitHubError as exc:
        return common.fail(f"no registration token for {args.url}: {exc}")
    try:
        _write(out, minted.token)
    except OSError as exc:
        return common.fail(f"cannot write --out {out}: {exc.strerror}")
    print(f"registration token for {args.url} written to {out}; it expires at {minted.expires_at}")
    return common.EXIT_OK


async def _mint(settings: Any, url: str) -> Any:
    from agent.github import client, registration

    api = client.Client(lambda: settings)
    try:
        deadline = asyncio.get_running_loop().time() + DEADLINE_SECONDS
        return await registration.mint(api, url, deadline=deadline)
    finally:
        await api.close()


def _write(out: Path, token: str) -> None:
    temporary = out.with_name(f".{out.name}.{secrets.token_hex(8)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o640)
    try:
        with os.fdopen(fd, "w") as handle:
            fd = -1
            handle.write(token + "\n")
        os.chmod(temporary, 0o640)  # whatever the umask
        os.replace(temporary, out)
    except BaseException:
        if fd != -1:
            os.close(fd)
        temporary.unlink(missing_ok=True)
        raise
