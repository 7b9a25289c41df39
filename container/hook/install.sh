#!/bin/sh
# The hook image's entrypoint: copy the job hook (zipapp and wrappers) into DEST, a
# volume the runner container mounts, then exit. Run as an init container; the runner
# then sets ACTIONS_RUNNER_HOOK_JOB_STARTED=DEST/job-started.sh and
# ACTIONS_RUNNER_HOOK_JOB_COMPLETED=DEST/job-completed.sh.
set -eu
dest=${1:-/runner-agent-hook}
if [ ! -d "$dest" ] || [ ! -w "$dest" ]; then
  echo "runner-agent-hook: $dest is not a writable folder; mount an emptyDir there" >&2
  exit 1
fi
for f in runner-agent-hook.pyz job-started.sh job-completed.sh runner-agent-hook; do
  # Written beside, then renamed: a runner starting meanwhile never runs half a file.
  cp "/opt/runner-agent/hook/$f" "$dest/.$f.tmp"
  chmod 0755 "$dest/.$f.tmp"
  mv -f "$dest/.$f.tmp" "$dest/$f"
done
echo "runner-agent-hook: copied the job hook into $dest"
