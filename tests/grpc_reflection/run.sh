#!/usr/bin/env bash
# Runs client.py (arguments passed on) in a cached virtualenv with pinned
# grpcio, grpcio-reflection and protobuf from PyPI; the first run (under a
# lock, so parallel tests share it) creates it. stdout is client.py's JSON.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${ERP_CONNECT_CACHE:-$HOME/.cache/erp-connect}/grpc-reflection-venv"
want="grpcio==1.85.4 grpcio-reflection==1.85.1 protobuf==7.36.2"
mkdir -p "$(dirname "$venv")"
(
  flock -w 900 9
  if [ "$(cat "$venv/.installed" 2>/dev/null)" != "$want" ]; then
    rm -rf "$venv"
    python3 -m venv "$venv" >&2
    # shellcheck disable=SC2086
    PIP_DISABLE_PIP_VERSION_CHECK=1 "$venv/bin/pip" install -q $want >&2
    echo "$want" >"$venv/.installed"
  fi
) 9>"$venv.lock"
exec "$venv/bin/python" "$here/client.py" "$@"
