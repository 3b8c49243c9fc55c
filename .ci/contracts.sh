#!/usr/bin/env bash
# The contracts gate: v1 of every contract stays compatible, and a change
# that cannot be compatible goes into a new major version beside it.
#
#   bash .ci/contracts.sh              this commit against its base
#   bash .ci/contracts.sh --base REF   against REF instead (or CONTRACTS_BASE=REF)
#   bash .ci/contracts.sh --self-test  the fixtures in .ci/contracts-fixtures:
#                                      each breaking one must fail, each additive one pass
#
# The base is the last release tag (v*) before this commit, or, before the
# first release, the previous commit (HEAD~1). Compared with it:
#
# - proto/ (gRPC): `buf lint` (every package is <name>.v<N> in <name>/v<N>/)
#   and `buf breaking` with the rules in proto/buf.yaml (PACKAGE: wire, JSON
#   and generated names);
# - contracts/openapi.json (HTTP; tests/contract_snapshot.rs holds it equal
#   to what /openapi.json serves): .ci/contracts/openapi-breaking.cjs
#   (api-smart-diff, request and response directions told apart; every path
#   /<audience>/v<N>/...).
#
# Neither side needs the base built: the base's files are read from git.
# Exit 0: compatible. 1: a breaking change, listed with what to do about it.
# 2: the gate could not run (a tool failed, a bad argument).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=.ci/npm-tools.sh
source .ci/npm-tools.sh

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

tools=$(npm_tools .ci/contracts contracts) || { echo "contracts: could not install the tools (npm ci in .ci/contracts)" >&2; exit 2; }
buf="$tools/node_modules/.bin/buf"
export NODE_PATH="$tools/node_modules"

# buf's JSON findings, one a line, as `  file:line:col [RULE] message`.
format_buf() {
  # shellcheck disable=SC2016 # JavaScript template literals, not shell.
  node -e '
    const text = require("fs").readFileSync(0, "utf8");
    for (const line of text.split("\n").filter(Boolean)) {
      try {
        const f = JSON.parse(line);
        console.log(`    ${f.path}:${f.start_line}:${f.start_column} [${f.type}] ${f.message}`);
      } catch {
        console.log(`    ${line}`);
      }
    }'
}

# check_proto DIR INPUT AGAINST: lint INPUT and compare it with AGAINST
# (empty: no base), from DIR. Returns 0, 1 (broken or misnamed) or 2.
check_proto() {
  local dir=$1 input=$2 against=$3 status=0 rc=0
  echo "-- proto: buf lint (package names carry their major version)"
  (cd "$dir" && "$buf" lint "$input" --error-format=json) >"$tmp/out" 2>"$tmp/err" || rc=$?
  if [ "$rc" -eq 0 ]; then
    echo "   ok"
  elif [ "$rc" -eq 100 ]; then
    echo "   LINT FINDINGS:"
    format_buf <"$tmp/out"
    status=1
  else
    echo "   buf lint could not run (exit $rc):"
    sed 's/^/    /' "$tmp/err" "$tmp/out"
    return 2
  fi
  if [ -z "$against" ]; then
    return "$status"
  fi
  echo "-- proto: buf breaking against the base (rules: proto/buf.yaml's breaking.use)"
  rc=0
  (cd "$dir" && "$buf" breaking "$input" --against "$against" --error-format=json) >"$tmp/out" 2>"$tmp/err" || rc=$?
  if [ "$rc" -eq 0 ]; then
    echo "   ok: no breaking change"
  elif [ "$rc" -eq 100 ]; then
    echo "   BREAKING CHANGES ($(grep -c . "$tmp/out")):"
    format_buf <"$tmp/out"
    status=1
  else
    echo "   buf breaking could not run (exit $rc):"
    sed 's/^/    /' "$tmp/err" "$tmp/out"
    return 2
  fi
  return "$status"
}

# check_openapi BASE HEAD: the HTTP contract. Returns 0, 1 or 2.
check_openapi() {
  echo "-- OpenAPI: $2 against the base's"
  local rc=0
  node .ci/contracts/openapi-breaking.cjs "$1" "$2" || rc=$?
  [ "$rc" -eq 0 ] && echo "   ok: no breaking change"
  return "$rc"
}

advice() {
  cat <<'EOF'
   What to do:
   - Keep v1 compatible: add fields, operations, RPCs, messages, packages; do
     not remove, rename or retype them, and do not make an optional input
     required or a response field optional.
   - A change that cannot be compatible goes into a new major version beside
     v1: HTTP paths /<audience>/v2/..., proto package <name>.v2 in
     proto/<name>/v2/. v1 stays (its operations marked deprecated) while
     partners use it.
   - After any change to the HTTP contract, bless its snapshot and commit it:
       ERP_CONNECT_BLESS=1 cargo test --test contract_snapshot
EOF
}

# The gate on this commit.
gate() {
  local base=$1 why=$2 proto_against="" status=0 rc
  echo "== contracts: HEAD ($(git rev-parse --short HEAD)) against $base ($(git rev-parse --short "$base^{commit}")), $why"
  local path
  for path in proto contracts/openapi.json; do
    if git cat-file -e "$base:$path" 2>/dev/null; then
      git archive "$base" -- "$path" | tar -x -C "$tmp/base"
    fi
  done
  if compgen -G "$tmp/base/proto/*/v*/*.proto" >/dev/null; then
    proto_against="$tmp/base/proto"
  else
    echo "-- proto: the base has no proto/<name>/v<N>/*.proto: nothing to compare with"
  fi
  rc=0
  check_proto . proto "$proto_against" || rc=$?
  [ "$rc" -gt "$status" ] && status=$rc
  if [ -f "$tmp/base/contracts/openapi.json" ]; then
    rc=0
    check_openapi "$tmp/base/contracts/openapi.json" contracts/openapi.json || rc=$?
    [ "$rc" -gt "$status" ] && status=$rc
  else
    echo "-- OpenAPI: NOT COMPARED: $base has no contracts/openapi.json (it predates the snapshot);"
    echo "   the HTTP contract is compared from the next commit on"
  fi
  case "$status" in
    0) echo "== contracts gate: passed (against $base)" ;;
    1)
      echo "== contracts gate: FAILED: a contract changed incompatibly against $base (listed above)"
      advice
      ;;
    *) echo "== contracts gate: could not run (above); nothing was decided" ;;
  esac
  return "$status"
}

# The base: the last release tag before HEAD, else HEAD~1.
pick_base() {
  local tag
  tag=$(git describe --tags --abbrev=0 --match 'v*' HEAD 2>/dev/null || true)
  # A release commit is compared with the release before it.
  if [ -n "$tag" ] && [ "$(git rev-parse "$tag^{commit}")" = "$(git rev-parse HEAD)" ]; then
    tag=$(git describe --tags --abbrev=0 --match 'v*' HEAD~1 2>/dev/null || true)
  fi
  if [ -n "$tag" ]; then
    echo "$tag|the last release tag"
  elif git rev-parse -q --verify 'HEAD~1^{commit}' >/dev/null; then
    echo "HEAD~1|the previous commit (no release tag v* yet)"
  fi
}

# One fixture case: expect STATUS KIND CASE.
self_test_case() {
  local expect=$1 kind=$2 case=$3 rc=0 dir
  local fixtures=.ci/contracts-fixtures
  echo "== self-test: $kind $case (expect exit $expect)"
  if [ "$kind" = proto ]; then
    dir="$tmp/proto-$case"
    mkdir -p "$dir/head" "$dir/base"
    cp -r "$fixtures/proto/$case/." "$dir/head/"
    cp -r "$fixtures/proto/base/." "$dir/base/"
    # The repository's own rules, on the fixture.
    cp proto/buf.yaml "$dir/head/"
    check_proto "$dir/head" . "$dir/base" >"$tmp/case" 2>&1 || rc=$?
  else
    check_openapi "$fixtures/openapi/base.json" "$fixtures/openapi/$case.json" >"$tmp/case" 2>&1 || rc=$?
  fi
  sed 's/^/  | /' "$tmp/case"
  if [ "$rc" -ne "$expect" ]; then
    echo "   SELF-TEST FAILED: $kind $case exited $rc, expected $expect"
    return 1
  fi
  shift 3
  local want
  for want in "$@"; do
    if ! grep -qF -- "$want" "$tmp/case"; then
      echo "   SELF-TEST FAILED: $kind $case does not name: $want"
      return 1
    fi
  done
  echo "   as expected: exit $rc"
}

self_test() {
  local failed=0 n=0
  run() { n=$((n + 1)); self_test_case "$@" || failed=$((failed + 1)); }
  run 1 proto breaking "[RPC_NO_DELETE]" "[FIELD_NO_DELETE]" "[FIELD_SAME_TYPE]" "[FIELD_SAME_JSON_NAME]"
  run 0 proto additive
  run 1 proto unversioned "[PACKAGE_VERSION_SUFFIX]"
  run 1 openapi breaking "POST /partner/v1/orders/{id}/cancel" "operation removed" \
    "request body required: added \"external_ref\"" "query parameter since: added, required" \
    "response 201 .total: removed" "response 201 .lines[].quantity type: \"integer\" -> \"string\""
  run 0 openapi additive "+ POST /partner/v2/orders"
  run 1 openapi unversioned "! GET /partner/usage"
  if [ "$failed" -ne 0 ]; then
    echo "== contracts self-test: $failed of $n cases NOT as expected: the gate cannot be trusted"
    return 1
  fi
  echo "== contracts self-test: $n of $n cases as expected (breaking and unversioned fail, additive passes)"
}

mkdir -p "$tmp/base"
base="${CONTRACTS_BASE:-}"
case "${1:-}" in
  --self-test)
    self_test
    exit $?
    ;;
  --base)
    [ -n "${2:-}" ] || { echo "usage: $0 [--base REF | --self-test]" >&2; exit 2; }
    base=$2
    ;;
  "") ;;
  *)
    echo "usage: $0 [--base REF | --self-test]" >&2
    exit 2
    ;;
esac

if [ -n "$base" ]; then
  git rev-parse -q --verify "$base^{commit}" >/dev/null || { echo "contracts: no commit $base here" >&2; exit 2; }
  why="given"
else
  picked=$(pick_base)
  if [ -z "$picked" ]; then
    echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
    echo "!! contracts gate SKIPPED: no base to compare with: no release tag v*"
    echo "!! and no previous commit in this clone ($(git rev-parse --is-shallow-repository 2>/dev/null | sed 's/true/a shallow clone/;s/false/the first commit/'))."
    echo "!! Fetch the history (git fetch --unshallow --tags) or pass --base REF."
    echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
    # The lint still holds on this commit alone.
    check_proto . proto ""
    exit $?
  fi
  base=${picked%%|*}
  why=${picked#*|}
fi
gate "$base" "$why"
