#!/usr/bin/env bash
# Installs the Python packages a target needs, only if missing: `install-py.sh numpy zstandard`.
# (The tests run scripts/read_shards.py with numpy + zstandard and moto's S3 server
# (moto[server]); benchmarks need h5py, dvc, awscli.)
set -euo pipefail
PY=${PYTHON:-python3}
missing=()
for mod in "$@"; do
  name=${mod%%=*}
  import=${name//-/_}
  # An extra is checked as a submodule: `moto[server]` must import `moto.server`.
  case "$name" in
    *\[*\]) base=${name%%\[*}; extra=${name#*\[}; import="${base//-/_}.${extra%\]}" ;;
  esac
  $PY -c "import $import" 2>/dev/null || missing+=("$mod")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing python packages: ${missing[*]}"
  $PY -m pip install --quiet --disable-pip-version-check "${missing[@]}"
fi
