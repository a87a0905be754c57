#!/usr/bin/env bash
# Install the gateway with its test dependencies into ./.venv and run every test.
# Extra arguments go to pytest (e.g. scripts/test.sh -k unsubscribe).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test]' 2>&1 | grep -v "^WARNING: Location" || true

# The browser test (tests/test_browser.py) drives Debian's Chromium through chromedriver and
# checks each page with axe-core from npm. Without them it skips, except under CI=true.
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  if [ "$(id -u)" -eq 0 ]; then
    echo "test.sh: installing Debian's chromium and chromium-driver for the browser test" >&2
    if ! { apt-get update -qq && apt-get -o DPkg::Lock::Timeout=600 install -y -qq chromium chromium-driver >/dev/null; }; then
      echo "test.sh: WARNING: could not install chromium and chromium-driver" >&2
    fi
  else
    echo "test.sh: chromium or chromedriver is missing and this is not root: install them with" >&2
    echo "  sudo apt-get update && sudo apt-get install -y chromium chromium-driver" >&2
    echo "test.sh: until then tests/test_browser.py skips (and fails under CI=true)" >&2
  fi
fi
AXE_VERSION=4.14.1
AXE_DIR=.venv/axe  # project-local and git-ignored; the test reads node_modules/axe-core/axe.min.js
if ! grep -qs "\"version\": \"$AXE_VERSION\"" "$AXE_DIR/node_modules/axe-core/package.json"; then
  if command -v npm >/dev/null; then
    mkdir -p "$AXE_DIR"
    npm install --prefix "$AXE_DIR" --no-audit --no-fund --no-save --silent "axe-core@$AXE_VERSION" ||
      echo "test.sh: WARNING: could not install axe-core@$AXE_VERSION from npm" >&2
  else
    echo "test.sh: npm is missing: install Node.js and npm for the browser test's axe-core" >&2
  fi
fi

# The suite runs twice: on SQLite (the default) and on PostgreSQL, a throwaway cluster that
# tests/pg.py starts under a temp directory on a free port. It needs PostgreSQL's server
# binaries: initdb on PATH or Debian's under /usr/lib/postgresql/<version>/bin.
if ! command -v initdb >/dev/null && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ]; then
    echo "test.sh: installing Debian's postgresql for the PostgreSQL run of the tests" >&2
    if ! { apt-get update -qq && apt-get -o DPkg::Lock::Timeout=600 install -y -qq postgresql >/dev/null; }; then
      echo "test.sh: WARNING: could not install postgresql" >&2
    fi
  else
    echo "test.sh: PostgreSQL's server binaries are missing and this is not root: install them with" >&2
    echo "  sudo apt-get update && sudo apt-get install -y postgresql" >&2
    echo "test.sh: until then the PostgreSQL run fails" >&2
  fi
fi

# The Postfix relay tests (tests/test_postfix_harness.py, tests/test_submission_postfix.py)
# start a throwaway Postfix of their own (tests/postfix.py) that relays with SASL AUTH: they
# need Debian's postfix and the SASL PLAIN/LOGIN plugins, and root. Installed as "No
# configuration", so no system Postfix starts. Without them they skip, except under CI=true.
if [ ! -x /usr/sbin/postfix ] || ! ls /usr/lib/*/sasl2/libplain.so >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ]; then
    echo "test.sh: installing Debian's postfix and libsasl2-modules for the Postfix relay tests" >&2
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections || true
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq postfix libsasl2-modules >/dev/null; }; then
      echo "test.sh: WARNING: could not install postfix and libsasl2-modules" >&2
    fi
  else
    echo "test.sh: postfix or libsasl2-modules is missing and this is not root: install them with" >&2
    echo "  sudo apt-get update && sudo apt-get install -y postfix libsasl2-modules" >&2
    echo "test.sh: until then the Postfix relay tests skip (and fail under CI=true); they also need root" >&2
  fi
fi

.venv/bin/ruff check gateway tests bench
.venv/bin/mypy
status=0
# Several test processes (pytest-xdist): much of a test's time is spent waiting on a socket,
# a browser or fsync, so more processes than cores still helps. GATEWAY_TEST_PROCESSES=0 runs
# everything in this one process.
processes=(-n "${GATEWAY_TEST_PROCESSES:-3}")
echo "test.sh: pytest on SQLite" >&2
.venv/bin/python -m pytest "${processes[@]}" "$@" || status=1
# The browser test checks pages, not the database: it runs in the SQLite run only.
echo "test.sh: pytest on PostgreSQL (GATEWAY_TEST_DATABASE=postgresql)" >&2
GATEWAY_TEST_DATABASE=postgresql .venv/bin/python -m pytest "${processes[@]}" "$@" || status=1
# A plain install (pip install of the built wheel, not -e) into a fresh venv, run from an
# empty folder: what a user gets.
bash scripts/smoke-wheel.sh || status=1
exit "$status"
