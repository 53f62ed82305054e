#!/usr/bin/env bash
# Runs every fuzz target for a fixed time on the stable toolchain, coverage-guided by libFuzzer.
#
#   scripts/fuzz.sh [seconds per target (default 60)] [target filter, e.g. media/rtp or sip-gateway]
#
# The targets are the `crates/<crate>/fuzz` packages (`cargo fuzz` layout, `libfuzzer-sys`). `cargo fuzz`
# needs nightly only for its sanitizer flags; the coverage instrumentation libFuzzer steers by is a stable
# codegen pass (`-C passes=sancov-module`), so this script builds the same targets with stable `cargo` and
# those flags (no AddressSanitizer: the crates forbid `unsafe`, so Rust's own checks, debug assertions and
# overflow checks, which are on, catch what matters) and runs each binary with `-max_total_time`.
#
# Seeds: `crates/<crate>/fuzz/corpus/<target>/` (checked in). The working corpus grows in
# `$FUZZ_WORK/corpus/<crate>/<target>` (kept between runs); a crash, leak or timeout is written to
# `crates/<crate>/fuzz/artifacts/<target>/` (ignored by git), the run goes on with the next target and the
# script exits 1 at the end. Reproduce one with the printed command (the binary and the artifact file).
# A table of targets, runs, coverage and outcome is printed at the end (and written to $FUZZ_WORK/summary.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"

SECONDS_PER_TARGET="${1:-60}"
FILTER="${2:-}"
HOST="$(rustc -vV | sed -n 's/^host: //p')"
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-${CARGO_TARGET_DIR:-$ROOT/target}/fuzz}"
FUZZ_WORK="${FUZZ_WORK:-$CARGO_TARGET_DIR/work}"
mkdir -p "$FUZZ_WORK"

# The flags `cargo fuzz build --sanitizer none` passes, all stable. With `--target`, they apply to the
# targets and not to build scripts or proc macros.
export RUSTFLAGS="-Cpasses=sancov-module \
 -Cllvm-args=-sanitizer-coverage-level=4 \
 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
 -Cllvm-args=-sanitizer-coverage-pc-table \
 -Cllvm-args=-sanitizer-coverage-trace-compares \
 --cfg fuzzing -Cdebug-assertions -Coverflow-checks"

summary="$FUZZ_WORK/summary.txt"
printf '%-32s %10s %8s %8s  %s\n' target runs cov corpus outcome >"$summary"
failed=0

for manifest in crates/*/fuzz/Cargo.toml; do
  dir="$(dirname "$manifest")"
  crate="$(basename "$(dirname "$dir")")"
  targets="$(sed -n 's/^name = "\(.*\)"$/\1/p' "$manifest" | tail -n +2)"
  selected=()
  for t in $targets; do
    case "$crate/$t" in *"$FILTER"*) selected+=("$t") ;; esac
  done
  [ ${#selected[@]} -gt 0 ] || continue
  echo "== building $crate fuzz targets: ${selected[*]}"
  bins=()
  for t in "${selected[@]}"; do bins+=(--bin "$t"); done
  cargo build --quiet --release --manifest-path "$manifest" --target "$HOST" "${bins[@]}"
  for t in "${selected[@]}"; do
    bin="$CARGO_TARGET_DIR/$HOST/release/$t"
    corpus="$FUZZ_WORK/corpus/$crate/$t"
    artifacts="$ROOT/$dir/artifacts/$t"
    mkdir -p "$corpus" "$artifacts"
    seeds=()
    [ -d "$dir/corpus/$t" ] && seeds+=("$dir/corpus/$t")
    log="$FUZZ_WORK/$crate-$t.log"
    echo "== fuzzing $crate/$t for ${SECONDS_PER_TARGET}s"
    set +e
    "$bin" -max_total_time="$SECONDS_PER_TARGET" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      -artifact_prefix="$artifacts/" "$corpus" "${seeds[@]}" >"$log" 2>&1
    rc=$?
    set -e
    runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)"
    cov="$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)"
    size="$(find "$corpus" -type f | wc -l)"
    if [ "$rc" = 0 ]; then
      outcome="ok"
    else
      failed=1
      found="$(grep -o "Test unit written to .*" "$log" | tail -1 | sed 's/Test unit written to //')"
      outcome="FAILED (exit $rc): $bin $found"
      grep -m3 -E "panicked|ERROR: libFuzzer" "$log" || true
    fi
    printf '%-32s %10s %8s %8s  %s\n' "$crate/$t" "${runs:-?}" "${cov:-?}" "$size" "$outcome" | tee -a "$summary"
  done
done

echo
cat "$summary"
exit "$failed"
