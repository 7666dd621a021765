#!/usr/bin/env bash
# schemathesis against the debug openchatd in headers mode: every check but `ignored_auth`,
# a fixed seed and example count (a few minutes), zero failures allowed.
#   OPENCHATD_BIN=target/debug/openchatd ST_VENV=~/.cache/openchat-st-venv bash tests/schemathesis/run.sh
# The server runs on 127.0.0.1 with an ephemeral port and a throwaway data dir, and is
# stopped on exit whatever happens.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin="${OPENCHATD_BIN:?OPENCHATD_BIN must name the openchatd binary}"
venv="${ST_VENV:-$HOME/.cache/openchat-st-venv}"
seed="${ST_SEED:-1}"
examples="${ST_MAX_EXAMPLES:-100}"

if [ ! -x "$venv/bin/st" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install -q --disable-pip-version-check -r "$here/requirements.txt"

work="$(mktemp -d)"
log="$work/openchatd.log"
cleanup() {
  if [ -n "${pid:-}" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# Rate limits far above what the run sends: they are tested elsewhere, here they would only
# turn generated requests into 429s.
env -i PATH="$PATH" HOME="$HOME" \
  OPENCHAT_HTTP_ADDR=127.0.0.1:0 OPENCHAT_MEDIA_PORT_BASE=0 OPENCHAT_SHARDS=1 \
  OPENCHAT_DATA_DIR="$work/data" OPENCHAT_LOG=warn,openchat=info OPENCHAT_LOG_FORMAT=json \
  OPENCHAT_RATE_LIMIT_PER_MINUTE=1000000 \
  "$bin" 2>"$log" &
pid=$!
addr=""
for _ in $(seq 1 100); do
  addr="$(grep -o '"addr":"[^"]*"' "$log" 2>/dev/null | head -n1 | cut -d'"' -f4 || true)"
  [ -n "$addr" ] && break
  kill -0 "$pid" 2>/dev/null || { cat "$log"; echo "openchatd exited before listening"; exit 1; }
  sleep 0.1
done
[ -n "$addr" ] || { cat "$log"; echo "openchatd did not start listening"; exit 1; }
echo "openchatd (pid $pid) on $addr; schemathesis seed $seed, $examples examples per operation"

cd "$work"
status=0
# One worker: with two threads, CPython 3.11.7's ast.parse (hypothesis describing its
# lambdas) can fail with "SystemError: AST constructor recursion depth mismatch"
# (cpython gh-106905, fixed in 3.11.8), a crash of the tool, not a finding.
timeout 900 "$venv/bin/st" --config-file "$here/schemathesis.toml" run "http://$addr/v1/openapi.json" \
  --checks all --exclude-checks ignored_auth \
  --seed "$seed" --max-examples "$examples" --workers 1 \
  -H "X-OpenChat-User-UID: uid_5c4e3a71" -H "X-OpenChat-Device-ID: desktop_schemathesis" \
  --no-color || status=$?
if ! kill -0 "$pid" 2>/dev/null; then
  echo "openchatd died during the run:"; tail -n 50 "$log"; status=1
fi
exit "$status"
