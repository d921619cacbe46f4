#!/usr/bin/env bash
# Installs, only if missing, a CUDA 13.0 build toolchain from NVIDIA's PyPI wheels into a local
# prefix, so that `cargo build --release --features cuda` (candle-core/candle-nn 0.11 -> cudarc
# 0.19 + candle-kernels) works on a machine with no GPU and no system CUDA. The binary is meant to
# run on a GPU machine whose driver is 580 (CUDA 13.0): nvcc must be 13.0.x, since a 13.1+ nvcc
# emits PTX that driver cannot JIT.
#
# Usage:
#   eval "$(scripts/install-cuda-toolchain.sh [PREFIX])"     # install if needed + set the env
#   cargo build --release --features cuda
# PREFIX defaults to $CUDA_TOOLCHAIN_PREFIX or <repo>/.cuda-toolchain. Progress goes to stderr;
# stdout carries only the `export ...` lines. CUDA_COMPUTE_CAP (default 90 = H100) is passed
# through if already set. Safe to run again: a stamp file records what was installed.
#
# What ends up where (all under $PREFIX/nvidia/cu13, a CUDA_HOME-like tree):
#   bin/nvcc (+ptxas, fatbinary, nvlink), nvvm/bin/cicc, nvvm/libdevice, include (+crt, cccl),
#   lib/lib{cudart,nvrtc,curand,cublas,cublasLt}.so.* with unversioned .so links for the linker,
#   lib/stubs/libcuda.so: a stub of the driver API (SONAME libcuda.so.1, every call returns
#   CUDA_ERROR_STUB_LIBRARY) generated from cuda.h, for linking, and for running a cuda build here
#   to get an Err; the real libcuda.so.1 comes from the GPU machine's driver. Never put lib/stubs
#   on LD_LIBRARY_PATH on the GPU machine.
# The binary links libcuda.so.1, libcublas.so.13, libcublasLt.so.13, libcurand.so.10,
# libcudart.so.13 (candle-core sets cudarc's `dynamic-linking`), so the GPU machine needs the CUDA
# 13 runtime libs on its loader path (or copy $PREFIX/nvidia/cu13/lib/*.so.* next to the binary
# and point LD_LIBRARY_PATH at them, without lib/stubs).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PREFIX=${1:-${CUDA_TOOLCHAIN_PREFIX:-$here/.cuda-toolchain}}
PY=${PYTHON:-python3}

# Pinned to CUDA 13.0 (update 2) versions; all wheels install into nvidia/cu13/.
PKGS=(
  nvidia-cuda-nvcc==13.0.88
  nvidia-cuda-crt==13.0.88
  nvidia-nvvm==13.0.88
  nvidia-cuda-runtime==13.0.96
  nvidia-cuda-cccl==13.0.85
  nvidia-cuda-nvrtc==13.0.88
  nvidia-curand==10.4.0.35
  nvidia-cublas==13.0.2.14
  nvidia-nccl-cu13==2.27.7
)
# v3: NCCL (for `--features nccl`, data-parallel training), in nvidia/nccl/.
STAMP_VERSION=3

log() { echo "install-cuda-toolchain: $*" >&2; }

ROOT=$PREFIX/nvidia/cu13
NCCL=$PREFIX/nvidia/nccl
STAMP=$PREFIX/.installed
want_stamp=$(printf '%s\n' "stamp-v$STAMP_VERSION" "${PKGS[@]}")

installed_ok() {
  [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want_stamp" ] &&
    [ -x "$ROOT/bin/nvcc" ] && [ -x "$ROOT/nvvm/bin/cicc" ] &&
    [ -f "$ROOT/lib/stubs/libcuda.so" ] && [ -e "$ROOT/lib/libcublas.so" ] &&
    [ -e "$NCCL/lib/libnccl.so" ]
}

if ! installed_ok; then
  # nvcc drives the host compiler (g++) and we build the libcuda stub with gcc.
  if ! command -v g++ >/dev/null 2>&1; then
    log "installing g++"
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    $SUDO apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends g++ >&2
  fi

  log "installing ${PKGS[*]} into $PREFIX (about 1 GiB on disk)"
  mkdir -p "$(dirname "$PREFIX")"
  stage=$(mktemp -d "$PREFIX.tmp.XXXXXX")
  trap 'rm -rf "$stage"' EXIT
  # One pip call: with --target, a second call would not merge into the shared nvidia/ folder.
  # --no-deps: nvidia-cuda-nvcc's unpinned dependencies would pull the latest (13.1+) wheels.
  "$PY" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-deps --no-compile \
    --target "$stage" "${PKGS[@]}" >&2
  sroot=$stage/nvidia/cu13
  [ -x "$sroot/bin/nvcc" ] || { log "nvcc missing from $sroot/bin"; exit 1; }

  # Unversioned names for `-l...` at link time (wheels ship only the SONAME files).
  for so in "$sroot"/lib/lib*.so.*; do
    base=$(basename "$so")
    name=${base%%.so.*}
    case "$name" in *.alt) continue ;; esac
    [ -e "$sroot/lib/$name.so" ] || ln -s "$base" "$sroot/lib/$name.so"
  done
  [ -e "$stage/nvidia/nccl/lib/libnccl.so.2" ] || { log "libnccl.so.2 missing from the NCCL wheel"; exit 1; }
  ln -sf libnccl.so.2 "$stage/nvidia/nccl/lib/libnccl.so"

  # Stub of the driver API: every cu* function that cuda.h declares, under both the plain and
  # the _v2/_ptds/_ptsz names the macros map them to. Each returns CUDA_ERROR_STUB_LIBRARY (34),
  # like NVIDIA's own stub, so a cuda build can even be run here (no GPU) with
  # LD_LIBRARY_PATH=$ROOT/lib/stubs:$ROOT/lib and fail with an Err instead of a loader error.
  mkdir -p "$sroot/lib/stubs"
  {
    grep -ohE '\bcu[A-Z][A-Za-z0-9_]*[[:space:]]*\(' "$sroot/include/cuda.h" || true
    for defs in "" "-DCUDA_API_PER_THREAD_DEFAULT_STREAM=1"; do
      # shellcheck disable=SC2086
      gcc -E -P $defs -I"$sroot/include" -x c "$sroot/include/cuda.h" |
        grep -ohE '\bcu[A-Z][A-Za-z0-9_]*[[:space:]]*\(' || true
    done
  } | sed -E 's/[[:space:]]*\($//' | sort -u | sed -E 's/.*/int &(void) { return 34; }/' >"$stage/cuda_stub.c"
  nsyms=$(wc -l <"$stage/cuda_stub.c")
  [ "$nsyms" -gt 300 ] || { log "only $nsyms driver symbols found in cuda.h"; exit 1; }
  gcc -shared -fPIC -o "$sroot/lib/stubs/libcuda.so" -Wl,-soname,libcuda.so.1 "$stage/cuda_stub.c"
  ln -s libcuda.so "$sroot/lib/stubs/libcuda.so.1"
  log "generated libcuda stub with $nsyms symbols"

  # Smoke test: nvcc version and a PTX compile that uses runtime, fp16/bf16 and cub headers.
  ver=$("$sroot/bin/nvcc" --version | sed -n 's/.*release \([0-9.]*\),.*/\1/p')
  [ "$ver" = "13.0" ] || { log "nvcc reports release '$ver', expected 13.0"; exit 1; }
  cat >"$stage/t.cu" <<'CU'
#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <cub/cub.cuh>
extern "C" __global__ void k(__half *x) { x[threadIdx.x] = __float2half(1.0f); }
CU
  (cd "$stage" && PATH="$sroot/bin:$PATH" nvcc -arch=sm_90 --ptx -std=c++17 -o t.ptx t.cu >&2)
  grep -q '^\.version 9\.0' "$stage/t.ptx" || log "warning: unexpected PTX ISA: $(grep -m1 '^\.version' "$stage/t.ptx")"
  rm -f "$stage"/t.* "$stage/cuda_stub.c"

  printf '%s\n' "$want_stamp" >"$stage/.installed"
  rm -rf "$PREFIX"
  mv "$stage" "$PREFIX"
  trap - EXIT
  log "installed nvcc $ver in $ROOT"
else
  log "CUDA 13.0 toolchain already in $ROOT"
fi

cat <<EOF
export CUDA_ROOT="$ROOT"
export CUDA_HOME="$ROOT"
export CUDA_PATH="$ROOT"
export NVCC="$ROOT/bin/nvcc"
export PATH="$ROOT/bin:\${PATH}"
export LIBRARY_PATH="$ROOT/lib:$NCCL/lib:$ROOT/lib/stubs\${LIBRARY_PATH:+:\${LIBRARY_PATH}}"
export CUDARC_CUDA_VERSION=13000
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
# run a cuda build on this GPU-less machine (cuInit fails with CUDA_ERROR_STUB_LIBRARY):
#   LD_LIBRARY_PATH="$ROOT/lib/stubs:$ROOT/lib" ./target/release/BIN
# on the GPU machine, never use lib/stubs; if its CUDA 13 libs are missing, copy
#   $ROOT/lib/{libcudart.so.13,libcublas.so.13,libcublasLt.so.13,libcurand.so.10} there
#   (and $NCCL/lib/libnccl.so.2 for a --features nccl build)
EOF
