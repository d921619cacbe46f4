#!/usr/bin/env bash
# The GPU benchmark suite, lm4ve beside PyTorch on the same GPU in one run (issue: GPU at
# paper scale). Needs a CUDA build of lm4ve (`make build-cuda`), python3 with torch (and timm
# for the video models) on a machine with an NVIDIA GPU, and a checkout of the reference code
# (ziqipang/LM4VisualEncoding) in LM4VE_REF.
#
#   LM4VE_REF=/path/to/LM4VisualEncoding bash benches/gpu.sh [OUTDIR]
#
# Env: BIN (default target/cuda/release/lm4ve), ITERS (10), PYTHON, MODELS (default
# "pointbert vit-s vit-b vectornet"), SKIP_BLOCK=1 to skip the block-alone rows.
# Writes OUTDIR/gpu.jsonl (one JSON object per measurement), OUTDIR/gpu_stderr.log, and prints
# the table that BENCHMARKS.md carries.
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/cuda/release/lm4ve}
PY=${PYTHON:-python3}
ITERS=${ITERS:-10}
OUTDIR=${1:-benches/work}
MODELS=${MODELS:-pointbert vit-s vit-b vectornet}
mkdir -p "$OUTDIR"
J="$OUTDIR/gpu.jsonl"
ERR="$OUTDIR/gpu_stderr.log"
: >"$J"
: >"$ERR"
[ -n "${LM4VE_REF:-}" ] || { echo "set LM4VE_REF to a LM4VisualEncoding checkout" >&2; exit 2; }

# The binary links the CUDA 13 runtime libraries; where the loader does not find them, use the
# ones PyTorch's wheels ship.
if ldd "$BIN" | grep -q "not found"; then
  extra=$("$PY" - <<'PY'
import glob, os, sys
try:
    import nvidia
    roots = list(nvidia.__path__)
except ImportError:
    roots = []
dirs = sorted({os.path.dirname(p) for r in roots for p in glob.glob(r + "/**/lib*.so*", recursive=True)})
print(":".join(dirs))
PY
)
  export LD_LIBRARY_PATH="$extra${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
ldd "$BIN" | grep -E "cuda|cublas|curand" >&2

gpu=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo unknown)
echo "{\"gpu\": \"$gpu\", \"date\": \"$(date -u +%F)\"}" >>"$J"

run() {
  local label=$1
  shift
  echo ">> $label: $*" >&2
  local t0=$SECONDS
  if out=$("$@" 2>>"$ERR"); then
    echo "$out" | tail -1 | "$PY" -c "import json,sys; r=json.loads(sys.stdin.read()); r['label']='$label'; print(json.dumps(r))" >>"$J"
  else
    echo "{\"label\": \"$label\", \"failed\": true}" >>"$J"
    echo "   FAILED (see $ERR)" >&2
  fi
  echo "   $((SECONDS - t0)) s" >&2
}

if [ -z "${SKIP_BLOCK:-}" ]; then
  for shape in "32 65" "8 1568"; do
    set -- $shape
    run "block ${1}x${2}" "$BIN" --device cuda llm bench-step --batch "$1" --tokens "$2" --autocast --iters "$ITERS"
    run "block ${1}x${2}" "$PY" benches/gpu_step.py --ref "$LM4VE_REF" --model block --batch "$1" --tokens "$2" --iters "$ITERS" --attn eager
    run "block ${1}x${2}" "$PY" benches/gpu_step.py --ref "$LM4VE_REF" --model block --batch "$1" --tokens "$2" --iters "$ITERS" --attn sdpa
  done
fi
for m in $MODELS; do
  run "$m" "$BIN" --device cuda bench-train --model "$m" --iters "$ITERS"
  run "$m" "$BIN" --device cuda bench-train --model "$m" --iters "$ITERS" --attention chunked --checkpoint-blocks
  [ "$m" = vectornet ] && continue # no PyTorch VectorNet from the reference code here yet
  run "$m" "$PY" benches/gpu_step.py --ref "$LM4VE_REF" --model "$m" --iters "$ITERS" --precision matched --attn eager
  run "$m" "$PY" benches/gpu_step.py --ref "$LM4VE_REF" --model "$m" --iters "$ITERS" --precision matched --attn sdpa
  run "$m" "$PY" benches/gpu_step.py --ref "$LM4VE_REF" --model "$m" --iters "$ITERS" --precision reference --attn sdpa
done

"$PY" benches/gpu_table.py "$J"
