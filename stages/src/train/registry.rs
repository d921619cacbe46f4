//! The tasks this build knows, by the data kind each trains on, behind one object-safe
//! interface ([`DynTask`]) that the `train` and `eval` stages, the dry run and the benches
//! call. Every [`Task`] is a `DynTask` through the one generic impl below, which is where
//! the generic trainer, eval, dry run and benches meet a task's types.
//!
//! A new task is its task file and one line in [`BUILTIN`]. Out-of-tree tasks (and the
//! tests' toy task) join with [`register`].

use super::bench::{self, BenchModel, BenchSpec};
use super::eval::EvalJob;
use super::params::{EvalParams, TrainParams};
use super::plan::{self, TrainPlan};
use super::task::forecast;
use super::task::image::Image;
use super::task::pointcloud::PointCloud;
use super::task::video::Video;
use super::task::{Task, TaskInfo};
use super::trainer::TrainJob;
use anyhow::Result;
use candle_core::Device;
use lm4ve_pipeline::{PipelineConfig, StageCtx, UnitOutput, UnitPlan};
use std::sync::RwLock;

/// A task without its types: what the stages, the dry run and the benches call.
pub trait DynTask: TaskInfo {
    /// The `[model]` table typed (null = every default) and serialized again: what the key
    /// and the manifest hold. The error names the model.
    fn model_config(&self, raw: &serde_json::Value) -> Result<serde_json::Value, String>;
    /// One work unit of the `train` stage `name`.
    fn train_unit(
        &self,
        name: &str,
        p: &TrainParams,
        model: &serde_json::Value,
        ctx: &StageCtx,
        unit: &UnitPlan,
        out: &mut UnitOutput,
    ) -> Result<()>;
    /// The `eval` stage's one unit.
    fn eval_unit(
        &self,
        p: &EvalParams,
        split: &str,
        batch_size: usize,
        ctx: &StageCtx,
        out: &mut UnitOutput,
    ) -> Result<()>;
    /// The dry run of the `train` stage `name`.
    fn plan(
        &self,
        name: &str,
        p: &TrainParams,
        model: &serde_json::Value,
        config: &PipelineConfig,
        cuda: bool,
    ) -> Result<TrainPlan>;
    /// The models `lm4ve bench-train` steps for this task.
    fn bench_models(&self) -> Vec<BenchModel>;
    /// One benchmark of a training step (`bench::run`).
    fn bench(&self, spec: &BenchSpec, device: &Device) -> Result<serde_json::Value>;
    /// A benchmark model's trainable parameters (`bench::trainable_vars`).
    fn bench_vars(&self, spec: &BenchSpec, device: &Device) -> Result<Vec<candle_core::Var>>;
    /// Files a `train` artifact of this task may hold beyond the common ones.
    fn extra_files(&self) -> &'static [&'static str];
}

impl<T: Task> DynTask for T {
    fn model_config(&self, raw: &serde_json::Value) -> Result<serde_json::Value, String> {
        let raw = if raw.is_null() {
            serde_json::json!({})
        } else {
            raw.clone()
        };
        let typed: T::Config = serde_json::from_value(raw)
            .map_err(|e| format!("[model] of a {} model: {e}", self.model_title()))?;
        serde_json::to_value(&typed).map_err(|e| e.to_string())
    }

    fn train_unit(
        &self,
        name: &str,
        p: &TrainParams,
        model: &serde_json::Value,
        ctx: &StageCtx,
        unit: &UnitPlan,
        out: &mut UnitOutput,
    ) -> Result<()> {
        let model: T::Config = serde_json::from_value(model.clone())?;
        TrainJob {
            task: self,
            name,
            p,
            model: &model,
        }
        .train_unit(ctx, unit, out)
    }

    fn eval_unit(
        &self,
        p: &EvalParams,
        split: &str,
        batch_size: usize,
        ctx: &StageCtx,
        out: &mut UnitOutput,
    ) -> Result<()> {
        EvalJob {
            task: self,
            p,
            split,
            batch_size,
        }
        .eval_unit(ctx, out)
    }

    fn plan(
        &self,
        name: &str,
        p: &TrainParams,
        model: &serde_json::Value,
        config: &PipelineConfig,
        cuda: bool,
    ) -> Result<TrainPlan> {
        let model: T::Config = serde_json::from_value(model.clone())?;
        plan::plan_train(self, name, p, &model, config, cuda)
    }

    fn bench_models(&self) -> Vec<BenchModel> {
        Task::bench_models(self)
            .iter()
            .map(|&size| BenchModel {
                data_kind: self.data_kind(),
                size,
            })
            .collect()
    }

    fn bench(&self, spec: &BenchSpec, device: &Device) -> Result<serde_json::Value> {
        bench::run(self, spec, device)
    }

    fn bench_vars(&self, spec: &BenchSpec, device: &Device) -> Result<Vec<candle_core::Var>> {
        bench::trainable_vars(self, spec, device)
    }

    fn extra_files(&self) -> &'static [&'static str] {
        Task::extra_files(self)
    }
}

/// The tasks of this build, in the order messages list them.
static BUILTIN: [&dyn DynTask; 5] = [&PointCloud, &Video, &forecast::AV1, &Image, &forecast::AV2];

/// Tasks added at run time ([`register`]).
static REGISTERED: RwLock<Vec<&'static dyn DynTask>> = RwLock::new(Vec::new());

/// Adds a task (for out-of-tree tasks and tests). A task whose data kind is already known
/// replaces nothing: the first one registered for a kind is the one used.
pub fn register(task: &'static dyn DynTask) {
    if let Ok(mut r) = REGISTERED.write() {
        r.push(task);
    }
}

/// Every task, built-in first.
pub fn tasks() -> Vec<&'static dyn DynTask> {
    let mut all: Vec<&'static dyn DynTask> = BUILTIN.to_vec();
    if let Ok(r) = REGISTERED.read() {
        all.extend(r.iter().copied());
    }
    all
}

/// The task that trains on data of `kind`; None if that kind writes no training data.
pub fn for_data_kind(kind: &str) -> Option<&'static dyn DynTask> {
    tasks().into_iter().find(|t| t.data_kind() == kind)
}

/// The data kinds a `train` stage can read, for messages.
pub fn data_kinds() -> Vec<&'static str> {
    tasks().iter().map(|t| t.data_kind()).collect()
}

/// The task that owns the preset `name`.
pub fn preset_owner(name: &str) -> Option<&'static dyn DynTask> {
    tasks().into_iter().find(|t| t.preset(name).is_some())
}

/// Every preset name, for messages.
pub fn preset_names() -> Vec<&'static str> {
    tasks()
        .iter()
        .flat_map(|t| t.preset_names().iter().copied())
        .collect()
}

/// `pipeline show`'s lines for an eval artifact's metrics: each task's summary of them, once
/// each (the classification tasks share theirs).
pub fn metrics_summary(metrics: &serde_json::Value) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for line in tasks().iter().filter_map(|t| t.metrics_summary(metrics)) {
        if !lines.contains(&line) {
            lines.push(line);
        }
    }
    lines
}

/// Every model `lm4ve bench-train` can step.
pub fn bench_models() -> Vec<BenchModel> {
    tasks().iter().flat_map(|t| t.bench_models()).collect()
}

/// The bench model called `name`.
pub fn bench_model(name: &str) -> Option<BenchModel> {
    bench_models().into_iter().find(|m| m.name() == name)
}

fn task_of_bench(model: &BenchModel) -> Result<&'static dyn DynTask> {
    for_data_kind(model.data_kind)
        .ok_or_else(|| anyhow::anyhow!("no task trains on {} data", model.data_kind))
}

/// Runs one benchmark of a training step.
pub fn run_bench(spec: &BenchSpec, device: &Device) -> Result<serde_json::Value> {
    task_of_bench(&spec.model)?.bench(spec, device)
}

/// A benchmark model's trainable parameters, in the trainer's order.
pub fn bench_vars(spec: &BenchSpec, device: &Device) -> Result<Vec<candle_core::Var>> {
    task_of_bench(&spec.model)?.bench_vars(spec, device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::block::BlockMode;
    use crate::train::ops::attention::AttnImpl;
    use crate::train::ops::precision::Precision;

    #[test]
    fn every_data_kind_has_one_task_and_the_bench_models_keep_their_names() {
        assert_eq!(
            data_kinds(),
            vec![
                "pc.tokens",
                "ssv2.tokens",
                "av.tokens",
                "image.tokens",
                "av2.tokens"
            ]
        );
        let names: Vec<&str> = bench_models().iter().map(|m| m.name()).collect();
        assert_eq!(
            names,
            vec!["pointbert", "vit-s", "vit-b", "vectornet", "deit-s"]
        );
        assert_eq!(
            &preset_names()[..3],
            &[
                "videomae_ssv2_vit_s",
                "videomae_ssv2_vit_b",
                "vit_llama_tiny_patch16_224"
            ]
        );
        assert_eq!(
            preset_owner("vit_llama_base_patch32_224").map(|t| t.name()),
            Some("image")
        );
        assert_eq!(
            preset_owner("videomae_ssv2_vit_b").map(|t| t.name()),
            Some("video")
        );
    }

    #[test]
    fn every_model_steps_at_tiny_size() {
        for name in ["pointbert", "vit-s", "vectornet", "deit-s"] {
            let model = bench_model(name).unwrap();
            for mode in [
                BlockMode::Frozen,
                BlockMode::None,
                BlockMode::Trainable,
                BlockMode::RandomTrained,
                BlockMode::Mlp,
            ] {
                let spec = BenchSpec {
                    model,
                    batch: 2,
                    iters: 1,
                    warmup: 0,
                    mode,
                    tiny: true,
                    attn: AttnImpl::Chunked,
                    checkpoint: true,
                    precision: (mode == BlockMode::Frozen).then_some(Precision::F16),
                };
                let r = run_bench(&spec, &Device::Cpu).unwrap();
                assert!(r["ms_per_step_median"].as_f64().unwrap() > 0.0);
                let p = &r["params"];
                let (enc, blk, tr) = (
                    p["encoder"].as_u64().unwrap(),
                    p["block"].as_u64().unwrap(),
                    p["trainable"].as_u64().unwrap(),
                );
                match mode {
                    BlockMode::Trainable | BlockMode::RandomTrained | BlockMode::Mlp => {
                        assert_eq!(tr, enc + blk, "{name}")
                    }
                    BlockMode::None => assert_eq!(blk, 0),
                    _ => assert_eq!(tr, enc, "{name}: the frozen block is not trained"),
                }
            }
        }
    }
}
