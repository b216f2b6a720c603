#!/usr/bin/env bash
# The dashboard in a real browser: starts `orderly serve` on a fresh data folder, opens the
# dashboard in headless Chromium, places orders through the API and checks the big number
# follows without a reload. Screenshot: target/dashboard.png. Called by .ci/run.
set -euo pipefail
source "$(dirname "$0")/stop.sh"
cd "$(dirname "$0")/.."

if ! command -v chromium >/dev/null; then
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq chromium >/dev/null
fi
(cd .ci/dashboard && npm ci --no-audit --no-fund --silent)

cargo build -q -p orderly-server
data="$(mktemp -d)"
log="target/ci-dashboard-serve.log"
target/debug/orderly serve --listen 127.0.0.1:0 --data "$data" 2>"$log" &
server=$!
trap 'stop_and_remove "$server" "$data"' EXIT

url=""
for _ in $(seq 1 100); do
    url="$(grep -o 'listening on http://[0-9.:]*' "$log" | head -1 | sed 's/listening on //')" || true
    if [ -n "$url" ] && curl -fs "$url/readyz" >/dev/null; then break; fi
    sleep 0.1
done
if [ -z "$url" ]; then
    echo "the server did not start:" >&2
    cat "$log" >&2
    exit 1
fi

node .ci/dashboard/check.mjs "$url" "$(cat "$data/demo.token")" target/dashboard.png
