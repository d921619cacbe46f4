# lm4ve — the two commands of the quick start are `make demo` and `make test`.
CARGO ?= cargo
PYTHON ?= python3
BIN := target/release/lm4ve
export PYTHON

# MKL=1 links Intel MKL for the CPU matmuls (issue 28, BENCHMARKS.md "Training step through a
# frozen LLaMA block"): scripts/install-mkl.sh installs it from PyPI wheels into .mkl/ once
# (~1.1 GB); patches/intel-mkl-src links it and libiomp5 statically (no library path needed at
# run time); build, test and lint then use the same features (one compile). Not the default:
# the default build's gemm is as fast at the demo's thread counts (block step 0.88x PyTorch at
# 2 threads, BENCHMARKS.md) and needs no 1.1 GB download. candle's MKL matmul refuses strided
# operands (MatMulUnexpectedStriding); the MKL build makes those the models pass contiguous
# (stages/src/train/ops/mkl_layout.rs).
MKL ?= 0
MKL_ENV = mkl_env="$$(bash scripts/install-mkl.sh)" && eval "$$mkl_env" &&
ifeq ($(MKL),1)
FEATURES := --features mkl
WITH_MKL = $(MKL_ENV)
else
FEATURES :=
WITH_MKL :=
endif

.PHONY: all deps pydeps build build-mkl demo test lint fuzz bench bench-block bench-block-mkl clean-demo

all: build

deps:
	@bash scripts/install-deps.sh

pydeps:
	@bash scripts/install-py.sh numpy zstandard h5py 'moto[server]' blake3

build: deps
	$(WITH_MKL) $(CARGO) build --release --locked $(FEATURES)

# Writes the synthetic demo datasets and runs the whole pipeline on them.
demo: build
	$(BIN) demo-data --out demo-data
	@bash scripts/fetch-smollm2.sh demo-data/models
	$(BIN) -c configs/demo.toml pipeline run --stage all --concurrent-stages 2
	$(BIN) -c configs/demo.toml pipeline status
	$(BIN) -c configs/demo.toml pipeline show pc_tokens
	@echo "== point clouds: frozen SmolLM2 block vs no block (PAPER.md §3 baseline), demo test split:"
	@printf 'frozen  '; $(BIN) -c configs/demo.toml pipeline show eval_pc | grep accuracy
	@printf 'none    '; $(BIN) -c configs/demo.toml pipeline show eval_pc_none | grep accuracy
	@echo "== video (SSv2 format, VP9 webm): ViT + frozen block, demo validation split:"
	@$(BIN) -c configs/demo.toml pipeline show eval_ssv2 | grep accuracy
	@echo "== motion forecasting (Argoverse format): VectorNet + frozen block, demo val split:"
	@$(BIN) -c configs/demo.toml pipeline show eval_av | grep forecast
	@echo "== images (ImageNet folder layout): tiny ViT, frozen SmolLM2 block vs no block (PAPER.md §6), demo val split:"
	@printf 'frozen  '; $(BIN) -c configs/demo.toml pipeline show 'eval_image@mode=frozen' | grep accuracy
	@printf 'none    '; $(BIN) -c configs/demo.toml pipeline show 'eval_image@mode=none' | grep accuracy

# The point-cloud claim as a study: frozen / random / none x 3 seeds on the demo data (about
# 15 minutes on 2 cores; shares the demo's cache), then the table pooled over seeds and plots.
.PHONY: demo-study
demo-study: build
	$(BIN) demo-data --out demo-data
	@bash scripts/fetch-smollm2.sh demo-data/models
	$(BIN) -c configs/demo-study.toml pipeline run --stage all
	$(BIN) -c configs/demo-study.toml pipeline report --format markdown --plot demo-study-plots

# Issue 12's video proof as a study: today's cached views vs the reference's SSv2 recipe, from
# scratch and fine-tuned from a pretrained ViT, 2 seeds, 900 validation clips (about 4 hours
# on 2 cores; shares the demo's cache). The table pooled over seeds, and plots.
STUDY_DATA_FLAGS := --pc-train-per-class 1 --pc-test-per-class 1 --av-train 0 --av-val 0
.PHONY: study-video
study-video: build
	$(BIN) demo-data --out study-data/video --video-val-per-class 100 $(STUDY_DATA_FLAGS)
	$(BIN) demo-data --out study-data/video-pre --seed 1 --video-train-per-class 200 --video-val-per-class 5 $(STUDY_DATA_FLAGS)
	@bash scripts/fetch-smollm2.sh demo-data/models
	$(BIN) -c configs/study-video.toml pipeline run --stage all
	$(BIN) -c configs/study-video.toml pipeline report --format markdown --plot study-video-plots

# Unit tests, then end-to-end tests that drive the release binary (built once).
test: deps pydeps
	$(WITH_MKL) $(CARGO) build --release --locked $(FEATURES)
	$(WITH_MKL) $(CARGO) test --release --locked --workspace $(FEATURES)

lint: deps
	$(CARGO) fmt --all -- --check
	$(WITH_MKL) $(CARGO) clippy --release --locked --workspace --all-targets $(FEATURES) -- -D warnings

# The fuzz suite (fuzz/): every reader of files and peers' records, FUZZ_SECONDS (default
# 60) per target, corpus seeded from real files. Not part of `make test` (about 15 min).
fuzz: build
	bash fuzz/run.sh

# Every benchmark that needs no GPU, each side by side with its anchor, ending with one table
# of ratios (also benches/work/summary.md); `QUICK=1 make bench` for small sizes (minutes).
# A failed "same numbers?" check fails the target; results go to BENCHMARKS.md by hand.
bench: build
	@bash scripts/install-py.sh numpy h5py zstandard
	@bash scripts/install-py.sh dvc || echo "dvc not installed: the no-op row has no anchor"
	bash benches/run.sh

# ssv2_tokens vs the ffmpeg CLI, PyAV and decord on the same clips (installs av, decord).
.PHONY: bench-video
bench-video: build
	bash benches/run.sh video

# Pull of a ~2 GB artifact from a directory and an S3 (moto) remote vs cp / aws s3 cp,
# and the no-op run's overhead with a remote configured (installs moto[server], awscli, blake3).
.PHONY: bench-remote
bench-remote: build
	@bash scripts/install-py.sh 'moto[server]' awscli blake3 boto3
	bash benches/remote.sh

# One step through a LLaMA-7B block: lm4ve frozen / naive vs PyTorch (installs torch, ~5 GB).
bench-block: build
	bash benches/block_step.sh

# The MKL build (target/mkl) beside the default build (candle's gemm) and PyTorch, one run.
build-mkl: deps
	$(MKL_ENV) $(CARGO) build --release --locked --features mkl --target-dir target/mkl

bench-block-mkl: build-mkl build
	BIN=target/mkl/release/lm4ve GEMM_BIN=$(BIN) bash benches/block_step.sh

# The CUDA build (candle's kernels through cudarc), with NVIDIA's CUDA 13.0 compiler wheels from
# PyPI when the machine has no toolkit: 7 min on 2 cores the first time here (2026-11-28). The binary lands in
# target/cuda/release/lm4ve; `strip` it (~70 MB) to carry it to a GPU machine. It includes NCCL
# (data-parallel training, README "Training on many GPUs"): carry .cuda-toolchain/nvidia/nccl/lib/
# libnccl.so.2 along if the GPU machine has no NCCL. CUDA_FEATURES=cuda builds without NCCL.
CUDA_FEATURES ?= nccl
.PHONY: build-cuda bench-gpu
build-cuda: deps
	eval "$$(bash scripts/install-cuda-toolchain.sh)" && $(CARGO) build --release --locked --features $(CUDA_FEATURES) --target-dir target/cuda

# On a machine with an NVIDIA GPU and PyTorch (+ timm): every model's training step at the
# paper's sizes, lm4ve beside PyTorch running the reference code's own model definitions.
# LM4VE_REF must name a checkout of ziqipang/LM4VisualEncoding. Prints the BENCHMARKS.md table.
bench-gpu:
	@test -n "$$LM4VE_REF" || { echo "set LM4VE_REF to a checkout of ziqipang/LM4VisualEncoding"; exit 2; }
	@test -x "$${BIN:-target/cuda/release/lm4ve}" || { echo "no CUDA build: run make build-cuda (or set BIN)"; exit 2; }
	bash benches/gpu.sh

clean-demo:
	rm -rf demo-data cache/objects cache/artifacts cache/runs cache/locks cache/tmp cache/stat-cache.tsv cache/stat-cache.bin
