#!/usr/bin/env bash
# The load erp-connect puts on Tryton, and what it leaves Tryton's own users
# (README, "Load budget toward the ERP"):
#  1. ERP calls per catalogue page (the whole catalogue read in pages of 10,
#     then read again) and per card order: connector calls, the system
#     tier's erp_connect_backend_calls_total summed over operations, the
#     change feed's polls (list_changes) left out;
#  2. Tryton's own response time (p50, p99) to an interactive user, a
#     logged-in user's model.sale.sale.search_read straight to Tryton,
#     while idle and while erp-connect works off ORDERS card orders posted
#     at once (4 customers, known to Tryton before), with the caps of
#     [erp.resilience] at their Tryton defaults and set very high.
# For this checkout, and given a revision, that revision too (built in a
# temporary worktree). Runs `erp-connect up` against a Tryton set up by
# deploy/tryton/setup.sh (DB=erp_budget PORT=8790 unless set), restored from
# its golden snapshot before each run; writes target/bench/load-budget.md.
#
#   bash bench/load-budget.sh [ORDERS] [BEFORE_REVISION]
#
# PROFILE=release (or dev) picks the build; BEFORE_BIN=path uses an
# erp-connect binary already built at BEFORE_REVISION.
set -euo pipefail
cd "$(dirname "$0")/.."
orders="${1:-60}"
before="${2:-}"
profile="${PROFILE:-release}"
export DB="${DB:-erp_budget}" PORT="${PORT:-8790}"
http_port=$((PORT + 100)) grpc_port=$((PORT + 101))
base="http://127.0.0.1:$http_port"
target="${CARGO_TARGET_DIR:-$PWD/target}"
out="$target/bench"
mkdir -p "$out"
dir_of() { [ "$1" = dev ] && echo debug || echo "$1"; }
work=$(mktemp -d)
tree=""
app=""
cleanup() {
  if [ -n "$app" ]; then kill "$app" 2>/dev/null || true; wait "$app" 2>/dev/null || true; fi
  bash deploy/tryton/stop.sh >/dev/null 2>&1 || true
  if [ -n "$tree" ]; then git worktree remove --force "$tree" >/dev/null 2>&1 || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

rm -f "$out/load-budget-calls.txt"
CARGO_TARGET_DIR="$target" cargo build -q --profile "$profile" --bin erp-connect
now_bin="$work/erp-connect-now"
cp "$target/$(dir_of "$profile")/erp-connect" "$now_bin"
before_bin="${BEFORE_BIN:-}"
if [ -n "$before" ] && [ -z "$before_bin" ]; then
  tree=$(mktemp -d)
  git worktree add -q --detach "$tree" "$before"
  (cd "$tree" && CARGO_TARGET_DIR="$target/before-revision" cargo build -q --profile "$profile" --bin erp-connect)
  before_bin="$target/before-revision/$(dir_of "$profile")/erp-connect"
fi

# A logged-in Tryton user's call, timed until the file $1 exists; prints
# "calls p50 p99" in ms.
probe() {
  python3 - "$1" <<'PY'
import base64, json, os, sys, time, urllib.request
url = '%s/%s/rpc/' % (os.environ['TRYTON_URL'], os.environ['TRYTON_DB'])
def call(method, params, auth=None):
    headers = {'Content-Type': 'application/json'}
    if auth:
        headers['Authorization'] = auth
    body = json.dumps({'id': 1, 'method': method, 'params': params}).encode()
    with urllib.request.urlopen(urllib.request.Request(url, body, headers), timeout=120) as r:
        return json.loads(r.read())['result']
password = open(os.environ['TRYTON_PASSWORD_FILE']).read().strip()
user = os.environ['TRYTON_USER']
uid, token = call('common.db.login', [user, {'password': password}, 'en'])[:2]
auth = 'Session ' + base64.b64encode(('%s:%s:%s' % (user, uid, token)).encode()).decode()
ctx = call('model.res.user.get_preferences', [True, {}], auth)
took = []
while not os.path.exists(sys.argv[1]):
    started = time.monotonic()
    # The sales list a clerk opens: the latest 20 sales.
    call('model.sale.sale.search_read', [[], 0, 20, [['id', 'DESC']],
        ['number', 'party.name', 'state', 'total_amount'], ctx], auth)
    took.append((time.monotonic() - started) * 1000)
    time.sleep(0.2)  # a person, not a load generator
took.sort()
pick = lambda q: took[min(len(took) - 1, int(q * len(took)))]
print('%d %.0f %.0f' % (len(took), pick(0.5), pick(0.99)))
PY
}

# ERP calls so far, the change feed's polls and the start-up discovery left out.
erp_calls() {
  curl -s "$base/metrics" | awk '/^erp_connect_backend_calls_total\{/ && !/operation="(list_changes|capabilities)"/ { s += $NF }
    END { print s + 0 }'
}
# ERP calls so far by operation and outcome, one "operation/outcome count" a line.
calls_by_operation() {
  curl -s "$base/metrics" | sed -n 's/^erp_connect_backend_calls_total{.*operation="\([a-z_]*\)",outcome="\([a-z]*\)"} /\1\/\2 /p' | sort
}
# ERP calls a catalogue page can make (the change feed's product refreshes,
# get_product, run beside at start).
catalogue_calls() {
  curl -s "$base/metrics" | awk '/^erp_connect_backend_calls_total\{/ && /operation="(list_products|stock_levels)"/ { s += $NF }
    END { print s + 0 }'
}

# Reads the whole catalogue in pages of 10; prints the pages read.
read_catalogue() {
  local token="$1" url="$base/web/v1/products?page_size=10" pages=0 next
  while :; do
    next=$(curl -sf -H "Authorization: Bearer $token" "$url" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("next_page_token") or "")')
    pages=$((pages + 1))
    [ -z "$next" ] && break
    url="$base/web/v1/products?page_size=10&page_token=$next"
  done
  echo "$pages"
}

# One unit of GADGET-2: the demo's one warehouse stock that serves every
# order of a run (WIDGET-1 has 5 units; orders short of stock are rejected).
post_order() { # token key
  curl -sf -o /dev/null -H "Authorization: Bearer $1" -H "Idempotency-Key: $2" -H 'content-type: application/json' \
    -d '{"lines":[{"sku":"GADGET-2","quantity":1}],"payment":{"method":"card","token":"tok_visa"},
         "ship_to":{"street":"Hauptstr. 1","city":"Berlin","postal_code":"10115","country":"DE"}}' \
    "$base/web/v1/orders"
}

# Orders of the given tokens not yet past the ERP steps.
open_orders() {
  local n=0 t
  for t in "$@"; do
    n=$((n + $(curl -sf -H "Authorization: Bearer $t" "$base/web/v1/orders?page_size=100" | python3 -c '
import json, sys
print(sum(o["status"] not in ("paid", "shipped", "completed", "rejected", "cancelled") for o in json.load(sys.stdin)["orders"]))')))
  done
  echo "$n"
}

filled() { [ "$(catalogue_calls)" -gt 0 ]; }
orders_done() { [ "$(open_orders "${tokens[@]}")" -eq 0 ]; }

wait_for() { # what, command...
  local what="$1" i
  shift
  for i in $(seq 600); do
    if "$@"; then return 0; fi
    sleep 0.5
  done
  echo "load-budget: $what did not happen in 5 minutes" >&2
  exit 1
}

# One run: label, binary, [erp.resilience] caps (TOML lines).
run() {
  local label="$1" bin="$2" caps="$3" data
  set -a
  eval "$(bash deploy/tryton/setup.sh)"
  set +a
  data=$(mktemp -d -p "$work")
  cat > "$data/config.toml" <<TOML
[erp]
backend = "tryton"
[erp.tryton]
url = "$TRYTON_URL"
database = "$TRYTON_DB"
username = "$TRYTON_USER"
password_file = "$TRYTON_PASSWORD_FILE"
[erp.resilience]
$caps
TOML
  RUST_LOG=warn "$bin" up --listen "127.0.0.1:$http_port" --grpc-listen "127.0.0.1:$grpc_port" \
    --data-dir "$data" --config "$data/config.toml" > "$data/log" 2>&1 &
  app=$!
  wait_for "readiness" curl -sf -o /dev/null "$base/readyz"
  # The price list reads the catalogue once at start (either revision).
  wait_for "the price list fill" filled
  local reader tokens=() i
  reader=$("$bin" token --sub reader --scope "catalog:read" --data-dir "$data" --config "$data/config.toml")
  for i in 1 2 3 4; do
    tokens+=("$("$bin" token --sub "load-$i" --email "load-$i@shop.example" --scope "orders:read orders:write" \
      --data-dir "$data" --config "$data/config.toml")")
  done

  local c0 c1 c2 p1 p2
  c0=$(catalogue_calls)
  p1=$(read_catalogue "$reader")
  c1=$(catalogue_calls)
  p2=$(read_catalogue "$reader")
  c2=$(catalogue_calls)

  # The customers exist in Tryton before the load.
  for i in 0 1 2 3; do post_order "${tokens[$i]}" "warm-$i"; done
  wait_for "the warm-up orders" orders_done

  local idle loaded c3 c4 started ended
  (sleep 10; touch "$work/stop") &
  idle=$(probe "$work/stop")
  rm -f "$work/stop"
  c3=$(erp_calls)
  calls_by_operation > "$work/calls-before"
  probe "$work/stop" > "$work/loaded" &
  local prober=$!
  started=$(date +%s.%N)
  local posts=()
  for i in $(seq 0 $((orders - 1))); do
    post_order "${tokens[$((i % 4))]}" "load-$i" &
    posts+=($!)
  done
  wait "${posts[@]}"
  wait_for "the orders" orders_done
  ended=$(date +%s.%N)
  touch "$work/stop"
  wait "$prober"
  loaded=$(cat "$work/loaded")
  rm -f "$work/stop"
  c4=$(erp_calls)
  # Per order, by operation and outcome, beside the table.
  calls_by_operation | join -a 1 -e 0 -o 0,2.2,1.2 - "$work/calls-before" |
    awk -v l="$label" -v o="$orders" '$1 !~ /^(list_changes|capabilities)\// && $3 > $2 {
      printf "%s: %s %.2f\n", l, $1, ($3 - $2) / o }' >> "$out/load-budget-calls.txt"
  local throttled
  throttled=$(curl -s "$base/metrics" | awk '/^erp_connect_backend_throttled_total\{/ { s += $NF } END { print s + 0 }')
  kill "$app"
  wait "$app" 2>/dev/null || true
  app=""

  read -r _ idle50 idle99 <<<"$idle"
  read -r n load50 load99 <<<"$loaded"
  awk -v l="$label" -v p1="$p1" -v p2="$p2" -v a="$((c1 - c0))" -v b="$((c2 - c1))" \
    -v o="$orders" -v c="$((c4 - c3))" -v s="$started" -v e="$ended" -v th="$throttled" \
    -v i50="$idle50" -v i99="$idle99" -v n="$n" -v l50="$load50" -v l99="$load99" 'BEGIN {
      printf "| %s | %.1f | %.1f | %.1f | %.1f | %s / %s | %s / %s (%d calls) | %d |\n",
        l, a / p1, b / p2, c / o, o / (e - s), i50, i99, l50, l99, n, th }'
}

{
  echo "Load toward Tryton 8.0 (SQLite), $(nproc) cores, $(date -u +%F), erp-connect build: $profile;"
  echo "catalogue read twice in pages of 10; $orders card orders posted at once by 4 known customers."
  echo "ERP calls: connector calls (erp_connect_backend_calls_total, change feed polls left out)."
  echo "Tryton's own time for a clerk's model.sale.sale.search_read (latest 20 sales), ms."
  echo
  echo "| erp-connect | ERP calls per catalogue page | per page read again | per order | orders/s | Tryton idle p50 / p99 | Tryton under order load p50 / p99 | throttled calls |"
  echo "|---|---|---|---|---|---|---|---|"
  if [ -n "$before_bin" ]; then
    run "$(git rev-parse --short "$before"), no caps" "$before_bin" ""
  fi
  rev=$(git rev-parse --short HEAD)
  run "$rev, caps set very high" "$now_bin" "max_concurrent_calls = 100000
max_calls_per_second = 100000"
  run "$rev, default caps (8, 100/s)" "$now_bin" ""
} | tee "$out/load-budget.md"
echo
echo "ERP calls per order by operation/outcome ($out/load-budget-calls.txt):"
cat "$out/load-budget-calls.txt"
