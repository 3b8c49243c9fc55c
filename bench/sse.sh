#!/usr/bin/env bash
# Server-sent event streams per 100 MB of memory: `up` (release build,
# default configuration, logs at info to a file) with one shopper's paid
# card order; examples/sse_bench.rs opens STREAMS order-status streams
# (GET /mobile/v1/orders/{id}/events), each over its own connection, and
# holds them once every one has had its first event. The process's
# resident memory (VmRSS) is read before and while they are held.
# Writes target/bench/sse.md.
#
#   bash bench/sse.sh [STREAMS...]     # default: 1000 5000
set -euo pipefail
cd "$(dirname "$0")/.."
trap 'echo "bench/sse.sh: failed at line $LINENO" >&2' ERR
target="${CARGO_TARGET_DIR:-target}"
out="$target/bench"
mkdir -p "$out"
# shellcheck source=bench/lib.sh
source bench/lib.sh
cargo build --release -q --bin erp-connect --example sse_bench
bin="$target/release/erp-connect"
counts=("$@")
[ "${#counts[@]}" -gt 0 ] || counts=(1000 5000)
port=9803
ports_free $port
# Every stream is a connection: a file descriptor in `up` and one in the
# client; as many as the hard limit allows.
ulimit -n "$(ulimit -Hn)"

rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
rows=()
for streams in "${counts[@]}"; do
  # One client address holds every stream: the per-client cap is lifted.
  ERP_CONNECT__GATEWAY__MAX_CONNECTIONS_PER_CLIENT=$((streams * 2)) \
    "$bin" up --listen "127.0.0.1:$port" --grpc-listen 127.0.0.1:0 --data-dir "$work/data-$streams" \
    >/dev/null 2>"$work/up-$streams.log" &
  up=$!
  pids+=("$up")
  ready "http://127.0.0.1:$port/readyz"
  product_setup "$bin" "http://127.0.0.1:$port" "$work/data-$streams"
  # A few requests first, so that the idle figure is a warmed-up process.
  for _ in 1 2 3; do curl -sf -o /dev/null -H "Authorization: Bearer $shopper_token" \
    "http://127.0.0.1:$port/web/v1/orders/$shopper_order"; done
  before=$(rss_kb "$up")
  mkfifo "$work/hold-$streams"
  "$target/release/examples/sse_bench" "http://127.0.0.1:$port" "$shopper_token" "$shopper_order" "$streams" \
    <"$work/hold-$streams" >"$work/bench-$streams.out" &
  client=$!
  pids+=("$client")
  exec 3>"$work/hold-$streams"
  while ! grep -q "^open" "$work/bench-$streams.out"; do
    kill -0 "$client" 2>/dev/null || { echo "sse_bench failed" >&2; exit 1; }
    sleep 0.1
  done
  held=$(rss_kb "$up")
  exec 3>&-
  wait "$client"
  kill "$up"
  wait "$up" 2>/dev/null || true
  per_stream=$(((held - before) * 1024 / streams))
  per_100mb=$((100 * 1000 * 1000 / (per_stream > 0 ? per_stream : 1)))
  rows+=("| $streams | $((before / 1024)) | $((held / 1024)) | $per_stream | $per_100mb |")
  echo "$streams streams: RSS $((before / 1024)) → $((held / 1024)) MiB, $per_stream bytes each" >&2
done
{
  echo "SSE order-status streams held open by \`up\` (release, logs at info), $(nproc) cores, $(date -u +%F)."
  echo
  echo "| streams | RSS before MiB | RSS holding them MiB | bytes per stream | streams per 100 MB |"
  echo "|---|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
} | tee "$out/sse.md"
