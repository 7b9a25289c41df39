"""``runner-agent ensure``: install features into the store on this host and print the env."""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shlex
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from agent.cli import client, common, progressview

if TYPE_CHECKING:  # imported where used: the CLI starts fast
    from agent.catalog import lockfile
    from agent.platform import model
    from agent.platform import plans as wire


def add_parsers(sub: Any, config_arg: Callable[[argparse.ArgumentParser], None]) -> None:
    """Register ``ensure``."""
    ensure = sub.add_parser(
        "ensure",
        help="install features and print what to export",
        description=(
            "Ask the running agent to install what the requests need (or, with --local, "
            "install into the store from this process: host mode), show progress on "
            "stderr, and print the environment to export: shell lines (env), JSON, or "
            "(--format github) appended to $GITHUB_PATH and $GITHUB_ENV."
        ),
    )
    ensure.add_argument("requests", nargs="*", metavar="REQUEST")
    ensure.add_argument(
        "--team", type=Path, help="a .github/runner-config.yml whose features to ensure too"
    )
    ensure.add_argument(
        "--lock",
        type=Path,
        metavar="FILE",
        help="a lock file (runner-agent features lock): install exactly what it pins",
    )
    ensure.add_argument(
        "--local",
        action="store_true",
        help="install from this process (host mode) instead of asking the running agent",
    )
    ensure.add_argument(
        "--target-platform", help="os/arch[/libc], e.g. linux/x64/glibc (default: this machine)"
    )
    ensure.add_argument("--package-manager", help="apt, dnf, apk, ...")
    ensure.add_argument(
        "--format", choices=["env", "shell", "json", "github"], default="env",
        help="env (shell export lines; 'shell' is the same), json, or github",
    )  # fmt: skip
    client.add_arguments(ensure)
    config_arg(ensure)
    ensure.set_defaults(run=run_ensure)


def run_ensure(args: argparse.Namespace) -> int:
    """Ensure through the agent (or locally), showing progress; print the environment."""
    if args.format == "github" and not (
        os.environ.get("GITHUB_PATH") and os.environ.get("GITHUB_ENV")
    ):
        # Checked before installing: minutes of install, then exit 1, tells the user less.
        return common.fail(
            "--format github appends to $GITHUB_PATH and $GITHUB_ENV, which are unset: run "
            "it in a workflow step, or use --format env",
            common.EXIT_USAGE,
        )
    if not args.requests and args.team is None:
        return common.fail("give requests (e.g. feature:node@20), --team FILE, or both", 2)
    target = _target(args)
    if isinstance(target, int):
        return target
    if args.local:
        return _local(args, target)
    return _remote(args, target)


def _target(args: argparse.Namespace) -> model.Platform | int | None:
    """The requested target platform (``None``: this machine), or an exit code."""
    from agent.platform import model

    if not args.target_platform:
        return None
    try:
        parsed = model.Platform.parse_triple(args.target_platform)
        return model.Platform(
            os=parsed.os, arch=parsed.arch, libc=parsed.libc, package_manager=args.package_manager
        )
    except model.PlatformError as exc:
        return common.fail(str(exc), common.EXIT_USAGE)


def _remote(args: argparse.Namespace, target: model.Platform | None) -> int:
    """POST /v1/ensure over the unix socket and follow its NDJSON stream."""

    socket_path = client.socket_path(args)
    token = client.token(args, "job")
    body: wire.JsonObject = {"requests": list(args.requests)}
    if args.team is not None:
        team_doc = _team_document(args.team)
        if isinstance(team_doc, int):
            return team_doc
        body["team"] = team_doc
    if args.lock is not None:
        lock = _lock(args.lock)
        if isinstance(lock, int):
            return lock
        body["lock"] = cast("wire.JsonObject", json.loads(lock.dump()))
    if target is not None:
        body["target_platform"] = {
            "os": target.os,
            "arch": target.arch,
            "libc": target.libc,
            "package_manager": target.package_manager,
        }
    view = progressview.View()
    try:
        status, lines = _stream(socket_path, body, token)
        if status != 200:
            answer = next(lines, {})
            denied = client.refused(status, answer, "job")
            if denied is not None:
                return denied
            error = answer.get("error")
            error = error if isinstance(error, dict) else {}
            for line in [error.get("message", f"HTTP {status}"), *_details(error)]:
                print(f"runner-agent: {line}", file=sys.stderr)
            return common.EXIT_BAD
        result: wire.ResultEvent | None = None
        for data in lines:
            if not isinstance(data.get("event"), str):
                continue  # not an event: nothing to show
            # The agent's NDJSON lines are its events (agent.platform.plans): trusted as such.
            event = cast("wire.Event", data)
            if event["event"] == "result":
                result = event
            view.event(event)
    except TimeoutError:
        return common.fail(f"the agent at {socket_path} sent nothing for an hour; see its log")
    except OSError as exc:
        return common.fail(
            f"cannot reach the agent at {socket_path}: {exc.strerror or exc}; start it, or "
            "use --local to install from this process",
            common.EXIT_UNREACHABLE,
        )
    except (http.client.HTTPException, ValueError) as exc:
        return common.fail(
            f"the agent at {socket_path} broke off the stream ({type(exc).__name__}); see "
            "its log, and run the same command again: installs are safe to repeat"
        )
    finally:
        view.close()
    return _finish(result, args.format, view.reported)


def _details(error: wire.JsonObject) -> list[str]:
    details = error.get("details")
    if isinstance(details, dict):
        problems = details.get("problems")
        return [str(p) for p in problems[1:]] if isinstance(problems, list) else []
    return []


def _stream(
    path: Path, body: wire.JsonObject, token: str | None
) -> tuple[int, Iterator[wire.JsonObject]]:
    """Send the request; the status and an iterator over the JSON lines (or the error)."""
    conn = client.UnixConnection(path, timeout=3600)
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    conn.request("POST", "/v1/ensure", body=json.dumps(body).encode(), headers=headers)
    response = conn.getresponse()

    def lines() -> Iterator[wire.JsonObject]:
        try:
            if response.status != 200:
                data = json.loads(response.read() or b"{}")
                yield data if isinstance(data, dict) else {}
                return
            for raw in response:
                if raw.strip():
                    data = json.loads(raw)
                    if isinstance(data, dict):
                        yield data
        finally:
            conn.close()

    return response.status, lines()


def _finish(result: wire.ResultEvent | None, fmt: str, shown: set[str] | None = None) -> int:
    if not result:
        return common.fail("the agent ended the stream without a result; see its log")
    for item in result.get("features", []):
        if item.get("result") == "failed" and item["id"] not in (shown or set()):
            # Said once: the progress lines, when they printed it whole, said it already;
            # and an error that names its feature does not get the name again in front.
            error = progressview.clean(item.get("error"))
            named = error if item["id"] in error else f"{item['id']}: {error}"
            print(f"runner-agent: {named}", file=sys.stderr)
        elif item.get("result") == "left":
            print(
                f"runner-agent: {item['id']} needs OS packages the runner must install "
                "(steps_left in --format json)",
                file=sys.stderr,
            )
    emit(result, fmt)
    return common.EXIT_OK if result.get("ok") else common.EXIT_BAD


def _local(args: argparse.Namespace, requested: model.Platform | None) -> int:
    """Resolve, install from this process (host mode), print."""
    from agent.catalog import loading as catalog_loading
    from agent.cli import catalogs
    from agent.install import plans
    from agent.install.host import executor
    from agent.platform import detect, model
    from agent.sources import indexes
    from agent.store import layout

    settings = common.settings(args)
    local = detect.detect()
    target = model.for_host(requested, local)
    catalog = catalog_loading.load(catalog_loading.folders_for(settings.catalog))
    lock = _lock(args.lock) if args.lock is not None else None
    if isinstance(lock, int):
        return lock
    plan = catalogs.resolve_cli(
        args.requests,
        args.team,
        catalog,
        target,
        settings.features,
        store_root=str(settings.cache.root),
        version_indexes=indexes.from_settings(settings),
        lock=lock,
    )
    if isinstance(plan, int):
        return plan
    for warning in plan.warnings:
        print(f"runner-agent: note: {warning}", file=sys.stderr)
    view = progressview.View()
    data = plan.to_data()
    view.event(
        {
            "event": "plan",
            "features": [
                {"id": f["id"], "version": f["version"], "method": f["method"], "round": f["round"]}
                for f in data["features"]
            ],
        }
    )
    try:
        ensured = plans.ensure_plan(
            layout.Store(settings.cache.root),
            data,
            settings=settings,
            host_system=model.same_host(target, local),
            on_event=view.event,
        )
    except (layout.StoreError, executor.SystemInstallError) as exc:
        view.close()
        if view.said(str(exc)):
            return common.EXIT_BAD  # the progress line printed it whole: once is enough
        return common.fail(str(exc))
    view.close()
    return _finish(ensured.result, args.format, view.reported)


def _lock(path: Path) -> lockfile.Lock | int:
    """The lock file, checked here first so its problems name their place; or the exit
    code after printing them."""
    from agent.catalog import lockfile
    from agent.cli import locking

    try:
        return locking.read(path)
    except lockfile.LockError as exc:
        for line in str(exc).splitlines():
            print(f"runner-agent: {line}", file=sys.stderr)
        return common.EXIT_BAD


def _team_document(path: Path) -> wire.JsonObject | int:
    """The team file as the API takes it, checked here first so its errors carry their
    line and column; or the exit code after printing them."""
    from agent.catalog import team
    from agent.config import loading as config_loading

    try:
        team.load(path)
        data, _ = config_loading.parse_yaml(config_loading.read_text(path), source=str(path))
    except config_loading.ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return common.EXIT_BAD
    return cast("wire.JsonObject", data if isinstance(data, dict) else {})


def emit(data: wire.ResultEvent, fmt: str) -> None:
    """Print (or, for github, append) the environment of a ``result``."""
    if fmt == "json":
        print(json.dumps(data, indent=2))
        return
    path, env = data.get("path", []), data.get("env", {})
    if fmt == "github":
        path_file, env_file = os.environ.get("GITHUB_PATH"), os.environ.get("GITHUB_ENV")
        if not path_file or not env_file:
            raise SystemExit(common.fail("--format github needs $GITHUB_PATH and $GITHUB_ENV"))
        # The runner puts each GITHUB_PATH line in front of PATH, so the last line wins:
        # written in reverse, the first entry wins, as in the env format.
        with open(path_file, "a", encoding="utf-8") as handle:
            handle.writelines(f"{p}\n" for p in reversed(path))
        with open(env_file, "a", encoding="utf-8") as handle:
            handle.writelines(github_env_line(k, v) for k, v in env.items())
        return
    if path:
        print(f'export PATH={shlex.quote(os.pathsep.join(path))}:"$PATH"')
    for name, value in env.items():
        print(f"export {name}={shlex.quote(value)}")


def github_env_line(name: str, value: str) -> str:
    """One $GITHUB_ENV entry; a value with a newline takes the heredoc form, with a
    delimiter that cannot occur in it."""
    if "\n" not in value and "\r" not in value:
        return f"{name}={value}\n"
    delimiter = f"ghadelimiter_{uuid.uuid4()}"
    return f"{name}<<{delimiter}\n{value}\n{delimiter}\n"
