#!/usr/bin/env bash
# Order files (examples/import_bench.rs): a generated CSV of one-line
# partner orders (every 50th row an unknown SKU, quarantined) streamed into
# POST /partner/v1/order-batches in `up` mode on the embedded defaults;
# rows per second from the first byte to the last row's result and the
# process's peak RSS, for 10,000 and 100,000 rows, as a dry run and as an
# import. Builds in release mode; writes target/bench/import.md.
#
#   bash bench/import.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q --example import_bench
bin="${CARGO_TARGET_DIR:-target}/release/examples/import_bench"
out="${CARGO_TARGET_DIR:-target}/bench"
mkdir -p "$out"
{
  echo "Order files through POST /partner/v1/order-batches, \`up\` on SQLite, $(nproc) cores, $(date -u +%F)."
  echo
  echo "| rows | MiB | run | upload s | rows/s | orders accepted | rows refused | peak RSS before MiB | peak RSS after MiB |"
  echo "|---|---|---|---|---|---|---|---|---|"
  for rows in 10000 100000; do
    RUST_LOG=warn "$bin" --rows "$rows" --dry-run
    RUST_LOG=warn "$bin" --rows "$rows"
  done
} | tee "$out/import.md"
