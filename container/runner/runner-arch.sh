#!/bin/sh
# Print the GitHub runner tarball's name for an architecture: Docker's TARGETARCH
# (amd64, arm64, arm) or dpkg's (armhf), as actions-runner-linux-<arch>-<ver>.tar.gz names
# them (x64, arm64, arm). Unknown: one line on stderr naming what is known, exit 1.
set -eu
case "${1:-}" in
  amd64 | x86_64) echo x64 ;;
  arm64 | aarch64) echo arm64 ;;
  arm | armhf | armv7) echo arm ;;
  *)
    echo "runner-arch: the GitHub runner has no build for architecture '${1:-}': expected amd64, arm64 or arm" >&2
    exit 1
    ;;
esac
