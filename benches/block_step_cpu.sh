#!/usr/bin/env bash
# The block step of benches/block_step.sh in CPU seconds per step, for a machine shared with
# other work (where wall times mean little): each implementation runs once with 1 timed step
# and once with 4 (each after its one warm-up step), under /usr/bin/time; CPU s/step =
# (user + sys of the 4-step run - that of the 1-step run) / 3, which cancels start-up,
# weight initialisation and the warm-up. One sample per row: expect ±15% on a loaded machine.
# Spin-waiting threads (candle's pool, OpenMP) count as CPU time here, so more threads than
# free cores inflate these figures; 1 thread is the cleanest comparison.
# Usage: bash benches/block_step_cpu.sh [-j THREADS]
#   Env: BIN (lm4ve, default target/release/lm4ve), MKL_BIN (an MKL build, e.g.
#   target/mkl/release/lm4ve; rows skipped when unset), PYTHON (with torch),
#   HIDDEN/HEADS/FFN/BATCH/TOKENS (LLaMA-7B, 2 x 64 tokens), MODES ("frozen naive").
# Results: benches/work/block_step_cpu.tsv (impl, mode, threads, CPU s/step) and a table.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/lm4ve}
PY=${PYTHON:-python3}
THREADS=1
if [ "${1:-}" = -j ]; then THREADS=$2; fi
HIDDEN=${HIDDEN:-4096} HEADS=${HEADS:-32} FFN=${FFN:-11008}
BATCH=${BATCH:-2} TOKENS=${TOKENS:-64} MODES=${MODES:-frozen naive}
W=benches/work
mkdir -p "$W"
OUT="$W/block_step_cpu.tsv"
: > "$OUT"
# The MKL build runs MKL on one thread unless told (src/cpu_threads.rs); give it THREADS.
export MKL_NUM_THREADS=$THREADS OMP_NUM_THREADS=$THREADS
dims=(--hidden "$HIDDEN" --heads "$HEADS" --ffn "$FFN" --batch "$BATCH" --tokens "$TOKENS")

# cpu IMPL MODE CMD...: CPU s/step of CMD (which takes --iters N last).
cpu() {
  local impl=$1 mode=$2; shift 2
  local n c=()
  for n in 1 4; do
    /usr/bin/time -f '%U %S' -o "$W/block_cpu_time" "$@" --iters "$n" >/dev/null
    c+=("$(awk '{print $1 + $2}' "$W/block_cpu_time")")
  done
  local s
  s=$(awk -v a="${c[0]}" -v b="${c[1]}" 'BEGIN{printf "%.2f", (b - a) / 3}')
  printf '%s\t%s\t%s\t%s\n' "$impl" "$mode" "$THREADS" "$s" | tee -a "$OUT"
}
echo "block ${HIDDEN}/${HEADS} heads/ffn ${FFN}, ${BATCH} x ${TOKENS} tokens, ${THREADS} thread(s), load $(cut -d' ' -f1 /proc/loadavg)" >&2
for mode in $MODES; do
  cpu lm4ve-gemm "$mode" "$BIN" --device cpu -j "$THREADS" llm bench-step "${dims[@]}" --mode "$mode"
  if [ -n "${MKL_BIN:-}" ]; then
    cpu lm4ve-mkl "$mode" "$MKL_BIN" --device cpu -j "$THREADS" llm bench-step "${dims[@]}" --mode "$mode"
  fi
  cpu pytorch "$mode" "$PY" benches/block_step.py "${dims[@]}" --threads "$THREADS" --mode "$mode"
done

awk -F'\t' '
  { s[$1 FS $2] = $4; if (!($1 in seen)) { seen[$1] = 1; impls[++n] = $1 } }
  END {
    printf "\n%-12s %8s %18s %10s %18s %10s\n", "impl", "threads", "frozen CPU s/step", "/ pytorch", "naive CPU s/step", "/ pytorch"
    for (i = 1; i <= n; i++) {
      f = s[impls[i] FS "frozen"]; v = s[impls[i] FS "naive"]
      pf = s["pytorch" FS "frozen"]; pv = s["pytorch" FS "naive"]
      printf "%-12s %8s %18s %10s %18s %10s\n", impls[i], "'"$THREADS"'", f, (f != "" && pf > 0) ? sprintf("%.2fx", f / pf) : "", v, (v != "" && pv > 0) ? sprintf("%.2fx", v / pv) : ""
    }
  }' "$OUT"
