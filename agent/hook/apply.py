"""Turning an ensure's ``result`` into the job's environment, in the runner.

Policy, in this order (each step's failure stops the setup):
1. a feature that failed or was skipped fails the setup, its error printed once;
2. the ``system`` steps left to the runner run (:mod:`agent.hook.system`);
3. each entry gets its link in the pod-local tool cache (:mod:`agent.hook.toolview`),
   and every path and variable is translated to where the job sees it;
4. each feature's writable homes get their pod-local folders; they come first on PATH,
   so what a job installs there (``npm i -g``) wins over the read-only entry;
5. each check runs again in the runner (:mod:`agent.hook.checks`);
6. ``$GITHUB_ENV`` and ``$GITHUB_PATH`` are written, all at once, last: a setup that
   failed leaves the job's environment as it was;
7. the summary table closes the log.
The agent's store is the ``store`` of the ``job`` event; an ensure without a job has
none, and then it is the folder three levels above an entry (``<name>/<version>/<arch>``).
"""

from __future__ import annotations

import posixpath
import time
from collections.abc import Mapping
from typing import Any

from agent.hook import checks, errors, ghfiles, report, toolview

READY = ("hit", "installed", "present", "left")


class SetupFailed(errors.HookError):
    """Features failed: the job must not run as if they were there."""


def _agent_store(job: Mapping[str, Any], features: list[dict[str, Any]]) -> str:
    store = job.get("store")
    if isinstance(store, str) and store.startswith("/"):
        return posixpath.normpath(store)
    for item in features:
        entry = item.get("entry")
        if isinstance(entry, str) and entry.startswith("/"):
            return posixpath.dirname(posixpath.dirname(posixpath.dirname(entry.rstrip("/"))))
    return ""


def _object(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def apply(
    result: Mapping[str, Any],
    job: Mapping[str, Any],
    *,
    environ: Mapping[str, str],
    reporter: report.Reporter,
) -> list[str]:
    """Set the job up from ``result`` (see the module); the features it set up."""
    features = [f for f in result.get("features", []) if isinstance(f, dict)]
    bad = [f for f in features if f.get("result") not in READY]
    if bad or not result.get("ok"):
        for item in bad:
            if item.get("id") not in reporter.failed_shown and item.get("result") == "failed":
                reporter.error(f"{item.get('id')}: {item.get('error') or 'failed'}")
        names = ", ".join(str(f.get("id")) for f in bad) or "the request"
        raise SetupFailed(
            f"{names} could not be set up (see the lines above); the job's steps would "
            "run without them"
        )
    check_map = _object(job.get("checks"))
    homes = _object(job.get("homes"))
    outcomes: dict[str, tuple[str, float]] = {}
    left = [f for f in features if f.get("result") == "left" and f.get("steps_left")]
    if left:
        # Imported only when there are steps to run: a job of cache hits starts faster.
        from agent.hook import system

        runner = system.Runner(reporter.say, environ=environ)
        for item in left:
            began = time.monotonic()
            done = runner.run_feature(
                str(item["id"]), item["steps_left"], check_map.get(item["id"])
            )
            outcomes[str(item["id"])] = (done, time.monotonic() - began)
    entries = [f for f in features if isinstance(f.get("entry"), str)]
    view: toolview.ToolView | None = None
    if entries or homes:
        tool_cache = toolview.tool_cache_dir(environ)
        agent_store = _agent_store(job, features)
        store = toolview.runner_store(environ, tool_cache, agent_store) if entries else ""
        view = toolview.ToolView(tool_cache, agent_store, store, reporter.warn)
        for item in entries:
            view.link(str(item["id"]), str(item["entry"]))

    def translate(value: str) -> str:
        return view.translate(value) if view is not None else value

    def lines(paths: list[str]) -> list[str]:
        return view.path_lines(paths) if view is not None else list(paths)

    env = {str(k): translate(str(v)) for k, v in dict(result.get("env") or {}).items()}
    home_path: list[str] = []
    for feature, variables in homes.items():
        if view is None or not isinstance(variables, dict):
            continue
        for variable, subdirs in variables.items():
            home, below = view.home(str(feature), str(variable), [str(s) for s in subdirs])
            env[str(variable)] = home
            home_path.extend(below)
    path = lines(home_path) + lines([str(p) for p in result.get("path") or []])
    for item in features:
        check = check_map.get(str(item.get("id")))
        if isinstance(check, dict):
            own = lines([str(p) for p in item.get("path") or []])
            checks.run_check(
                str(item["id"]),
                check,
                path=own + path,
                env=env,
                environ=environ,
                translate=translate,
            )
    ghfiles.write(environ, env, path)
    reporter.summary(features, outcomes)
    return [str(f.get("id")) for f in features]
