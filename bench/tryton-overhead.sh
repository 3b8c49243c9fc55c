#!/usr/bin/env bash
# The Tryton connector's own overhead per call, against a direct JSON-RPC
# call to the same Tryton (see system-apis/examples/tryton_overhead.rs).
# Sets Tryton up with deploy/tryton/setup.sh (database erp_bench), builds in
# release mode, runs, writes target/bench/tryton-overhead.md, stops Tryton.
set -euo pipefail
cd "$(dirname "$0")/.."
export DB=erp_bench
set -a
eval "$(bash deploy/tryton/setup.sh)"
set +a
trap 'bash deploy/tryton/stop.sh >/dev/null 2>&1 || true' EXIT
cargo build --release -q -p system-apis --example tryton_overhead
out="${CARGO_TARGET_DIR:-target}/bench"
mkdir -p "$out"
"${CARGO_TARGET_DIR:-target}/release/examples/tryton_overhead" | tee "$out/tryton-overhead.md"
