#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh Debian machine: the Python packages and
# Debian's chromium for the real-browser test (Playwright's own browser download does not work
# offline, so the test launches /usr/bin/chromium).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
if ! command -v chromium >/dev/null 2>&1; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi
bash "$(dirname "$0")/setup_services.sh" >/dev/null
