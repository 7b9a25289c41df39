#!/bin/bash
# Fetch Docker's static binaries of release $DOCKER_VERSION for this build's architecture
# into OUT, verified against DOCKER_SHA256_AMD64 / DOCKER_SHA256_ARM64 (Docker publishes
# no checksum file for them: pin the values you verified). With only-cli, just `docker`.
# Without DOCKER_VERSION it does nothing, and the image uses its distribution's Docker.
# Usage: docker-static.sh OUT [only-cli]
set -euo pipefail
out=$1
mkdir -p "$out"
[ -n "${DOCKER_VERSION:-}" ] || exit 0
arch="${TARGETARCH:-$(dpkg --print-architecture)}"
case "$arch" in
  amd64) darch=x86_64 sum="${DOCKER_SHA256_AMD64:-}" ;;
  arm64) darch=aarch64 sum="${DOCKER_SHA256_ARM64:-}" ;;
  *) echo "docker-static: Docker has no static build for $arch: expected amd64 or arm64" >&2; exit 1 ;;
esac
if [ -z "$sum" ]; then
  echo "docker-static: DOCKER_VERSION=$DOCKER_VERSION needs --build-arg DOCKER_SHA256_${arch^^}" >&2
  exit 1
fi
apt-get update
apt-get install -y --no-install-recommends curl ca-certificates
curl -fsSL -o /tmp/docker.tgz \
  "https://download.docker.com/linux/static/stable/${darch}/docker-${DOCKER_VERSION}.tgz"
echo "${sum}  /tmp/docker.tgz" | sha256sum -c -
if [ "${2:-}" = only-cli ]; then
  tar -xzf /tmp/docker.tgz -C "$out" --strip-components=1 docker/docker
else
  tar -xzf /tmp/docker.tgz -C "$out" --strip-components=1
fi
rm -f /tmp/docker.tgz
