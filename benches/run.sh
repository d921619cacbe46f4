#!/usr/bin/env bash
# Benchmarks of lm4ve's hot paths, each side by side with its anchor in the same run.
# Usage: make bench   (or: bash benches/run.sh [pc|noop])   Results: benches/work/results.txt
# Sizes can be lowered for a quick look: PC_PER_CLASS=20 NOOP_FILES=20000 bash benches/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/lm4ve}
PY=${PYTHON:-python3}
W=benches/work
mkdir -p "$W"
OUT="$W/results-${1:-all}.txt"
: > "$OUT"
what=${1:-all}
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2f", b-a}'; }
rate() { awk -v n="$1" -v a="$2" -v b="$3" 'BEGIN{printf "%.1f", n/(b-a)}'; }
say() { echo "$*" | tee -a "$OUT"; }

if [ "$what" = all ] || [ "$what" = pc ]; then
  PER=${PC_PER_CLASS:-100}
  rm -rf "$W/pc"
  "$BIN" demo-data --out "$W/pc/data" --pc-train-per-class "$PER" --pc-test-per-class 1 >/dev/null
  H5="$W/pc/data/scanobjectnn/training_objectdataset.h5"
  cat > "$W/pc/bench.toml" <<TOML
[cache]
dir = "cache"
[stages.pc_tokens]
kind = "pc.tokens"
[stages.pc_tokens.params]
format = "h5"
train = "data/scanobjectnn/training_objectdataset.h5"
num_points = 1024
num_groups = 64
group_size = 32
TOML
  N=$($PY -c "import h5py,sys; print(h5py.File(sys.argv[1])['data'].shape[0])" "$H5")
  say "== pc_tokens: $N clouds of 2048 points -> 1024 FPS, 64 groups x 32 NN ($(nproc) cores)"
  for j in 1 $(nproc); do
    t0=$(now); "$BIN" -q -c "$W/pc/bench.toml" -j "$j" pipeline run --stage pc_tokens --force >/dev/null; t1=$(now)
    say "lm4ve  -j $j : $(rate "$N" "$t0" "$t1") clouds/s (whole stage incl. h5 read, zstd, hashing)"
  done
  LIMIT=${PC_NUMPY_LIMIT:-200}
  $PY scripts/bench/pc_reference.py "$H5" --num-points 1024 --num-groups 64 --group-size 32 --limit "$LIMIT" | tee "$W/pc/numpy.json"
  say "numpy (1 thread, $LIMIT clouds): $($PY -c "import json,sys; print('%.1f' % json.load(open(sys.argv[1]))['clouds_per_s'])" "$W/pc/numpy.json") clouds/s"
fi

if [ "$what" = all ] || [ "$what" = noop ]; then
  NF=${NOOP_FILES:-200000}
  rm -rf "$W/noop"; mkdir -p "$W/noop"
  $PY benches/gen_many_objects.py "$W/noop/object_dataset" "$NF"
  cat > "$W/noop/bench.toml" <<TOML
[cache]
dir = "cache"
[stages.pc_tokens]
kind = "pc.tokens"
[stages.pc_tokens.params]
format = "bin"
root = "object_dataset"
split = "object_dataset/split_new.txt"
num_points = 32
num_groups = 8
group_size = 4
shard_samples = 2048
TOML
  say "== no-op over $NF small input files"
  t0=$(now); "$BIN" -q -c "$W/noop/bench.toml" pipeline run >/dev/null; t1=$(now)
  say "lm4ve first run (hash + compute): $(secs "$t0" "$t1") s"
  for i in 1 2 3; do
    t0=$(now); "$BIN" -q -c "$W/noop/bench.toml" pipeline run >/dev/null; t1=$(now)
    say "lm4ve no-op run $i: $(secs "$t0" "$t1") s"
  done
  ( cd "$W/noop" && dvc init --no-scm -q && dvc config core.autostage false -q || true
    t0=$(now); dvc add -q object_dataset; t1=$(now)
    echo "dvc add (first hash): $(secs "$t0" "$t1") s" ) | tee -a "$OUT"
  for i in 1 2 3; do
    t0=$(now); (cd "$W/noop" && dvc status -q >/dev/null 2>&1 || true); t1=$(now)
    say "dvc status run $i: $(secs "$t0" "$t1") s"
  done
fi
echo "results in $OUT"
