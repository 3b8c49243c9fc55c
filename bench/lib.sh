# Shared by bench/ladder.sh, bench/instructions.sh and bench/sse.sh
# (sourced, not run): a scratch directory and the servers' cleanup, waiting
# for a server, counting the instructions one request costs under callgrind,
# and the gateway-alone configuration both measure.
#
# Sourcing it makes $work (a temporary directory) and $pids (servers the
# script starts; each is killed, and $work removed, when the script exits).
# The sourcing script sets, where it counts instructions: $load_core (the
# core h2load runs on), $cg_count and $cg_warm (requests measured, and sent
# before as a warm-up).

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# Waits until URL answers 200 (a fresh server), at most 30 s (or SECONDS).
ready() { # url [seconds]
  for _ in $(seq 1 $((${2:-30} * 100))); do
    curl -sf -o /dev/null "$1" && return 0
    sleep 0.01
  done
  echo "not ready: $1" >&2
  return 1
}

# Fails when one of the PORTS is taken: a server left there would answer in
# place of the one under test.
ports_free() { # port...
  local port
  for port in "$@"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$(basename "$0"): port $port is in use; stop what listens there" >&2
      return 1
    fi
  done
}

# User-space instructions one request costs PID, which runs under
# `valgrind --tool=callgrind --callgrind-out-file=$work/callgrind.%p`: a
# warm-up, then $cg_count requests from 16 keep-alive connections between
# a reset and a dump of the counts. Fails unless every answer is 2xx.
instructions() { # pid url [header]
  local pid=$1 url=$2 args=(--h1 -c 16) report dump
  [ -z "${3:-}" ] || args+=(-H "$3")
  taskset -c "$load_core" h2load "${args[@]}" -n "$cg_warm" "$url" >/dev/null
  callgrind_control --zero "$pid" >/dev/null 2>&1
  report=$(taskset -c "$load_core" h2load "${args[@]}" -n "$cg_count" "$url")
  if ! grep -q "status codes: $cg_count 2xx" <<<"$report"; then
    echo "not all 2xx from $url under callgrind:" >&2
    echo "$report" >&2
    return 1
  fi
  callgrind_control --dump "$pid" >/dev/null 2>&1
  dump=$(echo "$work/callgrind.$pid".*)
  awk -v n="$cg_count" '/^totals:/ {printf "%d", $2 / n}' "$dump"
  rm -f "$dump"
}

# The gateway alone in front of an upstream, as `serve --target gateway`:
# writes $work/gateway.toml (listening on PORT), ES256 and RS256 keys with
# their JWKS, and sets $es_token, $rs_token, $key (unmetered) and
# $limited_key (a plan with a limit never reached).
gateway_setup() { # bin tokens-bin port upstream-port
  local bin=$1 tokens_bin=$2 port=$3 upstream_port=$4 tokens
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$work/es256.pem" 2>/dev/null
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$work/rs256.pem" 2>/dev/null
  tokens=$("$tokens_bin" "$work")
  es_token=$(awk '$1 == "ES256" {print $2}' <<<"$tokens")
  rs_token=$(awk '$1 == "RS256" {print $2}' <<<"$tokens")
  cat >"$work/gateway.toml" <<EOF
data_dir = "$work/gateway-data"
[gateway]
listen = "127.0.0.1:$port"
experience_url = "http://127.0.0.1:$upstream_port"
[[gateway.issuers]]
issuer = "https://idp.bench.invalid/"
jwks_file = "$work/jwks-es256.json"
[[gateway.issuers]]
issuer = "https://idp.bench.invalid/"
jwks_file = "$work/jwks-rs256.json"
# Limited, never reached: the limiter's cost without refusals.
[gateway.plans.bench]
requests_per_second = 100000000
burst = 100000000
EOF
  key=$(RUST_LOG=off "$bin" keys create --partner bench --scopes orders:read --plan unmetered --config "$work/gateway.toml" 2>/dev/null)
  limited_key=$(RUST_LOG=off "$bin" keys create --partner bench --scopes orders:read --plan bench --config "$work/gateway.toml" 2>/dev/null)
}

# In a running `up` or `serve` with data in DATA_DIR at URL: a partner key
# and an on-account order of its tenant ($partner_key, $partner_order), a
# shopper's token and a card order of theirs ($shopper_token,
# $shopper_order), both followed until their sagas are done, so that what
# is measured next is the reads alone.
product_setup() { # bin url data-dir
  local bin=$1 url=$2 data=$3
  partner_key=$(RUST_LOG=off "$bin" keys create --partner bench --scopes orders:read,orders:write \
    --plan unmetered --data-dir "$data" 2>/dev/null)
  shopper_token=$(RUST_LOG=off "$bin" token --sub bench-shopper --email shopper@bench.example \
    --scope "catalog:read orders:read orders:write" --data-dir "$data")
  partner_order=$(place "$url/partner/v1/orders" "X-API-Key: $partner_key" '{"method":"on_account"}')
  shopper_order=$(place "$url/web/v1/orders" "Authorization: Bearer $shopper_token" '{"method":"card","token":"tok_visa"}')
  settled "$url/partner/v1/orders/$partner_order" "X-API-Key: $partner_key" invoiced
  settled "$url/web/v1/orders/$shopper_order" "Authorization: Bearer $shopper_token" paid
}

# Places a one-line order; prints its id.
place() { # url header payment-json
  curl -sf -X POST "$1" -H "$2" -H 'content-type: application/json' \
    -d "{\"lines\":[{\"sku\":\"WIDGET-1\",\"quantity\":1}],\"payment\":$3,\"ship_to\":{\"street\":\"Hauptstr. 1\",\"city\":\"Berlin\",\"postal_code\":\"10115\",\"country\":\"DE\"}}" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])'
}

# Waits until the order at URL has STATUS, at most 300 s (under callgrind a
# saga takes seconds).
settled() { # url header status
  local status=""
  for _ in $(seq 1 3000); do
    status=$(curl -sf "$1" -H "$2" | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])')
    [ "$status" = "$3" ] && return 0
    sleep 0.1
  done
  echo "$1 is $status, not $3" >&2
  return 1
}
