#!/bin/bash
# Runs with PREFIX (the folder to fill), VERSION, ARCH and the options (GREETING).
set -euo pipefail
mkdir -p "$PREFIX/bin" "$PREFIX/share/greeting"
# The message is data, never shell text: any greeting is safe.
printf 'greeting %s: %s\n' "$VERSION" "$GREETING" > "$PREFIX/share/greeting/message"
# The tool finds its message beside itself, so the entry works wherever it is mounted.
cat > "$PREFIX/bin/greeting" <<'TOOL'
#!/bin/sh
exec cat "$(dirname "$0")/../share/greeting/message"
TOOL
chmod 0755 "$PREFIX/bin/greeting"
