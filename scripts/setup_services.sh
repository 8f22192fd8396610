#!/usr/bin/env bash
# Installs what the PostgreSQL store tests need on a fresh Debian machine: Debian's PostgreSQL
# server binaries (the tests start a throwaway server themselves: initdb into a temp folder,
# pg_ctl on a Unix socket, stopped at the end; nothing is started here and the distribution's own
# cluster is not used) and the psycopg 3 driver with its connection pool (pinned in
# requirements-dev.txt). Safe to run twice.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet --disable-pip-version-check \
  "$(grep -E '^psycopg\[binary\]==' requirements-dev.txt)" \
  "$(grep -E '^psycopg-pool==' requirements-dev.txt)"
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  # postgresql-common would create and start a cluster as a service; the tests do not need it
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >/dev/null
fi
ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null || command -v initdb
