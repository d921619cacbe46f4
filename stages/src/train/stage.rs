//! Stages `train` (an encoder + LLM block on token shards: PointBERT on `pc.tokens`, the
//! VideoMAE ViT on `ssv2.tokens`, VectorNet on `av.tokens`; see `task.rs`) and `eval` (the
//! trained model's metrics on the held-out split): their params and Stage impls. The loop is
//! in `trainer.rs`, the checkpoints in `checkpoint.rs`. Training units are checkpoints: each unit trains
//! `epochs_per_checkpoint` epochs starting from the previous unit's checkpoint (weights,
//! AdamW moments, step; the shuffle and augmentation RNGs derive from (seed, epoch/step), so
//! the step is the whole RNG state and the epoch is the data cursor). A killed run resumes
//! from the last checkpoint and reaches the same weights as an uninterrupted one.

use super::block::BlockMode;
use super::ops::attention::AttnImpl;
use super::ops::precision::Precision;
use super::task::{evaluate, Dataset, ModelConfig, Task};
use super::trainer::{build_model, num_classes, sorted_vars, EpochMetrics};
use anyhow::{Context, Result};

use lm4ve_pipeline::{
    ConfigError, PipelineConfig, Stage, StageConfig, StageCtx, UnitOutput, UnitPlan, UnitRecord,
};
use serde::{Deserialize, Serialize};

pub const TRAIN_KIND: &str = "train";
pub const EVAL_KIND: &str = "eval";
/// Bump when trained weights would change for the same inputs and params.
/// 2: gradients flow through the ViT and VectorNet attention probabilities (candle's
/// `softmax_last_dim` has no backward, so q and k had received none).
pub const TRAIN_VERSION: u32 = 2;
pub const EVAL_VERSION: u32 = 1;

fn d_mode() -> BlockMode {
    BlockMode::Frozen
}
fn d_epochs() -> usize {
    300
}
fn d_warmup() -> usize {
    10
}
fn d_batch() -> usize {
    32
}
fn d_lr() -> f64 {
    5e-4
}
fn d_min_lr() -> f64 {
    1e-6
}
fn d_wd() -> f64 {
    0.05
}
fn d_clip() -> f64 {
    10.0
}
fn d_smoothing() -> f64 {
    0.2
}
fn d_adapter_lr() -> f64 {
    0.5
}
fn d_no_decay_lr() -> f64 {
    0.1
}
fn d_per_ckpt() -> usize {
    10
}

/// `[stages.NAME.params]` of a `train` stage.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainParams {
    /// The stage whose shards to train on: `pc.tokens` (PointBERT) or `ssv2.tokens` (video ViT).
    pub data: String,
    /// The `llm.block` stage (needed unless mode = "none").
    pub block: Option<String>,
    /// frozen (pretrained, default) | random (same shapes, seeded init, frozen) | trainable | none.
    #[serde(default = "d_mode")]
    pub mode: BlockMode,
    /// Model sizes: a PointBERT or a video ViT config, by the kind of `data` (see `task.rs`).
    #[serde(default)]
    pub model: serde_json::Value,
    #[serde(default = "d_epochs")]
    pub epochs: usize,
    #[serde(default = "d_warmup")]
    pub warmup_epochs: usize,
    #[serde(default = "d_batch")]
    pub batch_size: usize,
    #[serde(default = "d_lr")]
    pub lr: f64,
    #[serde(default = "d_min_lr")]
    pub min_lr: f64,
    #[serde(default = "d_wd")]
    pub weight_decay: f64,
    /// Global gradient-norm clip (0 = off).
    #[serde(default = "d_clip")]
    pub grad_clip: f64,
    #[serde(default = "d_smoothing")]
    pub label_smoothing: f64,
    /// lr multiplier of the two adapters around the block (the reference code: 0.5).
    #[serde(default = "d_adapter_lr")]
    pub adapter_lr_scale: f64,
    /// lr multiplier of parameters without weight decay (the reference code: 0.1).
    #[serde(default = "d_no_decay_lr")]
    pub no_decay_lr_scale: f64,
    /// Epochs per work unit (= per checkpoint).
    #[serde(default = "d_per_ckpt")]
    pub epochs_per_checkpoint: usize,
    #[serde(default)]
    pub seed: u64,
    /// `full` (default) or `chunked`: memory-efficient attention that keeps no [B, H, T, T]
    /// for the backward (same values to float rounding; see `train::attention`).
    #[serde(default, skip_serializing_if = "AttnImpl::is_default")]
    pub attention: AttnImpl,
    /// Recompute each encoder block in the backward instead of keeping its activations
    /// (same gradients; see `train::recompute`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub checkpoint_blocks: bool,
    /// `f32` | `bf16` | `f16` (with dynamic loss scaling): the matmul precision of the whole
    /// model. Unset: the encoder in f32 and a frozen block in bf16 on CUDA only. See
    /// `train::precision`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precision: Option<Precision>,
}

/// Lets a new boolean param default to false without changing existing artifact keys.
fn is_false(b: &bool) -> bool {
    !*b
}

pub struct TrainStage {
    pub(super) name: String,
    pub(super) p: TrainParams,
    pub(super) task: Task,
    pub(super) model: ModelConfig,
}

fn check_upstream_name(
    config: &PipelineConfig,
    sc: &StageConfig,
    key: &str,
    name: &str,
) -> Result<(), ConfigError> {
    if !config.stages.contains_key(name) {
        return Err(config.param_error(
            &sc.name,
            Some(key),
            format!("`{key} = \"{name}\"` names no stage in this config"),
        ));
    }
    Ok(())
}

/// The task of the stage `data` names (its kind must write training data).
fn task_of(config: &PipelineConfig, sc: &StageConfig, data: &str) -> Result<Task, ConfigError> {
    let kind = config
        .stages
        .get(data)
        .map(|d| d.kind.as_str())
        .unwrap_or_default();
    Task::of_data_kind(kind).ok_or_else(|| {
        config.param_error(
            &sc.name,
            Some("data"),
            format!(
                "`data = \"{data}\"` is a `{kind}` stage; it must name a pc.tokens or ssv2.tokens stage"
            ),
        )
    })
}

pub fn build_train(
    config: &PipelineConfig,
    sc: &StageConfig,
) -> Result<Box<dyn Stage>, ConfigError> {
    let p: TrainParams = config.typed_params(sc)?;
    check_upstream_name(config, sc, "data", &p.data)?;
    match (&p.block, p.mode) {
        (None, m) if m != BlockMode::None => {
            return Err(config.param_error(
                &sc.name,
                Some("mode"),
                "this mode needs `block = \"<an llm.block stage>\"` (or set mode = \"none\")"
                    .into(),
            ))
        }
        (Some(b), _) => check_upstream_name(config, sc, "block", b)?,
        _ => {}
    }
    if p.epochs == 0 || p.batch_size == 0 || p.epochs_per_checkpoint == 0 {
        return Err(config.param_error(
            &sc.name,
            Some("epochs"),
            "epochs, batch_size and epochs_per_checkpoint must be positive".into(),
        ));
    }
    let task = task_of(config, sc, &p.data)?;
    let model = task
        .model_config(&p.model)
        .map_err(|e| config.param_error(&sc.name, Some("model"), e))?;
    Ok(Box::new(TrainStage {
        name: sc.name.clone(),
        p,
        task,
        model,
    }))
}

impl TrainStage {
    pub(super) fn units(&self) -> usize {
        self.p.epochs.div_ceil(self.p.epochs_per_checkpoint)
    }

    pub(super) fn unit_id(k: usize) -> String {
        format!("ckpt-{k:05}")
    }
}

impl Stage for TrainStage {
    fn kind(&self) -> &str {
        TRAIN_KIND
    }
    fn version(&self) -> u32 {
        TRAIN_VERSION
    }
    fn key_params(&self) -> serde_json::Value {
        // Upstream stage names are in the key via the upstream keys; the rest as typed (the
        // model config with its defaults filled in, so spelling out a default changes nothing).
        let mut v = serde_json::to_value(&self.p).unwrap_or_default();
        v["model"] = serde_json::to_value(&self.model).unwrap_or_default();
        v
    }
    fn upstream(&self) -> Vec<String> {
        let mut u = vec![self.p.data.clone()];
        if let Some(b) = &self.p.block {
            if self.p.mode != BlockMode::None {
                u.push(b.clone());
            }
        }
        u
    }
    fn plan(&self, _ctx: &StageCtx) -> Result<Vec<UnitPlan>> {
        Ok((0..self.units())
            .map(|k| UnitPlan {
                id: Self::unit_id(k),
                work: self
                    .p
                    .epochs_per_checkpoint
                    .min(self.p.epochs - k * self.p.epochs_per_checkpoint)
                    as u64,
            })
            .collect())
    }

    fn run_unit(&self, ctx: &StageCtx, unit: &UnitPlan, out: &mut UnitOutput) -> Result<()> {
        self.train_unit(ctx, unit, out)
    }

    fn finish(&self, _ctx: &StageCtx, units: &[UnitRecord]) -> Result<serde_json::Value> {
        let last: Option<EpochMetrics> = units
            .last()
            .and_then(|u| {
                serde_json::from_value::<Vec<EpochMetrics>>(u.meta["epochs"].clone()).ok()
            })
            .and_then(|v| v.last().cloned());
        Ok(serde_json::json!({
            "task": self.task,
            "model": self.model,
            "mode": self.p.mode,
            "data": self.p.data,
            "block": self.p.block,
            "seed": self.p.seed,
            "final": last,
        }))
    }
}

// ---------------------------------------------------------------- eval

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalParams {
    /// The `train` stage whose model to evaluate.
    pub train: String,
    /// The data stage (`pc.tokens` / `ssv2.tokens`) with the held-out split.
    pub data: String,
    /// The `llm.block` stage the model was trained with (unless its mode was "none").
    pub block: Option<String>,
    /// Default: `test` for point clouds, `validation` for SSv2.
    pub split: Option<String>,
    #[serde(default = "d_batch")]
    pub batch_size: usize,
}

pub struct EvalStage {
    p: EvalParams,
    task: Task,
    split: String,
}

pub fn build_eval(
    config: &PipelineConfig,
    sc: &StageConfig,
) -> Result<Box<dyn Stage>, ConfigError> {
    let p: EvalParams = config.typed_params(sc)?;
    check_upstream_name(config, sc, "train", &p.train)?;
    check_upstream_name(config, sc, "data", &p.data)?;
    if let Some(b) = &p.block {
        check_upstream_name(config, sc, "block", b)?;
    }
    let task = task_of(config, sc, &p.data)?;
    let split = p
        .split
        .clone()
        .unwrap_or_else(|| task.eval_split().to_string());
    Ok(Box::new(EvalStage { p, task, split }))
}

impl Stage for EvalStage {
    fn kind(&self) -> &str {
        EVAL_KIND
    }
    fn version(&self) -> u32 {
        EVAL_VERSION
    }
    fn key_params(&self) -> serde_json::Value {
        serde_json::json!({"split": self.split, "batch_size": self.p.batch_size})
    }
    fn upstream(&self) -> Vec<String> {
        let mut u = vec![self.p.train.clone(), self.p.data.clone()];
        u.extend(self.p.block.iter().cloned());
        u
    }
    fn plan(&self, _ctx: &StageCtx) -> Result<Vec<UnitPlan>> {
        Ok(vec![UnitPlan {
            id: "eval".into(),
            work: 1,
        }])
    }
    fn run_unit(&self, ctx: &StageCtx, _unit: &UnitPlan, out: &mut UnitOutput) -> Result<()> {
        let device = super::device::device()?;
        let train = &ctx.upstream[&self.p.train];
        let meta = &train.manifest.meta;
        anyhow::ensure!(
            meta.get("model").is_some(),
            "`train` must name a train stage (its manifest has no model config)"
        );
        let cfg = self
            .task
            .model_config(&meta["model"])
            .map_err(|e| anyhow::anyhow!("the train stage's model does not fit `data`: {e}"))?;
        let mode: BlockMode =
            serde_json::from_value(meta["mode"].clone()).context("train manifest lacks mode")?;
        let seed = meta["seed"].as_u64().unwrap_or(0);
        let data = &ctx.upstream[&self.p.data];
        let classes = if self.task.is_classification() {
            num_classes(data)?
        } else {
            0
        };
        let block_up = self.p.block.as_ref().and_then(|b| ctx.upstream.get(b));
        if mode != BlockMode::None && block_up.is_none() {
            anyhow::bail!(
                "the model was trained with a {mode:?} block: set `block` to the llm.block stage"
            );
        }
        let set = Dataset::load(self.task, data, &self.split)?;
        anyhow::ensure!(!set.is_empty(), "split `{}` has no samples", self.split);
        let built = build_model(&cfg, &set, classes, mode, block_up, seed, &device)?;
        let weights_path = train
            .manifest
            .file_path(&train.manifest_path, "model.safetensors")
            .context("train artifact has no model.safetensors")?;
        let weights = candle_core::safetensors::load(&weights_path, &device)?;
        for (name, var) in sorted_vars(&built.varmap)?
            .iter()
            .chain(built.block_vars.iter())
        {
            let t = weights
                .get(name)
                .with_context(|| format!("{}: lacks `{name}`", weights_path.display()))?;
            var.set(t)?;
        }
        let mut metrics =
            evaluate(&built.model, &set, classes, self.p.batch_size, &device)?.metrics;
        metrics["split"] = self.split.clone().into();
        metrics["mode"] = serde_json::to_value(mode)?;
        out.add_file(
            "metrics.json",
            serde_json::to_string_pretty(&metrics)?.as_bytes(),
        )?;
        out.set_meta(metrics);
        Ok(())
    }
    fn finish(&self, _ctx: &StageCtx, units: &[UnitRecord]) -> Result<serde_json::Value> {
        Ok(units.first().map(|u| u.meta.clone()).unwrap_or_default())
    }
}
