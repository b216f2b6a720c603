#!/usr/bin/env bash
# The README's API examples, run as written: starts `orderly serve` with its defaults
# (127.0.0.1:8080, ./data) in an empty folder, runs the README block marked `api-examples`,
# and checks what the calls answered. Called by .ci/run.
set -euo pipefail
source "$(dirname "$0")/stop.sh"
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
cargo build -q -p orderly-server

work="$(mktemp -d)"
cd "$work"
"$repo/target/debug/orderly" serve 2>serve.log &
server=$!
trap 'stop_and_remove "$server" "$work"' EXIT
for _ in $(seq 1 100); do
    if curl -fs localhost:8080/readyz >/dev/null 2>&1; then break; fi
    sleep 0.1
done

awk '/<!-- api-examples/ { on = 1; next } on && /^```sh/ { next } on && /^```/ { exit } on' \
    "$repo/README.md" >examples.sh
if [ "$(wc -l <examples.sh)" -lt 10 ]; then
    echo "the README's api-examples block was not found" >&2
    exit 1
fi
bash -euo pipefail examples.sh >out.txt 2>&1 || { cat out.txt serve.log >&2; exit 1; }

expect() {
    if ! grep -q -- "$1" out.txt; then
        echo "README examples: expected to see $1 in:" >&2
        cat out.txt >&2
        exit 1
    fi
}
expect '"order_id":"o-1001"'
expect '"code":"insufficient_stock"'
expect '"status":"shipped"'
expect '"status":"delivered"'
expect '"on_hand":20'
expect 'id: '
expect '"orders_today":1'
expect '"status":"ready"'
expect 'orderly_orders{'
expect '^[1-9]'
echo "README examples: ok"
