#!/usr/bin/env bash
# The image task's training loader (JPEG decode + bicubic RandomResizedCrop + flip +
# RandAugment rand-m9-mstd0.5-inc1 + normalize + RandomErasing 0.25 pixel) on one core, side by
# side with the reference's (torchvision ImageFolder + timm create_transform, DataLoader with 1
# worker, torch.set_num_threads(1)) and a simplejpeg + OpenCV loader of the same recipe, over
# the same ImageNet-layout folder in one run. Needs torch, torchvision, timm, simplejpeg,
# opencv-python-headless (PYTHON= a venv that has them) and a built target/release/lm4ve.
# Usage: bash benches/image_loader.sh [DIR]   (IMAGES=300 PASSES=3; without DIR, generates
#        IMAGES JPEGs, 80% 500x375 and 20% 800x600, quality 90, in benches/work/loader)
#        BEFORE=path/to/an/older/lm4ve adds its row (a before/after in the same run)
# Results: benches/work/results-image_loader.txt
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/lm4ve}
PY=${PYTHON:-python3}
N=${IMAGES:-300}
P=${PASSES:-3}
W=benches/work/loader
OUT=benches/work/results-image_loader.txt
mkdir -p "$W"
DIR=${1:-}
if [ -z "$DIR" ]; then
  [ -d "$W/data/val" ] || "$PY" benches/image_tokens_pil.py gen "$W/data" "$N"
  DIR="$W/data/val"
fi
"$BIN" bench-image-loader "$DIR" --passes "$P" > "$W/lm4ve.json"
rm -f "$W/before.json"
[ -z "${BEFORE:-}" ] || "$BEFORE" bench-image-loader "$DIR" --passes "$P" > "$W/before.json"
"$PY" benches/image_loader_timm.py timm "$DIR" --passes "$P" > "$W/timm.json"
"$PY" benches/image_loader_timm.py fast "$DIR" --passes "$P" > "$W/fast.json"
"$PY" - "$W" "$(uptime)" <<'PY' | tee "$OUT"
import json, os, sys
w, up = sys.argv[1], sys.argv[2]
keys = ["timm", "fast"] + (["before"] if os.path.exists(f"{w}/before.json") else []) + ["lm4ve"]
r = {k: json.load(open(f"{w}/{k}.json")) for k in keys}
n = r["lm4ve"]["images"]
print(f"image training loader, {n} JPEGs x {r['lm4ve']['passes']} passes, 224 crop, one core; {up.strip()}")
print(f"{'loader':<44} {'img/CPU-s':>10} {'img/s wall':>11} {'vs timm (CPU)':>14}")
names = {"lm4ve": "lm4ve bench-image-loader",
         "timm": "ImageFolder + timm create_transform",
         "fast": "simplejpeg + OpenCV + timm RandAugment",
         "before": "lm4ve bench-image-loader ($BEFORE)"}
base = r["timm"]["images_per_cpu_s"]
for k in keys:
    x = r[k]
    print(f"{names[k]:<44} {x['images_per_cpu_s']:>10.1f} {x['images_per_s_wall']:>11.1f} "
          f"{x['images_per_cpu_s'] / base:>13.2f}x")
PY
