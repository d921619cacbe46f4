#!/usr/bin/env bash
# The GPU checks of data-parallel training (issue 15), for a machine with one NVIDIA GPU and a
# `make build-cuda` binary (NCCL included). One run, a few minutes:
#   1. A job of one through NCCL (LM4VE_DATA_PARALLEL=1) trains what the plain CUDA path
#      trains (small video model on demo data; largest parameter difference printed).
#   2. `bench-allreduce` over NCCL at world size 1 for every model's trainable parameters,
#      beside PyTorch's NCCL all_reduce of the same buckets (when torch is installed), and
#      the analytic ring times at 4 and 8 GPUs.
#   3. With benches/gpu.sh's results (OUTDIR/gpu.jsonl) present: the projected step time at
#      8 GPUs = one GPU's step at the per-GPU batch + the ring all-reduce (not overlapped).
#
#   bash benches/gpu_dist.sh [OUTDIR]      # env: BIN, PYTHON, NCCL_LIB (dir of libnccl.so.2)
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/cuda/release/lm4ve}
PY=${PYTHON:-python3}
OUTDIR=${1:-benches/work}
mkdir -p "$OUTDIR"
W="$OUTDIR/dist"
rm -rf "$W"
mkdir -p "$W"
[ -n "${NCCL_LIB:-}" ] && export LD_LIBRARY_PATH="$NCCL_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
ldd "$BIN" | grep -E "nccl|not found" >&2

echo "== 1. NCCL job of one vs the plain CUDA path"
"$BIN" demo-data --out "$W/demo" --pc-train-per-class 1 --pc-test-per-class 1 \
  --video-train-per-class 6 --video-val-per-class 2 --av-train 0 --av-val 0 >/dev/null
for name in plain nccl; do
  cat >"$W/$name.toml" <<TOML
[cache]
dir = "cache-$name"
[stages.ssv2_tokens]
kind = "ssv2.tokens"
[stages.ssv2_tokens.params]
root = "demo/ssv2"
num_frames = 4
tubelet_frames = 2
patch = 16
short_side = 32
crop = 32
views = 2
random_views = 1
shard_samples = 8
[stages.train_ssv2]
kind = "train"
[stages.train_ssv2.params]
data = "ssv2_tokens"
mode = "none"
epochs = 3
warmup_epochs = 1
batch_size = 8
lr = 1e-3
mixup = 0.0
cutmix = 0.0
epochs_per_checkpoint = 1
[stages.train_ssv2.params.model]
embed_dim = 64
depth = 2
heads = 4
drop_path = 0.0
TOML
  "$BIN" -q -c "$W/$name.toml" pipeline run --stage ssv2_tokens >/dev/null
done
"$BIN" -c "$W/plain.toml" --device cuda pipeline run --stage train_ssv2 2>&1 | tail -2
LM4VE_DATA_PARALLEL=1 "$BIN" -c "$W/nccl.toml" --device cuda pipeline run --stage train_ssv2 2>&1 | grep -E "over nccl|built|error"
"$PY" - "$W" <<'PYEOF' | tee "$OUTDIR/dist_equivalence.txt"
import glob, json, struct, sys
w = sys.argv[1]
def model(name):
    m = glob.glob(f"{w}/cache-{name}/artifacts/*/manifest.json")
    m = [p for p in m if json.load(open(p)).get("kind") == "train"][0]
    f = [f for f in json.load(open(m))["files"] if f["name"] == "model.safetensors"][0]
    raw = open(m.rsplit("/", 1)[0] + "/" + f["path"], "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    head = json.loads(raw[8:8 + n]); body = raw[8 + n:]
    out = {}
    for k, v in head.items():
        if k == "__metadata__": continue
        a, b = v["data_offsets"]
        out[k] = struct.unpack(f"<{(b - a) // 4}f", body[a:b])
    return out, f["blake3"]
(a, ha), (b, hb) = model("plain"), model("nccl")
worst = max((abs(x - y), k) for k in a for x, y in zip(a[k], b[k]))
print(f"NCCL job of one vs plain CUDA: identical bytes: {ha == hb}; largest parameter difference {worst[0]:.3g} ({worst[1]})")
PYEOF

echo "== 2. gradient averaging over NCCL, world size 1"
LM4VE_DATA_PARALLEL=1 "$BIN" -q --device cuda bench-allreduce --iters 20 | tee "$OUTDIR/allreduce_nccl.jsonl"
if "$PY" -c "import torch" 2>/dev/null; then
  while read -r line; do
    m=$(echo "$line" | "$PY" -c "import json,sys; print(json.load(sys.stdin)['model'])")
    b=$(echo "$line" | "$PY" -c "import json,sys; print(','.join(map(str, json.load(sys.stdin)['bucket_bytes'])))")
    "$PY" -m torch.distributed.run --nproc-per-node 1 scripts/bench/allreduce_reference.py \
      --buckets "$b" --model "$m" --iters 20 2>/dev/null | tee -a "$OUTDIR/allreduce_torch_nccl.jsonl"
  done <"$OUTDIR/allreduce_nccl.jsonl"
fi

echo "== 3. projected step at 8 GPUs"
"$PY" - "$OUTDIR" <<'PYEOF'
import json, os, sys
d = sys.argv[1]
ar = [json.loads(l) for l in open(f"{d}/allreduce_nccl.jsonl") if l.strip()]
steps = {}
if os.path.exists(f"{d}/gpu.jsonl"):
    for l in open(f"{d}/gpu.jsonl"):
        r = json.loads(l)
        if r.get("impl") == "lm4ve" and "model" in r and not r.get("checkpoint_blocks") and r.get("mode") == "frozen":
            steps.setdefault(r["model"], r["ms_per_step_median"])
for a in ar:
    s = steps.get(a["model"])
    for link in a["analytic_ring"]:
        t8 = link["ms_at_8"]
        proj = f"{s + t8:.1f} ms ({t8 / (s + t8) * 100:.0f}% communication)" if s else "needs benches/gpu.sh's step time"
        print(f"{a['model']}: {a['trainable_params'] / 1e6:.2f}M params, NCCL world-1 {a['ms_median']:.2f} ms; 8 GPUs over {link['link']}: all-reduce {t8:.2f} ms, step {proj}")
PYEOF
