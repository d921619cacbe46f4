#!/usr/bin/env bash
# One training step (forward + backward to the input) through a random LLaMA-7B decoder
# block on the CPU: lm4ve --mode frozen, lm4ve --mode naive and PyTorch (frozen: block
# requires_grad_(False), x requires grad), back to back in one run, same thread count.
# PyTorch naive (weights trainable) runs last, as lm4ve naive's same-mode reference.
# GEMM_BIN (make bench-block-mkl sets it): a second lm4ve built without MKL (candle's own gemm),
# run in the same go as "lm4ve-gemm", for before/after rows measured side by side.
# Usage: bash benches/block_step.sh [-j THREADS]
#   Env: ITERS (5), HIDDEN/HEADS/FFN/BATCH/TOKENS (LLaMA-7B, 2 x 64 tokens), BIN, GEMM_BIN, PYTHON.
# Results: benches/work/block_step.jsonl (one JSON line per measurement) and a table.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/lm4ve}
PY=${PYTHON:-python3}
THREADS=${LM4VE_THREADS:-$(nproc)}
if [ "${1:-}" = -j ]; then THREADS=$2; fi
HIDDEN=${HIDDEN:-4096} HEADS=${HEADS:-32} FFN=${FFN:-11008}
BATCH=${BATCH:-2} TOKENS=${TOKENS:-64} ITERS=${ITERS:-5}
W=benches/work
mkdir -p "$W"
OUT="$W/block_step.jsonl"
: > "$OUT"

# PyTorch from PyPI (the only index reachable). The Linux wheel is the CUDA build and
# `import torch` fails without its nvidia-* libraries (torch --no-deps: libcudart.so.13 /
# libcublasLt not found), so it is installed with its dependencies (~5 GB on disk, ~1.5 GB
# download); it runs on the CPU without a GPU (MKL + oneDNN, OpenMP threads).
"$PY" -c 'import torch' 2>/dev/null || "$PY" -m pip install torch==2.15.0

# The binary; cargo waits on the build-directory lock if someone else is building.
if [ ! -x "$BIN" ] || ! "$BIN" llm bench-step --help >/dev/null 2>&1; then
  cargo build --release -p lm4ve
fi

# The MKL build runs MKL on one thread whatever -j says (src/cpu_threads.rs: training
# artifacts must not depend on -j); the bench gives it the same threads as PyTorch.
export MKL_NUM_THREADS=${MKL_NUM_THREADS:-$THREADS}
dims=(--hidden "$HIDDEN" --heads "$HEADS" --ffn "$FFN" --batch "$BATCH" --tokens "$TOKENS" --iters "$ITERS")
echo "block ${HIDDEN}/${HEADS} heads/ffn ${FFN}, ${BATCH} x ${TOKENS} tokens, ${THREADS} threads, median of ${ITERS} (+1 warm-up)" >&2
"$BIN" --device cpu -j "$THREADS" llm bench-step "${dims[@]}" --mode frozen | tee -a "$OUT"
"$BIN" --device cpu -j "$THREADS" llm bench-step "${dims[@]}" --mode naive | tee -a "$OUT"
if [ -n "${GEMM_BIN:-}" ]; then
  for mode in frozen naive; do
    "$GEMM_BIN" --device cpu -j "$THREADS" llm bench-step "${dims[@]}" --mode "$mode" |
      "$PY" -c 'import json,sys; r=json.loads(sys.stdin.read()); r["impl"]="lm4ve-gemm"; print(json.dumps(r))' |
      tee -a "$OUT"
  done
fi
"$PY" benches/block_step.py "${dims[@]}" --threads "$THREADS" --mode frozen | tee -a "$OUT"
# Same-mode reference for lm4ve naive: PyTorch with the weights trainable too.
"$PY" benches/block_step.py "${dims[@]}" --threads "$THREADS" --mode naive | tee -a "$OUT"

"$PY" - "$OUT" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
pt = {r["mode"]: r["ms_per_step_median"] for r in rows if r["impl"] == "pytorch"}
print(f"\n{'impl':<18}{'threads':>8}{'ms/step (median)':>18}{'/ pytorch frozen':>18}{'/ pytorch same mode':>21}")
for r in rows:
    m = r["ms_per_step_median"]
    print(f"{r['impl'] + ' ' + r['mode']:<18}{r['threads']:>8}{m:>18.1f}"
          f"{m / pt['frozen']:>18.2f}{m / pt[r['mode']]:>21.2f}")
PY
