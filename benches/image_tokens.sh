#!/usr/bin/env bash
# image.tokens vs the reference's eval path (PIL open/convert + torchvision Resize/CenterCrop),
# on the same JPEG files, one process each; then lm4ve on all cores. Needs Pillow + numpy.
# Usage: bash benches/image_tokens.sh   (IMAGES=2000 to change the count)
# Results: benches/work/results-image_tokens.txt
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/lm4ve}
PY=${PYTHON:-python3}
N=${IMAGES:-1000}
W=benches/work/images
OUT=benches/work/results-image_tokens.txt
mkdir -p "$W"
: > "$OUT"
say() { echo "$*" | tee -a "$OUT"; }
[ -d "$W/data/val" ] || "$PY" benches/image_tokens_pil.py gen "$W/data" "$N"
cat > "$W/bench.toml" <<TOML
[cache]
dir = "cache"
[stages.image_tokens]
kind = "image.tokens"
[stages.image_tokens.params]
root = "data"
eval_size = 224
TOML
run() {
  rm -rf "$W/cache"
  local t0 t1
  t0=$(date +%s.%N)
  "$BIN" -q -j "$1" -c "$W/bench.toml" pipeline run --stage image_tokens >/dev/null
  t1=$(date +%s.%N)
  awk -v n="$N" -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", n/(b-a)}'
}
pil=$("$PY" benches/image_tokens_pil.py pil "$W/data" 224)
one=$(run 1)
all=$(run "$(nproc)")
"$BIN" -c "$W/bench.toml" pipeline show image_tokens --json > "$W/show.json"
say "image_tokens, $N JPEGs (80% 500x375, 20% 800x600), eval_size 224, max_side 512:"
say "  PIL + torchvision eval transform (1 process): $pil images/s"
say "  lm4ve image.tokens, 1 thread:                 $one images/s ($(awk -v a="$one" -v b="$pil" 'BEGIN{printf "%.2f", a/b}')x; also writes the training JPEG and zstd shards)"
say "  lm4ve image.tokens, $(nproc) threads:               $all images/s"
"$PY" - "$W/show.json" <<'PY' | tee -a "$OUT"
import json, os, sys
s = json.load(open(sys.argv[1])); m = s["meta"]
man = json.load(open(s["manifest"])); base = os.path.dirname(s["manifest"])
total = sum(os.path.getsize(os.path.join(base, x["path"])) for x in man["shards"])
n = sum(x["samples"] for x in man["shards"])
print(f"  cache: {total / n / 1e3:.1f} KB an image ({n} images, shards incl. the 224² view);"
      f" training JPEG {m['jpeg_bytes_mean'] / 1e3:.1f} KB mean;"
      f" {m['images_original']} stored as is, {m['images_reencoded']} re-encoded,"
      f" PSNR of re-encoding {m['reencoded_psnr_db_mean']:.1f} dB mean")
PY
if [ -n "${BENCH_ROWS:-}" ]; then # a row of `make bench`'s table
  printf '%s\t%s\t%s\t%s\t%s\n' image_tokens "$one images/s, 1 thread ($all with $(nproc))" \
    "PIL + torchvision eval transform, 1 process: $pil images/s" \
    "$(awk -v a="$one" -v b="$pil" 'BEGIN{printf "%.2fx", a/b}')" "no check (resizers differ; timing only)" >> "$BENCH_ROWS"
fi
