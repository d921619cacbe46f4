#!/usr/bin/env bash
# av2.tokens vs a Python reader written the way the av2 package reads a scenario (pandas via
# `load_argoverse_scenario_parquet`, the map via `ArgoverseStaticMap.from_json` +
# `get_lane_segment_centerline`, numpy for the vectorization: benches/av2_reference.py), on
# the same files (AV2 layout, written by `lm4ve demo-data --av2-train N`), in one run, both on
# every core; then a check that both computed the same tensors. Needs `pip install av2`.
# Usage: bash benches/av2_tokens.sh   (AV2_SCENARIOS=2000 to change the count)
# Results: benches/work/results-av2_tokens.txt
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/lm4ve}
PY=${PYTHON:-python3}
N=${AV2_SCENARIOS:-2000}
P=$(nproc)
W=benches/work/av2
OUT=benches/work/results-av2_tokens.txt
mkdir -p "$W"
: > "$OUT"
say() { echo "$*" | tee -a "$OUT"; }
if [ ! -f "$W/data/n-$N" ]; then
  rm -rf "$W/data"
  "$BIN" demo-data --out "$W/data" --pc-train-per-class 1 --pc-test-per-class 1 \
    --video-train-per-class 0 --video-val-per-class 0 --av-train 0 --av-val 0 \
    --image-train-per-class 0 --image-val-per-class 0 --av2-train "$N" >/dev/null
  touch "$W/data/n-$N"
fi
D="$W/data/argoverse2/train"
cat > "$W/bench.toml" <<TOML
[cache]
dir = "cache"
[stages.av2_tokens]
kind = "av2.tokens"
[stages.av2_tokens.params]
train = "data/argoverse2/train"
TOML
# One fresh-cache run of the stage at -j $1: "wall_rate cpu_rate" (scenarios per second of
# wall time and per CPU-second, user + system; the second is steadier on a shared machine).
run() {
  rm -rf "$W/cache"
  local t0 t1 cpu
  TIMEFORMAT='%U %S'
  t0=$(date +%s.%N)
  cpu=$( { time "$BIN" -q -j "$1" -c "$W/bench.toml" pipeline run --stage av2_tokens >/dev/null; } 2>&1 | tail -1)
  t1=$(date +%s.%N)
  awk -v n="$N" -v a="$t0" -v b="$t1" -v c="$cpu" 'BEGIN{split(c, u, " "); printf "%.1f %.1f", n/(b-a), n/(u[1]+u[2])}'
}
# Best of 3 (each figure on its own).
best() {
  local w=0 c=0 r
  for _ in 1 2 3; do
    r=$(run "$1")
    w=$(awk -v a="$w" -v r="${r% *}" 'BEGIN{print (r>a)?r:a}')
    c=$(awk -v a="$c" -v r="${r#* }" 'BEGIN{print (r>a)?r:a}')
  done
  echo "$w $c"
}
say "== av2_tokens: $N AV2 scenarios ($(du -sh "$D" | cut -f1); ~40 tracks x 110 steps, ~80 lanes each), $P cores, load $(cut -d' ' -f1 /proc/loadavg)"
one=$(best 1)
all=$(best "$P")
py=$("$PY" benches/av2_reference.py --data "$D" --workers "$P")
pyw=$(echo "$py" | "$PY" -c "import json,sys; print(json.load(sys.stdin)['per_second'])")
pyc=$(echo "$py" | "$PY" -c "import json,sys; print(json.load(sys.stdin)['per_cpu_second'])")
say "  python (av2 reader + numpy), $P processes: $py"
say "  lm4ve -j1: ${one% *} scenarios/s, ${one#* } per CPU-second"
say "  lm4ve -j$P: ${all% *} scenarios/s ($(awk -v a="${all% *}" -v b="$pyw" 'BEGIN{printf "%.1f", a/b}')x the Python reader), ${all#* } per CPU-second ($(awk -v a="${all#* }" -v b="$pyc" 'BEGIN{printf "%.1f", a/b}')x)"
M=$("$BIN" -c "$W/bench.toml" pipeline show av2_tokens --json | "$PY" -c "import json,sys; print(json.load(sys.stdin)['manifest'])")
# An assignment, so a mismatch or a traceback fails the bench (set -e) instead of printing.
same=$("$PY" benches/av2_reference.py --data "$D" --check "$M" --limit 200)
say "  same numbers? $same"
if [ -n "${BENCH_ROWS:-}" ]; then # a row of `make bench`'s table
  printf '%s\t%s\t%s\t%s\t%s\n' av2_tokens "${all% *} scenarios/s -j$P (${all#* } per CPU-s)" \
    "av2 reader + numpy x$P: $pyw scenarios/s ($pyc per CPU-s)" \
    "$(awk -v a="${all% *}" -v b="$pyw" 'BEGIN{printf "%.1fx", a/b}') wall, $(awk -v a="${all#* }" -v b="$pyc" 'BEGIN{printf "%.1fx", a/b}') CPU" \
    "yes, $same" >> "$BENCH_ROWS"
fi
