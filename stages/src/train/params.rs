//! A `train` or `eval` stage's params: the TOML as written ([`TrainToml`]), resolved against
//! the task's recipe into [`TrainParams`] (every default filled in: what trains, and what
//! enters the key), and the checks of their values that hold for every task. Which task a
//! stage trains, and the checks that need the config (stage names, files), are `stage.rs`'s.

use super::block::BlockMode;
use super::ops::attention::AttnImpl;
use super::ops::precision::Precision;
use super::ops::video_aug::TrainAugment;
use super::recipe::{TaskRecipe, WarmupSteps};
use super::schedule::LrSteps;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// `[stages.NAME.params]` of a `train` stage as written: every training hyper-parameter may
/// be left out, and then takes the default of the task `data` implies ([`super::recipe::TaskDefaults`]), so
/// no default tuned for one task is silently applied to another.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainToml {
    pub data: String,
    pub block: Option<String>,
    #[serde(default)]
    pub mode: BlockMode,
    pub mlp_hidden: Option<usize>,
    #[serde(default)]
    pub model: serde_json::Value,
    pub epochs: Option<usize>,
    pub warmup_epochs: Option<usize>,
    pub batch_size: Option<usize>,
    pub lr: Option<f64>,
    pub min_lr: Option<f64>,
    pub weight_decay: Option<f64>,
    pub grad_clip: Option<f64>,
    pub label_smoothing: Option<f64>,
    pub adapter_lr_scale: Option<f64>,
    pub no_decay_lr_scale: Option<f64>,
    pub epochs_per_checkpoint: Option<usize>,
    #[serde(default)]
    pub seed: u64,
    #[serde(default)]
    pub attention: AttnImpl,
    #[serde(default)]
    pub checkpoint_blocks: bool,
    pub precision: Option<Precision>,
    pub resample: Option<bool>,
    pub layer_decay: Option<f64>,
    pub mixup: Option<f64>,
    pub cutmix: Option<f64>,
    pub mixup_switch_prob: Option<f64>,
    pub lr_per_256: Option<bool>,
    /// A pretrained encoder checkpoint (`.pth` or `.safetensors`; see `train::init`).
    pub init: Option<PathBuf>,
    /// Another train stage whose trained weights initialise this one (fine-tuning).
    pub init_stage: Option<String>,
    /// A named reference recipe (`recipe::Preset`) for what the config leaves out.
    pub preset: Option<String>,
    pub augment: Option<AugmentToml>,
    pub repeated_aug: Option<usize>,
    pub lr_steps: Option<LrStepsToml>,
    /// A named lr schedule of the task (`recipe::SchedulePreset`; forecasting: `paper`,
    /// `streaming-forecasting`).
    pub schedule: Option<String>,
    /// DeiT's model EMA: `true` (decay 0.99996), `false`, or the decay.
    pub model_ema: Option<crate::train::ema::EmaToml>,
}

/// `lr_steps = false` (the cosine), `true` (the task's reference steps), or a table.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum LrStepsToml {
    Switch(bool),
    Spec(LrSteps),
}

/// `augment = false`, or a table of `TrainAugment` keys (the rest at the reference's).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum AugmentToml {
    Switch(bool),
    Spec(TrainAugment),
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
    /// Model sizes: the `[model]` table of the task `data` implies (its `Task::Config`).
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
    /// `lr` and `min_lr` per this many samples (the task's reference: DeiT's 512); set by the
    /// task, not the config.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lr_batch_base: Option<usize>,
    /// The lr is set per epoch as DeiT's timm scheduler does (see `schedule::EpochCosine`);
    /// set by the task.
    #[serde(skip_serializing_if = "is_false")]
    pub epoch_schedule: bool,
    /// timm's weight-decay groups (see `groups::params_for`); set by the task.
    #[serde(skip_serializing_if = "is_false")]
    pub timm_groups: bool,
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
    /// Images: the `repeated_aug` copies come from DeiT's sampler (`train::sampler`), not
    /// from the batch; set by the task, keyed only when on (existing keys stay).
    #[serde(skip_serializing_if = "is_false")]
    pub ra_sampler: bool,
    /// A step decay instead of the cosine (`lr_steps = { epochs = [16, 20], rate = 0.25 }`);
    /// the warm-up is the same. Unset: warm-up + cosine to `min_lr`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lr_steps: Option<LrSteps>,
    /// The named schedule the epochs, warm-up and decay came from (forecasting). Not in the
    /// key: its values are, through `epochs`, `warmup_epochs`, `lr_steps` and
    /// `warmup_steps`, so spelling a schedule out by hand keys the same.
    #[serde(skip)]
    pub schedule: Option<String>,
    /// A warm-up by iterations from `lr · start_ratio` (the schedule's; replaces the
    /// epochs' warm-up).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warmup_steps: Option<WarmupSteps>,
    /// The decay of the model's moving average kept beside it (`train::ema`; DeiT's
    /// `--model-ema`, on by default for images at 0.99996), written as `model-ema.safetensors`
    /// and scored by `eval`; keyed only when on (existing keys stay).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_ema: Option<f64>,
}

fn is_one(v: &usize) -> bool {
    *v == 1
}

impl TrainParams {
    /// Work units: one per `epochs_per_checkpoint` epochs.
    pub fn units(&self) -> usize {
        self.epochs.div_ceil(self.epochs_per_checkpoint)
    }

    /// The id of work unit `k` (its checkpoint).
    pub fn unit_id(k: usize) -> String {
        format!("ckpt-{k:05}")
    }

    /// The (peak, final) learning rates the schedule uses: `lr`, `min_lr`, times
    /// `batch_size / 256` when `lr_per_256`; with `lr_batch_base` (DeiT) only `lr` scales,
    /// `lr × batch / base`, as DeiT's `linear_scaled_lr`.
    pub fn schedule_lrs(&self) -> (f64, f64) {
        if let Some(base) = self.lr_batch_base {
            return (
                self.lr * self.batch_size as f64 / base.max(1) as f64,
                self.min_lr,
            );
        }
        let k = if self.lr_per_256 {
            self.batch_size as f64 / 256.0
        } else {
            1.0
        };
        (self.lr * k, self.min_lr * k)
    }

    /// `t` with every default filled in from `task`'s recipe (and its preset, when `t`
    /// names one of the task's).
    pub fn resolve(t: TrainToml, task: &dyn TaskRecipe) -> Self {
        let preset = t.preset.as_deref().and_then(|n| task.preset(n));
        let d = preset
            .as_ref()
            .map_or_else(|| task.defaults(), |p| p.defaults);
        let features = task.features();
        let mut model = t.model;
        if let (Some(p), Some(obj)) = (&preset, model.as_object_mut()) {
            for (k, v) in p.model.as_object().into_iter().flatten() {
                obj.entry(k.clone()).or_insert_with(|| v.clone());
            }
        } else if let (Some(p), true) = (&preset, model.is_null()) {
            model = p.model.clone();
        }
        let schedule_name = t
            .schedule
            .clone()
            .or_else(|| task.default_schedule().map(String::from));
        let schedule = schedule_name.as_deref().and_then(|n| task.schedule(n));
        let epochs = t
            .epochs
            .or(schedule.as_ref().map(|s| s.epochs))
            .unwrap_or(d.epochs);
        let repeated_aug = t.repeated_aug.unwrap_or(match &preset {
            Some(p) => p.repeated_aug,
            None if features.ra_sampler => crate::train::recipe::RA_REPEATS,
            None => 1,
        });
        let augment = match (features.frames_augment, t.augment) {
            (true, None | Some(AugmentToml::Switch(true))) => Some(task.default_augment()),
            (true, Some(AugmentToml::Spec(a))) => Some(a),
            _ => None,
        };
        TrainParams {
            data: t.data,
            block: t.block,
            mode: t.mode,
            mlp_hidden: t.mlp_hidden,
            model,
            epochs,
            warmup_epochs: t
                .warmup_epochs
                .or(schedule.as_ref().map(|s| s.warmup_epochs))
                .unwrap_or(d.warmup_epochs),
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
            resample: t.resample.unwrap_or(features.resample),
            // 1 is "off", as the reference's `if args.layer_decay < 1.0`.
            layer_decay: t.layer_decay.or(d.layer_decay).filter(|v| *v != 1.0),
            mixup: t.mixup.unwrap_or(d.mixup),
            cutmix: t.cutmix.unwrap_or(d.cutmix),
            mixup_switch_prob: t.mixup_switch_prob.unwrap_or(0.5),
            lr_per_256: t.lr_per_256.unwrap_or(features.lr_per_256),
            lr_batch_base: features.lr_batch_base,
            epoch_schedule: features.epoch_schedule,
            timm_groups: features.timm_groups,
            init: t.init,
            init_stage: t.init_stage,
            preset: t.preset,
            augment,
            repeated_aug,
            ra_sampler: features.ra_sampler && repeated_aug > 1,
            lr_steps: match t.lr_steps {
                Some(LrStepsToml::Spec(s)) => Some(s),
                Some(LrStepsToml::Switch(false)) => None,
                Some(LrStepsToml::Switch(true)) => task.reference_lr_steps(epochs),
                // The named schedule's decay (forecasting's default `paper`: the cosine).
                None => schedule.as_ref().and_then(|s| s.lr_steps.clone()),
            },
            // An explicit epoch warm-up replaces the schedule's iteration warm-up.
            warmup_steps: schedule
                .as_ref()
                .and_then(|s| s.warmup_steps)
                .filter(|_| t.warmup_epochs.is_none()),
            schedule: schedule.map(|s| s.name.to_string()),
            model_ema: crate::train::ema::EmaToml::resolve(t.model_ema, features.model_ema),
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
    /// Point clouds, with `vote`: run the voting this many times (each with its own draws)
    /// and keep the best run's numbers, as the reference's `test` prints the best of 9
    /// `test_vote` runs. That is a selection on the test set; default 1 (one run).
    pub vote_runs: Option<usize>,
    /// Video, `frames` layout: temporal clips × spatial crops per test video, probabilities
    /// averaged (the reference's `--test_num_segment 2 --test_num_crop 3`, the defaults).
    pub test_clips: Option<usize>,
    pub test_crops: Option<usize>,
}

// ---------------------------------------------------------------- checks

/// Bounds on sizes from the config, checked before anything is allocated from them.
const MAX_EPOCHS: usize = 100_000;
const MAX_BATCH: usize = 1 << 20;

/// A param whose value the task cannot take: the key and what is wrong (the config layer
/// turns it into an error naming the file and the line).
#[derive(Debug, Clone, PartialEq)]
pub struct ParamIssue {
    pub key: &'static str,
    pub message: String,
}

fn issue(key: &'static str, message: impl Into<String>) -> Result<(), ParamIssue> {
    Err(ParamIssue {
        key,
        message: message.into(),
    })
}

impl TrainToml {
    /// A warm-up the config sets longer than the run it sets (a default warm-up longer than
    /// a short run is the task's recipe, kept as it is).
    pub fn check_warmup(&self, task: &dyn TaskRecipe) -> Result<(), ParamIssue> {
        let epochs = self.epochs.unwrap_or(task.defaults().epochs);
        match self.warmup_epochs {
            Some(w) if w > epochs => issue(
                "warmup_epochs",
                format!("warmup_epochs = {w} is longer than the run (epochs = {epochs})"),
            ),
            _ => Ok(()),
        }
    }

    /// Keys set for a recipe feature the task does not have (before defaults are filled in).
    pub fn check_features(&self, task: &dyn TaskRecipe) -> Result<(), ParamIssue> {
        let f = task.features();
        if !f.frames_augment && (self.augment.is_some() || self.repeated_aug.is_some()) {
            return issue(
                if self.augment.is_some() { "augment" } else { "repeated_aug" },
                "augment and repeated_aug are the video recipe's (ssv2.tokens, layout = \"frames\"); remove them for this task",
            );
        }
        if let Some(name) = &self.schedule {
            if task.schedule(name).is_none() {
                let names = task.schedule_names();
                return issue(
                    "schedule",
                    if names.is_empty() {
                        format!(
                            "schedule = \"{name}\": this task has no named schedules; remove it"
                        )
                    } else {
                        format!(
                            "unknown schedule \"{name}\"; this task's are {}",
                            names.join(", ")
                        )
                    },
                );
            }
        }
        if matches!(self.lr_steps, Some(LrStepsToml::Switch(true)))
            && task.reference_lr_steps(1).is_none()
        {
            return issue(
                "lr_steps",
                "lr_steps = true names the forecasting reference's schedule; for this task give the steps, e.g. lr_steps = { epochs = [16, 20], rate = 0.25 }",
            );
        }
        Ok(())
    }
}

impl TrainParams {
    /// The schedule's and the augmentation's values.
    pub fn check_schedule(&self) -> Result<(), ParamIssue> {
        if let Some(why) = self.model_ema.and_then(crate::train::ema::check_decay) {
            return issue("model_ema", why);
        }
        if let Some(s) = &self.lr_steps {
            if !(s.rate > 0.0 && s.rate.is_finite()) {
                return issue(
                    "lr_steps",
                    format!("lr_steps.rate = {} must be a positive number", s.rate),
                );
            }
        }
        if let Some(a) = &self.augment {
            a.validate()
                .or_else(|e| issue("augment", format!("augment: {e}")))?;
        }
        if !(1..=16).contains(&self.repeated_aug) {
            return issue(
                "repeated_aug",
                format!("repeated_aug = {} must be in 1..=16", self.repeated_aug),
            );
        }
        Ok(())
    }

    /// The values of the block's, the loop's and the recipe's params, for `task`.
    pub fn check_values(&self, task: &dyn TaskRecipe) -> Result<(), ParamIssue> {
        let f = task.features();
        match (self.mlp_hidden, self.mode) {
            (Some(_), m) if m != BlockMode::Mlp => {
                return issue(
                    "mlp_hidden",
                    format!("mlp_hidden applies to mode = \"mlp\" only (mode is \"{m}\")"),
                )
            }
            (Some(0), _) => return issue("mlp_hidden", "mlp_hidden must be positive"),
            _ => {}
        }
        if self.epochs == 0 || self.batch_size == 0 || self.epochs_per_checkpoint == 0 {
            return issue(
                "epochs",
                "epochs, batch_size and epochs_per_checkpoint must be positive",
            );
        }
        for (key, v, max) in [
            ("epochs", self.epochs, MAX_EPOCHS),
            ("batch_size", self.batch_size, MAX_BATCH),
            ("warmup_epochs", self.warmup_epochs, MAX_EPOCHS),
        ] {
            if v > max {
                return issue(key, format!("{key} = {v} is over the limit of {max}"));
            }
        }
        for (key, v) in [("lr", self.lr), ("min_lr", self.min_lr)] {
            if !v.is_finite() || v < 0.0 || (key == "lr" && v == 0.0) {
                return issue(key, format!("{key} = {v} must be a finite number above 0"));
            }
        }
        for (key, v) in [
            ("weight_decay", self.weight_decay),
            ("adapter_lr_scale", self.adapter_lr_scale),
            ("no_decay_lr_scale", self.no_decay_lr_scale),
        ] {
            if !v.is_finite() || v < 0.0 {
                return issue(key, format!("{key} = {v} must be a finite number ≥ 0"));
            }
        }
        if !(self.grad_clip.is_finite() && self.grad_clip >= 0.0) {
            return issue(
                "grad_clip",
                format!(
                    "grad_clip = {} must be a finite norm ≥ 0 (0 = no clipping)",
                    self.grad_clip
                ),
            );
        }
        if !(0.0..1.0).contains(&self.label_smoothing) {
            return issue(
                "label_smoothing",
                format!(
                    "label_smoothing = {} must be in [0, 1)",
                    self.label_smoothing
                ),
            );
        }
        if let Some(s) = &self.lr_steps {
            if !s.epochs.windows(2).all(|w| w[0] <= w[1]) {
                return issue(
                    "lr_steps",
                    format!(
                        "lr_steps.epochs = {:?} must be in increasing order",
                        s.epochs
                    ),
                );
            }
        }
        if let Some(v) = self.layer_decay {
            if !(f.layer_decay && v > 0.0 && v < 1.0) {
                return issue(
                    "layer_decay",
                    format!("layer_decay = {v}: VideoMAE's layer-wise lr decay is for video ViTs and must be in (0, 1] (1 = off)"),
                );
            }
        }
        let mixing = self.mixup != 0.0 || self.cutmix != 0.0;
        if !(self.mixup >= 0.0
            && self.cutmix >= 0.0
            && (0.0..=1.0).contains(&self.mixup_switch_prob))
            || (mixing && !f.mixing)
        {
            return issue(
                if self.mixup != 0.0 { "mixup" } else { "cutmix" },
                "mixup and cutmix are Beta alphas ≥ 0 (0 = off) for video stages, mixup_switch_prob a probability",
            );
        }
        if self.resample && !f.resample {
            return issue(
                "resample",
                "resample = true is Point-BERT's per-step resampling of point clouds; remove it for this task",
            );
        }
        Ok(())
    }
}

impl EvalParams {
    /// `vote` is set where the task has no test-time voting.
    pub fn refuse_vote(&self) -> Result<(), ParamIssue> {
        if self.vote.is_some() || self.vote_runs.is_some() {
            return issue(
                if self.vote.is_some() { "vote" } else { "vote_runs" },
                "vote and vote_runs are the point-cloud test-time voting; remove them for this task",
            );
        }
        Ok(())
    }

    /// `vote_runs`: in 1..=100, and only with `vote`.
    pub fn check_vote_runs(&self) -> Result<(), ParamIssue> {
        match (self.vote_runs, self.vote) {
            (None, _) => Ok(()),
            (Some(r), _) if !(1..=100).contains(&r) => issue(
                "vote_runs",
                format!("vote_runs = {r} must be in 1..=100 (the reference runs 9)"),
            ),
            (Some(_), None) => issue(
                "vote_runs",
                "vote_runs repeats the test-time voting; set vote = N (the reference: 10) too",
            ),
            _ => Ok(()),
        }
    }

    /// `test_clips` / `test_crops`: in 1..=16 where the task has the multi-view test
    /// (`allowed`), refused elsewhere.
    pub fn check_test_views(&self, allowed: bool) -> Result<(), ParamIssue> {
        for (key, v) in [
            ("test_clips", self.test_clips),
            ("test_crops", self.test_crops),
        ] {
            match v {
                Some(_) if !allowed => {
                    return issue(
                        key,
                        format!("{key} is the video multi-view test; remove it for this task"),
                    )
                }
                Some(n) if !(1..=16).contains(&n) => {
                    return issue(key, format!("{key} = {n} must be in 1..=16"))
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// (temporal clips, spatial crops) of the video multi-view test.
    pub fn test_views(&self) -> (usize, usize) {
        (self.test_clips.unwrap_or(2), self.test_crops.unwrap_or(3))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::train::recipe::TaskRecipe;
    use crate::train::task::forecast::Forecasting;
    use crate::train::task::pointcloud::PointCloud;
    use crate::train::task::video::Video;

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
        let key = serde_json::to_value(resolved_defaults(&Video)).unwrap();
        assert!(key.get("lr_steps").is_none(), "unset: not in the key");
        let resolve = |v: serde_json::Value, task: &dyn TaskRecipe| {
            let raw: TrainToml = serde_json::from_value(v).unwrap();
            TrainParams::resolve(raw, task).lr_steps
        };
        assert_eq!(
            resolve(
                serde_json::json!({"data": "d", "lr_steps": {"epochs": [16, 20], "rate": 0.25}}),
                &Video
            ),
            Some(steps.clone())
        );
        // Forecasting: `lr_steps = true` is the reference's steps at 2/3 and 5/6 of the
        // epochs; by default the `paper` schedule's cosine.
        assert_eq!(
            resolve(
                serde_json::json!({"data": "d", "epochs": 24, "lr_steps": true}),
                &Forecasting
            ),
            Some(steps.clone())
        );
        assert_eq!(
            resolve(
                serde_json::json!({"data": "d", "epochs": 8, "lr_steps": true}),
                &Forecasting
            )
            .unwrap()
            .epochs,
            vec![5, 7]
        );
        assert_eq!(
            resolve(serde_json::json!({"data": "d", "epochs": 24}), &Forecasting),
            None
        );
        assert_eq!(
            resolve(
                serde_json::json!({"data": "d", "lr_steps": false}),
                &Forecasting
            ),
            None
        );
    }

    #[test]
    fn vectornet_schedules_are_named_presets_and_explicit_keys_win() {
        let paper = resolved_defaults(&Forecasting);
        assert_eq!(paper.schedule.as_deref(), Some("paper"));
        assert_eq!((paper.epochs, paper.warmup_epochs), (60, 1));
        assert_eq!((paper.lr_steps.clone(), paper.warmup_steps), (None, None));
        let sf = resolved(
            serde_json::json!({"data": "d", "schedule": "streaming-forecasting"}),
            &Forecasting,
        );
        assert_eq!((sf.epochs, sf.warmup_epochs), (24, 0));
        assert_eq!(
            sf.warmup_steps,
            Some(WarmupSteps {
                steps: 1000,
                start_ratio: 1e-3,
                pass: true,
            })
        );
        assert_eq!(
            sf.lr_steps,
            Some(LrSteps {
                epochs: vec![16, 20],
                rate: 0.25
            })
        );
        assert_eq!((sf.lr, sf.weight_decay, sf.grad_clip), (5e-4, 1e-4, 0.1));
        // Explicit keys win; an explicit epoch warm-up replaces the iteration warm-up.
        let mine = resolved(
            serde_json::json!({"data": "d", "schedule": "streaming-forecasting",
                               "epochs": 3, "warmup_epochs": 1, "lr_steps": false}),
            &Forecasting,
        );
        assert_eq!((mine.epochs, mine.warmup_epochs), (3, 1));
        assert_eq!((mine.lr_steps, mine.warmup_steps), (None, None));
        // Other tasks have no named schedules and none is recorded.
        assert_eq!(resolved_defaults(&PointCloud).schedule, None);
        let raw: TrainToml =
            serde_json::from_value(serde_json::json!({"data": "d", "schedule": "paper"})).unwrap();
        assert_eq!(raw.check_features(&PointCloud).unwrap_err().key, "schedule");
        let raw: TrainToml =
            serde_json::from_value(serde_json::json!({"data": "d", "schedule": "fast"})).unwrap();
        let e = raw.check_features(&Forecasting).unwrap_err();
        assert!(e.message.contains("streaming-forecasting"), "{e:?}");
    }

    /// The params a config with only `data` gets for a task.
    pub(crate) fn resolved_defaults(task: &dyn TaskRecipe) -> TrainParams {
        let raw: TrainToml = serde_json::from_value(serde_json::json!({"data": "d"})).unwrap();
        TrainParams::resolve(raw, task)
    }

    fn resolved(json: serde_json::Value, task: &dyn TaskRecipe) -> TrainParams {
        TrainParams::resolve(serde_json::from_value(json).unwrap(), task)
    }

    #[test]
    fn presets_fill_in_the_reference_scripts_and_explicit_keys_win() {
        let s = resolved(
            serde_json::json!({"data": "d", "preset": "videomae_ssv2_vit_s"}),
            &Video,
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
            &Video,
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
        let off = resolved(serde_json::json!({"data": "d", "augment": false}), &Video);
        assert_eq!(off.augment, None);
        let t = resolved(
            serde_json::json!({"data": "d", "augment": {"erase_prob": 0.0, "rand_augment": "rand-m9-n2-mstd0.5-inc1"}}),
            &Video,
        );
        let a = t.augment.unwrap();
        assert_eq!((a.erase_prob, a.scale), (0.0, [0.08, 1.0]));
        assert_eq!(
            a.rand_augment.map(|r| r.to_string()).as_deref(),
            Some("rand-m9-n2-mstd0.5-inc1")
        );
        let none = resolved(
            serde_json::json!({"data": "d", "augment": {"rand_augment": "none"}}),
            &Video,
        );
        assert_eq!(none.augment.unwrap().rand_augment, None);
        // Only video has them.
        assert_eq!(resolved_defaults(&PointCloud).augment, None);
        assert_eq!(resolved_defaults(&Video).repeated_aug, 1);
    }

    #[test]
    fn defaults_are_the_tasks_reference_recipes() {
        let pc = resolved_defaults(&PointCloud);
        assert_eq!(
            (pc.epochs, pc.batch_size, pc.lr, pc.grad_clip),
            (300, 32, 5e-4, 10.0)
        );
        assert_eq!(
            pc.label_smoothing, 0.0,
            "the reference's --label_smoothing is off"
        );
        assert_eq!((pc.adapter_lr_scale, pc.no_decay_lr_scale), (0.5, 0.1));
        let video = resolved_defaults(&Video);
        assert_eq!((video.epochs, video.warmup_epochs, video.lr), (40, 5, 1e-3));
        assert_eq!((video.grad_clip, video.label_smoothing), (0.0, 0.1));
        assert_eq!(
            (video.adapter_lr_scale, video.no_decay_lr_scale),
            (1.0, 1.0)
        );
        assert_eq!(resolved_defaults(&Forecasting).epochs, 60);
        // VideoMAE's lr is per 256 samples: its ViT-S script's 1e-3 at batch 6 × 4 GPUs.
        let mut v = resolved_defaults(&Video);
        assert!(v.lr_per_256 && !resolved_defaults(&PointCloud).lr_per_256);
        v.batch_size = 24;
        let (peak, floor) = v.schedule_lrs();
        assert!((peak - 9.375e-5).abs() < 1e-12 && (floor - 1e-6 * 24.0 / 256.0).abs() < 1e-15);
        assert_eq!(
            (
                resolved_defaults(&Video).mixup,
                resolved_defaults(&Video).cutmix
            ),
            (0.8, 1.0)
        );
        // What a config spells out wins.
        let raw: TrainToml =
            serde_json::from_value(serde_json::json!({"data": "d", "epochs": 7, "lr": 0.1}))
                .unwrap();
        let p = TrainParams::resolve(raw, &Video);
        assert_eq!((p.epochs, p.lr, p.warmup_epochs), (7, 0.1, 5));
    }
}
