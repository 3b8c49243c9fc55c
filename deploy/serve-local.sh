#!/usr/bin/env bash
# Runs the four tiers as four `erp-connect serve` processes on this machine
# (gateway on 127.0.0.1:8080), sharing one data directory, until Ctrl-C.
# Usage: deploy/serve-local.sh [path/to/erp-connect] [data-dir]
set -euo pipefail
bin="${1:-target/release/erp-connect}"
data="${2:-./data}"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait' EXIT INT TERM
for tier in system process experience gateway; do
  "$bin" serve --target "$tier" --data-dir "$data" &
  pids+=("$!")
done
wait
