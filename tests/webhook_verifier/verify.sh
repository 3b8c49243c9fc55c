#!/usr/bin/env bash
# Runs verify.py in a cached virtualenv with pinned `standardwebhooks` and
# `jsonschema` from PyPI; the first run (under a lock, so parallel tests
# share it) creates it. stdin and stdout are verify.py's.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${ERP_CONNECT_CACHE:-$HOME/.cache/erp-connect}/webhook-verifier-venv"
want="standardwebhooks==1.3.0 jsonschema==4.26.0"
mkdir -p "$(dirname "$venv")"
(
  flock 9
  if [ "$(cat "$venv/.installed" 2>/dev/null)" != "$want" ]; then
    rm -rf "$venv"
    python3 -m venv "$venv" >&2
    # shellcheck disable=SC2086
    "$venv/bin/pip" install -q $want >&2
    echo "$want" >"$venv/.installed"
  fi
) 9>"$venv.lock"
exec "$venv/bin/python" "$here/verify.py"
