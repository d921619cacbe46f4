//! Stages `train` (an encoder + LLM block on token shards: PointBERT on `pc.tokens`, the
//! VideoMAE ViT on `ssv2.tokens`, VectorNet on `av.tokens`; see `task.rs`) and `eval` (the
//! trained model's metrics on the held-out split): their params and Stage impls. The loop is
//! in `trainer.rs`, the checkpoints in `checkpoint.rs`. Training units are checkpoints: each unit trains
//! `epochs_per_checkpoint` epochs starting from the previous unit's checkpoint (weights,
//! AdamW moments, step; the shuffle and augmentation RNGs derive from (seed, epoch/step), so
//! the step is the whole RNG state and the epoch is the data cursor). A killed run resumes
//! from the last checkpoint and reaches the same weights as an uninterrupted one.

use super::block::BlockMode;
use super::models::layers::Execution;
use super::ops::attention::AttnImpl;
use super::ops::precision::Precision;
use super::ops::video_aug::TrainAugment;
use super::task::{evaluate, Dataset, ModelConfig, Task};
use super::trainer::{build_model, num_classes, sorted_vars, EpochMetrics};
use anyhow::{Context, Result};

use lm4ve_pipeline::{
    ConfigError, InputSpec, PipelineConfig, Stage, StageConfig, StageCtx, UnitOutput, UnitPlan,
    UnitRecord,
};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

pub const TRAIN_KIND: &str = "train";
pub const EVAL_KIND: &str = "eval";
/// Bump when trained weights would change for the same inputs and params.
/// 2: gradients flow through the ViT and VectorNet attention probabilities (candle's
/// `softmax_last_dim` has no backward, so q and k had received none).
/// 3: Point-BERT's per-step resampling; VectorNet as its reference (global graph residual,
/// every actor decoded and supervised, prediction fusion, JointLoss normalization).
/// 4: VectorNet takes its reference's init (Xavier-uniform Linear weights, biases U(0, 1)).
pub const TRAIN_VERSION: u32 = 4;
pub const EVAL_VERSION: u32 = 1;

/// `[stages.NAME.params]` of a `train` stage as written: every training hyper-parameter may
/// be left out, and then takes the default of the task `data` implies ([`TaskDefaults`]), so
/// no default tuned for one task is silently applied to another.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct TrainToml {
    data: String,
    block: Option<String>,
    #[serde(default)]
    mode: BlockMode,
    mlp_hidden: Option<usize>,
    #[serde(default)]
    model: serde_json::Value,
    epochs: Option<usize>,
    warmup_epochs: Option<usize>,
    batch_size: Option<usize>,
    lr: Option<f64>,
    min_lr: Option<f64>,
    weight_decay: Option<f64>,
    grad_clip: Option<f64>,
    label_smoothing: Option<f64>,
    adapter_lr_scale: Option<f64>,
    no_decay_lr_scale: Option<f64>,
    epochs_per_checkpoint: Option<usize>,
    #[serde(default)]
    seed: u64,
    #[serde(default)]
    attention: AttnImpl,
    #[serde(default)]
    checkpoint_blocks: bool,
    precision: Option<Precision>,
    resample: Option<bool>,
    layer_decay: Option<f64>,
    mixup: Option<f64>,
    cutmix: Option<f64>,
    mixup_switch_prob: Option<f64>,
    lr_per_256: Option<bool>,
    /// A pretrained encoder checkpoint (`.pth` or `.safetensors`; see `train::init`).
    init: Option<PathBuf>,
    /// Another train stage whose trained weights initialise this one (fine-tuning).
    init_stage: Option<String>,
    /// A named reference recipe (`Preset`) for what the config leaves out.
    preset: Option<String>,
    augment: Option<AugmentToml>,
    repeated_aug: Option<usize>,
    lr_steps: Option<LrStepsToml>,
}

/// `lr_steps = false` (the cosine), `true` (the task's reference steps), or a table.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum LrStepsToml {
    Switch(bool),
    Spec(LrSteps),
}

/// A step-decay learning-rate schedule instead of the cosine: after the warm-up, `lr` until
/// the first of `epochs`, then times `rate` at each (StreamingForecasting's VectorNet:
/// `lr_decay_epoch = [16, 20]`, `lr_decay_rate = 0.25` over 24 epochs).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LrSteps {
    pub epochs: Vec<usize>,
    pub rate: f64,
}

impl LrSteps {
    /// StreamingForecasting's VectorNet schedule (×0.25 at epochs 16 and 20 of 24) scaled to
    /// `epochs`: at 2/3 and 5/6 of the run.
    pub fn vectornet_reference(epochs: usize) -> Self {
        let at = |f: f64| (epochs as f64 * f).round() as usize;
        LrSteps {
            epochs: vec![at(2.0 / 3.0), at(5.0 / 6.0)],
            rate: 0.25,
        }
    }

    /// The lr of `epoch` (0-based) after the warm-up: `lr · rate^(decay epochs ≤ epoch)`.
    pub fn lr(&self, epoch: usize, lr: f64) -> f64 {
        let n = self.epochs.iter().filter(|&&e| e <= epoch).count();
        lr * self.rate.powi(n as i32)
    }
}

/// `augment = false`, or a table of `TrainAugment` keys (the rest at the reference's).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum AugmentToml {
    Switch(bool),
    Spec(TrainAugment),
}

/// Named reference recipes: each fills in what a config leaves out (explicit keys win).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    /// LM4VisualEncoding `video_understanding/scripts/ssv2_vits_llama.sh`: VideoMAE ViT-S on
    /// SSv2, 4 GPUs × 6 clips, `--num_sample 2`, lr 1e-3 per 256, layer decay 0.7, 40 epochs.
    VideoMaeSsv2VitS,
    /// `ssv2_vitb_llama.sh`: ViT-B, 4 GPUs × 3 clips, lr 5e-4 per 256, layer decay 0.75
    /// (run_class_finetuning.py's default; the script does not set it), 30 epochs.
    VideoMaeSsv2VitB,
}

impl Preset {
    pub const NAMES: [&'static str; 2] = ["videomae_ssv2_vit_s", "videomae_ssv2_vit_b"];

    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "videomae_ssv2_vit_s" => Some(Preset::VideoMaeSsv2VitS),
            "videomae_ssv2_vit_b" => Some(Preset::VideoMaeSsv2VitB),
            _ => None,
        }
    }

    pub fn task(self) -> Task {
        Task::Video
    }

    /// The recipe's training settings.
    pub fn defaults(self) -> TaskDefaults {
        let video = TaskDefaults::of(Task::Video);
        match self {
            Preset::VideoMaeSsv2VitS => TaskDefaults {
                batch_size: 24,
                ..video
            },
            Preset::VideoMaeSsv2VitB => TaskDefaults {
                epochs: 30,
                batch_size: 12,
                lr: 5e-4,
                layer_decay: Some(0.75),
                ..video
            },
        }
    }

    /// The encoder's sizes (VideoMAE `vit_small_patch16_224` / `vit_base_patch16_224`).
    pub fn model(self) -> serde_json::Value {
        match self {
            Preset::VideoMaeSsv2VitS => {
                serde_json::json!({ "embed_dim": 384, "depth": 12, "heads": 6 })
            }
            Preset::VideoMaeSsv2VitB => {
                serde_json::json!({ "embed_dim": 768, "depth": 12, "heads": 12 })
            }
        }
    }

    /// `--num_sample`.
    pub fn repeated_aug(self) -> usize {
        2
    }
}

/// The reference recipe of each task, for what a config leaves out.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TaskDefaults {
    pub epochs: usize,
    pub warmup_epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub min_lr: f64,
    pub weight_decay: f64,
    pub grad_clip: f64,
    pub label_smoothing: f64,
    pub adapter_lr_scale: f64,
    pub no_decay_lr_scale: f64,
    pub epochs_per_checkpoint: usize,
    /// VideoMAE's layer-wise lr decay (None: off).
    pub layer_decay: Option<f64>,
    /// Mixup / CutMix Beta alphas (0: off).
    pub mixup: f64,
    pub cutmix: f64,
}

impl TaskDefaults {
    pub fn of(task: Task) -> Self {
        match task {
            // LM4VisualEncoding `pointcloud_classification`: PointLLaMa_*.yaml (AdamW lr 5e-4,
            // wd 0.05, CosLR 300 epochs with 10 warm-up, batch 32, grad_norm_clip 10) and
            // builder.py's groups (no-decay ×0.1 lr, the LLaMA adapters ×0.5 lr and no decay);
            // `--label_smoothing` is off unless passed: plain cross-entropy.
            Task::PointCloud => TaskDefaults {
                epochs: 300,
                warmup_epochs: 10,
                batch_size: 32,
                lr: 5e-4,
                min_lr: 1e-6,
                weight_decay: 0.05,
                grad_clip: 10.0,
                label_smoothing: 0.0,
                adapter_lr_scale: 0.5,
                no_decay_lr_scale: 0.1,
                epochs_per_checkpoint: 10,
                layer_decay: None,
                mixup: 0.0,
                cutmix: 0.0,
            },
            // LM4VisualEncoding `video_understanding/scripts/ssv2_vits_llama.sh` on VideoMAE's
            // run_class_finetuning.py: 40 epochs (ViT-B: 30), 5 warm-up, lr 1e-3, min 1e-6,
            // wd 0.05, no clipping, smoothing 0.1, batch 6 per GPU; the adapters and the
            // no-decay parameters train at the full lr.
            Task::Video => TaskDefaults {
                epochs: 40,
                warmup_epochs: 5,
                batch_size: 6,
                lr: 1e-3,
                min_lr: 1e-6,
                weight_decay: 0.05,
                grad_clip: 0.0,
                label_smoothing: 0.1,
                adapter_lr_scale: 1.0,
                no_decay_lr_scale: 1.0,
                epochs_per_checkpoint: 5,
                // `--layer_decay 0.7` (ViT-S; VideoMAE's ViT-B scripts use 0.75).
                layer_decay: Some(0.7),
                // run_class_finetuning.py's defaults: `--mixup 0.8 --cutmix 1.0`.
                mixup: 0.8,
                cutmix: 1.0,
            },
            // VectorNet: 60 epochs (PAPER.md §5); the first author's StreamingForecasting
            // `configs/forecaster/optim/VectorNet.yaml`: AdamW lr 5e-4, wd 1e-4, grad-norm
            // clip 0.1; its step decay (×0.25 at epochs 16 and 20 of 24) is `lr_steps`, which
            // `resolve` scales to the run's epochs.
            Task::Forecast => TaskDefaults {
                epochs: 60,
                warmup_epochs: 1,
                batch_size: 32,
                lr: 5e-4,
                min_lr: 1e-6,
                weight_decay: 1e-4,
                grad_clip: 0.1,
                label_smoothing: 0.0,
                adapter_lr_scale: 1.0,
                no_decay_lr_scale: 1.0,
                epochs_per_checkpoint: 10,
                layer_decay: None,
                mixup: 0.0,
                cutmix: 0.0,
            },
        }
    }
}

/// A `train` stage's params, every default filled in for its task: what trains, and what
/// enters the key.
#[derive(Debug, Clone, Serialize)]
pub struct TrainParams {
    /// The stage whose shards to train on: `pc.tokens`, `ssv2.tokens` or `av.tokens`.
    pub data: String,
    /// The `llm.block` stage (needed unless mode = "none").
    pub block: Option<String>,
    /// frozen (pretrained, default) | random (same shapes, seeded init, frozen) |
    /// random-trained | trainable | mlp | none.
    pub mode: BlockMode,
    /// `mode = "mlp"` only: the MLP's FFN hidden size (default: the block's
    /// `intermediate_size`; see `train::block::mlp`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mlp_hidden: Option<usize>,
    /// Model sizes: a PointBERT, video ViT or VectorNet config, by the kind of `data`.
    pub model: serde_json::Value,
    pub epochs: usize,
    pub warmup_epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub min_lr: f64,
    pub weight_decay: f64,
    /// Global gradient-norm clip (0 = off).
    pub grad_clip: f64,
    pub label_smoothing: f64,
    /// lr multiplier of the two adapters around the block.
    pub adapter_lr_scale: f64,
    /// lr multiplier of parameters without weight decay.
    pub no_decay_lr_scale: f64,
    /// Epochs per work unit (= per checkpoint).
    pub epochs_per_checkpoint: usize,
    pub seed: u64,
    /// `full` (default) or `chunked`: memory-efficient attention that keeps no [B, H, T, T]
    /// for the backward (same values to float rounding; see `train::ops::attention`).
    #[serde(skip_serializing_if = "AttnImpl::is_default")]
    pub attention: AttnImpl,
    /// Recompute each encoder block in the backward instead of keeping its activations
    /// (same gradients; see `train::ops::recompute`).
    #[serde(skip_serializing_if = "is_false")]
    pub checkpoint_blocks: bool,
    /// `f32` | `bf16` | `f16` (with dynamic loss scaling): the matmul precision of the whole
    /// model. Unset: the encoder in f32 and a frozen block in bf16 on CUDA only. See
    /// `train::ops::precision`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub precision: Option<Precision>,
    /// Point clouds: a fresh view of the kept raw points every step, as Point-BERT's
    /// fine-tuning does (`crate::pointcloud::resample`); default on for point clouds. Off:
    /// the cached tokens, scaled and shifted.
    #[serde(skip_serializing_if = "is_false")]
    pub resample: bool,
    /// Video: VideoMAE's layer-wise lr decay — parameters of ViT block i train at
    /// `layer_decay^(depth − i)`, the patch embedding at `layer_decay^(depth + 1)`, the rest
    /// (norm, head, adapters) at 1 — with VideoMAE's weight-decay groups (see
    /// `trainer::params_for`). Default 0.7 for video (the reference's ViT-S script); 1 = off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layer_decay: Option<f64>,
    /// Video: Mixup / CutMix of every training batch with soft targets (`train::ops::mixup`),
    /// the Beta alphas; 0 turns one off. Defaults 0.8 / 1.0 for video, as VideoMAE.
    #[serde(skip_serializing_if = "is_zero")]
    pub mixup: f64,
    #[serde(skip_serializing_if = "is_zero")]
    pub cutmix: f64,
    /// The chance of CutMix when both are on (VideoMAE: 0.5).
    #[serde(skip_serializing_if = "is_half")]
    pub mixup_switch_prob: f64,
    /// `lr` and `min_lr` are per 256 samples, scaled by the global batch as VideoMAE's
    /// `run_class_finetuning.py` does (`lr × batch / 256`); default on for video.
    #[serde(skip_serializing_if = "is_false")]
    pub lr_per_256: bool,
    /// Pretrained encoder weights loaded before the first step (Point-BERT or VideoMAE
    /// checkpoint, by the task; see `train::init`), resolved against the config's folder.
    /// Not a key param: the file enters the key as a hashed input (role `init`), so moving
    /// it changes nothing and editing it retrains.
    #[serde(skip)]
    pub init: Option<PathBuf>,
    /// Another `train` stage of the same task whose `model.safetensors` initialises the
    /// encoder, as `init` would from that file: an upstream, so this stage is stale whenever
    /// that one retrains, and runs after it. Exclusive with `init`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init_stage: Option<String>,
    /// The preset the defaults came from (recorded; its values are keyed through the fields).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preset: Option<String>,
    /// Video, `frames` layout: the training augmentation (RandAugment, RandomResizedCrop,
    /// random erasing; `train::ops::video_aug`), the reference's by default; `false` = off
    /// (the centre crop of the resized frames instead). Ignored for the tubelets layout.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub augment: Option<TrainAugment>,
    /// Video, `frames` layout: independently augmented copies of each clip per batch
    /// (VideoMAE's `--num_sample`; a batch of B clips is B · repeated_aug rows).
    #[serde(skip_serializing_if = "is_one")]
    pub repeated_aug: usize,
    /// A step decay instead of the cosine (`lr_steps = { epochs = [16, 20], rate = 0.25 }`);
    /// the warm-up is the same. Unset: warm-up + cosine to `min_lr`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lr_steps: Option<LrSteps>,
}

fn is_one(v: &usize) -> bool {
    *v == 1
}

impl TrainParams {
    /// The (peak, final) learning rates the schedule uses: `lr`, `min_lr`, times
    /// `batch_size / 256` when `lr_per_256`.
    pub fn schedule_lrs(&self) -> (f64, f64) {
        let k = if self.lr_per_256 {
            self.batch_size as f64 / 256.0
        } else {
            1.0
        };
        (self.lr * k, self.min_lr * k)
    }

    fn resolve(t: TrainToml, task: Task) -> Self {
        let preset = t.preset.as_deref().and_then(Preset::parse);
        let d = preset.map_or_else(|| TaskDefaults::of(task), Preset::defaults);
        let mut model = t.model;
        if let (Some(p), Some(obj)) = (preset, model.as_object_mut()) {
            for (k, v) in p.model().as_object().into_iter().flatten() {
                obj.entry(k.clone()).or_insert_with(|| v.clone());
            }
        } else if let (Some(p), true) = (preset, model.is_null()) {
            model = p.model();
        }
        let epochs = t.epochs.unwrap_or(d.epochs);
        let augment = match (task, t.augment) {
            (Task::Video, None | Some(AugmentToml::Switch(true))) => Some(TrainAugment::default()),
            (Task::Video, Some(AugmentToml::Spec(a))) => Some(a),
            _ => None,
        };
        TrainParams {
            data: t.data,
            block: t.block,
            mode: t.mode,
            mlp_hidden: t.mlp_hidden,
            model,
            epochs,
            warmup_epochs: t.warmup_epochs.unwrap_or(d.warmup_epochs),
            batch_size: t.batch_size.unwrap_or(d.batch_size),
            lr: t.lr.unwrap_or(d.lr),
            min_lr: t.min_lr.unwrap_or(d.min_lr),
            weight_decay: t.weight_decay.unwrap_or(d.weight_decay),
            grad_clip: t.grad_clip.unwrap_or(d.grad_clip),
            label_smoothing: t.label_smoothing.unwrap_or(d.label_smoothing),
            adapter_lr_scale: t.adapter_lr_scale.unwrap_or(d.adapter_lr_scale),
            no_decay_lr_scale: t.no_decay_lr_scale.unwrap_or(d.no_decay_lr_scale),
            epochs_per_checkpoint: t.epochs_per_checkpoint.unwrap_or(d.epochs_per_checkpoint),
            seed: t.seed,
            attention: t.attention,
            checkpoint_blocks: t.checkpoint_blocks,
            precision: t.precision,
            resample: t.resample.unwrap_or(task == Task::PointCloud),
            // 1 is "off", as the reference's `if args.layer_decay < 1.0`.
            layer_decay: t.layer_decay.or(d.layer_decay).filter(|v| *v != 1.0),
            mixup: t.mixup.unwrap_or(d.mixup),
            cutmix: t.cutmix.unwrap_or(d.cutmix),
            mixup_switch_prob: t.mixup_switch_prob.unwrap_or(0.5),
            lr_per_256: t.lr_per_256.unwrap_or(task == Task::Video),
            init: t.init,
            init_stage: t.init_stage,
            preset: t.preset,
            augment,
            repeated_aug: t
                .repeated_aug
                .unwrap_or_else(|| preset.map_or(1, Preset::repeated_aug)),
            lr_steps: match (t.lr_steps, task) {
                (Some(LrStepsToml::Spec(s)), _) => Some(s),
                (Some(LrStepsToml::Switch(false)), _) => None,
                // Forecasting trains with its reference's step decay unless told otherwise.
                (None | Some(LrStepsToml::Switch(true)), Task::Forecast) => {
                    Some(LrSteps::vectornet_reference(epochs))
                }
                (Some(LrStepsToml::Switch(true)) | None, _) => None,
            },
        }
    }
}

/// Lets a new boolean param default to false without changing existing artifact keys.
fn is_false(b: &bool) -> bool {
    !*b
}

/// Lets a new number param default to 0 (off) without changing existing artifact keys.
fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

fn is_half(v: &f64) -> bool {
    *v == 0.5
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
    let (p, task, model) = parse_train(config, sc, true)?;
    Ok(Box::new(TrainStage {
        name: sc.name.clone(),
        p,
        task,
        model,
    }))
}

/// A `train` stage's params with every default filled in, its task and typed model config,
/// checked as `build_train` checks them. `check_init`: also check the `init` checkpoint is
/// there and readable (its headers); a dry run, which loads no weights, skips that and gets
/// `init` resolved against the config's folder.
pub(crate) fn parse_train(
    config: &PipelineConfig,
    sc: &StageConfig,
    check_init_file: bool,
) -> Result<(TrainParams, Task, ModelConfig), ConfigError> {
    let raw: TrainToml = config.typed_params(sc)?;
    check_upstream_name(config, sc, "data", &raw.data)?;
    let task = task_of(config, sc, &raw.data)?;
    if let Some(name) = &raw.preset {
        match Preset::parse(name) {
            Some(pr) if pr.task() == task => {}
            Some(_) => {
                return Err(config.param_error(
                    &sc.name,
                    Some("preset"),
                    format!(
                        "preset `{name}` is a video recipe; `data` is not an ssv2.tokens stage"
                    ),
                ))
            }
            None => {
                return Err(config.param_error(
                    &sc.name,
                    Some("preset"),
                    format!(
                        "unknown preset `{name}`; the presets are {}",
                        Preset::NAMES.join(", ")
                    ),
                ))
            }
        }
    }
    if task != Task::Video && (raw.augment.is_some() || raw.repeated_aug.is_some()) {
        return Err(config.param_error(
            &sc.name,
            Some(if raw.augment.is_some() { "augment" } else { "repeated_aug" }),
            "augment and repeated_aug are the video recipe's (ssv2.tokens, layout = \"frames\"); remove them for this task".into(),
        ));
    }
    if task != Task::Forecast && matches!(raw.lr_steps, Some(LrStepsToml::Switch(true))) {
        return Err(config.param_error(
            &sc.name,
            Some("lr_steps"),
            "lr_steps = true names the forecasting reference's schedule; for this task give the steps, e.g. lr_steps = { epochs = [16, 20], rate = 0.25 }".into(),
        ));
    }
    let mut p = TrainParams::resolve(raw, task);
    if let Some(s) = &p.lr_steps {
        if !(s.rate > 0.0 && s.rate.is_finite()) {
            return Err(config.param_error(
                &sc.name,
                Some("lr_steps"),
                format!("lr_steps.rate = {} must be a positive number", s.rate),
            ));
        }
    }
    if let Some(a) = &p.augment {
        a.validate()
            .map_err(|e| config.param_error(&sc.name, Some("augment"), format!("augment: {e}")))?;
    }
    if !(1..=16).contains(&p.repeated_aug) {
        return Err(config.param_error(
            &sc.name,
            Some("repeated_aug"),
            format!("repeated_aug = {} must be in 1..=16", p.repeated_aug),
        ));
    }
    if let Some(name) = &p.init_stage {
        check_init_stage(config, sc, task, name, p.init.is_some())?;
    }
    p.init = match &p.init {
        Some(init) if check_init_file => Some(check_init(config, sc, task, init)?),
        Some(init) => Some(config.resolve(init)),
        None => None,
    };
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
    match (p.mlp_hidden, p.mode) {
        (Some(_), m) if m != BlockMode::Mlp => {
            return Err(config.param_error(
                &sc.name,
                Some("mlp_hidden"),
                format!("mlp_hidden applies to mode = \"mlp\" only (mode is \"{m}\")"),
            ))
        }
        (Some(0), _) => {
            return Err(config.param_error(
                &sc.name,
                Some("mlp_hidden"),
                "mlp_hidden must be positive".into(),
            ))
        }
        _ => {}
    }
    if p.epochs == 0 || p.batch_size == 0 || p.epochs_per_checkpoint == 0 {
        return Err(config.param_error(
            &sc.name,
            Some("epochs"),
            "epochs, batch_size and epochs_per_checkpoint must be positive".into(),
        ));
    }
    if let Some(v) = p.layer_decay {
        if task != Task::Video || !(v > 0.0 && v < 1.0) {
            return Err(config.param_error(
                &sc.name,
                Some("layer_decay"),
                format!("layer_decay = {v}: VideoMAE's layer-wise lr decay is for video ViTs and must be in (0, 1] (1 = off)"),
            ));
        }
    }
    let mixing = p.mixup != 0.0 || p.cutmix != 0.0;
    if !(p.mixup >= 0.0 && p.cutmix >= 0.0 && (0.0..=1.0).contains(&p.mixup_switch_prob))
        || (mixing && task != Task::Video)
    {
        return Err(config.param_error(
            &sc.name,
            Some(if p.mixup != 0.0 { "mixup" } else { "cutmix" }),
            "mixup and cutmix are Beta alphas ≥ 0 (0 = off) for video stages, mixup_switch_prob a probability".into(),
        ));
    }
    if p.resample && task != Task::PointCloud {
        return Err(config.param_error(
            &sc.name,
            Some("resample"),
            "resample = true is Point-BERT's per-step resampling of point clouds; remove it for this task".into(),
        ));
    }
    let model = task
        .model_config(&p.model)
        .map_err(|e| config.param_error(&sc.name, Some("model"), e))?;
    Ok((p, task, model))
}

/// `init_stage`: names another train stage of the same task (not this one), and `init` is
/// not set as well.
fn check_init_stage(
    config: &PipelineConfig,
    sc: &StageConfig,
    task: Task,
    name: &str,
    has_init: bool,
) -> Result<(), ConfigError> {
    let err = |msg: String| Err(config.param_error(&sc.name, Some("init_stage"), msg));
    if has_init {
        return err(
            "set `init` (a checkpoint file) or `init_stage` (a train stage), not both".into(),
        );
    }
    if name == sc.name {
        return err(format!("`init_stage = \"{name}\"` names this stage itself"));
    }
    check_upstream_name(config, sc, "init_stage", name)?;
    let Some(up) = config.stages.get(name).filter(|u| u.kind == TRAIN_KIND) else {
        return err(format!(
            "`init_stage = \"{name}\"` must name a `train` stage (its model.safetensors is loaded)"
        ));
    };
    if super::init::family(task).is_none() {
        return err(format!(
            "`init_stage` loads PointBERT (pc.tokens) or video ViT (ssv2.tokens) encoders; the {task:?} model has no init"
        ));
    }
    let up_task = config
        .typed_params::<TrainToml>(up)
        .ok()
        .and_then(|t| task_of(config, up, &t.data).ok());
    if up_task != Some(task) {
        return err(format!(
            "`init_stage = \"{name}\"` trains another task's model ({up_task:?}, this stage: {task:?})"
        ));
    }
    Ok(())
}

/// The `init` checkpoint resolved against the config's folder: present (else a missing
/// input, which blocks only this stage), of a task that has a pretrained family, and
/// readable (its headers; a corrupt file fails here, before any training).
fn check_init(
    config: &PipelineConfig,
    sc: &StageConfig,
    task: Task,
    init: &std::path::Path,
) -> Result<PathBuf, ConfigError> {
    let path = config.resolve(init);
    let Some(fam) = super::init::family(task) else {
        return Err(config.param_error(
            &sc.name,
            Some("init"),
            format!(
                "`init` loads Point-BERT (pc.tokens) or VideoMAE (ssv2.tokens) encoders; the {task:?} model has no pretrained checkpoint format"
            ),
        ));
    };
    if !path.is_file() {
        return Err(config.missing_input_error(
            &sc.name,
            Some("init"),
            &path,
            format!(
                "the pretrained {} checkpoint `init = {:?}` is not there ({}); download it or remove `init` to train from scratch",
                fam.name,
                init.display().to_string(),
                path.display()
            ),
        ));
    }
    super::init::check_readable(&path, fam)
        .map_err(|e| config.param_error(&sc.name, Some("init"), e.to_string()))?;
    Ok(path)
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
    fn inputs(&self) -> Vec<InputSpec> {
        self.p
            .init
            .iter()
            .map(|p| InputSpec::new("init", p.clone()))
            .collect()
    }
    fn upstream(&self) -> Vec<String> {
        let mut u = vec![self.p.data.clone()];
        if let Some(b) = &self.p.block {
            if self.p.mode != BlockMode::None {
                u.push(b.clone());
            }
        }
        u.extend(self.p.init_stage.iter().cloned());
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
        let epochs: Vec<EpochMetrics> = units
            .iter()
            .filter_map(|u| {
                serde_json::from_value::<Vec<EpochMetrics>>(u.meta["epochs"].clone()).ok()
            })
            .flatten()
            .collect();
        let last = epochs.last().cloned();
        // The reference keeps `ckpt-best` by the held-out score of each epoch and reports it:
        // the best epoch (the first one on ties) beside the last.
        let best = epochs
            .iter()
            .fold(None::<&EpochMetrics>, |b, m| match b {
                Some(b) if b.test_acc >= m.test_acc => Some(b),
                _ => Some(m),
            })
            .map(|m| serde_json::json!({ "epoch": m.epoch, "score": m.test_acc }));
        let mut meta = serde_json::json!({
            "task": self.task,
            "model": self.model,
            "mode": self.p.mode,
            "data": self.p.data,
            "block": self.p.block,
            "seed": self.p.seed,
            "attention": self.p.attention,
            "precision": self.p.precision,
            "final": last,
            "best": best,
        });
        // Only when set: the manifests of every other run stay what they were.
        if let Some(h) = self.p.mlp_hidden {
            meta["mlp_hidden"] = h.into();
        }
        if let Some(preset) = &self.p.preset {
            meta["preset"] = preset.clone().into();
        }
        if self.p.repeated_aug > 1 {
            meta["repeated_aug"] = self.p.repeated_aug.into();
        }
        // What the first unit loaded from `init` (load_state_dict-style report).
        if let Some(init) = units.first().and_then(|u| u.meta.get("init")) {
            meta["init"] = init.clone();
        }
        Ok(meta)
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
    /// Default: the task's training batch size.
    pub batch_size: Option<usize>,
    /// Point clouds: test-time voting, the reference's `test_vote` — the mean logits of
    /// `vote` views of each cloud (FPS pool, random subset, scale and shift). Reported as
    /// `vote_top1` etc. beside the single-view numbers. Needs the kept points.
    pub vote: Option<usize>,
    /// Video, `frames` layout: temporal clips × spatial crops per test video, probabilities
    /// averaged (the reference's `--test_num_segment 2 --test_num_crop 3`, the defaults).
    pub test_clips: Option<usize>,
    pub test_crops: Option<usize>,
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
    if p.vote.is_some() && task != Task::PointCloud {
        return Err(config.param_error(
            &sc.name,
            Some("vote"),
            "vote is the point-cloud test-time voting; remove it for this task".into(),
        ));
    }
    for (key, v) in [("test_clips", p.test_clips), ("test_crops", p.test_crops)] {
        match v {
            Some(_) if task != Task::Video => {
                return Err(config.param_error(
                    &sc.name,
                    Some(key),
                    format!("{key} is the video multi-view test; remove it for this task"),
                ))
            }
            Some(n) if !(1..=16).contains(&n) => {
                return Err(config.param_error(
                    &sc.name,
                    Some(key),
                    format!("{key} = {n} must be in 1..=16"),
                ))
            }
            _ => {}
        }
    }
    Ok(Box::new(EvalStage { p, task, split }))
}

impl EvalStage {
    fn batch_size(&self) -> usize {
        self.p
            .batch_size
            .unwrap_or_else(|| TaskDefaults::of(self.task).batch_size)
    }

    /// (temporal clips, spatial crops) of the video multi-view test.
    fn test_views(&self) -> (usize, usize) {
        (
            self.p.test_clips.unwrap_or(2),
            self.p.test_crops.unwrap_or(3),
        )
    }
}

impl Stage for EvalStage {
    fn kind(&self) -> &str {
        EVAL_KIND
    }
    fn version(&self) -> u32 {
        EVAL_VERSION
    }
    fn key_params(&self) -> serde_json::Value {
        let mut k = serde_json::json!({"split": self.split, "batch_size": self.batch_size()});
        if let Some(v) = self.p.vote {
            k["vote"] = v.into();
        }
        if self.task == Task::Video {
            // Only the frames layout uses them; keyed for every video eval (cheap to redo).
            k["test_views"] = serde_json::json!(self.test_views());
        }
        k
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
        let mut set = Dataset::load(self.task, data, &self.split)?;
        anyhow::ensure!(!set.is_empty(), "split `{}` has no samples", self.split);
        if let Dataset::Video(v) = &mut set {
            let (t, s) = self.test_views();
            v.set_test_views(t, s);
        }
        let mlp_hidden = meta["mlp_hidden"].as_u64().map(|h| h as usize);
        let mut built = build_model(
            &cfg, &set, classes, mode, mlp_hidden, block_up, seed, &device,
        )?;
        // Run the model as it was trained (attention and precision; no checkpointing needed
        // without a backward).
        built.model.configure(&Execution {
            attn: serde_json::from_value(meta["attention"].clone()).unwrap_or_default(),
            checkpoint: None,
            precision: serde_json::from_value(meta["precision"].clone()).unwrap_or(None),
        });
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
        // In a data-parallel launch the ranks share the test set (rank 0 stores the result).
        let coll = super::dist::current();
        let mut metrics = evaluate(
            &built.model,
            &set,
            classes,
            self.batch_size(),
            &device,
            &*coll,
        )?
        .metrics;
        if let (Some(votes), Dataset::Pc(pc)) = (self.p.vote.filter(|v| *v > 1), &mut set) {
            pc.votes = votes;
            pc.vote_seed = seed;
            let voted = evaluate(
                &built.model,
                &set,
                classes,
                self.batch_size(),
                &device,
                &*coll,
            )?
            .metrics;
            if let Some(obj) = voted.as_object() {
                for (k, v) in obj {
                    metrics[format!("vote_{k}")] = v.clone();
                }
            }
            metrics["votes"] = votes.into();
        }
        if let Dataset::Video(v) = &set {
            if v.is_frames_layout() {
                metrics["test_views"] = serde_json::json!(self.test_views());
            }
        }
        metrics["split"] = self.split.clone().into();
        // The held-out score of the training run's best and last epochs (what the paper
        // reports is the best epoch's test accuracy, `ckpt-best`), next to this evaluation of
        // the last model.
        metrics["train_best_epoch"] = meta["best"].clone();
        metrics["train_last_epoch"] = meta["final"]
            .get("epoch")
            .map(|e| serde_json::json!({ "epoch": e, "score": meta["final"]["test_acc"] }))
            .unwrap_or_default();
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

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    #[test]
    fn step_decay_multiplies_at_each_listed_epoch_and_leaves_keys_alone_when_unset() {
        let steps = LrSteps {
            epochs: vec![16, 20],
            rate: 0.25,
        };
        assert_eq!(steps.lr(0, 5e-4), 5e-4);
        assert_eq!(steps.lr(15, 5e-4), 5e-4);
        assert_eq!(steps.lr(16, 5e-4), 5e-4 * 0.25);
        assert_eq!(steps.lr(23, 5e-4), 5e-4 * 0.0625);
        let key = serde_json::to_value(resolved_defaults(Task::Video)).unwrap();
        assert!(key.get("lr_steps").is_none(), "unset: not in the key");
        let resolve = |v: serde_json::Value, task| {
            let raw: TrainToml = serde_json::from_value(v).unwrap();
            TrainParams::resolve(raw, task).lr_steps
        };
        assert_eq!(
            resolve(
                serde_json::json!({"data": "d", "lr_steps": {"epochs": [16, 20], "rate": 0.25}}),
                Task::Video
            ),
            Some(steps.clone())
        );
        // Forecasting: the reference's steps at 2/3 and 5/6 of the epochs by default.
        assert_eq!(
            resolve(
                serde_json::json!({"data": "d", "epochs": 24}),
                Task::Forecast
            ),
            Some(steps)
        );
        assert_eq!(
            resolve(
                serde_json::json!({"data": "d", "epochs": 8}),
                Task::Forecast
            )
            .unwrap()
            .epochs,
            vec![5, 7]
        );
        assert_eq!(
            resolve(
                serde_json::json!({"data": "d", "lr_steps": false}),
                Task::Forecast
            ),
            None
        );
    }

    /// The params a config with only `data` gets for a task.
    pub(in crate::train) fn resolved_defaults(task: Task) -> TrainParams {
        let raw: TrainToml = serde_json::from_value(serde_json::json!({"data": "d"})).unwrap();
        TrainParams::resolve(raw, task)
    }

    fn resolved(json: serde_json::Value, task: Task) -> TrainParams {
        TrainParams::resolve(serde_json::from_value(json).unwrap(), task)
    }

    #[test]
    fn presets_fill_in_the_reference_scripts_and_explicit_keys_win() {
        let s = resolved(
            serde_json::json!({"data": "d", "preset": "videomae_ssv2_vit_s"}),
            Task::Video,
        );
        assert_eq!((s.epochs, s.warmup_epochs, s.batch_size), (40, 5, 24));
        assert_eq!((s.lr, s.layer_decay, s.repeated_aug), (1e-3, Some(0.7), 2));
        assert_eq!((s.mixup, s.cutmix, s.label_smoothing), (0.8, 1.0, 0.1));
        assert!(s.lr_per_256);
        assert_eq!(s.schedule_lrs().0, 1e-3 * 24.0 / 256.0);
        assert_eq!(s.model["embed_dim"], 384);
        assert_eq!(s.augment, Some(TrainAugment::default()));
        let b = resolved(
            serde_json::json!({"data": "d", "preset": "videomae_ssv2_vit_b",
                               "epochs": 3, "model": {"depth": 2}}),
            Task::Video,
        );
        assert_eq!(
            (b.epochs, b.batch_size, b.lr, b.layer_decay),
            (3, 12, 5e-4, Some(0.75))
        );
        assert_eq!(
            (&b.model["embed_dim"], &b.model["heads"], &b.model["depth"]),
            (&768.into(), &12.into(), &2.into())
        );
        // augment = false turns the spatial augmentation off; a table overrides fields.
        let off = resolved(
            serde_json::json!({"data": "d", "augment": false}),
            Task::Video,
        );
        assert_eq!(off.augment, None);
        let t = resolved(
            serde_json::json!({"data": "d", "augment": {"erase_prob": 0.0, "rand_augment": "rand-m9-n2-mstd0.5-inc1"}}),
            Task::Video,
        );
        let a = t.augment.unwrap();
        assert_eq!((a.erase_prob, a.scale), (0.0, [0.08, 1.0]));
        assert_eq!(
            a.rand_augment.map(|r| r.to_string()).as_deref(),
            Some("rand-m9-n2-mstd0.5-inc1")
        );
        let none = resolved(
            serde_json::json!({"data": "d", "augment": {"rand_augment": "none"}}),
            Task::Video,
        );
        assert_eq!(none.augment.unwrap().rand_augment, None);
        // Only video has them.
        assert_eq!(resolved_defaults(Task::PointCloud).augment, None);
        assert_eq!(resolved_defaults(Task::Video).repeated_aug, 1);
    }

    #[test]
    fn defaults_are_the_tasks_reference_recipes() {
        let pc = resolved_defaults(Task::PointCloud);
        assert_eq!(
            (pc.epochs, pc.batch_size, pc.lr, pc.grad_clip),
            (300, 32, 5e-4, 10.0)
        );
        assert_eq!(
            pc.label_smoothing, 0.0,
            "the reference's --label_smoothing is off"
        );
        assert_eq!((pc.adapter_lr_scale, pc.no_decay_lr_scale), (0.5, 0.1));
        let video = resolved_defaults(Task::Video);
        assert_eq!((video.epochs, video.warmup_epochs, video.lr), (40, 5, 1e-3));
        assert_eq!((video.grad_clip, video.label_smoothing), (0.0, 0.1));
        assert_eq!(
            (video.adapter_lr_scale, video.no_decay_lr_scale),
            (1.0, 1.0)
        );
        assert_eq!(resolved_defaults(Task::Forecast).epochs, 60);
        // VideoMAE's lr is per 256 samples: its ViT-S script's 1e-3 at batch 6 × 4 GPUs.
        let mut v = resolved_defaults(Task::Video);
        assert!(v.lr_per_256 && !resolved_defaults(Task::PointCloud).lr_per_256);
        v.batch_size = 24;
        let (peak, floor) = v.schedule_lrs();
        assert!((peak - 9.375e-5).abs() < 1e-12 && (floor - 1e-6 * 24.0 / 256.0).abs() < 1e-15);
        assert_eq!(
            (
                resolved_defaults(Task::Video).mixup,
                resolved_defaults(Task::Video).cutmix
            ),
            (0.8, 1.0)
        );
        // What a config spells out wins.
        let raw: TrainToml =
            serde_json::from_value(serde_json::json!({"data": "d", "epochs": 7, "lr": 0.1}))
                .unwrap();
        let p = TrainParams::resolve(raw, Task::Video);
        assert_eq!((p.epochs, p.lr, p.warmup_epochs), (7, 0.1, 5));
    }
}
