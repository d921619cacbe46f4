#!/usr/bin/env bash
# Installs the Python packages a target needs, only if missing: `install-py.sh numpy zstandard`.
# (The tests run scripts/read_shards.py with numpy + zstandard; benchmarks need h5py, dvc.)
set -euo pipefail
PY=${PYTHON:-python3}
missing=()
for mod in "$@"; do
  name=${mod%%=*}
  $PY -c "import ${name//-/_}" 2>/dev/null || missing+=("$mod")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing python packages: ${missing[*]}"
  $PY -m pip install --quiet --disable-pip-version-check "${missing[@]}"
fi
