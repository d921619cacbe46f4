//! Training: encoders that carry a frozen LLM block (PAPER.md §2–§5), and the `train` and
//! `eval` stages that run them on token shards. The rooms, and what may depend on what
//! (each imports only from rooms listed before it):
//!
//! - `block/`: the LLM block (named weights, forward, the frozen node's backward, the width
//!   adapters, shape-only weights for the dry run). Depends on `llm::block_format` and `ops/`.
//! - `ops/`: numerical building blocks: attention (full and memory-efficient), activation
//!   checkpointing, mixed precision, mixing and the video augmentation.
//! - `models/`: PointBERT, the VideoMAE ViT and VectorNet, and the layers they share
//!   (`layers.rs`), each the model only. Depend on `block/`, `ops/`.
//! - `data/`: shard-backed data sets, one per data kind, over `ShardSet`.
//! - `optim.rs` (AdamW), `schedule.rs` (lr schedules behind one trait), `device.rs`
//!   (`--device`), `init.rs` (pretrained encoder checkpoints, key by key; `init_llama.rs` the
//!   LLaMA layers of a ViT-LLaMA checkpoint), `dist/`
//!   (data-parallel jobs), `checkpoint.rs` (work-unit checkpoints).
//! - `recipe.rs` (a task's defaults, features, presets), `params.rs` (a stage's TOML resolved
//!   against its task's recipe, and the value checks every task shares).
//! - `task/`: **one file per task behind one `Task` trait**: its data kind, recipe, data,
//!   model, batch, loss, metrics (with the sums an all-reduce needs), dry-run shapes and
//!   costs, log line and plots. `classify.rs` holds what the classification tasks share.
//! - Generic over `Task`: `assemble.rs` (which block core a mode builds, the model around it:
//!   shared by train, eval, the dry run and the benches), `groups.rs` (optimizer groups),
//!   `step.rs` (backward and update), `evaluate.rs`, `trainer.rs` (the loop only), `eval.rs`
//!   (the eval stage's run), `plan/` (the dry run's counts and costs), `bench.rs`.
//! - `registry.rs`: data kind → task, and the one object-safe view of a task (`DynTask`).
//! - `stage.rs`: the `train`/`eval` Stage impls and their config checks (the one lookup of
//!   the task by data kind); `dry_run.rs`: `--dry-run`; `bench_allreduce.rs`.
//!
//! **Adding a task** (e.g. images): its task file under `task/` implementing `Task`, its data
//! file under `data/` and model file under `models/`, and one line in `registry.rs`'s
//! `BUILTIN`. Nothing in `trainer.rs`, `eval.rs`, `plan/`, `bench.rs`, `stage.rs` or the
//! pipeline engine changes: the train stage declares the task's extra files itself. A test
//! shows it: `task_toy_tests.rs` registers a toy regression task at run time, and it trains
//! and evaluates end to end.
//!
//! `block/`, `models/`, `ops/` and `optim.rs` import nothing from `lm4ve_pipeline`.

pub mod assemble;
pub mod bench;
pub mod bench_allreduce;
pub mod bench_inputs;
pub mod block;
mod checkpoint;
pub mod data;
pub mod device;
pub mod dist;
pub mod dry_run;
pub mod ema;
pub mod eval;
pub mod evaluate;
pub mod groups;
mod heap;
pub mod init;
#[cfg(test)]
mod init_deit_tests;
pub mod init_llama;
#[cfg(test)]
mod init_rules_fixture_tests;
#[cfg(test)]
mod init_rules_tests;
#[cfg(test)]
mod init_tests;
#[cfg(test)]
mod layout_tests;
pub mod models;
pub mod ops;
pub mod optim;
pub mod params;
pub mod plan;
pub mod pos_embed;
pub mod predictions;
pub mod recipe;
pub mod registry;
pub mod sampler;
pub mod schedule;
pub mod stage;
pub mod step;
pub mod task;
#[cfg(test)]
mod task_toy_tests;
pub mod trainer;
#[cfg(test)]
mod vit_llama_fixture_tests;
