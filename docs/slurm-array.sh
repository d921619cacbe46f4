#!/usr/bin/env bash
# One lm4ve stage spread over a Slurm array: each task computes its share of the work units
# (`--part i/n`: the units with hash(unit id) mod n == i) and pushes them to the team's remote
# cache; a last job assembles the artifact from the published units.
#
#   jid=$(sbatch --parsable docs/slurm-array.sh)
#   sbatch --dependency=afterok:$jid --wrap \
#     'lm4ve -c configs/pipeline.toml pipeline run --stage ssv2_tokens --assemble --push'
#
# --assemble never computes on the assembling node: it fails naming the missing units (and a
# failed task can simply be resubmitted with `sbatch --array=<i> docs/slurm-array.sh`).
# Afterwards any machine with the same config and data pulls the artifact:
#   lm4ve pipeline run --stage all
#
#SBATCH --job-name=lm4ve-ssv2-tokens
#SBATCH --array=0-63
#SBATCH --cpus-per-task=16
#SBATCH --mem=32G
#SBATCH --time=04:00:00
#SBATCH --output=logs/%x-%A_%a.out
set -euo pipefail

# The shared cache: S3 (credentials from AWS_* or ~/.aws), a WebDAV server, or a shared
# directory every node mounts (file:///mnt/nfs/lm4ve-cache).
export LM4VE_REMOTE=${LM4VE_REMOTE:-s3://lab-bucket/lm4ve}
# The local cache on node-local scratch; keep it between jobs if you can: it holds the stat
# cache, so inputs are not re-hashed by the next job on this node.
export LM4VE_CACHE=${LM4VE_CACHE:-${SLURM_TMPDIR:-/tmp}/lm4ve-cache}
export LM4VE_THREADS=${SLURM_CPUS_PER_TASK:-16}

# The raw data must have the same bytes on every node (any path: keys hash content, not
# locations); the config's paths point at it.
srun lm4ve -c configs/pipeline.toml pipeline run --stage ssv2_tokens \
  --part "${SLURM_ARRAY_TASK_ID}/${SLURM_ARRAY_TASK_COUNT}"
