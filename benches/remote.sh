#!/usr/bin/env bash
# Remote cache benchmark, one command: `make bench-remote` (or `bash benches/remote.sh`).
#  1. machine A (cache A) computes a real ~2 GB pc.tokens artifact (64 shards) and pushes it;
#     a second "machine" (`lm4ve pipeline run` on an empty cache, same inputs and config)
#     pulls it from a directory remote and from an S3 remote (moto's server on loopback),
#     beside `cp -r` of the same objects directory and `aws s3 cp --recursive` of the same
#     bucket prefix. Every pull must say `0 stages run, 1 pulled` and leave objects and
#     artifact records byte-identical to A's, else the bench fails (exit non-zero);
#  2. the no-op `pipeline run` (everything local) with no remote, a directory remote and an
#     S3 remote configured.
# Each pull row is the median of REPEAT (3) runs, each after `sync` and into an empty target.
# Sizes: REMOTE_GB (default 2), REMOTE_OBJECTS (64), NOOP_RUNS (20). Results:
# benches/work/results-remote.txt. Needs moto[server] and awscli (make bench-remote
# installs them). Every server is on 127.0.0.1 and stopped at exit.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/lm4ve}
PY=${PYTHON:-python3}
GB=${REMOTE_GB:-2}
OBJECTS=${REMOTE_OBJECTS:-64}
NOOP_RUNS=${NOOP_RUNS:-20}
REPEAT=${REPEAT:-3}
W=$PWD/benches/work/remote
OUT=$PWD/benches/work/results-remote.txt
rm -rf "$W"; mkdir -p "$W"; : > "$OUT"
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2f", b-a}'; }
rate() { awk -v g="$1" -v a="$2" -v b="$3" 'BEGIN{printf "%.0f", g*1000/(b-a)}'; }
say() { echo "$*" | tee -a "$OUT"; }
# timed LABEL CLEAN CMD...: median seconds of REPEAT runs of CMD, each after CLEAN and a
# sync; run i's stdout is kept in $W/LABEL-i.txt for the checks (in the main shell: a
# command substitution runs without `set -e`).
timed() {
  local label=$1 clean=$2; shift 2
  local ts=() t0 t1 i
  for i in $(seq "$REPEAT"); do
    eval "$clean"; sync
    t0=$(now); "$@" >"$W/$label-$i.txt" || echo "exit $?" >>"$W/$label-$i.txt"; t1=$(now)
    ts+=("$(secs "$t0" "$t1")")
  done
  printf '%s\n' "${ts[@]}" | sort -g | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'
}
# pulled LABEL: every run of LABEL pulled pc_tokens and computed nothing (its summary says
# `0 stages run, 1 pulled`), else the bench fails; prints the median of the pull's own
# seconds (the `pulled ... verified, S s` line: the engine's time for the pull alone).
pulled() {
  local f
  for f in "$W/$1"-*.txt; do
    if ! grep -q '^pc_tokens  *pulled ' "$f" || ! grep -q '^0 stages run, 1 pulled' "$f"; then
      cat "$f" >&2
      echo "remote: $1 did not pull pc_tokens (or computed something): $f" >&2
      return 1
    fi
  done
  sed -n 's/^pc_tokens  *pulled .*verified, \([0-9.]*\) s$/\1/p' "$W/$1"-*.txt |
    sort -g | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'
}
mbps() { awk -v g="$1" -v s="$2" 'BEGIN{printf "%.0f", g*1000/s}'; }

MOTO_PID=""
cleanup() { if [ -n "$MOTO_PID" ]; then kill "$MOTO_PID" 2>/dev/null || true; wait "$MOTO_PID" 2>/dev/null || true; fi; }
trap cleanup EXIT

# -- the artifact: a real pc.tokens artifact, computed by lm4ve on machine A's cache ----------
# Since issue 27 a pull re-derives the manifest from the stage's own unit plan, so only an
# artifact the stage really wrote can be pulled. Cheap tokenisation (64 points, 8 groups x 8)
# and the stage's default keep_points (2048: every demo cloud is kept as it is) make the
# artifact mostly raw points, ~23.5 kB a cloud after zstd: REMOTE_GB sets the cloud count,
# REMOTE_OBJECTS the shard count (one shard = one unit = one object).
CLOUD_BYTES=23500
PER_CLASS=$(awk -v g="$GB" -v b="$CLOUD_BYTES" 'BEGIN{n=int(g*1e9/b/12); if (n<1) n=1; print n}')
CLOUDS=$((PER_CLASS * 12)) # the demo's 12 classes
SHARD=$(((CLOUDS + OBJECTS - 1) / OBJECTS))
"$BIN" -q demo-data --out "$W/data" --pc-train-per-class "$PER_CLASS" --pc-test-per-class 1 \
  --video-train-per-class 0 --video-val-per-class 0 --av-train 0 --av-val 0 >/dev/null
config() { # config NAME CACHE_DIR [REMOTE]
  {
    echo "[cache]"
    echo "dir = \"$2\""
    [ -n "${3:-}" ] && echo "remote = \"$3\""
    cat <<TOML
[stages.pc_tokens]
kind = "pc.tokens"
[stages.pc_tokens.params]
format = "h5"
train = "data/scanobjectnn/training_objectdataset.h5"
num_points = 64
num_groups = 8
group_size = 8
shard_samples = $SHARD
TOML
  } > "$W/$1.toml"
}
config a cache-a
t0=$(now); "$BIN" -q -c "$W/a.toml" pipeline run --remote none >"$W/a-run.txt"; t1=$(now)
grep -q '^pc_tokens  *built ' "$W/a-run.txt" || { cat "$W/a-run.txt"; echo "remote: machine A did not build pc_tokens" >&2; exit 1; }
NOBJ=$(find "$W/cache-a/objects" -type f | wc -l)
BYTES=$(du -sb "$W/cache-a/objects" | cut -f1)
GBR=$(awk -v b="$BYTES" 'BEGIN{printf "%.2f", b/1e9}')
say "== remote cache: pull of a ${GBR} GB pc.tokens artifact ($CLOUDS clouds, $NOBJ objects) by an empty second cache; $(nproc) cores; $(date -u +%F)"
say "machine A  build lm4ve pipeline run           $(secs "$t0" "$t1") s  (computes the artifact: what B must not do)"
say "   (lm4ve verifies every object's blake3 and fsyncs it; the page cache is warm for every row;"
say "    its run also hashes B's inputs to find the key: \"the pull itself\" is the engine's own time for the pull)"

# -- directory remote ---------------------------------------------------------------------------
DIRR="$W/dir-remote"
t0=$(now); "$BIN" -q -c "$W/a.toml" --remote "$DIRR" cache push >/dev/null; t1=$(now)
say "directory  push  lm4ve cache push            $(secs "$t0" "$t1") s  $(rate "$GBR" "$t0" "$t1") MB/s"
config b cache-b "$DIRR"
LM_DIR=$(timed pull-dir 'rm -rf "$W/cache-b"' "$BIN" -q -c "$W/b.toml" pipeline run)
P_DIR=$(pulled pull-dir)
say "directory  pull  lm4ve pipeline run          $LM_DIR s  $(mbps "$GBR" "$LM_DIR") MB/s  (the pull itself: $P_DIR s; B computed nothing)"
CP=$(timed cp 'rm -rf "$W/cp-dst"' cp -r "$DIRR/objects" "$W/cp-dst")
say "directory  pull  cp -r objects/             $CP s  $(mbps "$GBR" "$CP") MB/s"
CPS=$(timed cps 'rm -rf "$W/cp-dst"' sh -c "cp -r '$DIRR/objects' '$W/cp-dst' && sync")
say "directory  pull  cp -r objects/ && sync     $CPS s  $(mbps "$GBR" "$CPS") MB/s"
rm -rf "$W/cp-dst"
say "directory  ratio lm4ve / cp -r = $(awk -v a="$LM_DIR" -v b="$CP" 'BEGIN{printf "%.2f", a/b}'),  lm4ve / (cp -r && sync) = $(awk -v a="$LM_DIR" -v b="$CPS" 'BEGIN{printf "%.2f", a/b}');  the pull itself / (cp -r && sync) = $(awk -v a="$P_DIR" -v b="$CPS" 'BEGIN{printf "%.2f", a/b}')"
# `cmp` as a plain command (not `cmp && say`, which set -e lets pass): a difference fails.
same_objects() { cmp <(cd "$W/cache-a" && find objects -type f | sort | xargs -n 16 sha1sum) <(cd "$W/$1" && find objects -type f | sort | xargs -n 16 sha1sum); }
same_objects cache-b
diff -r "$W/cache-a/artifacts" "$W/cache-b/artifacts"
say "directory  B's objects and artifact records are byte-identical to A's"
rm -rf "$W/cache-b"

# -- S3 remote (moto on loopback) ---------------------------------------------------------------
PORT=$($PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
$PY -m moto.server -H 127.0.0.1 -p "$PORT" >"$W/moto.log" 2>&1 &
MOTO_PID=$!
for _ in $(seq 100); do (echo > /dev/tcp/127.0.0.1/"$PORT") 2>/dev/null && break; sleep 0.2; done
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
export AWS_ENDPOINT_URL=http://127.0.0.1:$PORT
AWS="$PY -m awscli --endpoint-url $AWS_ENDPOINT_URL"
$AWS s3 mb s3://bench >/dev/null
S3R=s3://bench/lm4ve
t0=$(now); "$BIN" -q -c "$W/a.toml" --remote "$S3R" cache push >/dev/null; t1=$(now)
say "s3 (moto)  push  lm4ve cache push            $(secs "$t0" "$t1") s  $(rate "$GBR" "$t0" "$t1") MB/s"
config c cache-c "$S3R"
LM_S3=$(timed pull-s3 'rm -rf "$W/cache-c"' "$BIN" -q -c "$W/c.toml" pipeline run)
P_S3=$(pulled pull-s3)
say "s3 (moto)  pull  lm4ve pipeline run          $LM_S3 s  $(mbps "$GBR" "$LM_S3") MB/s  (the pull itself: $P_S3 s; C computed nothing)"
AWSS=$(timed aws 'rm -rf "$W/aws-dst"' $AWS s3 cp --recursive --only-show-errors "$S3R/objects" "$W/aws-dst")
say "s3 (moto)  pull  aws s3 cp --recursive       $AWSS s  $(mbps "$GBR" "$AWSS") MB/s"
rm -rf "$W/aws-dst"
say "s3 (moto)  ratio lm4ve / aws s3 cp = $(awk -v a="$LM_S3" -v b="$AWSS" 'BEGIN{printf "%.2f", a/b}');  the pull itself / aws s3 cp = $(awk -v a="$P_S3" -v b="$AWSS" 'BEGIN{printf "%.2f", a/b}')"
same_objects cache-c
diff -r "$W/cache-a/artifacts" "$W/cache-c/artifacts"
say "s3 (moto)  C's objects and artifact records are byte-identical to A's"

# -- no-op run overhead (everything local) ------------------------------------------------------
noop() { # noop CONFIG [ARGS...]: mean ms of NOOP_RUNS runs
  local cfg=$1; shift
  "$BIN" -q -c "$cfg" "$@" pipeline run >"$W/noop.txt"
  grep -q '^nothing to do: 0 stages run' "$W/noop.txt" || { cat "$W/noop.txt" >&2; echo "remote: the no-op run did something" >&2; return 1; }
  local t0 t1; t0=$(now)
  for _ in $(seq "$NOOP_RUNS"); do "$BIN" -q -c "$cfg" "$@" pipeline run >/dev/null; done
  t1=$(now)
  awk -v a="$t0" -v b="$t1" -v n="$NOOP_RUNS" 'BEGIN{printf "%.1f", (b-a)*1000/n}'
}
say "== no-op pipeline run (artifact local), mean of $NOOP_RUNS runs"
N0=$(noop "$W/c.toml" --remote none)
N1=$(noop "$W/c.toml" --remote "$DIRR")
N2=$(noop "$W/c.toml")
say "no remote            $N0 ms"
say "directory remote     $N1 ms  (+$(awk -v a="$N1" -v b="$N0" 'BEGIN{printf "%.1f", a-b}') ms)"
say "s3 remote (moto)     $N2 ms  (+$(awk -v a="$N2" -v b="$N0" 'BEGIN{printf "%.1f", a-b}') ms)"
if [ -n "${BENCH_ROWS:-}" ]; then # a row of `make bench`'s table
  # lm4ve fsyncs every object, so `cp -r && sync` is the directory anchor of the ratio.
  r() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2f", a/b}'; }
  printf '%s\t%s\t%s\t%s\t%s\n' "remote pull (${GBR} GB, $NOBJ objects)" \
    "dir: run $LM_DIR s, pull $P_DIR s; s3: run $LM_S3 s, pull $P_S3 s" \
    "cp -r && sync $CPS s (cp -r $CP s); aws s3 cp $AWSS s" \
    "pull: $(r "$P_DIR" "$CPS") dir, $(r "$P_S3" "$AWSS") s3; whole run: $(r "$LM_DIR" "$CPS"), $(r "$LM_S3" "$AWSS") (time, lower is better)" \
    "yes: B pulled, computed nothing; objects + records byte-identical (dir + s3)" >> "$BENCH_ROWS"
fi
echo "results in $OUT"
