#!/usr/bin/env bash
# Stop the trytond server(s) that setup.sh started in a WORK dir.
#
#   bash deploy/tryton/stop.sh [--drop] [KEY=VALUE ...]
#
# WORK, SERIES as for setup.sh (default $HOME/.cache/erp-connect/tryton-$SERIES).
# DB=name and/or PORT=n: stop only the servers of that database or on that
# port; with neither, every server of the WORK dir is stopped.
# --drop also deletes the database DB (default erp) and its golden snapshot
# (BACKEND, PG_URI as for setup.sh); the virtualenv stays cached.
# Only pids recorded by setup.sh are signalled, and only if they are trytond.
set -euo pipefail
exec 3>&1 1>&2
DROP=0
for arg in "$@"; do
  case "$arg" in
    --drop) DROP=1 ;;
    -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    [A-Z_]*=*) export "${arg?}" ;;
    *) echo "stop.sh: unknown argument: $arg"; exit 64 ;;
  esac
done
SERIES="${SERIES:-8.0}"
WORK="${WORK:-$HOME/.cache/erp-connect/tryton-$SERIES}"
[ "$DROP" = 1 ] && DB="${DB:-erp}"
WANT_DB="${DB:-}"
WANT_PORT="${PORT:-}"
[ -d "$WORK" ] || exit 0

shopt -s nullglob
for pidfile in "$WORK"/trytond-*.pid; do
  db="${pidfile##*/trytond-}"; db="${db%.pid}"
  port="$(cat "$WORK/trytond-$db.port" 2>/dev/null || true)"
  if [ -n "$WANT_DB$WANT_PORT" ] && [ "$db" != "$WANT_DB" ] && [ "$port" != "$WANT_PORT" ]; then
    continue
  fi
  pid="$(cat "$pidfile")"
  if [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null \
     && tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q 'bin/trytond '; then
    kill "$pid"
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
    if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
    echo "[tryton] stopped trytond -d $db on port ${port:-?} (pid $pid)"
  fi
  rm -f "$pidfile" "$WORK/trytond-$db.port"
done

if [ "$DROP" = 1 ]; then
  BACKEND="${BACKEND:-sqlite}"
  PG_URI="${PG_URI:-postgresql://postgres@127.0.0.1:5432/}"
  [[ "$DB" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || { echo "DB must be a plain identifier"; exit 64; }
  rm -f "$WORK/db/$DB.$BACKEND.golden-key" "$WORK/demo-ids-$DB.json" "$WORK/admin-$DB.pass" \
        "$WORK/trytond-$DB.conf" "$WORK/trytond-$DB.log"
  if [ "$BACKEND" = sqlite ]; then
    rm -f "$WORK/db/$DB.sqlite" "$WORK/db/$DB.sqlite-wal" "$WORK/db/$DB.sqlite-shm" "$WORK/db/$DB.golden"
  else
    "$WORK/venv/bin/python" - "$PG_URI" "$DB" <<'PY'
import sys, psycopg
with psycopg.connect(sys.argv[1].rstrip('/') + '/postgres', autocommit=True) as conn:
    for name in (sys.argv[2], sys.argv[2] + '_golden'):
        conn.execute('DROP DATABASE IF EXISTS "%s"' % name)
PY
  fi
  echo "[tryton] dropped database $DB and its golden snapshot ($BACKEND)"
fi
