"""``runner-agent-hook``: the commands ``started``, ``completed`` and ``ensure``.

Policy:
- exit codes: 0 the job is set up (or there was nothing to do); 1 a feature or the
  setup failed; 2 bad input (usage, environment, files); 3 the agent could not be
  reached within ``RUNNER_AGENT_HOOK_WAIT`` under policy ``fail`` (under ``continue``
  the job runs without its features, after a warning, and the hook exits 0);
- ``started`` opens the job with ``POST /v1/jobs`` (a leftover state is sent as
  ``supersede``), keeps its id and secret in the state (:mod:`agent.hook.state`) as soon
  as the agent sends them, and sets the job up (:mod:`agent.hook.apply`). When the setup
  fails after the job was opened, it completes the job itself (``failed``) and removes
  the state, so nothing stays leased for a job that will not run;
- ``completed`` completes the job with its secret, its duration and its result
  (``--result``, else ``RUNNER_AGENT_JOB_RESULT``, else ``unknown``), then removes the
  state; an agent that no longer knows the job (it restarted) had nothing to release;
- ``ensure`` asks for features on top (labels ``feature:x@1`` or ``x@1``, at most 32),
  with the team file (``--team``, else the workspace's ``.github/runner-config.yml`` when
  present) and the lock file (``--lock``, else the workspace's
  ``.github/runner-agent.lock`` when present: installs exactly what it pins), leased to
  the started job when there is one; it sets the job up like ``started``.
"""

from __future__ import annotations

import json
import os
import stat
import sys
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import argparse

from agent.hook import apply, client, context, errors, report, session, state

RESULTS = ("succeeded", "failed", "cancelled", "unknown")
MAX_REQUESTS = 32
MAX_TEAM_BYTES = 256 << 10
MAX_LOCK_BYTES = 256 << 10
"""The agent's limit on a lock (agent.catalog.lockfile.MAX_BYTES): with a team file of
as much, the body stays well under the agent's 1 MiB."""


def _parser() -> argparse.ArgumentParser:
    import argparse  # not for the runner's two hooks, which take no arguments

    parser = argparse.ArgumentParser(
        prog="runner-agent-hook",
        description=(
            "The runner-agent job hook: sets a job up with its features at job start, "
            "releases them at job end, and ensures more from a workflow step."
        ),
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    sub.add_parser("started", help="open the job and set it up (ACTIONS_RUNNER_HOOK_JOB_STARTED)")
    completed = sub.add_parser(
        "completed", help="complete the job and release its leases (..._JOB_COMPLETED)"
    )
    completed.add_argument("--result", choices=RESULTS, default=None)
    ensure = sub.add_parser("ensure", help="ensure more features for this job (a workflow step)")
    ensure.add_argument("labels", nargs="*", metavar="LABEL", help="feature:node@20 or node@20")
    ensure.add_argument("--team", default=None, help="a runner-config.yml to ensure too")
    ensure.add_argument(
        "--lock", default=None, help="a runner-agent.lock: install exactly what it pins"
    )
    compiled = sub.add_parser(
        "precompile",
        help="write a copy of this zipapp with bytecode for this python3 (faster starts)",
    )
    compiled.add_argument(
        "--output", default=None, help="the file to write (default: this zipapp, replaced)"
    )
    return parser


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Run one command; the exit code."""
    given = list(sys.argv[1:] if argv is None else argv)
    # The wrappers' `started` and `completed` take no arguments: argparse (~6 ms at every
    # job start) is for the commands a person types.
    args = None if given in (["started"], ["completed"]) else _parser().parse_args(given)
    command = given[0] if args is None else args.command
    env = dict(os.environ if environ is None else environ)
    reporter = report.Reporter()
    try:
        if command == "started":
            return started(env, reporter)
        if command == "completed":
            return completed(env, reporter, None if args is None else args.result)
        assert args is not None
        if command == "precompile":
            return _precompile(args.output, reporter)
        return ensure(env, reporter, list(args.labels), args.team, args.lock)
    except errors.HookError as exc:
        for line in exc.lines() if isinstance(exc, client.AgentError) else [str(exc)]:
            reporter.error(line)
        return exc.exit_code
    except KeyboardInterrupt:
        reporter.error("interrupted")
        return errors.EXIT_FAILED


def _precompile(output: str | None, reporter: report.Reporter) -> int:
    from agent.hook import precompile  # only this command needs py_compile and zipfile

    # agent/hook/main.py inside the zipapp: three levels up is the zipapp file itself.
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if not os.path.isfile(here):
        raise errors.BadInput(
            "precompile works on the zipapp: run it as python3 -I <pyz> precompile"
        )
    written = precompile.precompile(here, output or here)
    reporter.say(f"wrote {written} with bytecode for this python3")
    return errors.EXIT_OK


def _unreachable(env: Mapping[str, str], reporter: report.Reporter, exc: Exception) -> int:
    if client.unreachable_policy(env) == "continue":
        reporter.warn(
            f"{exc}; RUNNER_AGENT_HOOK_UNREACHABLE=continue: the job runs without its features"
        )
        return errors.EXIT_OK
    reporter.error(f"{exc}; set RUNNER_AGENT_HOOK_UNREACHABLE=continue to run jobs without it")
    return errors.EXIT_UNREACHABLE


def started(env: Mapping[str, str], reporter: report.Reporter) -> int:
    """``started``: see the module."""
    client.unreachable_policy(env)  # a bad policy is bad input now, not after the wait
    wait = client.wait_seconds(env)
    ctx = context.gather(env, reporter.warn)
    agent = client.Agent.from_env(env)
    path = state.path_for(env, ctx.runner_name)
    leftover = state.load(path)
    body: dict[str, Any] = dict(ctx.to_json())
    body["claim"] = errors.random_token()
    body["requests"] = []
    body["supersede"] = None
    if leftover is not None:
        reporter.say(
            f"the last job on this runner ({leftover['id']}) never completed; the agent "
            "completes it first"
        )
        body["supersede"] = {"id": leftover["id"], "secret": leftover["secret"]}
    began = time.time()
    record: dict[str, Any] = {}

    def on_job(event: dict[str, Any]) -> None:
        if not isinstance(event.get("id"), str) or not isinstance(event.get("secret"), str):
            raise client.ClientError("the agent's job event carries no id or secret")
        record.update(
            id=event["id"],
            secret=event["secret"],
            claim=body["claim"],
            socket=agent.socket_path,
            runner_name=ctx.runner_name,
            started=began,
            ensured=[],
        )
        state.save(path, record)
        word = "resumed" if event.get("resumed") else "opened"
        reporter.say(f"job {event['id']} {word} for {ctx.repository or '?'} {ctx.job}")

    try:
        outcome = session.follow(
            agent, "/v1/jobs", body, wait=wait, reporter=reporter, on_job=on_job
        )
    except errors.Unreachable as exc:
        return _unreachable(env, reporter, exc)
    except errors.HookError:
        if record:
            _abandon(agent, record, path, began, reporter)
        raise
    if not outcome.job:
        raise client.ClientError("the agent's stream has no job event; use a matching agent")
    try:
        record["ensured"] = apply.apply(outcome.result, outcome.job, environ=env, reporter=reporter)
        state.save(path, record)
    except errors.HookError:
        _abandon(agent, record, path, began, reporter)
        raise
    return errors.EXIT_OK


def _abandon(
    agent: client.Agent,
    record: Mapping[str, Any],
    path: str,
    began: float,
    reporter: report.Reporter,
) -> None:
    """Complete a job whose setup failed, so its leases go now (best effort, short wait)."""
    try:
        _complete(agent, record, "failed", time.time() - began, wait=10.0, reporter=reporter)
    except errors.HookError as exc:
        reporter.warn(f"could not complete job {record.get('id')} after the failed setup: {exc}")
        return
    state.remove(path)


def _complete(
    agent: client.Agent,
    record: Mapping[str, Any],
    result: str,
    seconds: float | None,
    *,
    wait: float,
    reporter: report.Reporter,
) -> dict[str, Any]:
    if seconds is not None and not 0 <= seconds <= 1e7:
        seconds = None  # a clock that stepped back, or a state file job code rewrote
    body = {"secret": record["secret"], "result": result, "seconds": seconds}
    waiter = client.Waiter(wait, reporter.say, socket_path=agent.socket_path)
    target = f"/v1/jobs/{record['id']}/complete"
    answer: dict[str, Any] = waiter.call(lambda: agent.post(target, body))
    return answer


def completed(env: Mapping[str, str], reporter: report.Reporter, result: str | None) -> int:
    """``completed``: see the module."""
    client.unreachable_policy(env)
    wait = client.wait_seconds(env)
    outcome = result or env.get("RUNNER_AGENT_JOB_RESULT") or "unknown"
    if outcome not in RESULTS:
        raise errors.BadInput(
            f"RUNNER_AGENT_JOB_RESULT={outcome!r} is not one of: {', '.join(RESULTS)}"
        )
    runner_name = env.get("RUNNER_NAME") or ""
    if not runner_name and not env.get("RUNNER_AGENT_HOOK_STATE"):
        raise context.ContextError("RUNNER_NAME is not set; the runner sets it for every job")
    path = state.path_for(env, runner_name)
    record = state.load(path)
    if record is None:
        reporter.say(f"no job to complete ({path} is absent): nothing is leased")
        return errors.EXIT_OK
    agent = client.Agent(client.socket_of(env), client.read_token(env))
    began = record.get("started")
    seconds = time.time() - began if isinstance(began, (int, float)) else None
    try:
        answer = _complete(agent, record, outcome, seconds, wait=wait, reporter=reporter)
    except errors.Unreachable as exc:
        return _unreachable(env, reporter, exc)
    except client.AgentError as exc:
        if exc.status != 404:
            raise
        reporter.say(
            f"the agent does not know job {record['id']} (it restarted): nothing to release"
        )
        state.remove(path)
        return errors.EXIT_OK
    state.remove(path)
    reporter.say(
        f"job {record['id']} completed ({outcome}); released {answer.get('released', 0)} lease(s)"
    )
    return errors.EXIT_OK


def _requests(labels: list[str]) -> list[str]:
    if len(labels) > MAX_REQUESTS:
        raise errors.BadInput(
            f"{len(labels)} labels given; one ensure takes at most {MAX_REQUESTS}: split them "
            "across steps or list them in the team file"
        )
    out: list[str] = []
    for label in labels:
        request = label[len("feature:") :] if label.startswith("feature:") else label
        if not request or len(request) > 200 or not request.isprintable() or " " in request:
            raise errors.BadInput(
                f"{label!r} is not a feature label: give feature:NAME@VERSION or NAME@VERSION"
            )
        out.append(request)
    return out


def _read_bounded(path: str, limit: int, what: str) -> bytes:
    """At most ``limit`` + 1 bytes of the regular file at ``path``; a FIFO or a device
    planted there must not hang the step, so it is opened non-blocking and refused."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        with os.fdopen(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                raise errors.BadInput(f"the {what} {path} is not a regular file")
            return handle.read(limit + 1)
    except OSError as exc:
        raise errors.BadInput(f"cannot read the {what} {path}: {exc.strerror}") from None


def _in_workspace(env: Mapping[str, str], name: str) -> str | None:
    """``.github/<name>`` in the workspace if anything is there (a bad one is refused by
    name, not skipped: the job must not run without what its repository asks for)."""
    workspace = env.get("GITHUB_WORKSPACE")
    found = os.path.join(workspace, ".github", name) if workspace else None
    return found if found is not None and os.path.lexists(found) else None


def _team(env: Mapping[str, str], named: str | None) -> dict[str, Any]:
    path = named or _in_workspace(env, "runner-config.yml")
    if path is None:
        return {}
    raw = _read_bounded(path, MAX_TEAM_BYTES, "team file")
    if len(raw) > MAX_TEAM_BYTES:
        raise errors.BadInput(f"the team file {path} is over 256 KiB")
    text = raw.decode("utf-8", errors="replace")
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    # JSON is YAML too: a JSON team file goes as JSON; any other YAML as text for the
    # agent to parse (the hook has no YAML parser).
    return {"team": data} if isinstance(data, dict) else {"team_yaml": text}


def _lock(env: Mapping[str, str], named: str | None) -> dict[str, Any]:
    path = named or _in_workspace(env, "runner-agent.lock")
    if path is None:
        return {}
    raw = _read_bounded(path, MAX_LOCK_BYTES, "lock file")
    if len(raw) > MAX_LOCK_BYTES:
        raise errors.BadInput(f"the lock file {path} is over 256 KiB")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as exc:
        raise errors.BadInput(
            f"the lock file {path} is not JSON ({str(exc)[:200]}): write it with "
            "runner-agent features lock"
        ) from None
    if not isinstance(data, dict):
        raise errors.BadInput(f"the lock file {path} holds a JSON {type(data).__name__}")
    return {"lock": data}  # the agent checks the rest, and names each problem


def ensure(
    env: Mapping[str, str],
    reporter: report.Reporter,
    labels: list[str],
    team: str | None,
    lock: str | None = None,
) -> int:
    """``ensure``: see the module."""
    client.unreachable_policy(env)
    wait = client.wait_seconds(env)
    body: dict[str, Any] = {"requests": _requests(labels)}
    body.update(_team(env, team))
    body.update(_lock(env, lock))
    target = context.platform_of_runner(reporter.warn)
    if target is not None:
        body["target_platform"] = target  # what the job runs on, not the agent's machine
    if not labels and "team" not in body and "team_yaml" not in body:
        raise errors.BadInput(
            "nothing to ensure: give labels (feature:node@20), --team FILE, or check out a "
            "repository with .github/runner-config.yml first"
        )
    runner_name = env.get("RUNNER_NAME") or ""
    path = (
        state.path_for(env, runner_name)
        if runner_name or env.get("RUNNER_AGENT_HOOK_STATE")
        else ""
    )
    record = state.load(path) if path else None
    if record is not None:
        body["job"] = {"id": record["id"], "secret": record["secret"]}
        # The socket comes from the runner's environment, never from the state file,
        # which job code can rewrite.
        agent = client.Agent(client.socket_of(env), client.read_token(env))
    else:
        reporter.warn(
            "no job was opened by the started hook: what this installs is not leased to "
            "the job (set ACTIONS_RUNNER_HOOK_JOB_STARTED to the hook)"
        )
        agent = client.Agent.from_env(env)
    try:
        outcome = session.follow(agent, "/v1/ensure", body, wait=wait, reporter=reporter)
    except errors.Unreachable as exc:
        return _unreachable(env, reporter, exc)
    ensured = apply.apply(outcome.result, outcome.job, environ=env, reporter=reporter)
    if record is not None:
        record["ensured"] = sorted(set(record.get("ensured") or []) | set(ensured))
        state.save(path, record)
    return errors.EXIT_OK
