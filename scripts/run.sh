#!/usr/bin/env bash
# Install the gateway into ./.venv and run it on the embedded defaults: a SQLite file
# (./gateway.db), mail written as files to ./var/mail, pages on http://127.0.0.1:8000.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e . 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/gateway init
echo "Mail is written to $(pwd)/var/mail/new (set GATEWAY_SMTP_URL=smtp://host:port to use a server)."
exec .venv/bin/gateway serve "$@"
