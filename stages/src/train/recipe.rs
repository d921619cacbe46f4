//! What a task's reference recipe says: the training defaults a config may leave out
//! ([`TaskDefaults`]), which recipe features the task has at all ([`Features`]), its named
//! presets and its reference step-decay schedule. A task states these through
//! [`TaskRecipe`]; `params.rs` resolves a stage's TOML against them, so no default tuned for
//! one task is silently applied to another.

use super::schedule::LrSteps;

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

/// The recipe features a task's data and model support. A feature a task lacks is refused in
/// its config (a named key, exit 2); one it has takes the default given here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Features {
    /// Point-BERT's fresh view of the kept raw points every step (`resample`): supported,
    /// and then on by default.
    pub resample: bool,
    /// The frames layout's spatial augmentation and repeated augmentation (`augment`,
    /// `repeated_aug`): supported, and then the reference's augmentation by default.
    pub frames_augment: bool,
    /// Mixup / CutMix with soft targets.
    pub mixing: bool,
    /// VideoMAE's layer-wise lr decay (`layer_decay`).
    pub layer_decay: bool,
    /// `lr` and `min_lr` per 256 samples by default (`lr_per_256`).
    pub lr_per_256: bool,
    /// `lr` and `min_lr` per this many samples, always (DeiT: 512); overrides `lr_per_256`.
    pub lr_batch_base: Option<usize>,
    /// The lr is set once per epoch by timm's `CosineLRScheduler` as DeiT steps it (linear
    /// warm-up from 1e-6 over `warmup_epochs`, then the cosine by epoch), instead of the
    /// per-step warm-up + cosine.
    pub epoch_schedule: bool,
    /// timm's weight-decay groups (DeiT's `add_weight_decay`: no decay for 1-D tensors,
    /// biases, `pos_embed`, `cls_token`; the adapters decay) instead of the point-cloud
    /// reference's.
    pub timm_groups: bool,
    /// `repeated_aug` is DeiT's repeated-augmentation sampler (`train::sampler`): a
    /// sample's copies are consecutive positions of the epoch's order, a batch is
    /// `batch_size` rows; on by default, 3 copies. Otherwise `repeated_aug` is VideoMAE's
    /// copies within a batch (B · repeated_aug rows), off by default.
    pub ra_sampler: bool,
    /// DeiT's model EMA (`model_ema`) on by default (decay 0.99996); any task may turn it on.
    pub model_ema: bool,
}

/// DeiT's copies per sample when `ra_sampler` (its `RASampler` hard-codes 3).
pub const RA_REPEATS: usize = 3;

/// A named reference recipe (`preset = "…"`): the defaults it fills in, the encoder sizes
/// it sets unless the `[model]` table does, and its repeated augmentation.
#[derive(Debug, Clone)]
pub struct Preset {
    pub name: &'static str,
    pub defaults: TaskDefaults,
    pub model: serde_json::Value,
    pub repeated_aug: usize,
}

/// A warm-up counted in iterations, as StreamingForecasting's `warmup()`: the lr of step
/// `i < steps` is `lr·start_ratio + (lr − lr·start_ratio)·i / steps`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct WarmupSteps {
    pub steps: u64,
    pub start_ratio: f64,
    /// A pass of its own before epoch 0, as the reference runs it (`schedule::WarmupPass`).
    /// The only form since 2026-12-07 (before, the iterations were epoch 0's first steps);
    /// keyed so that artifacts trained the old way are not taken for the new.
    #[serde(default)]
    pub pass: bool,
}

/// A named lr schedule of a task (`schedule = "…"`): what it fills in for the keys a config
/// leaves out (explicit `epochs`, `warmup_epochs`, `lr_steps` win).
#[derive(Debug, Clone, PartialEq)]
pub struct SchedulePreset {
    pub name: &'static str,
    pub epochs: usize,
    pub warmup_epochs: usize,
    /// A warm-up by iterations instead of epochs.
    pub warmup_steps: Option<WarmupSteps>,
    /// The step decay after the warm-up (None: the cosine to `min_lr`).
    pub lr_steps: Option<LrSteps>,
}

/// A task's recipe, as `params.rs` resolves a stage against it.
pub trait TaskRecipe {
    /// The defaults of the task's reference recipe.
    fn defaults(&self) -> TaskDefaults;

    /// The recipe features the task supports.
    fn features(&self) -> Features {
        Features::default()
    }

    /// The task's named presets (their names, in the order error messages list them).
    fn preset_names(&self) -> &'static [&'static str] {
        &[]
    }

    /// The preset `name`, if the task has it.
    fn preset(&self, _name: &str) -> Option<Preset> {
        None
    }

    /// The training augmentation a frames-augmenting task gets when the config leaves
    /// `augment` out.
    fn default_augment(&self) -> super::ops::video_aug::TrainAugment {
        super::ops::video_aug::TrainAugment::default()
    }

    /// The task's named lr schedules (`schedule = "…"`), in the order messages list them.
    fn schedule_names(&self) -> &'static [&'static str] {
        &[]
    }

    /// The schedule `name`, if the task has it.
    fn schedule(&self, _name: &str) -> Option<SchedulePreset> {
        None
    }

    /// The schedule a config that names none gets (None: the task has no named schedules).
    fn default_schedule(&self) -> Option<&'static str> {
        None
    }

    /// The reference's step decay for a run of `epochs` (what `lr_steps = true`, or leaving
    /// it out, means); None: the task's reference schedule is the cosine.
    fn reference_lr_steps(&self, _epochs: usize) -> Option<LrSteps> {
        None
    }
}
