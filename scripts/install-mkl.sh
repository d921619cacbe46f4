#!/usr/bin/env bash
# Installs, only if missing, Intel MKL (static libraries + headers) and Intel OpenMP from
# PyPI wheels into a local prefix, for `cargo build --release --features mkl` (candle's
# intel-mkl-src finds MKL by walking $MKLROOT; its own download path is never used).
# Usage:
#   eval "$(scripts/install-mkl.sh [PREFIX])"        # prints: export MKLROOT=... LD_LIBRARY_PATH=...
#   cargo build --release --features mkl
# PREFIX defaults to <repo>/.mkl (git-ignored), ~1.1 GB. libiomp5 is linked dynamically, so the
# binary needs PREFIX/lib on LD_LIBRARY_PATH (or build with RUSTFLAGS="-C link-arg=-Wl,-rpath,PREFIX/lib").
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PREFIX=${1:-${MKL_PREFIX:-$here/.mkl}}
PY=${PYTHON:-python3}
if [ ! -f "$PREFIX/include/mkl.h" ] || [ ! -f "$PREFIX/lib/libmkl_core.a" ]; then
  echo "install-mkl: installing mkl-static, mkl-include, intel-openmp into $PREFIX" >&2
  "$PY" -m pip install --quiet --disable-pip-version-check --no-deps --prefix "$PREFIX" \
    mkl-static mkl-include intel-openmp >&2
fi
echo "export MKLROOT=$PREFIX"
echo "export LD_LIBRARY_PATH=$PREFIX/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
