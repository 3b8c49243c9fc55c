#!/usr/bin/env bash
# Orders per second from POST /web/v1/orders to "confirmed", end to end in
# `up` mode (see examples/order_bench.rs): on the embedded defaults, then with
# PostgreSQL for every store and NATS JetStream for events (the local
# services at 127.0.0.1). Builds in release mode; writes
# target/bench/orders.md.
#
#   bash bench/orders.sh [ORDERS] [CONCURRENCY]
set -euo pipefail
cd "$(dirname "$0")/.."
orders="${1:-2000}"
concurrency="${2:-32}"
cargo build --release -q --example order_bench
bin="${CARGO_TARGET_DIR:-target}/release/examples/order_bench"
out="${CARGO_TARGET_DIR:-target}/bench"
mkdir -p "$out"
{
  echo "Orders placed end to end (gateway → experience → process → system, embedded ERP, sandbox payments),"
  echo "card payment, 1 line; $(nproc) cores; $(date -u +%F)."
  echo
  echo "| stores | orders | concurrent clients | posted | confirmed/s | accepted/s | p50 POST→confirmed ms | p99 ms | rejected |"
  echo "|---|---|---|---|---|---|---|---|---|"
  for store in sqlite postgres; do
    # Flat out for the most orders per second, then paced for the latency
    # of one order at 80 % of issue 24's targets (500/s on SQLite, 250/s
    # on PostgreSQL).
    RUST_LOG=warn "$bin" --orders "$orders" --concurrency "$concurrency" --store "$store"
    rate=$([ "$store" = sqlite ] && echo 400 || echo 200)
    RUST_LOG=warn "$bin" --orders $((rate * 10)) --concurrency "$concurrency" --rate "$rate" --store "$store"
  done
} | tee "$out/orders.md"
