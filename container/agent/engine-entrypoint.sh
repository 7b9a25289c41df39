#!/bin/sh
# The engine image's entrypoint: prepare what a nested dockerd needs, then run the
# agent (role services) under tini, which reaps what a killed dockerd leaves.
# On cgroup v2 the container's processes must leave the root cgroup before dockerd can
# delegate controllers to its containers (as moby's hack/dind does); mounts are made
# shared so container jobs' bind propagation works.
set -eu
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
  mkdir -p /sys/fs/cgroup/init
  # A process gone meanwhile (this xargs' own children) cannot move: ignored.
  xargs -rn1 < /sys/fs/cgroup/cgroup.procs > /sys/fs/cgroup/init/cgroup.procs 2>/dev/null || :
  sed -e 's/ / +/g' -e 's/^/+/' < /sys/fs/cgroup/cgroup.controllers \
    > /sys/fs/cgroup/cgroup.subtree_control || :
fi
mount --make-rshared / 2>/dev/null || :
exec /usr/bin/tini -- /opt/runner-agent/bin/runner-agent "$@"
