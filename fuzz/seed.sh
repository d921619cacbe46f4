#!/usr/bin/env bash
# Seeds fuzz/corpus/<target>/ from real files in the real formats: the demo datasets and a
# small pipeline run of the release binary (shards, manifests, unit and run records, a
# block.safetensors), plus the small fixtures the tests write (a tiny LLaMA checkpoint,
# a GGUF, ScanObjectNN .bin objects, LAS scans) written here by Python's standard library.
# Usage: fuzz/seed.sh [BIN]  (default target/release/lm4ve). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/release/lm4ve}
PY=${PYTHON:-python3}
C=fuzz/corpus
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
for t in shard_header manifest unit_record run_record gguf safetensors av_csv av_map las pc_bin config stage_name; do
  mkdir -p "$C/$t"
done

"$BIN" demo-data --out "$W/demo" --pc-train-per-class 2 --pc-test-per-class 1 \
  --video-train-per-class 0 --video-val-per-class 0 --av-train 6 --av-val 2 >/dev/null

"$PY" - "$W" "$C" <<'PY'
import json, os, struct, sys
w, c = sys.argv[1], sys.argv[2]

# A tiny LLaMA (2 layers, width 32) in Hugging Face layout: safetensors + config.json.
d, heads, kv, f = 32, 4, 2, 48
hd = d // heads
tensors, blob = {}, b""
for l in range(2):
    for name, shape in [("input_layernorm.weight", [d]), ("self_attn.q_proj.weight", [heads * hd, d]),
                        ("self_attn.k_proj.weight", [kv * hd, d]), ("self_attn.v_proj.weight", [kv * hd, d]),
                        ("self_attn.o_proj.weight", [d, heads * hd]), ("post_attention_layernorm.weight", [d]),
                        ("mlp.gate_proj.weight", [f, d]), ("mlp.up_proj.weight", [f, d]), ("mlp.down_proj.weight", [d, f])]:
        n = 1
        for s in shape:
            n *= s
        data = struct.pack(f"<{n}f", *[((i * 37 % 101) - 50) / 500.0 for i in range(n)])
        tensors[f"model.layers.{l}.{name}"] = {"dtype": "F32", "shape": shape, "data_offsets": [len(blob), len(blob) + len(data)]}
        blob += data
header = json.dumps(tensors).encode()
header += b" " * (-len(header) % 8)
model = os.path.join(w, "tiny-llama")
os.makedirs(model, exist_ok=True)
with open(os.path.join(model, "model.safetensors"), "wb") as out:
    out.write(struct.pack("<Q", len(header)) + header + blob)
with open(os.path.join(model, "config.json"), "w") as out:
    json.dump({"model_type": "llama", "hidden_size": d, "num_attention_heads": heads, "num_key_value_heads": kv,
               "intermediate_size": f, "num_hidden_layers": 2, "rms_norm_eps": 1e-5}, out)

# A GGUF v3 with llama metadata and one F32 tensor.
def s(x):
    b = x.encode()
    return struct.pack("<Q", len(b)) + b
kvs = [("general.architecture", 8, s("llama")), ("llama.block_count", 4, struct.pack("<I", 1)),
       ("llama.embedding_length", 4, struct.pack("<I", 8)), ("llama.feed_forward_length", 4, struct.pack("<I", 16)),
       ("llama.attention.head_count", 4, struct.pack("<I", 2)), ("llama.attention.head_count_kv", 4, struct.pack("<I", 2)),
       ("llama.attention.layer_norm_rms_epsilon", 6, struct.pack("<f", 1e-5))]
g = b"GGUF" + struct.pack("<IQQ", 3, 1, len(kvs))
for k, t, v in kvs:
    g += s(k) + struct.pack("<I", t) + v
g += s("blk.0.attn_norm.weight") + struct.pack("<I", 1) + struct.pack("<Q", 8) + struct.pack("<IQ", 0, 0)
g += b"\0" * (-len(g) % 32) + struct.pack("<8f", *[1.0] * 8)
open(os.path.join(c, "gguf", "tiny.gguf"), "wb").write(g)
open(os.path.join(c, "gguf", "header-only.gguf"), "wb").write(b"GGUF" + struct.pack("<IQQ", 3, 0, 0))

# ScanObjectNN .bin objects: f32 count, then 11 f32 per point.
for n in (0, 1, 5):
    pts = [float((i * 7 + j) % 13) / 13 for i in range(n) for j in range(11)]
    open(os.path.join(c, "pc_bin", f"obj{n}.bin"), "wb").write(struct.pack("<f", n) + struct.pack(f"<{len(pts)}f", *pts))

# LAS 1.2, point format 0, a few points.
def las(points):
    scale, off = (0.01, 0.01, 0.01), (0.0, 0.0, 0.0)
    h = b"LASF" + struct.pack("<HH", 0, 0) + b"\0" * 16 + struct.pack("<BB", 1, 2)
    h += b"lm4ve".ljust(32, b"\0") + b"seed".ljust(32, b"\0") + struct.pack("<HHHIIBHI", 1, 2026, 227, 227, 0, 0, 20, len(points))
    h += struct.pack("<5I", len(points), 0, 0, 0, 0) + struct.pack("<3d", *scale) + struct.pack("<3d", *off)
    xs, ys, zs = [p[0] for p in points] or [0], [p[1] for p in points] or [0], [p[2] for p in points] or [0]
    h += struct.pack("<6d", max(xs), min(xs), max(ys), min(ys), max(zs), min(zs))
    assert len(h) == 227, len(h)
    body = b"".join(struct.pack("<iiiHBBbBH", int(x / 0.01), int(y / 0.01), int(z / 0.01), 0, 0, 0, 0, 0, 0) for x, y, z in points)
    return h + body
open(os.path.join(c, "las", "three.las"), "wb").write(las([(1, 2, 3), (4, 5, 6), (7, 8, 9)]))
open(os.path.join(c, "las", "empty.las"), "wb").write(las([]))
PY

cat >"$W/seed.toml" <<EOF
[cache]
dir = "cache"

[stages.pc_tokens]
kind = "pc.tokens"
[stages.pc_tokens.params]
format = "h5"
train = "demo/scanobjectnn/training_objectdataset.h5"
test = "demo/scanobjectnn/test_objectdataset.h5"
num_points = 128
num_groups = 8
group_size = 4
shard_samples = 8

[stages.llm_block]
kind = "llm.block"
[stages.llm_block.params]
checkpoint = "tiny-llama"
EOF
"$BIN" -q -c "$W/seed.toml" pipeline run >/dev/null

# Copy each kind of file under a name made from its content (idempotent).
put() { cp "$2" "$C/$1/$(sha1sum "$2" | cut -c1-16)"; }
find "$W/cache/objects" -type f | while read -r f; do
  if head -c 8 "$f" | grep -q LM4VSHRD; then put shard_header "$f"; else put safetensors "$f"; fi
done
find "$W/cache/artifacts" -name manifest.json | while read -r f; do put manifest "$f"; done
find "$W/cache/artifacts" -path '*/units/*.json' | while read -r f; do put unit_record "$f"; done
find "$W/cache/runs" -name '*.json' | while read -r f; do put run_record "$f"; done
put safetensors "$W/tiny-llama/model.safetensors"
find "$W/demo/argoverse" -name '*.csv' | head -8 | while read -r f; do put av_csv "$f"; done
find "$W/demo/argoverse" -name '*.xml' | while read -r f; do put av_map "$f"; done
for f in configs/*.toml "$W/seed.toml"; do put config "$f"; done
# Stage names: the ones the shipped configs use, and the hostile ones of issue 27.
for n in pc_tokens train_pc@mode=none llm_block_15 a/b . .. "a b" "$(printf 'a\nb')" "$(printf 'a\033[31mb')" ""; do
  printf '%s' "$n" > "$C/stage_name/$(printf '%s' "$n" | sha1sum | cut -c1-16)"
done
for t in "$C"/*; do echo "$(basename "$t"): $(ls "$t" | wc -l) seeds"; done
