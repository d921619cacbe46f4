//! Training: encoders that carry a frozen LLM block (PAPER.md §2–§5), and the `train` and
//! `eval` stages that run them on token shards. The rooms, and what may depend on what:
//!
//! - `block/`: the LLM block (named weights, forward, the frozen node's backward, the width
//!   adapters). Depends on `llm::block_format` and `ops/` only.
//! - `models/`: PointBERT, the VideoMAE ViT and VectorNet, and the layers they share
//!   (`layers.rs`: norms, dropout, init, the ViT block and trunk). Depend on `block/`, `ops/`.
//! - `ops/`: numerical building blocks used by both: attention (full and memory-efficient),
//!   activation checkpointing, mixed precision.
//! - `data/`: shard-backed data sets, one per task, over `ShardSet`.
//! - `optim.rs` (AdamW, schedule), `device.rs` (`--device`); curves are drawn by `crate::plot`.
//! - `plan.rs`: the dry run of a train stage (parameter counts, memory, FLOPs), from configs
//!   alone.
//! - `task.rs`: what differs per task (model, batches, loss, metrics); `stage.rs`: the
//!   `train`/`eval` stages' params and Stage impls; `trainer.rs`: the epoch/step loop;
//!   `checkpoint.rs`: work-unit checkpoints. These know the pipeline engine; `bench.rs`:
//!   `lm4ve bench-train`.
//! - `dist/`: data-parallel jobs (so far the launch environment: torchrun, Slurm).
//! - `init.rs`: `init = "path"`, pretrained encoder weights (Point-BERT, VideoMAE) from
//!   PyTorch checkpoints, key by key with a `load_state_dict`-style report.
//!
//! `block/`, `models/`, `ops/` and `optim.rs` import nothing from `lm4ve_pipeline`.

pub mod bench;
pub mod bench_allreduce;
pub mod block;
mod checkpoint;
pub mod data;
pub mod device;
pub mod dist;
pub mod init;
#[cfg(test)]
mod init_tests;
pub mod models;
pub mod ops;
pub mod optim;
pub mod plan;
pub mod stage;
pub mod task;
mod trainer;
