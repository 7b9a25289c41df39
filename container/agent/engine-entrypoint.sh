#!/bin/sh
# The engine image's entrypoint: prepare what a nested dockerd needs, then run the
# agent (role services) under tini, which reaps what a killed dockerd leaves.
# On cgroup v2 the container's processes must leave the root cgroup before dockerd can
# delegate controllers to its containers (as moby's hack/dind does); mounts are made
# shared so container jobs' bind propagation works.
set -eu
warn() { echo "engine-entrypoint: $*; dockerd may fail to limit containers (is the container privileged?)" >&2; }
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
  if mkdir -p /sys/fs/cgroup/init 2>/dev/null; then
    # A process gone meanwhile (this xargs' own children) cannot move: ignored.
    xargs -rn1 < /sys/fs/cgroup/cgroup.procs > /sys/fs/cgroup/init/cgroup.procs 2>/dev/null || :
    sed -e 's/ / +/g' -e 's/^/+/' < /sys/fs/cgroup/cgroup.controllers \
      > /sys/fs/cgroup/cgroup.subtree_control 2>/dev/null \
      || warn "cannot delegate the cgroup v2 controllers"
  else
    warn "cannot create /sys/fs/cgroup/init (cgroupfs read-only)"
  fi
fi
mount --make-rshared / 2>/dev/null || warn "cannot make / a shared mount"
exec /usr/bin/tini -- /opt/runner-agent/bin/runner-agent "$@"
