#!/usr/bin/env bash
# Builds every cargo-fuzz target in fuzz/fuzz_targets and runs each for a
# bounded time, seeded with its committed corpus (fuzz/corpus/<target>).
# Prints one line per target (executions, crash or not) and exits non-zero
# if any target crashed; a crashing input is kept in
# fuzz/artifacts-found/<target>/ and printed in base64 when small.
#
#   FUZZ_SECONDS   time per target (default 20)
#   FUZZ_TARGETS   space-separated subset to run (default: all)
#   FUZZ_TIMEOUT   seconds one input may take before it counts as a hang (default 10)
#   FUZZ_LOGS      a directory to keep each target's libFuzzer log in (default: none)
#   FUZZ_TARGET_DIR  the build's CARGO_TARGET_DIR (default
#                    $HOME/.cache/erp-connect/fuzz-target)
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${FUZZ_SECONDS:-20}"
unit_timeout="${FUZZ_TIMEOUT:-10}"
# Not the main target dir ($HOME/.cache/erp-connect/target): every crate
# here is built with coverage instrumentation, so nothing could be shared,
# and a fuzz build must not lock or fill the workspace's. Set from a
# variable of its own rather than inherited, since .ci/run exports
# CARGO_TARGET_DIR as the main one.
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$HOME/.cache/erp-connect/fuzz-target}"
export CARGO_INCREMENTAL=0

# cargo fuzz needs a nightly toolchain (-Zsanitizer, sancov passes).
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi

# --sanitizer none: AddressSanitizer would instrument every crate of the
# dependency tree (tonic, sqlx, hyper, ...) and the targets are safe Rust
# (`unsafe_code = "forbid"` in the workspace), so ASan would find little
# that a panic does not already show, while making the cold build and every
# execution several times slower. Debug assertions and overflow checks stay
# on (cargo fuzz's default), so an arithmetic overflow that a release build
# would wrap silently is a crash here.
build_flags=(--sanitizer none --debug-assertions)

if [ -n "${FUZZ_TARGETS:-}" ]; then
  read -r -a targets <<<"$FUZZ_TARGETS"
else
  mapfile -t targets < <(cargo +nightly fuzz list)
fi

start=$(date +%s)
cargo +nightly fuzz build "${build_flags[@]}"
echo "fuzz build: $(($(date +%s) - start)) s"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
crashed=()
summary=()
for t in "${targets[@]}"; do
  # The committed corpus is only a seed: libFuzzer adds what it finds to
  # the first corpus directory it is given, so it gets a copy.
  mkdir -p "$work/$t/corpus" "$work/$t/artifacts"
  if [ -d "fuzz/corpus/$t" ]; then
    cp -R "fuzz/corpus/$t/." "$work/$t/corpus/"
  fi
  log="$work/$t/log"
  set +e
  cargo +nightly fuzz run "$t" "${build_flags[@]}" "$work/$t/corpus" -- \
    -max_total_time="$seconds" -timeout="$unit_timeout" -print_final_stats=1 \
    -artifact_prefix="$work/$t/artifacts/" >"$log" 2>&1
  status=$?
  set -e
  if [ -n "${FUZZ_LOGS:-}" ]; then
    mkdir -p "$FUZZ_LOGS" && cp "$log" "$FUZZ_LOGS/$t.log"
  fi
  execs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' | tail -1 || true)
  # Coverage (edges) libFuzzer last reported, to tell a target that got
  # nowhere from one that explored.
  cov=$(grep -oE ' cov: [0-9]+' "$log" | tail -1 | grep -oE '[0-9]+' || true)
  # Inputs that crashed, hung or ran out of memory (not libFuzzer's
  # slow-unit-* notes).
  shopt -s nullglob
  found=("$work/$t/artifacts/"{crash,timeout,oom,leak}-*)
  shopt -u nullglob
  if [ "$status" -ne 0 ] || [ "${#found[@]}" -gt 0 ]; then
    crashed+=("$t")
    summary+=("$(printf '%-16s %10s executions  cov %6s  CRASH (exit %s)' "$t" "${execs:-?}" "${cov:-?}" "$status")")
    echo "== $t crashed; the end of its log:"
    tail -n 60 "$log"
    if [ "${#found[@]}" -gt 0 ]; then
      mkdir -p "fuzz/artifacts-found/$t"
      for f in "${found[@]}"; do
        cp "$f" "fuzz/artifacts-found/$t/"
        echo "input kept as fuzz/artifacts-found/$t/$(basename "$f")"
        if [ "$(wc -c <"$f")" -le 4096 ]; then
          echo "base64: $(base64 -w0 "$f")"
        fi
      done
    fi
  else
    summary+=("$(printf '%-16s %10s executions  cov %6s  no crash' "$t" "${execs:-?}" "${cov:-?}")")
  fi
done

echo "== fuzzing, ${seconds} s per target"
printf '%s\n' "${summary[@]}"
if [ "${#crashed[@]}" -gt 0 ]; then
  echo "crashed: ${crashed[*]}" >&2
  exit 1
fi
