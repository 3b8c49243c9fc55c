#!/usr/bin/env bash
# Webhook delivery (examples/webhook_bench.rs): event latency p50/p99 from
# the saga step's commit to the receiver's 2xx under a steady partner order
# load, and deliveries per second when a replay queues every event at once;
# on the embedded defaults (SQLite) and with PostgreSQL for every store.
# Builds in release mode; writes target/bench/webhooks.md.
#
#   bash bench/webhooks.sh [RATE] [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
rate="${1:-20}"
seconds="${2:-15}"
cargo build --release -q --example webhook_bench
bin="${CARGO_TARGET_DIR:-target}/release/examples/webhook_bench"
out="${CARGO_TARGET_DIR:-target}/bench"
mkdir -p "$out"
{
  echo "Webhooks to a local receiver answering 204, one partner endpoint subscribed to every event;"
  echo "on-account partner orders (3 events each); $(nproc) cores; $(date -u +%F)."
  echo
  echo "| stores | orders/s | orders | events | latency p50 ms | p99 ms | max ms | replayed backlog | deliveries/s |"
  echo "|---|---|---|---|---|---|---|---|---|"
  for store in sqlite postgres; do
    RUST_LOG=warn "$bin" --rate "$rate" --seconds "$seconds" --store "$store"
  done
} | tee "$out/webhooks.md"
