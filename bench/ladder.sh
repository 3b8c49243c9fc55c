#!/usr/bin/env bash
# The benchmark ladder (issue 7): the gateway against HAProxy and nginx on
# the same work, on one core each, with the load generator on the other.
#
#   bash bench/ladder.sh            # full run: release build, 10 s per system
#   SMOKE=1 bash bench/ladder.sh    # a few seconds, debug build, no oha install
#
# Steps, each against the same upstream (examples/bench_upstream.rs, one 1 KB
# JSON body):
#   1 baseline: the upstream alone
#   2 plain pass-through proxy: gateway (a public route), nginx, HAProxy
#   3 + partner API key check: gateway (X-API-Key, unmetered), nginx map, HAProxy map
#   4 + JWT verification, ES256 and RS256: gateway, HAProxy jwt_verify
#   5 + per-key rate limit (never reached): gateway plan, nginx limit_req, HAProxy stick table
#   6 the whole product on real reads, `up` and four-process `serve`, as
#     users run it (default configuration, logs at `info` to a file): an
#     order read with an API key and with a JWT, a products page of 20, at
#     wrk -c32
#   7 order placement end to end (orders/s to confirmed, then latency paced
#     at 80 % of the targets), embedded defaults
#     and PostgreSQL + NATS
#   8-10 (full runs) webhooks under a steady order load (bench/webhooks.sh),
#     a 100,000-row order file (bench/import.sh), SSE streams held open per
#     100 MB (bench/sse.sh)
# Throughput is wrk's (connections kept open), the best of $ROUNDS rounds
# (default 2) with the systems of a step in alternating order; latency is
# oha's at a fixed rate of half that system's best, with latency correction.
# Steps 2-6 are also counted in instructions per request (callgrind, h2load
# with a fixed number of requests; bench/instructions.sh for erp-connect,
# which .ci/run runs as a regression guard): unlike req/s on a shared
# virtual machine, the same build gives the same count run after run.
# Systems under test are pinned to core 0, the load generator to core 1.
# Writes target/bench/ladder.md (or $CARGO_TARGET_DIR/bench/ladder.md).
# bench/orders.sh measures order placement at paced rates too.
set -euo pipefail
cd "$(dirname "$0")/.."
trap 'echo "bench/ladder.sh: failed at line $LINENO" >&2' ERR

smoke="${SMOKE:-0}"
duration="${DURATION:-$([ "$smoke" = 1 ] && echo 1 || echo 10)}"
connections="${CONNECTIONS:-64}"
target="${CARGO_TARGET_DIR:-target}"
out="$target/bench"
# shellcheck source=bench/lib.sh
source bench/lib.sh
mkdir -p "$out"

# Tools: wrk, nginx and HAProxy from Debian; oha from crates.io.
missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v valgrind >/dev/null || missing+=(valgrind)
command -v h2load >/dev/null || missing+=(nghttp2-client)
command -v nginx >/dev/null || missing+=(nginx-light)
command -v haproxy >/dev/null || missing+=(haproxy)
command -v openssl >/dev/null || missing+=(openssl)
if [ "${#missing[@]}" -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
tools="$HOME/.cache/erp-connect/tools"
oha="$tools/bin/oha"
if [ ! -x "$oha" ] && [ "$smoke" != 1 ]; then
  cargo install oha --version 1.16.0 --locked --root "$tools" -q
fi

if [ "$smoke" = 1 ]; then profile=debug; build=(); else profile=release; build=(--release); fi
cargo build -q "${build[@]}" --bin erp-connect --example bench_upstream --example bench_tokens --example order_bench
bin="$target/$profile/erp-connect"
upstream_bin="$target/$profile/examples/bench_upstream"

server_core=0
load_core=1
[ "$(nproc)" -ge 2 ] || load_core=0
# Servers are started as `taskset ... &` directly, so that $! is the server
# itself and the clean-up stops it.
pin=(taskset -c "$server_core")

# --- the systems under test ------------------------------------------------
up_port=9000 gw_port=9100 nginx_base=9200 ha_base=9300 full_port=9400 serve_base=9500
cg_ha_base=9700
ports_free $up_port $gw_port $((nginx_base + 2)) $((nginx_base + 3)) $((nginx_base + 5)) \
  $((ha_base + 2)) $((ha_base + 3)) $((ha_base + 4)) $((ha_base + 5)) $((ha_base + 6)) $full_port \
  $serve_base $((serve_base + 1)) $((serve_base + 2)) $((serve_base + 3)) \
  $((cg_ha_base + 2)) $((cg_ha_base + 3)) $((cg_ha_base + 4)) $((cg_ha_base + 5)) $((cg_ha_base + 6))

"${pin[@]}" "$upstream_bin" "127.0.0.1:$up_port" >/dev/null &
pids+=("$!")
ready "http://127.0.0.1:$up_port/"

# The gateway alone in front of the upstream, as `serve --target gateway`,
# with its keys and tokens.
gateway_setup "$bin" "$target/$profile/examples/bench_tokens" "$gw_port" "$up_port"
openssl pkey -in "$work/es256.pem" -pubout -out "$work/es256.pub.pem"
openssl pkey -in "$work/rs256.pem" -pubout -out "$work/rs256.pub.pem"
RUST_LOG=warn "${pin[@]}" "$bin" serve --target gateway --config "$work/gateway.toml" >/dev/null 2>"$work/gateway.log" &
pids+=("$!")
ready "http://127.0.0.1:$gw_port/healthz"

# nginx: pass-through, + key map, + key map and limit_req.
mkdir -p "$work/nginx"
cat >"$work/nginx/nginx.conf" <<EOF
worker_processes 1;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  map_hash_bucket_size 128;
  client_body_temp_path $work/nginx; proxy_temp_path $work/nginx;
  fastcgi_temp_path $work/nginx; uwsgi_temp_path $work/nginx; scgi_temp_path $work/nginx;
  upstream up { server 127.0.0.1:$up_port; keepalive 64; }
  map \$http_x_api_key \$key_ok { default 0; "$key" 1; "$limited_key" 1; }
  limit_req_zone \$http_x_api_key zone=keys:10m rate=1000000r/s;
  proxy_http_version 1.1;
  proxy_set_header Connection "";
  server { listen 127.0.0.1:$((nginx_base + 2)); location / { proxy_pass http://up; } }
  server { listen 127.0.0.1:$((nginx_base + 3)); location / { if (\$key_ok = 0) { return 401; } proxy_pass http://up; } }
  server { listen 127.0.0.1:$((nginx_base + 5)); location / { if (\$key_ok = 0) { return 401; }
    limit_req zone=keys burst=1000000 nodelay; proxy_pass http://up; } }
}
EOF
"${pin[@]}" nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" -g 'daemon off;' &
pids+=("$!")

# HAProxy: pass-through, + key map, + JWT (ES256, RS256), + key and stick table.
printf '%s 1\n%s 1\n' "$key" "$limited_key" >"$work/keys.map"
now_check='http-request deny deny_status 401 if { var(txn.exp),sub(txn.now) -m int lt 0 }'
jwt_frontend() { # port alg public-key
  cat <<EOF
frontend jwt_$2
  bind 127.0.0.1:$1
  http-request set-var(txn.bearer) http_auth_bearer
  http-request set-var(txn.alg) var(txn.bearer),jwt_header_query('\$.alg')
  http-request deny deny_status 401 unless { var(txn.alg) -m str $2 }
  http-request deny deny_status 401 unless { var(txn.bearer),jwt_verify(txn.alg,"$3") -m int 1 }
  http-request deny deny_status 401 unless { var(txn.bearer),jwt_payload_query('\$.iss') -m str https://idp.bench.invalid/ }
  http-request deny deny_status 401 unless { var(txn.bearer),jwt_payload_query('\$.aud') -m str erp-connect }
  http-request set-var(txn.exp) var(txn.bearer),jwt_payload_query('\$.exp','int')
  http-request set-var(txn.now) date
  $now_check
  default_backend up
EOF
}
cat >"$work/haproxy.cfg" <<EOF
global
  nbthread 1
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
backend up
  http-reuse always
  server upstream 127.0.0.1:$up_port
frontend pass
  bind 127.0.0.1:$((ha_base + 2))
  default_backend up
frontend key
  bind 127.0.0.1:$((ha_base + 3))
  http-request deny deny_status 401 unless { req.hdr(x-api-key),map($work/keys.map) -m found }
  default_backend up
$(jwt_frontend $((ha_base + 4)) ES256 "$work/es256.pub.pem")
$(jwt_frontend $((ha_base + 6)) RS256 "$work/rs256.pub.pem")
frontend rate
  bind 127.0.0.1:$((ha_base + 5))
  stick-table type string len 64 size 100k expire 60s store http_req_rate(1s)
  http-request deny deny_status 401 unless { req.hdr(x-api-key),map($work/keys.map) -m found }
  http-request track-sc0 req.hdr(x-api-key)
  http-request deny deny_status 429 if { sc_http_req_rate(0) gt 100000000 }
  default_backend up
EOF
"${pin[@]}" haproxy -f "$work/haproxy.cfg" -db >/dev/null 2>"$work/haproxy.log" &
pids+=("$!")
ready "http://127.0.0.1:$((nginx_base + 2))/"
ready "http://127.0.0.1:$((ha_base + 2))/"

# --- measuring ---------------------------------------------------------------
# wrk's requests/s; refuses to report a run with non-2xx answers.
throughput() { # url [header]
  local args=(-t1 -c"$connections" -d"${duration}s" --latency)
  [ $# -gt 1 ] && args+=(-H "$2")
  local report
  report=$(taskset -c "$load_core" wrk "${args[@]}" "$1")
  if grep -q "Non-2xx" <<<"$report"; then
    echo "non-2xx answers from $1:" >&2
    echo "$report" >&2
    return 1
  fi
  awk '/^Requests\/sec/ {printf "%d", $2}' <<<"$report"
}

# p50 p90 p99 in µs at a fixed rate, from oha (wrk's, uncorrected, in smoke runs).
latency() { # rate url [header]
  local rate=$1 url=$2
  if [ -x "$oha" ]; then
    local args=(--no-tui --output-format json -z "${duration}s" -q "$rate" --latency-correction -c "$connections")
    [ $# -gt 2 ] && args+=(-H "$3")
    taskset -c "$load_core" "$oha" "${args[@]}" "$url" | python3 -c '
import json, sys
p = json.load(sys.stdin)["latencyPercentiles"]
print(" ".join(str(round(p[k] * 1e6)) for k in ("p50", "p90", "p99")))'
  else
    echo "- - -"
  fi
}

rows=()
baseline=0
# One row: best req/s of the rounds, latency at half of it.
row() { # step system rps url [header]
  local step=$1 system=$2 rps=$3 url=$4 lat ratio
  shift 4
  lat=$(latency $((rps / 2 > 0 ? rps / 2 : 1)) "$url" "$@")
  [ "$baseline" -gt 0 ] || baseline=$rps
  last_rps=$rps
  ratio=$(python3 -c "print(f'{$rps / $baseline:.2f}')")
  read -r p50 p90 p99 <<<"$lat"
  rows+=("| $step | $system | $rps | $p50 | $p90 | $p99 | ${ratio}× |")
  echo "$step $system: $rps req/s, p50/p90/p99 ${p50}/${p90}/${p99} µs" >&2
}

# The systems of one step, measured in $rounds rounds, every other round
# in reverse order, so that neither a warm-up nor a drift of the machine
# favours one; each keeps its best round.
rounds="${ROUNDS:-$([ "$smoke" = 1 ] && echo 1 || echo 2)}"
compare() { # step  system url header  [system url header]...
  local step=$1 n i r
  shift
  local systems=() urls=() headers=() best=()
  while [ $# -gt 0 ]; do
    systems+=("$1") urls+=("$2") headers+=("$3") best+=(0)
    shift 3
  done
  n=${#systems[@]}
  for ((r = 0; r < rounds; r++)); do
    for ((k = 0; k < n; k++)); do
      i=$([ $((r % 2)) = 0 ] && echo "$k" || echo $((n - 1 - k)))
      local args=("${urls[$i]}")
      [ -n "${headers[$i]}" ] && args+=("${headers[$i]}")
      local rps
      rps=$(throughput "${args[@]}")
      [ "$rps" -gt "${best[$i]}" ] && best[i]=$rps
    done
  done
  for ((i = 0; i < n; i++)); do
    local args=("${urls[$i]}")
    [ -n "${headers[$i]}" ] && args+=("${headers[$i]}")
    row "$step" "${systems[$i]}" "${best[$i]}" "${args[@]}"
  done
}

gw="http://127.0.0.1:$gw_port"
read_path="/partner/v1/orders/ord_bench"
key_h="X-API-Key: $key" limited_h="X-API-Key: $limited_key"
compare "1 baseline" "axum hello-world" "http://127.0.0.1:$up_port$read_path" ""
# Step 6 runs at -c32; its ratios are to the baseline at -c32.
connections=32 compare "1 baseline, -c32" "axum hello-world" "http://127.0.0.1:$up_port$read_path" ""
baseline32=$last_rps
compare "2 pass-through" \
  "gateway" "$gw/openapi.json" "" \
  "nginx" "http://127.0.0.1:$((nginx_base + 2))$read_path" "" \
  "HAProxy" "http://127.0.0.1:$((ha_base + 2))$read_path" ""
compare "3 + API key" \
  "gateway" "$gw$read_path" "$key_h" \
  "nginx (map)" "http://127.0.0.1:$((nginx_base + 3))$read_path" "$key_h" \
  "HAProxy (map)" "http://127.0.0.1:$((ha_base + 3))$read_path" "$key_h"
compare "4 + JWT ES256" \
  "gateway" "$gw$read_path" "Authorization: Bearer $es_token" \
  "HAProxy (jwt_verify)" "http://127.0.0.1:$((ha_base + 4))$read_path" "Authorization: Bearer $es_token"
compare "4 + JWT RS256" \
  "gateway" "$gw$read_path" "Authorization: Bearer $rs_token" \
  "HAProxy (jwt_verify)" "http://127.0.0.1:$((ha_base + 6))$read_path" "Authorization: Bearer $rs_token"
compare "5 + rate limit" \
  "gateway (key, plan)" "$gw$read_path" "$limited_h" \
  "nginx (map, limit_req)" "http://127.0.0.1:$((nginx_base + 5))$read_path" "$limited_h" \
  "HAProxy (map, stick table)" "http://127.0.0.1:$((ha_base + 5))$read_path" "$limited_h"

# --- steps 2-6 in instructions per request ------------------------------------
# erp-connect's from bench/instructions.sh (the gateway alone, and `up` as
# users run it); HAProxy's here, under callgrind with the same
# configuration on other ports. User-space instructions only (the
# kernel's socket work is about the same for both: compare sys time in
# /proc).
cg_count=$([ "$smoke" = 1 ] && echo 200 || echo 2000)
cg_warm=$((cg_count / 5))
# (Not in a smoke run: .ci/run runs bench/instructions.sh itself, on a
# release build; a debug `up` under callgrind takes minutes.)
ours=""
[ "$smoke" = 1 ] || ours=$(CG_COUNT=$cg_count bash bench/instructions.sh)
sed_ports=()
for i in 2 3 4 5 6; do sed_ports+=(-e "s/127.0.0.1:$((ha_base + i))\$/127.0.0.1:$((cg_ha_base + i))/"); done
sed "${sed_ports[@]}" "$work/haproxy.cfg" >"$work/haproxy-cg.cfg"
"${pin[@]}" valgrind --tool=callgrind --callgrind-out-file="$work/callgrind.%p" \
  haproxy -f "$work/haproxy-cg.cfg" -db >/dev/null 2>"$work/haproxy-cg.log" &
cg_ha=$!
pids+=("$cg_ha")
ready "http://127.0.0.1:$((cg_ha_base + 2))$read_path" 300
ha_cg() { echo "http://127.0.0.1:$((cg_ha_base + $1))$read_path"; }
cg_rows=()
cg_row() { # label name-in-bench/instructions.sh [haproxy-port header]
  local ha=-
  [ -z "${3:-}" ] || ha=$(instructions "$cg_ha" "$(ha_cg "$3")" "$4")
  local gw
  gw=$(awk -F'\t' -v n="$2" '$1 == n {print $2}' <<<"$ours")
  cg_rows+=("| $1 | ${gw:--} | $ha |")
}
cg_row "2 answered by the gateway itself (\`/healthz\`)" "gateway /healthz (answered by the gateway)"
cg_row "2 pass-through" "gateway pass-through" 2 ""
cg_row "3 + API key" "gateway + API key" 3 "$key_h"
cg_row "4 + JWT ES256" "gateway + JWT ES256" 4 "Authorization: Bearer $es_token"
cg_row "4 + JWT RS256" "gateway + JWT RS256" 6 "Authorization: Bearer $rs_token"
cg_row "5 + rate limit" "gateway + rate limit" 5 "$limited_h"
cg_row "6 order read (up), API key" "up order read, API key"
cg_row "6 order read (up), JWT" "up order read, JWT"
cg_row "6 products page of 20 (up)" "up products page (20)"
kill "$cg_ha"

# --- step 6: the whole product, one core -------------------------------------
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
full_run() { # mode base-url pid...
  local mode=$1 url=$2
  shift 2
  product_setup "$bin" "$url" "$work/$mode-data"
  local connections=32 baseline=$baseline32
  compare "6 order read ($mode), API key" "erp-connect" "$url/partner/v1/orders/$partner_order" "X-API-Key: $partner_key"
  compare "6 order read ($mode), JWT" "erp-connect" "$url/web/v1/orders/$shopper_order" "Authorization: Bearer $shopper_token"
  compare "6 products page of 20 ($mode)" "erp-connect" "$url/web/v1/products?page_size=20" "Authorization: Bearer $shopper_token"
  local total=0 pid
  for pid in "$@"; do total=$((total + $(rss_kb "$pid"))); done
  memory+=("| $mode | after step 6 | $((total / 1024)) MB |")
}

memory=()
start=$(date +%s%N)
"${pin[@]}" "$bin" up --listen "127.0.0.1:$full_port" --grpc-listen 127.0.0.1:0 \
  --data-dir "$work/up-data" >/dev/null 2>"$work/up.log" &
up_pid=$!
pids+=("$up_pid")
ready "http://127.0.0.1:$full_port/readyz"
startup_ms=$((($(date +%s%N) - start) / 1000000))
memory+=("| up | idle, ready after ${startup_ms} ms | $(($(rss_kb "$up_pid") / 1024)) MB |")
full_run up "http://127.0.0.1:$full_port" "$up_pid"
kill "$up_pid"

serve_pids=()
for tier in system process experience gateway; do
  ERP_CONNECT__GATEWAY__LISTEN="127.0.0.1:$serve_base" \
    ERP_CONNECT__GATEWAY__EXPERIENCE_URL="http://127.0.0.1:$((serve_base + 1))" \
    ERP_CONNECT__EXPERIENCE__LISTEN="127.0.0.1:$((serve_base + 1))" \
    ERP_CONNECT__EXPERIENCE__PROCESS_URL="http://127.0.0.1:$((serve_base + 2))" \
    ERP_CONNECT__PROCESS__LISTEN="127.0.0.1:$((serve_base + 2))" \
    ERP_CONNECT__PROCESS__SYSTEM_URL="http://127.0.0.1:$((serve_base + 3))" \
    ERP_CONNECT__SYSTEM__LISTEN="127.0.0.1:$((serve_base + 3))" \
    "${pin[@]}" "$bin" serve --target "$tier" --data-dir "$work/serve-data" >/dev/null 2>>"$work/serve.log" &
  serve_pids+=("$!")
  pids+=("$!")
done
ready "http://127.0.0.1:$serve_base/readyz"
full_run serve "http://127.0.0.1:$serve_base" "${serve_pids[@]}"
for pid in "${serve_pids[@]}"; do kill "$pid"; done

# --- step 7: order placement end to end, on both cores -----------------------
# examples/order_bench.rs: `up` in-process, clients posting card orders as
# fast as they are accepted, until every one is confirmed; on the embedded
# defaults, then on PostgreSQL + NATS JetStream (fresh databases and stream,
# removed afterwards). Then paced at 80 % of issue 24's targets (500/s
# embedded, 250/s on PostgreSQL) for the latency of an order at that load,
# for 10 s (bench/orders.sh runs the same pair with other counts).
orders="${ORDERS:-$([ "$smoke" = 1 ] && echo 20 || echo 2000)}"
order_rows=()
for store in sqlite postgres; do
  rate=$([ "$store" = sqlite ] && echo 400 || echo 200)
  paced=$([ "$smoke" = 1 ] && echo 20 || echo $((rate * 10)))
  order_rows+=("$(RUST_LOG=warn "$target/$profile/examples/order_bench" --orders "$orders" --concurrency 32 --store "$store")")
  echo "7 orders ($store): ${order_rows[-1]}" >&2
  order_rows+=("$(RUST_LOG=warn "$target/$profile/examples/order_bench" --orders "$paced" --concurrency 32 --rate "$rate" --store "$store")")
  echo "7 orders ($store, $rate/s): ${order_rows[-1]}" >&2
done

# --- steps 8-10: the integration workloads (full runs) ------------------------
# Each script writes its own table; the ladder appends them.
extra=()
if [ "$smoke" != 1 ]; then
  for script in "webhooks.sh 50 15" "import.sh" "sse.sh"; do
    # shellcheck disable=SC2086 # the script and its arguments
    extra+=("$(bash bench/$script 2>/dev/null)")
    echo "${script%% *}: done" >&2
  done
fi

{
  echo "Benchmark ladder, $(date -u +%F), $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)),"
  echo "$profile build. Systems on core $server_core, load on core $load_core; wrk -t1 -c$connections ${duration}s for req/s"
  echo "(-c32 for step 6, the whole product with its default configuration and logs at info to a file, its ratios to the -c32 baseline);"
  echo "latency (µs) from oha at half of each system's own req/s with latency correction. 1 KB JSON."
  echo
  echo "| step | system | req/s | p50 µs | p90 µs | p99 µs | × baseline |"
  echo "|---|---|---|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
  echo
  echo "Steps 2-6 in user-space instructions per request (callgrind; $cg_count requests, 16 connections, h2load):"
  echo
  echo "| step | erp-connect | HAProxy |"
  echo "|---|---|---|"
  printf '%s\n' "${cg_rows[@]}"
  echo
  echo "| mode | when | resident memory |"
  echo "|---|---|---|"
  printf '%s\n' "${memory[@]}"
  echo
  echo "Step 7, order placement (POST /web/v1/orders to confirmed, card payments, both cores):"
  echo
  echo "| stores | orders | concurrent clients | posted | confirmed/s | accepted/s | p50 POST→confirmed ms | p99 ms | rejected |"
  echo "|---|---|---|---|---|---|---|---|---|"
  printf '%s\n' "${order_rows[@]}"
  for table in "${extra[@]}"; do
    echo
    echo "$table"
  done
} | tee "$out/ladder.md"
