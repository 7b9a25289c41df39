#!/bin/sh
# The hook image's entrypoint: copy the job hook (zipapp and wrappers) into DEST, a
# volume the runner container mounts, then exit. Run as an init container; the runner
# then sets ACTIONS_RUNNER_HOOK_JOB_STARTED=DEST/job-started.sh and
# ACTIONS_RUNNER_HOOK_JOB_COMPLETED=DEST/job-completed.sh.
# Nothing already in DEST is followed: each file is written to a new temporary name of
# its own (mktemp), then renamed over the old name (mv -T: never into a planted folder).
set -eu
dest=${1:-/runner-agent-hook}
if [ ! -d "$dest" ] || [ ! -w "$dest" ]; then
  echo "runner-agent-hook: $dest is not a writable folder; mount an emptyDir there" >&2
  exit 1
fi
for f in runner-agent-hook.pyz job-started.sh job-completed.sh runner-agent-hook; do
  tmp=$(mktemp "$dest/.$f.XXXXXX")
  cat "/opt/runner-agent/hook/$f" > "$tmp"
  chmod 0755 "$tmp"
  if ! mv -fT "$tmp" "$dest/$f"; then
    rm -f "$tmp"
    echo "runner-agent-hook: cannot put $dest/$f in place (a folder there?)" >&2
    exit 1
  fi
done
echo "runner-agent-hook: copied the job hook into $dest"
