#!/usr/bin/env bash
# How long a partner waits for the answer to POST /partner/v1/orders on
# Tryton (p50, p99, max of orders placed one at a time; see
# examples/order_bench.rs --accept-latency), for this checkout and, given a
# revision, for that revision too (built in a temporary worktree with this
# checkout's bench program), so a change to the request path is measured
# before and after on the same machine and the same Tryton.
# Sets Tryton up with deploy/tryton/setup.sh (database erp_bench), builds in
# release mode, writes target/bench/order-accept.md, stops Tryton.
#
#   bash bench/order-accept.sh [ORDERS] [BEFORE_REVISION]
set -euo pipefail
cd "$(dirname "$0")/.."
orders="${1:-30}"
before="${2:-}"
target="${CARGO_TARGET_DIR:-$PWD/target}"
export CARGO_TARGET_DIR="$target"
out="$target/bench"
mkdir -p "$out"
tree=""
cleanup() {
  DB=erp_bench bash deploy/tryton/stop.sh >/dev/null 2>&1 || true
  if [ -n "$tree" ]; then git worktree remove --force "$tree" >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT
# Generated code (the protobuf contracts) is rebuilt only when its sources
# change, and cargo gives both checkouts the same build folders: the
# earlier revision builds in a target folder of its own.
touch proto/build.rs
cargo build --release -q --example order_bench
cp "$target/release/examples/order_bench" "$out/order_bench-now"
if [ -n "$before" ]; then
  tree=$(mktemp -d)
  git worktree add -q --detach "$tree" "$before"
  cp examples/order_bench.rs "$tree/examples/order_bench.rs"
  (cd "$tree" && CARGO_TARGET_DIR="$target/before-revision" cargo build --release -q --example order_bench)
  cp "$target/before-revision/release/examples/order_bench" "$out/order_bench-before"
fi
export DB=erp_bench
set -a
eval "$(bash deploy/tryton/setup.sh)"
set +a
{
  echo "POST /partner/v1/orders on Tryton 8.0, one at a time (ms, request to 201):"
  echo
  echo "| revision | ERP | orders | p50 | p99 | max |"
  echo "|---|---|---|---|---|---|"
  if [ -n "$before" ]; then
    printf '| %s ' "$(git rev-parse --short "$before")"
    RUST_LOG=warn "$out/order_bench-before" --accept-latency --erp tryton --orders "$orders"
  fi
  printf '| %s ' "$(git rev-parse --short HEAD)"
  RUST_LOG=warn "$out/order_bench-now" --accept-latency --erp tryton --orders "$orders"
} | tee "$out/order-accept.md"
