# Sourced by scripts/run and scripts/test: create .venv if missing and keep it in step
# with pyproject.toml. Needs Python >= 3.11; on Debian/Ubuntu as root it installs
# python3-venv when the interpreter lacks the venv module.
set -euo pipefail

find_python() {
  local candidate
  for candidate in python3.13 python3.12 python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
      "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      echo "$candidate"
      return 0
    fi
  done
  echo "runner-agent: Python >= 3.11 is required (apt-get install python3)" >&2
  return 1
}

ensure_venv() {
  # $1: "dev" to install the test tooling too.
  local extras="" stamp python
  [ "${1:-}" = dev ] && extras="[dev]"
  if [ ! -x .venv/bin/python ]; then
    python=$(find_python)
    if ! "$python" -m venv .venv 2>/dev/null; then
      rm -rf .venv
      if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
        "$python" -m venv .venv
      else
        echo "runner-agent: '$python -m venv' failed; install python3-venv" >&2
        return 1
      fi
    fi
  fi
  stamp=".venv/.runner-agent-$(sha256sum pyproject.toml | cut -c1-16)${extras:+-dev}"
  if [ ! -e "$stamp" ]; then
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".${extras}"
    # PYTHONDONTWRITEBYTECODE may be set; compile once so every start is not a cold one.
    .venv/bin/python -m compileall -q agent >/dev/null
    touch "$stamp"
  fi
}
