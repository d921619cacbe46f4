#!/usr/bin/env bash
# Remote cache benchmark, one command: `make bench-remote` (or `bash benches/remote.sh`).
#  1. pull of a ~2 GB artifact (64 objects) by a second "machine" (`lm4ve pipeline run` on an
#     empty cache) from a directory remote and from an S3 remote (moto's server on loopback),
#     beside `cp -r` of the same objects directory and `aws s3 cp --recursive` of the same
#     bucket prefix;
#  2. the no-op `pipeline run` (everything local) with no remote, a directory remote and an
#     S3 remote configured.
# Each pull row is the median of REPEAT (3) runs, each after `sync` and into an empty target.
# Sizes: REMOTE_GB (default 2), REMOTE_OBJECTS (64), NOOP_RUNS (20). Results:
# benches/work/results-remote.txt. Needs moto[server], awscli, blake3 (make bench-remote
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
# timed CLEAN CMD...: median seconds of REPEAT runs of CMD, each after CLEAN and a sync.
timed() {
  local clean=$1; shift
  local ts=() t0 t1
  for _ in $(seq "$REPEAT"); do
    eval "$clean"; sync
    t0=$(now); "$@" >/dev/null; t1=$(now)
    ts+=("$(secs "$t0" "$t1")")
  done
  printf '%s\n' "${ts[@]}" | sort -g | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'
}
mbps() { awk -v g="$1" -v s="$2" 'BEGIN{printf "%.0f", g*1000/s}'; }

MOTO_PID=""
cleanup() { if [ -n "$MOTO_PID" ]; then kill "$MOTO_PID" 2>/dev/null || true; wait "$MOTO_PID" 2>/dev/null || true; fi; }
trap cleanup EXIT

# -- the artifact: a pc_tokens config whose key we fill with ~2 GB of objects -----------------
"$BIN" demo-data --out "$W/data" --pc-train-per-class 1 --pc-test-per-class 1 \
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
num_points = 256
num_groups = 16
group_size = 8
TOML
  } > "$W/$1.toml"
}
config a cache-a
KEY=$("$BIN" -q -c "$W/a.toml" pipeline status --json | $PY -c 'import json,sys; print(json.load(sys.stdin)[0]["key"])')
# Random bytes (incompressible), stored exactly as the engine stores a finished artifact:
# objects named by blake3, unit records, rejects.jsonl, manifest.json.
$PY - "$W/cache-a" "$KEY" "$GB" "$OBJECTS" <<'PY'
import blake3, json, os, sys
root, key, gb, n = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
size = int(gb * 1e9) // n
art = os.path.join(root, "artifacts", key)
os.makedirs(os.path.join(art, "units"), exist_ok=True)
files = []
for i in range(n):
    data = os.urandom(size)
    h = blake3.blake3(data).hexdigest()
    d = os.path.join(root, "objects", h[:2]); os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, h), "wb") as f: f.write(data)
    unit = f"chunk-{i:05d}"
    rec = {"unit": unit, "shards": [], "files": [{"name": f"{unit}.bin", "blake3": h, "bytes": size}], "rejects": [], "meta": None}
    with open(os.path.join(art, "units", unit + ".json"), "w") as f: json.dump(rec, f)
    files.append({"name": f"{unit}.bin", "bytes": size, "blake3": h, "path": f"../../objects/{h[:2]}/{h}"})
open(os.path.join(art, "rejects.jsonl"), "w").close()
m = {"format": "lm4ve-manifest/1", "stage": "pc_tokens", "kind": "pc.tokens", "key": key, "schema": None,
     "samples": 0, "splits": {}, "rejects": 0, "shards": [], "files": files, "meta": None}
with open(os.path.join(art, "manifest.json"), "w") as f: json.dump(m, f, indent=2)
PY
BYTES=$(du -sb "$W/cache-a/objects" | cut -f1)
GBR=$(awk -v b="$BYTES" 'BEGIN{printf "%.2f", b/1e9}')
say "== remote cache: pull of a ${GBR} GB artifact ($OBJECTS objects) by an empty second cache; $(nproc) cores; $(date -u +%F)"
say "   (lm4ve verifies every object's blake3 and fsyncs it; the page cache is warm for every row)"

# -- directory remote ---------------------------------------------------------------------------
DIRR="$W/dir-remote"
t0=$(now); "$BIN" -q -c "$W/a.toml" --remote "$DIRR" cache push >/dev/null; t1=$(now)
say "directory  push  lm4ve cache push            $(secs "$t0" "$t1") s  $(rate "$GBR" "$t0" "$t1") MB/s"
config b cache-b "$DIRR"
LM_DIR=$(timed 'rm -rf "$W/cache-b"' "$BIN" -q -c "$W/b.toml" pipeline run)
say "directory  pull  lm4ve pipeline run          $LM_DIR s  $(mbps "$GBR" "$LM_DIR") MB/s"
CP=$(timed 'rm -rf "$W/cp-dst"' cp -r "$DIRR/objects" "$W/cp-dst")
say "directory  pull  cp -r objects/             $CP s  $(mbps "$GBR" "$CP") MB/s"
CPS=$(timed 'rm -rf "$W/cp-dst"' sh -c "cp -r '$DIRR/objects' '$W/cp-dst' && sync")
say "directory  pull  cp -r objects/ && sync     $CPS s  $(mbps "$GBR" "$CPS") MB/s"
rm -rf "$W/cp-dst"
say "directory  ratio lm4ve / cp -r = $(awk -v a="$LM_DIR" -v b="$CP" 'BEGIN{printf "%.2f", a/b}'),  lm4ve / (cp -r && sync) = $(awk -v a="$LM_DIR" -v b="$CPS" 'BEGIN{printf "%.2f", a/b}')"
# `cmp` as a plain command (not `cmp && say`, which set -e lets pass): a difference fails.
same_objects() { cmp <(cd "$W/cache-a" && find objects -type f | sort | xargs -n 16 sha1sum) <(cd "$W/$1" && find objects -type f | sort | xargs -n 16 sha1sum); }
same_objects cache-b
say "directory  B's objects are byte-identical to A's"
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
LM_S3=$(timed 'rm -rf "$W/cache-c"' "$BIN" -q -c "$W/c.toml" pipeline run)
say "s3 (moto)  pull  lm4ve pipeline run          $LM_S3 s  $(mbps "$GBR" "$LM_S3") MB/s"
AWSS=$(timed 'rm -rf "$W/aws-dst"' $AWS s3 cp --recursive --only-show-errors "$S3R/objects" "$W/aws-dst")
say "s3 (moto)  pull  aws s3 cp --recursive       $AWSS s  $(mbps "$GBR" "$AWSS") MB/s"
rm -rf "$W/aws-dst"
say "s3 (moto)  ratio lm4ve / aws s3 cp = $(awk -v a="$LM_S3" -v b="$AWSS" 'BEGIN{printf "%.2f", a/b}')"
same_objects cache-c
say "s3 (moto)  C's objects are byte-identical to A's"

# -- no-op run overhead (everything local) ------------------------------------------------------
noop() { # noop CONFIG [ARGS...]: mean ms of NOOP_RUNS runs
  local cfg=$1; shift
  "$BIN" -q -c "$cfg" "$@" pipeline run >/dev/null
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
  printf '%s\t%s\t%s\t%s\t%s\n' "remote pull (${GBR} GB)" "dir $LM_DIR s, s3 $LM_S3 s" \
    "cp -r $CP s, aws s3 cp $AWSS s" \
    "$(awk -v a="$LM_DIR" -v b="$CP" 'BEGIN{printf "%.2f", a/b}') / $(awk -v a="$LM_S3" -v b="$AWSS" 'BEGIN{printf "%.2f", a/b}') (time, lower is better)" \
    "yes, objects byte-identical (dir + s3)" >> "$BENCH_ROWS"
fi
echo "results in $OUT"
