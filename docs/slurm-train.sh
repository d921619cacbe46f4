#!/usr/bin/env bash
# Data-parallel training of one lm4ve `train` stage on several GPU nodes under Slurm: one
# process per GPU, NCCL between them (README.md, "Training on many GPUs").
#
#   sbatch docs/slurm-train.sh                       # 2 nodes x 8 GPUs = 16 ranks
#   sbatch --nodes=4 docs/slurm-train.sh             # 32 ranks, same global batch
#
# The stage's `batch_size` is the global batch (per-GPU batch = batch_size / ranks), so its
# key, and the model it trains up to float summation order, do not change with the node
# count. Rank 0 writes a checkpoint after every `epochs_per_checkpoint` epochs; a job that
# dies (node failure, time limit, preemption) is simply resubmitted (or requeued, below) and
# every rank resumes from the last checkpoint.
#
# Needs: an lm4ve built with `--features nccl` (README, CUDA), the same config and data paths
# on every node, and one cache directory every node mounts (below).
#
#SBATCH --job-name=lm4ve-train-ssv2
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=8
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=12
#SBATCH --time=24:00:00
#SBATCH --requeue
#SBATCH --output=logs/%x-%j.out
set -euo pipefail

CONFIG=${CONFIG:-configs/pipeline.toml}
STAGE=${STAGE:-train_ssv2}
# The stages it reads (its `data` and `block` params).
UPSTREAM=${UPSTREAM:-ssv2_tokens llm_block_15}
# Every rank reads the upstream shards and the previous checkpoint from here, and rank 0
# commits to it: a shared filesystem (NFS, Lustre, GPFS), not node-local scratch.
export LM4VE_CACHE=${LM4VE_CACHE:-/shared/$USER/lm4ve-cache}
# Data-loading threads per rank (augmentation and JPEG decoding run on the CPU).
export LM4VE_THREADS=${SLURM_CPUS_PER_TASK:-12}

# The rendezvous: rank 0's host and a free port. lm4ve reads SLURM_PROCID / SLURM_NTASKS /
# SLURM_LOCALID itself and defaults MASTER_ADDR to the first host of the step's node list.
export MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
export MASTER_PORT=${MASTER_PORT:-29500}

# 1. What the training needs (shards, the LLM block), once, from one process: a
#    data-parallel launch only trains and refuses to build upstream stages. Cached: a no-op
#    when already built (or pulled from the team's remote cache).
for up in $UPSTREAM; do
  srun --nodes=1 --ntasks=1 --gpus=0 lm4ve -c "$CONFIG" pipeline run --stage "$up"
done

# 2. Every rank: one GPU each (its SLURM_LOCALID), NCCL over the rendezvous above. If any rank
#    fails, Slurm stops the others instead of leaving them waiting in a collective.
srun --kill-on-bad-exit=1 --cpu-bind=cores \
  lm4ve -c "$CONFIG" --device cuda pipeline run --stage "$STAGE"

# 3. Evaluation (the ranks share the test set; rank 0 writes the metrics).
srun --kill-on-bad-exit=1 lm4ve -c "$CONFIG" --device cuda pipeline run --stage "${STAGE/train/eval}"
