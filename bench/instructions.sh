#!/usr/bin/env bash
# Instructions per request, counted by callgrind: the gateway's steps (as
# in bench/ladder.sh, steps 2-5) and the read path of the whole product in
# `up` as users run it (default configuration, logs at `info` to a file).
# Unlike req/s on a shared virtual machine, a count is the same from run to
# run (within about 1 %), so it is what guards the hot paths in CI.
#
#   bash bench/instructions.sh                 # print the counts
#   bash bench/instructions.sh --check FILE    # fail if one is > 5 % above FILE's
#   bash bench/instructions.sh --bless FILE    # write the counts to FILE
#
# Release build (PROFILE=debug for a quick look; its counts mean little).
# FILE (bench/instructions.tsv in .ci/run) holds `name<TAB>count` lines;
# `#` lines are comments. A count more than 5 % below its figure is
# reported, so that an improvement is blessed and then kept.
set -euo pipefail
cd "$(dirname "$0")/.."
trap 'echo "bench/instructions.sh: failed at line $LINENO" >&2' ERR

mode=print file=""
case "${1:-}" in
  --check | --bless) mode=${1#--} file=${2:?"usage: $0 [--check|--bless FILE]"} ;;
  "") ;;
  *) echo "usage: $0 [--check|--bless FILE]" >&2; exit 2 ;;
esac
tolerance=5

target="${CARGO_TARGET_DIR:-target}"
profile="${PROFILE:-release}"
# shellcheck source=bench/lib.sh
source bench/lib.sh

missing=()
command -v valgrind >/dev/null || missing+=(valgrind)
command -v h2load >/dev/null || missing+=(nghttp2-client)
command -v openssl >/dev/null || missing+=(openssl)
if [ "${#missing[@]}" -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
build=()
[ "$profile" = release ] && build=(--release)
cargo build -q "${build[@]}" --bin erp-connect --example bench_upstream --example bench_tokens
bin="$target/$profile/erp-connect"

# A fixed number of requests after a warm-up; one core for the servers,
# the other for h2load.
cg_count="${CG_COUNT:-2000}"
cg_warm=$((cg_count / 5))
server_core=0 load_core=1
[ "$(nproc)" -ge 2 ] || load_core=0
pin=(taskset -c "$server_core")
upstream_port=9800 gw_port=9801 up_port=9802
ports_free $upstream_port $gw_port $up_port

"${pin[@]}" "$target/$profile/examples/bench_upstream" "127.0.0.1:$upstream_port" >/dev/null &
pids+=("$!")
ready "http://127.0.0.1:$upstream_port/"
gateway_setup "$bin" "$target/$profile/examples/bench_tokens" "$gw_port" "$upstream_port"

callgrind=(valgrind --tool=callgrind --callgrind-out-file="$work/callgrind.%p")
RUST_LOG=warn "${pin[@]}" "${callgrind[@]}" "$bin" serve --target gateway --config "$work/gateway.toml" \
  >/dev/null 2>"$work/gateway.log" &
gw_pid=$!
pids+=("$gw_pid")
# `up` as users run it: the default log level, lines to a file.
"${pin[@]}" "${callgrind[@]}" "$bin" up --listen "127.0.0.1:$up_port" --grpc-listen 127.0.0.1:0 \
  --data-dir "$work/up-data" >/dev/null 2>"$work/up.log" &
up_pid=$!
pids+=("$up_pid")
ready "http://127.0.0.1:$gw_port/healthz" 300
ready "http://127.0.0.1:$up_port/readyz" 300
up="http://127.0.0.1:$up_port"
product_setup "$bin" "$up" "$work/up-data"

gw="http://127.0.0.1:$gw_port" read_path=/partner/v1/orders/ord_bench
counts=()
count() { # name pid url [header]
  local n
  n=$(instructions "$2" "$3" "${4:-}")
  counts+=("$1	$n")
  echo "$1: $n" >&2
}
count "gateway /healthz (answered by the gateway)" "$gw_pid" "$gw/healthz"
count "gateway pass-through" "$gw_pid" "$gw/openapi.json"
count "gateway + API key" "$gw_pid" "$gw$read_path" "X-API-Key: $key"
count "gateway + JWT ES256" "$gw_pid" "$gw$read_path" "Authorization: Bearer $es_token"
count "gateway + JWT RS256" "$gw_pid" "$gw$read_path" "Authorization: Bearer $rs_token"
count "gateway + rate limit" "$gw_pid" "$gw$read_path" "X-API-Key: $limited_key"
count "up order read, API key" "$up_pid" "$up/partner/v1/orders/$partner_order" "X-API-Key: $partner_key"
count "up order read, JWT" "$up_pid" "$up/web/v1/orders/$shopper_order" "Authorization: Bearer $shopper_token"
count "up products page (20)" "$up_pid" "$up/web/v1/products?page_size=20" "Authorization: Bearer $shopper_token"

case $mode in
  print) printf '%s\n' "${counts[@]}" ;;
  bless)
    {
      echo "# Instructions per request (bench/instructions.sh, $profile build, $cg_count requests),"
      echo "# $(date -u +%F), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)."
      printf '%s\n' "${counts[@]}"
    } >"$file"
    echo "wrote $file" >&2
    ;;
  check)
    printf '%s\n' "${counts[@]}" | python3 -c '
import sys
expected = {}
for line in open(sys.argv[1]):
    if line.strip() and not line.startswith("#"):
        name, count = line.rstrip("\n").split("\t")
        expected[name] = int(count)
tolerance = float(sys.argv[2])
failed = False
print("%-45s %9s %9s %7s" % ("", "expected", "now", "change"))
for line in sys.stdin:
    name, count = line.rstrip("\n").split("\t")
    now = int(count)
    if name not in expected:
        print("%-45s %9s %9d  new: bless it" % (name, "-", now))
        failed = True
        continue
    change = (now - expected[name]) / expected[name] * 100
    verdict = ""
    if change > tolerance:
        verdict, failed = f"  more than {tolerance:g} % above", True
    elif change < -tolerance:
        verdict = "  an improvement: bless it to keep it"
    print(f"{name:<45} {expected[name]:>9} {now:>9} {change:>+6.1f}%{verdict}")
if failed:
    print(f"instruction counts regressed (or are new); bench/instructions.sh --bless {sys.argv[1]} records them on purpose")
    sys.exit(1)
' "$file" "$tolerance"
    ;;
esac
