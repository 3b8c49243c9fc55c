#!/usr/bin/env bash
# What erp-connect adds to Tryton's own latency, two ways:
#  1. per call: the Tryton connector against a direct JSON-RPC call to the
#     same Tryton (system-apis/examples/tryton_overhead.rs);
#  2. per order: orders placed one at a time and followed to `paid`
#     (examples/order_bench.rs --one-at-a-time), on the embedded ERP (the
#     whole order there bounds what erp-connect itself adds) and on Tryton.
# Sets Tryton up with deploy/tryton/setup.sh (database erp_bench), builds in
# release mode, runs, writes target/bench/tryton-overhead.md, stops Tryton.
#
#   bash bench/tryton-overhead.sh [ORDERS]
set -euo pipefail
cd "$(dirname "$0")/.."
orders="${1:-30}"
export DB=erp_bench
set -a
eval "$(bash deploy/tryton/setup.sh)"
set +a
trap 'bash deploy/tryton/stop.sh >/dev/null 2>&1 || true' EXIT
cargo build --release -q -p system-apis --example tryton_overhead
cargo build --release -q --example order_bench
out="${CARGO_TARGET_DIR:-target}/bench"
mkdir -p "$out"
{
  "${CARGO_TARGET_DIR:-target}/release/examples/tryton_overhead"
  echo
  echo "Card orders one at a time, POST /web/v1/orders to paid (ms; ERP calls summed per order):"
  echo
  echo "| ERP | orders | p50 POST→paid | mean POST→paid | in ERP calls |"
  echo "|---|---|---|---|---|"
  bench="${CARGO_TARGET_DIR:-target}/release/examples/order_bench"
  RUST_LOG=warn "$bench" --one-at-a-time --orders $((orders * 10))
  RUST_LOG=warn "$bench" --one-at-a-time --orders "$orders" --erp tryton
} | tee "$out/tryton-overhead.md"
