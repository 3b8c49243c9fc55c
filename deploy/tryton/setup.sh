#!/usr/bin/env bash
# Provision a headless Tryton server loaded with erp-connect's demo data.
#
#   bash deploy/tryton/setup.sh [--fresh] [KEY=VALUE ...]
#   set -a; eval "$(bash deploy/tryton/setup.sh)"; set +a   # TRYTON_URL, _DB, ...
#
# Settings (environment or KEY=VALUE arguments):
#   SERIES=8.0            Tryton series (8.0 LTS; 8.2 works too)
#   WORK=$HOME/.cache/erp-connect/tryton-$SERIES   venv, config, DB files, log, pid
#   BACKEND=sqlite        or postgresql
#   PG_URI=postgresql://postgres@127.0.0.1:5432/   (BACKEND=postgresql)
#   DB=erp  PORT=8765  ADMIN_PASSWORD=admin   (PORT=0: any free port, as printed)
#   MODULES="sale sale_credit_limit"   modules to activate (their dependencies
#                         too); default: sale and product_attribute, plus
#                         sale_credit_limit when it installs. MODULES=sale
#                         gives a database without credit limits or product
#                         attributes, as many installations are; without
#                         sale no demo data is loaded
#   SNAPSHOT=$DB          the golden snapshot to restore DB from (and to build
#                         if missing): runs of one test suite share a snapshot
#                         while each has a database of its own
#   OWNER_PID=            when set, the server and DB are stopped and dropped
#                         (stop.sh --drop) once that process has ended
#   SEED_DIR=<repo>/system-apis/migrations/embedded/sqlite  (the embedded ERP's SQL)
#   --fresh               ignore the golden snapshot, rebuild the database
#
# Idempotent and non-interactive. The virtualenv is reused while it holds the
# wanted packages; the database is restored from a golden snapshot while the
# venv, the load scripts, the seed, the admin password and the year are those
# it was built with. Ends with a running `trytond -d $DB` (pid, port, config
# and log in $WORK/trytond-$DB.*; stop it with stop.sh) and prints KEY=VALUE
# lines on stdout; everything else goes to stderr. A server this script
# started earlier in the same WORK for the same DB or on the same PORT is
# stopped first; runs sharing a WORK wait for each other (flock).
set -euo pipefail

# Everything lives in main(), so bash parses the whole file before running
# it and an edit to this file cannot disturb a run in progress.
main() {
exec 3>&1 1>&2   # stdout is reserved for the final KEY=VALUE lines

HERE="$(cd "$(dirname "$0")" && pwd)"
FRESH=0
for arg in "$@"; do
  case "$arg" in
    --fresh) FRESH=1 ;;
    -h|--help) sed -n '2,34p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    [A-Z_]*=*) export "${arg?}" ;;
    *) echo "setup.sh: unknown argument: $arg (try --help)"; exit 64 ;;
  esac
done

SERIES="${SERIES:-8.0}"
WORK="${WORK:-$HOME/.cache/erp-connect/tryton-$SERIES}"
BACKEND="${BACKEND:-sqlite}"
PG_URI="${PG_URI:-postgresql://postgres@127.0.0.1:5432/}"
DB="${DB:-erp}"
PORT="${PORT:-8765}"
ADMIN_PASSWORD="${ADMIN_PASSWORD:-admin}"
SNAPSHOT="${SNAPSHOT:-$DB}"
OWNER_PID="${OWNER_PID:-}"
SEED_DIR="${SEED_DIR:-$HERE/../../system-apis/migrations/embedded/sqlite}"
PYTHON="${PYTHON:-python3}"

case "$BACKEND" in sqlite|postgresql) ;; *) echo "BACKEND must be sqlite or postgresql"; exit 64 ;; esac
[[ "$SERIES" =~ ^[0-9]+\.[0-9]+$ ]] || { echo "SERIES must look like 8.0"; exit 64; }
[[ "$DB" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || { echo "DB must be a plain identifier"; exit 64; }
[[ "$SNAPSHOT" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || { echo "SNAPSHOT must be a plain identifier"; exit 64; }
[[ -z "$OWNER_PID" || "$OWNER_PID" =~ ^[0-9]+$ ]] || { echo "OWNER_PID must be a number"; exit 64; }
if [ -n "$OWNER_PID" ] && [ "$SNAPSHOT" = "$DB" ]; then
  echo "OWNER_PID drops DB and its snapshot when the owner ends; name a SNAPSHOT other than DB"; exit 64
fi
[[ "$PORT" =~ ^[0-9]+$ ]] || { echo "PORT must be a number"; exit 64; }
[ -d "$SEED_DIR" ] || { echo "SEED_DIR not found: $SEED_DIR"; exit 66; }

export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_PROGRESS_BAR=off PIP_NO_INPUT=1
ts() { date +%s.%N; }
lap() { awk -v a="$(ts)" -v b="$2" -v n="$1" 'BEGIN{printf "[tryton] %-30s %6.1fs\n", n, a-b}'; }
log() { echo "[tryton] $*"; }
T0=$(ts)
version() {
  curl -sf --max-time 2 -H 'Content-Type: application/json' \
    -d '{"id":0,"method":"common.server.version","params":[]}' "http://127.0.0.1:$PORT/rpc/"
}

mkdir -p "$WORK/db" "$WORK/www"
WORK="$(cd "$WORK" && pwd)"
VENV="$WORK/venv"
CONF="$WORK/trytond-$DB.conf"
PIDFILE="$WORK/trytond-$DB.pid"
LOGFILE="$WORK/trytond-$DB.log"

# 0. one run at a time per WORK (shared venv and snapshots); then stop the
#    server this script started here for this DB or on this PORT
if command -v flock >/dev/null; then
  exec 9>"$WORK/setup.lock"
  flock -w 900 9 || { echo "another setup.sh holds $WORK/setup.lock"; exit 75; }
fi
ours_on_port() {
  local f; for f in "$WORK"/trytond-*.port; do
    [ -f "$f" ] && [ "$(cat "$f")" = "$PORT" ] && [ -f "${f%.port}.pid" ] && return 0
  done; return 1
}
if version >/dev/null 2>&1 && ! ours_on_port; then
  echo "port $PORT already answers and it is not a server of $WORK; pick another PORT"; exit 69
fi
WORK="$WORK" DB="$DB" PORT="$PORT" bash "$HERE/stop.sh"

# 1. virtualenv (cached) --------------------------------------------------
t=$(ts)
# product_attribute: product attributes (a Dict field), which custom fields map keys of
PKGS=("trytond~=$SERIES.0" "trytond-sale~=$SERIES.0" "trytond-product-attribute~=$SERIES.0" "proteus~=$SERIES.0")
PG_PKGS=("trytond[postgresql]~=$SERIES.0" "psycopg[binary,pool]>=3.2")
CREDIT_PKG="trytond-sale-credit-limit~=$SERIES.0"
[ "$BACKEND" = postgresql ] && PKGS+=("${PG_PKGS[@]}")
STAMP="$VENV/.erp-connect-packages"
PYVER="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
venv_ok() {
  [ -x "$VENV/bin/trytond" ] && [ -f "$STAMP" ] || return 1
  grep -qxF "python $PYVER" "$STAMP" || return 1
  local p; for p in "${PKGS[@]}"; do grep -qxF "$p" "$STAMP" || return 1; done
}
if venv_ok; then
  log "reusing virtualenv $VENV"
else
  if [ -f "$STAMP" ] && grep -qxF "python $PYVER" "$STAMP" && grep -qxF "trytond~=$SERIES.0" "$STAMP"; then
    log "adding packages to $VENV"
  else
    log "creating virtualenv $VENV"
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
  fi
  # sale_credit_limit is optional: without it parties have no credit limit
  if ! "$VENV/bin/pip" install -q "${PKGS[@]}" "$CREDIT_PKG"; then
    log "WARNING: $CREDIT_PKG not installable; credit limits are not loaded"
    "$VENV/bin/pip" install -q "${PKGS[@]}"
  fi
  { echo "python $PYVER"; printf '%s\n' "${PKGS[@]}"
    if [ -f "$STAMP" ]; then cat "$STAMP"; fi; } | sort -u > "$STAMP.new"
  "$VENV/bin/pip" freeze --all > "$VENV/.erp-connect-freeze"
  mv "$STAMP.new" "$STAMP"
fi
[ -s "$VENV/.erp-connect-freeze" ] || "$VENV/bin/pip" freeze --all > "$VENV/.erp-connect-freeze"
INSTALLED="$("$VENV/bin/python" -c 'import trytond; print(trytond.__version__)')"
case "$INSTALLED" in "$SERIES".*) ;; *) echo "venv holds trytond $INSTALLED, not $SERIES.x"; exit 70 ;; esac
if [ -n "${MODULES:-}" ]; then
  read -r -a MODULES <<<"$MODULES"
else
  MODULES=(sale product_attribute)
  "$VENV/bin/python" -c 'import trytond.modules.sale_credit_limit' 2>/dev/null && MODULES+=(sale_credit_limit)
fi
for m in "${MODULES[@]}"; do
  [[ "$m" =~ ^[a-z_]+$ ]] || { echo "MODULES: $m is not a module name"; exit 64; }
done
lap "virtualenv (trytond $INSTALLED)" "$t"

# 2. configuration ---------------------------------------------------------
if [ "$BACKEND" = postgresql ]; then DBURI="$PG_URI"; else DBURI="sqlite://"; fi
cat > "$CONF" <<EOF
# written by deploy/tryton/setup.sh; config-file values override TRYTOND_* env vars
[database]
uri = $DBURI
path = $WORK/db
language = en

[web]
listen = 127.0.0.1:$PORT
root = $WORK/www

[session]
# inactivity (s) before "fresh session" calls (invoice pay wizard) answer 401
timeout = 3600
max_attempt = 1000
max_attempt_ip_network = 100000
EOF
PASSFILE="$WORK/admin-$DB.pass"
( umask 077; printf '%s\n' "$ADMIN_PASSWORD" > "$PASSFILE" )
export TRYTOND_CONFIG="$CONF" TRYTONPASSFILE="$PASSFILE"

# 3. database: golden snapshot or from scratch --------------------------------
pg() { # run SQL statements (autocommit) on the maintenance database
  "$VENV/bin/python" - "$PG_URI" "$@" <<'PY'
import sys, psycopg
uri = sys.argv[1].rstrip('/') + '/postgres'
with psycopg.connect(uri, autocommit=True) as conn:
    for sql in sys.argv[2:]:
        cur = conn.execute(sql)
        if cur.description:
            for row in cur:
                print(*row)
PY
}
drop_db() { # WITH (FORCE) (PostgreSQL 13+) also ends stale sessions
  pg "DROP DATABASE IF EXISTS $1 WITH (FORCE)" 2>/dev/null || pg "DROP DATABASE IF EXISTS $1"
}
pg_exists() { [ "$(pg "SELECT 1 FROM pg_database WHERE datname = '$1'")" = 1 ]; }

KEY="$( { echo "$BACKEND $SNAPSHOT $SERIES $(date +%Y) ${MODULES[*]}"; printf '%s' "$ADMIN_PASSWORD" | sha256sum
          grep -iE '^(trytond|proteus)' "$VENV/.erp-connect-freeze"   # not psycopg: shared by both backends
          cat "$HERE/setup_company.py" "$HERE/load_demo.py" "$SEED_DIR"/*.sql; } | sha256sum | cut -c1-32)"
if [ "$BACKEND" = sqlite ]; then
  GOLDEN="$WORK/db/$SNAPSHOT.golden"
  golden_exists() { [ -f "$GOLDEN" ]; }
else
  GOLDEN="${SNAPSHOT}_golden"
  golden_exists() { pg_exists "$GOLDEN"; }
fi
KEYFILE="$WORK/db/$SNAPSHOT.$BACKEND.golden-key"

t=$(ts)
if [ "$FRESH" = 0 ] && [ -f "$KEYFILE" ] && [ "$(cat "$KEYFILE")" = "$KEY" ] && golden_exists; then
  if [ "$BACKEND" = sqlite ]; then
    rm -f "$WORK/db/$DB.sqlite-wal" "$WORK/db/$DB.sqlite-shm"
    cp "$GOLDEN" "$WORK/db/$DB.sqlite"
  else
    drop_db "$DB"
    pg "CREATE DATABASE $DB TEMPLATE $GOLDEN"
  fi
  lap "restore golden snapshot" "$t"
else
  rm -f "$KEYFILE"
  if [ "$BACKEND" = sqlite ]; then
    rm -f "$WORK/db/$DB.sqlite" "$WORK/db/$DB.sqlite-wal" "$WORK/db/$DB.sqlite-shm" "$GOLDEN"
    touch "$WORK/db/$DB.sqlite"     # trytond-admin wants the file to exist
  else
    drop_db "$DB"; drop_db "$GOLDEN"
    pg "CREATE DATABASE $DB ENCODING 'UTF8' TEMPLATE template0"
  fi
  # --email: otherwise trytond-admin prompts for the admin email (EOFError)
  "$VENV/bin/trytond-admin" -d "$DB" --all --email admin@example.com \
      -u "${MODULES[@]}" --activate-dependencies </dev/null
  lap "trytond-admin (${MODULES[*]})" "$t"
  t=$(ts)
  if [[ " ${MODULES[*]} " == *" sale "* ]]; then
    "$VENV/bin/python" "$HERE/load_demo.py" "$DB" "$SEED_DIR" > "$WORK/demo-ids-$DB.json"
    lap "company + demo data" "$t"
  else
    # a database erp-connect must refuse (tests of that): nothing to sell
    log "no sale module: no company, no demo data"
    echo '{}' > "$WORK/demo-ids-$DB.json"
  fi
  t=$(ts)
  if [ "$BACKEND" = sqlite ]; then
    # the backup API also takes what is still in the -wal file
    "$VENV/bin/python" -c 'import sqlite3, sys
sqlite3.connect(sys.argv[1]).backup(sqlite3.connect(sys.argv[2]))' \
      "$WORK/db/$DB.sqlite" "$GOLDEN.tmp"
    mv "$GOLDEN.tmp" "$GOLDEN"
  else
    pg "CREATE DATABASE $GOLDEN TEMPLATE $DB"
  fi
  echo "$KEY" > "$KEYFILE"
  lap "golden snapshot" "$t"
fi

# 4. server ----------------------------------------------------------------------
t=$(ts)
if version >/dev/null 2>&1; then
  echo "port $PORT is taken again; pick another PORT"; exit 69
fi
# -d is mandatory: a database that was not preloaded fails every call with
# ["'res.user'", ""]. The launcher starts a new session (a Ctrl-C in the
# caller's shell does not reach the server) and closes every inherited fd
# above 2: a server holding our stdout pipe would keep `$(setup.sh)` waiting.
nohup "$VENV/bin/python" -c 'import os, sys
try:
    os.setsid()
except OSError:
    pass
os.closerange(3, 65536)
os.execv(sys.argv[1], sys.argv[1:])' "$VENV/bin/trytond" -d "$DB" -c "$CONF" \
  >"$LOGFILE" 2>&1 </dev/null 3>&- 9>&- &
PID=$!
echo "$PID" > "$PIDFILE"
echo "$PORT" > "$WORK/trytond-$DB.port"
ready=0
for _ in $(seq 1 300); do           # at most about 30 s
  if [ "$PORT" = 0 ]; then
    # PORT=0: the server binds a free port and names it in its log (the
    # tests ask for this, so no port is chosen, released and bound again).
    seen=$(grep -oE 'Running on http://127\.0\.0\.1:[0-9]+' "$LOGFILE" 2>/dev/null | head -1 | grep -oE '[0-9]+$' || true)
    if [ -n "$seen" ]; then PORT=$seen; echo "$PORT" > "$WORK/trytond-$DB.port"; fi
  fi
  if [ "$PORT" != 0 ] && version >/dev/null 2>&1; then ready=1; break; fi
  kill -0 "$PID" 2>/dev/null || break
  sleep 0.1
done
if [ "$ready" != 1 ]; then
  echo "trytond did not answer on 127.0.0.1:$PORT; last log lines:"; tail -20 "$LOGFILE"
  kill "$PID" 2>/dev/null || true; rm -f "$PIDFILE"; exit 1
fi
lap "trytond ready ($(version | sed 's/.*"result": *"\([^"]*\)".*/\1/'))" "$t"
if [ -n "$OWNER_PID" ]; then
  # The server and its database live as long as the process that asked for
  # them (a test run), however that ends: a detached watcher checks once a
  # second whether it is still there, then runs stop.sh --drop for this DB.
  nohup "$VENV/bin/python" -c 'import os, subprocess, sys, time
try:
    os.setsid()
except OSError:
    pass
os.closerange(3, 65536)
owner = int(sys.argv[1])
while True:
    try:
        os.kill(owner, 0)
    except ProcessLookupError:
        break
    except PermissionError:
        pass
    time.sleep(1)
subprocess.run(sys.argv[2:], check=False)' "$OWNER_PID" bash "$HERE/stop.sh" --drop "WORK=$WORK" "SERIES=$SERIES" \
    "DB=$DB" "BACKEND=$BACKEND" "PG_URI=$PG_URI" >/dev/null 2>&1 </dev/null 3>&- 9>&- &
  log "cleanup when pid $OWNER_PID ends"
fi
lap "TOTAL" "$T0"

cat >&3 <<EOF
TRYTON_URL=http://127.0.0.1:$PORT
TRYTON_DB=$DB
TRYTON_USER=admin
TRYTON_PASSWORD_FILE=$PASSFILE
TRYTON_PID=$(cat "$PIDFILE")
EOF
}

main "$@"
