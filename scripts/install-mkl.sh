#!/usr/bin/env bash
# Installs, only if missing, Intel MKL (static libraries + headers) and Intel OpenMP from
# PyPI wheels into a local prefix, for `cargo build --release --features mkl`
# (patches/intel-mkl-src links $MKLROOT/lib; nothing is downloaded at build time). The
# Makefile runs it for `make MKL=1 …` and build-mkl.
# Usage:
#   eval "$(scripts/install-mkl.sh [PREFIX])"        # prints: export MKLROOT=...
#   cargo build --release --features mkl
# PREFIX defaults to <repo>/.mkl (git-ignored), ~1.1 GB. The wheels' versions are pinned so a
# build links the MKL that was measured (BENCHMARKS.md). patches/intel-mkl-src links MKL and
# libiomp5 statically from PREFIX/lib: the binary needs no LD_LIBRARY_PATH or rpath.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PREFIX=${1:-${MKL_PREFIX:-$here/.mkl}}
PY=${PYTHON:-python3}
if [ ! -f "$PREFIX/include/mkl.h" ] || [ ! -f "$PREFIX/lib/libmkl_core.a" ] ||
   [ ! -f "$PREFIX/lib/libiomp5.a" ]; then
  echo "install-mkl: installing mkl-static, mkl-include, intel-openmp into $PREFIX" >&2
  "$PY" -m pip install --quiet --disable-pip-version-check --no-deps --prefix "$PREFIX" \
    mkl-static==2026.2.0 mkl-include==2026.2.1 intel-openmp==2026.2.0 >&2 || {
    echo "install-mkl: pip could not install MKL into $PREFIX; build without it (the default: make without MKL=1)" >&2
    exit 1
  }
fi
echo "export MKLROOT=$PREFIX"
