#!/usr/bin/env bash
# Install the gateway with its test dependencies into ./.venv and run every test.
# Extra arguments go to pytest (e.g. scripts/test.sh -k unsubscribe).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test]' 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/ruff check gateway tests bench
exec .venv/bin/python -m pytest "$@"
