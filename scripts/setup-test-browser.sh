#!/usr/bin/env bash
# Install the headless browser the report tests render HTML in (Debian's `chromium`).
# Idempotent: does nothing when `chromium` is already on PATH. apt's output goes to a log that is
# printed only when the install fails, so CI logs stay short but a failure is never silent.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" -eq 0 ]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1; then
  as_root=(sudo -n)
else
  echo "setup-test-browser: chromium is not installed and this user cannot install it (not root, no sudo);" \
       "install Debian's chromium package, or the report rendering tests will be skipped" >&2
  exit 1
fi
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! { "${as_root[@]}" apt-get update -qq && \
       "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; } \
     >"$log" 2>&1; then
  echo "setup-test-browser: installing chromium with apt-get failed:" >&2
  tail -n 30 "$log" >&2
  exit 1
fi
command -v chromium >/dev/null 2>&1 || { echo "setup-test-browser: apt installed chromium but it is not on PATH" >&2; exit 1; }
echo "setup-test-browser: $(chromium --version 2>/dev/null || echo chromium installed)"
