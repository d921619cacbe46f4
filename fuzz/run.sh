#!/usr/bin/env bash
# `make fuzz`: builds the cargo-fuzz targets (installing cargo-fuzz if missing), seeds the
# corpus from real files (fuzz/seed.sh), then runs each target for FUZZ_SECONDS (default
# 60) and prints its executions. Stops at the first crash; the input that crashed is in
# fuzz/artifacts/<target>/ (replay: cargo fuzz run -s none --release TARGET FILE).
# FUZZ_TARGETS="a b" runs only those.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${FUZZ_SECONDS:-60}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
# cargo-fuzz passes -Z flags to rustc; a stable toolchain accepts them with this.
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="$PWD/fuzz/target"
# No sanitizer: the code under test is safe Rust, where the bugs to find are panics and
# unbounded allocations (-malloc_limit_mb). FUZZ_FLAGS=-a adds debug assertions and
# overflow checks (a full rebuild of every dependency; the measured run did not use it).
FLAGS=${FUZZ_FLAGS:-}
cargo fuzz build -s none --release $FLAGS
[ -x target/release/lm4ve ] || env -u CARGO_TARGET_DIR cargo build --release --locked
bash fuzz/seed.sh "$PWD/target/release/lm4ve" >/dev/null
total=0
for t in ${FUZZ_TARGETS:-$(cargo fuzz list)}; do
  # Inputs that once crashed a target (fixed since) are replayed first.
  if [ -d "fuzz/regressions/$t" ]; then
    cargo fuzz run -s none --release $FLAGS "$t" fuzz/regressions/"$t"/* >"fuzz/target/$t.replay.log" 2>&1 \
      || { tail -40 "fuzz/target/$t.replay.log"; echo "fuzz: $t regressed"; exit 1; }
  fi
  log="fuzz/target/$t.log"
  if ! cargo fuzz run -s none --release $FLAGS "$t" "fuzz/corpus/$t" -- \
      -max_total_time="$SECS" -rss_limit_mb=4096 -malloc_limit_mb=2048 -timeout=30 \
      -print_final_stats=1 >"$log" 2>&1; then
    tail -40 "$log"
    echo "fuzz: $t crashed; the input is in fuzz/artifacts/$t/"
    exit 1
  fi
  n=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | awk '{print $2}' | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | awk '{print $2}')
  total=$((total + ${n:-0}))
  printf 'fuzz: %-14s %10s executions in %ss, coverage %s, corpus %s, no crash\n' \
    "$t" "${n:-?}" "$SECS" "${cov:-?}" "$(ls "fuzz/corpus/$t" | wc -l)"
done
echo "fuzz: $total executions in all"
