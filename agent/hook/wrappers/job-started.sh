#!/usr/bin/env bash
# runner-agent job hook wrapper: ACTIONS_RUNNER_HOOK_JOB_STARTED names this file; the
# runner runs it as `bash -e job-started.sh` before the job's steps.
# It finds python3 and the hook's zipapp ($RUNNER_AGENT_HOOK_PYZ, else beside this file,
# else /opt/runner-agent/hook/runner-agent-hook.pyz) and runs `python3 -I <pyz> started`.
# The three wrappers differ only in the command they run.
set -eu
if ! command -v python3 >/dev/null 2>&1; then
  echo "runner-agent: python3 is needed to run the job hook; install it in the runner image" >&2
  exit 1
fi
pyz=${RUNNER_AGENT_HOOK_PYZ:-}
if [ -z "$pyz" ]; then
  here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
  pyz=$here/runner-agent-hook.pyz
  [ -f "$pyz" ] || pyz=/opt/runner-agent/hook/runner-agent-hook.pyz
fi
if [ ! -f "$pyz" ]; then
  echo "runner-agent: the job hook is not at $pyz; copy runner-agent-hook.pyz beside this script or set RUNNER_AGENT_HOOK_PYZ" >&2
  exit 1
fi
exec python3 -I "$pyz" started
