#!/usr/bin/env bash
# A plain install, as a user gets it: build the wheel, install it (not -e) into a fresh venv
# outside the source tree, then from an empty folder run `gateway init`, deliver a marketing
# message (a whole HTML document) to a maildir, and check that `gateway serve` answers a page
# and its stylesheet. Exits non-zero with one line naming what failed.
set -euo pipefail
src="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYTHON:-python3}"
work="$(mktemp -d)"
server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "smoke-wheel: FAILED: $*" >&2; exit 1; }

echo "smoke-wheel: building the wheel" >&2
"$python" -m venv "$work/venv"
venv="$work/venv/bin"
"$venv/python" -m pip install --quiet --disable-pip-version-check --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
"$venv/python" -m pip wheel --quiet --disable-pip-version-check --no-deps -w "$work/dist" "$src" 2>&1 | grep -v "^WARNING: Location" || true
wheel=$(ls "$work"/dist/gateway-*.whl 2>/dev/null | head -n 1)
[ -n "$wheel" ] || fail "no wheel was built"
echo "smoke-wheel: installing $(basename "$wheel") into a fresh venv" >&2
"$venv/python" -m pip install --quiet --disable-pip-version-check "$wheel" 2>&1 | grep -v "^WARNING: Location" || true

mkdir "$work/site"
cd "$work/site"  # nothing of the source tree is importable from here
for name in $(env | grep -o '^GATEWAY_[A-Z_]*'); do unset "$name"; done
export GATEWAY_DATABASE_URL="sqlite:///$work/site/gateway.db"
export GATEWAY_SMTP_URL="maildir://$work/site/var/mail"
export GATEWAY_SECRET_KEYS="smoke-test-key-0123456789abcdefghijklmnopqrstuvwxyz"
export GATEWAY_FROM="Shop <news@first.example>"
export GATEWAY_SENDER_POSTAL_ADDRESS="12 Le Loi, District 1, Ho Chi Minh City"

"$venv/gateway" --help >/dev/null || fail "gateway --help"
"$venv/python" -c "import gateway, sys; sys.exit('$src' in gateway.__file__)" ||
  fail "gateway was imported from the source tree, not the wheel"
"$venv/gateway" init >/dev/null || fail "gateway init"
"$venv/gateway" topics add news --name "News" >/dev/null || fail "gateway topics add"
"$venv/gateway" contacts add an@example.vn --name "An" --subscribe news >/dev/null ||
  fail "gateway contacts add"
cat > news.html <<'HTML'
<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>News</title>
<style>p { margin: 0 }</style></head>
<body><p>Hello {{ contact.name }}, our <a href="http://127.0.0.1:8000/">news</a>.</p></body>
</html>
HTML
result=$("$venv/gateway" send --to an@example.vn --subject "News" --html news.html \
  --category marketing --topic news --json) || fail "gateway send: $result"
case "$result" in *'"queued"'*) ;; *) fail "gateway send did not queue: $result" ;; esac
"$venv/gateway" worker --until-idle >/dev/null 2>&1 || fail "gateway worker --until-idle"
delivered=$(ls var/mail/new 2>/dev/null | head -n 1)
[ -n "$delivered" ] || fail "no message in the maildir"
"$venv/python" - "var/mail/new/$delivered" <<'PY' || fail "the delivered message is not right"
import email, email.policy, sys
msg = email.message_from_binary_file(open(sys.argv[1], "rb"), policy=email.policy.default)
html = msg.get_body(("html",)).get_content()
assert html.lstrip().startswith("<!DOCTYPE html>"), html[:80]
assert "&lt;" not in html and "Hello An" in html, html
assert html.index("/unsubscribe/") < html.lower().rindex("</body>"), "footer outside <body>"
assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
PY

port=$("$venv/python" -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
"$venv/gateway" serve --host 127.0.0.1 --port "$port" --no-worker >serve.log 2>&1 &
server_pid=$!
"$venv/python" - "$port" <<'PY' || { cat serve.log >&2; fail "gateway serve did not answer a page and its stylesheet"; }
import sys, time, urllib.request
base = f"http://127.0.0.1:{sys.argv[1]}"
for _ in range(100):
    try:
        page = urllib.request.urlopen(base + "/manage", timeout=2).read().decode()
        break
    except OSError:
        time.sleep(0.1)
else:
    raise SystemExit("no answer from /manage")
assert "/static/style.css" in page, page[:300]
css = urllib.request.urlopen(base + "/static/style.css", timeout=2)
assert css.status == 200 and css.read().strip(), "empty stylesheet"
PY
echo "smoke-wheel: the wheel installs, delivers a marketing document and serves pages" >&2
