#!/usr/bin/env bash
# The partner SDK check: a TypeScript client generated from the /openapi.json
# a running erp-connect serves (openapi-typescript + openapi-fetch, pinned in
# sdk/typescript/package-lock.json), compiled by tsc in strict mode, then
# sdk/typescript/src/partner-check.ts run with node against that server: an
# operator creates a partner API key, the partner lists products, places an
# order with an Idempotency-Key (and again: the same order; and with another
# body: 422) and reads it back.
#
#   bash .ci/sdk-check.sh URL DATA_DIR   against a running `up` (DATA_DIR: its
#                                        data directory, for an ops token)
#   bash .ci/sdk-check.sh                starts its own `up` on port 0 from
#                                        $CARGO_TARGET_DIR/debug/erp-connect
#
# Exit 0: the client compiles and every answer was the one expected.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=.ci/npm-tools.sh
source .ci/npm-tools.sh

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/erp-connect/target}"
bin="$CARGO_TARGET_DIR/debug/erp-connect"
work=$(mktemp -d)
up_pid=""
cleanup() {
  if [ -n "$up_pid" ]; then kill "$up_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

url=${1:-}
data=${2:-}
if [ -z "$url" ]; then
  [ -x "$bin" ] || { echo "sdk-check: no $bin; cargo build first, or pass URL DATA_DIR" >&2; exit 2; }
  data="$work/data"
  "$bin" up --listen 127.0.0.1:0 --grpc-listen 127.0.0.1:0 --data-dir "$data" >"$work/banner" 2>"$work/log" &
  up_pid=$!
  for _ in $(seq 1 600); do
    url=$(grep -oE 'http://127\.0\.0\.1:[0-9]+' "$work/banner" | head -1 || true)
    [ -n "$url" ] && curl -sf "$url/readyz" >/dev/null && break
    kill -0 "$up_pid" 2>/dev/null || { cat "$work/log"; exit 1; }
    sleep 0.1
  done
  curl -sf "$url/readyz" >/dev/null || { echo "sdk-check: up did not get ready" >&2; cat "$work/log"; exit 1; }
fi
[ -n "$data" ] || { echo "usage: $0 [URL DATA_DIR]" >&2; exit 2; }

tools=$(npm_tools sdk/typescript sdk-typescript) || { echo "sdk-check: could not install the tools (npm ci in sdk/typescript)" >&2; exit 2; }

# A build folder of this run's own beside the cached packages, so that two
# runs on one machine do not share one.
cp sdk/typescript/tsconfig.json sdk/typescript/package.json "$work/"
mkdir -p "$work/src/generated"
cp sdk/typescript/src/*.ts "$work/src/"
ln -s "$tools/node_modules" "$work/node_modules"

echo "-- sdk: the client generated from $url/openapi.json (openapi-typescript)"
curl -sf "$url/openapi.json" -o "$work/openapi.json"
# tests/contract_snapshot.rs holds the committed snapshot equal to the
# document; a server from another commit would be caught here.
node -e '
  const fs = require("fs");
  const canon = (v) => Array.isArray(v) ? v.map(canon) : v && typeof v === "object"
    ? Object.fromEntries(Object.keys(v).sort().map((k) => [k, canon(v[k])])) : v;
  const [served, committed] = process.argv.slice(1).map((f) => JSON.stringify(canon(JSON.parse(fs.readFileSync(f, "utf8")))));
  if (served !== committed) {
    console.error("sdk-check: the served /openapi.json is not contracts/openapi.json; is the binary from this commit? (bless: ERP_CONNECT_BLESS=1 cargo test --test contract_snapshot)");
    process.exit(1);
  }' "$work/openapi.json" contracts/openapi.json
(cd "$work" && node_modules/.bin/openapi-typescript openapi.json --output src/generated/erp-connect.ts)
echo "   $(grep -c . "$work/src/generated/erp-connect.ts") lines, $(node -e 'const d=require(process.argv[1]); let n=0; for (const p of Object.values(d.paths)) n+=Object.keys(p).length; console.log(n)' "$work/openapi.json") operations"

echo "-- sdk: tsc (strict) on the client and partner-check.ts"
(cd "$work" && node_modules/.bin/tsc -p .) || { echo "sdk-check: the generated client or partner-check.ts does not compile (above)"; exit 1; }

echo "-- sdk: partner-check against $url"
token=$("$bin" token --sub sdk-check --scope ops --data-dir "$data")
ERP_CONNECT_URL="$url" ERP_CONNECT_OPS_TOKEN="$token" node "$work/build/partner-check.js"
