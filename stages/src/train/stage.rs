//! Stages `train` (an encoder + LLM block on token shards; which encoder is the task of the
//! stage its `data` names, `train::registry`) and `eval` (the trained model's metrics on the
//! held-out split): building them from a config, with every check that needs the config
//! (stage names, kinds, files), and their Stage impls. This is where the one lookup of the
//! task by data kind happens; the loop is `trainer.rs`, the eval `eval.rs`.
//!
//! Training units are checkpoints: each unit trains `epochs_per_checkpoint` epochs starting
//! from the previous unit's checkpoint (weights, AdamW moments, step; the shuffle and
//! augmentation RNGs derive from (seed, epoch/step), so the step is the whole RNG state and
//! the epoch is the data cursor). A killed run resumes from the last checkpoint and reaches
//! the same weights as an uninterrupted one.

use super::block::BlockMode;
use super::ema::EMA_MODEL_FILE;
use super::params::{EvalParams, ParamIssue, TrainParams, TrainToml};
use super::plan::Flops;
use super::registry::{self, DynTask};
use super::task::{best_epoch, EpochMetrics};
use super::trainer::{BEST_MODEL_FILE, BEST_UNIT_FILE};
use anyhow::Result;
use lm4ve_pipeline::{
    ConfigError, InputSpec, PipelineConfig, Stage, StageConfig, StageCtx, UnitOutput, UnitPlan,
    UnitRecord, Upstream,
};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

pub const TRAIN_KIND: &str = "train";
pub const EVAL_KIND: &str = "eval";
/// Bump when trained weights would change for the same inputs and params.
/// 2: gradients flow through the ViT and VectorNet attention probabilities (candle's
/// `softmax_last_dim` has no backward, so q and k had received none).
/// 3: Point-BERT's per-step resampling; VectorNet as its reference (global graph residual,
/// every actor decoded and supervised, prediction fusion, JointLoss normalization).
/// 4: VectorNet takes its reference's init (Xavier-uniform Linear weights, biases U(0, 1)).
/// 5: each encoder starts as its reference's `__init__` leaves it (`models::init_rules`:
/// PyTorch's defaults for Point-BERT, VideoMAE's init with `init_scale`, timm's for the image
/// ViT, the untruncated trunc-normal 0.02); the best epoch's weights are kept
/// (`model-best.safetensors`).
/// 6: the encoders' LayerNorm is one node on the CPU (`ops::layer_norm`): the same function,
/// summed in another order, so trained weights differ in their last bits.
pub const TRAIN_VERSION: u32 = 6;
/// 2: the best epoch's weights scored beside the last; the top level of metrics.json is the
/// task's reported checkpoint (`train::task::Reported`).
/// 3: each scored checkpoint's per-sample predictions (`predictions-last.parquet`,
/// `predictions-best.parquet`; `train::predictions`).
/// 4: the encoders' LayerNorm is one node on the CPU (`ops::layer_norm`; scores may differ
/// in their last bits for the same weights).
pub const EVAL_VERSION: u32 = 4;

/// The files a `train` artifact holds whatever its task.
const TRAIN_FILES: &[&str] = &[
    "checkpoint.safetensors",
    "model.safetensors",
    BEST_UNIT_FILE,
    BEST_MODEL_FILE,
    "metrics.jsonl",
    "curves.png",
];

pub struct TrainStage {
    name: String,
    p: TrainParams,
    task: &'static dyn DynTask,
    /// The typed `[model]` table with its defaults, serialized.
    model: serde_json::Value,
    /// The config, for the dry run's FLOP count behind [`Stage::cost_hint`].
    config: Arc<PipelineConfig>,
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

/// A [`ParamIssue`] of stage `sc` as a config error naming its key.
fn issue_error(config: &PipelineConfig, sc: &StageConfig, e: ParamIssue) -> ConfigError {
    config.param_error(&sc.name, Some(e.key), e.message)
}

/// The task of the stage `data` names (its kind must write training data).
fn task_of(
    config: &PipelineConfig,
    sc: &StageConfig,
    data: &str,
) -> Result<&'static dyn DynTask, ConfigError> {
    let kind = config
        .stages
        .get(data)
        .map(|d| d.kind.as_str())
        .unwrap_or_default();
    registry::for_data_kind(kind).ok_or_else(|| {
        config.param_error(
            &sc.name,
            Some("data"),
            format!(
                "`data = \"{data}\"` is a `{kind}` stage; it must name a stage of a kind a train stage reads: {}",
                registry::data_kinds().join(", ")
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
        config: Arc::new(config.clone()),
    }))
}

/// A `train` stage's params with every default filled in, its task and its typed model
/// config (serialized), checked as `build_train` checks them. `check_init_file`: also check
/// the `init` checkpoint is there and readable (its headers); a dry run, which loads no
/// weights, skips that and gets `init` resolved against the config's folder.
pub(crate) fn parse_train(
    config: &PipelineConfig,
    sc: &StageConfig,
    check_init_file: bool,
) -> Result<(TrainParams, &'static dyn DynTask, serde_json::Value), ConfigError> {
    let raw: TrainToml = config.typed_params(sc)?;
    check_upstream_name(config, sc, "data", &raw.data)?;
    let task = task_of(config, sc, &raw.data)?;
    if let Some(name) = &raw.preset {
        if task.preset(name).is_none() {
            let message = match registry::preset_owner(name) {
                Some(owner) => format!(
                    "preset `{name}` is a {} recipe; `data` is not an {} stage",
                    owner.name(),
                    owner.data_kind()
                ),
                None => format!(
                    "unknown preset `{name}`; the presets are {}",
                    registry::preset_names().join(", ")
                ),
            };
            return Err(config.param_error(&sc.name, Some("preset"), message));
        }
    }
    raw.check_features(task)
        .and_then(|_| raw.check_warmup(task))
        .map_err(|e| issue_error(config, sc, e))?;
    let mut p = TrainParams::resolve(raw, task);
    p.check_schedule().map_err(|e| issue_error(config, sc, e))?;
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
    p.check_values(task)
        .map_err(|e| issue_error(config, sc, e))?;
    let model = task
        .model_config(&p.model)
        .map_err(|e| config.param_error(&sc.name, Some("model"), e))?;
    check_model_values(&model).map_err(|e| issue_error(config, sc, e))?;
    Ok((p, task, model))
}

/// The `[model]` values every model shares the meaning of: sizes (`*_dim`, `*_dims`,
/// `heads`, `patch`, `modes`, `subgraph_widths`) positive and bounded, and the drop rates
/// (`drop_path`, `head_dropout`) in [0, 1).
fn check_model_values(model: &serde_json::Value) -> Result<(), ParamIssue> {
    let Some(obj) = model.as_object() else {
        return Ok(());
    };
    for (key, v) in obj {
        let sizes: Vec<u64> = match v {
            serde_json::Value::Array(a) => a.iter().filter_map(|x| x.as_u64()).collect(),
            other => other.as_u64().into_iter().collect(),
        };
        let is_size = key.ends_with("_dim")
            || key.ends_with("_dims")
            || matches!(
                key.as_str(),
                "heads" | "patch" | "modes" | "subgraph_widths"
            );
        if is_size && sizes.iter().any(|&s| s == 0 || s > 1 << 20) {
            return Err(ParamIssue {
                key: "model",
                message: format!(
                    "[model] {key} = {v} must be positive and at most {}",
                    1 << 20
                ),
            });
        }
        if matches!(key.as_str(), "drop_path" | "head_dropout") {
            let r = v.as_f64().unwrap_or(f64::NAN);
            if !(0.0..1.0).contains(&r) {
                return Err(ParamIssue {
                    key: "model",
                    message: format!("[model] {key} = {v} must be a rate in [0, 1)"),
                });
            }
        }
    }
    Ok(())
}

/// `init_stage`: names another train stage of the same task (not this one), and `init` is
/// not set as well.
fn check_init_stage(
    config: &PipelineConfig,
    sc: &StageConfig,
    task: &dyn DynTask,
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
    if task.init_family().is_none() {
        return err(format!(
            "`init_stage` loads PointBERT (pc.tokens) or video ViT (ssv2.tokens) encoders; the {} model has no init",
            task.title()
        ));
    }
    let up_task = config
        .typed_params::<TrainToml>(up)
        .ok()
        .and_then(|t| task_of(config, up, &t.data).ok());
    if up_task.map(|t| t.data_kind()) != Some(task.data_kind()) {
        return err(format!(
            "`init_stage = \"{name}\"` trains another task's model ({}, this stage: {})",
            up_task.map_or("None".to_string(), |t| format!("Some({})", t.title())),
            task.title()
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
    task: &dyn DynTask,
    init: &std::path::Path,
) -> Result<PathBuf, ConfigError> {
    let path = config.resolve(init);
    let Some(fam) = task.init_family() else {
        return Err(config.param_error(
            &sc.name,
            Some("init"),
            format!(
                "`init` loads Point-BERT (pc.tokens) or VideoMAE (ssv2.tokens) encoders; the {} model has no pretrained checkpoint format",
                task.title()
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

/// A training's FLOPs from its step's (`flops`, for `batch` rows) and its data's samples per
/// split: the `train` split (every sample, when the data has no such split) is trained on,
/// `repeated_aug` times per epoch unless the RASampler keeps the epoch's length, and the
/// other splits are scored (forward only) after each epoch.
fn training_flops(
    flops: &Flops,
    batch: usize,
    p: &TrainParams,
    splits: &BTreeMap<String, u64>,
) -> f64 {
    let all: u64 = splits.values().sum();
    let train = splits.get("train").copied().unwrap_or(all);
    let held_out = (all - train) as f64;
    let repeats = if p.ra_sampler {
        1
    } else {
        p.repeated_aug.max(1)
    };
    let rows = (train as usize * repeats) as f64;
    let per_row = 1.0 / batch.max(1) as f64;
    p.epochs as f64 * per_row * (flops.total * rows + flops.forward * held_out)
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
        v["model"] = self.model.clone();
        let task_version = self.task.code_version();
        if task_version > 0 {
            v["task_version"] = task_version.into();
        }
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
        Ok((0..self.p.units())
            .map(|k| UnitPlan {
                id: TrainParams::unit_id(k),
                work: self
                    .p
                    .epochs_per_checkpoint
                    .min(self.p.epochs - k * self.p.epochs_per_checkpoint)
                    as u64,
            })
            .collect())
    }

    fn run_unit(&self, ctx: &StageCtx, unit: &UnitPlan, out: &mut UnitOutput) -> Result<()> {
        self.task
            .train_unit(&self.name, &self.p, &self.model, ctx, unit, out)
    }

    /// The common training files and the task's plots (`Task::extra_files`).
    fn files(&self) -> Vec<String> {
        TRAIN_FILES
            .iter()
            .chain(self.task.extra_files())
            .chain(self.p.model_ema.map(|_| EMA_MODEL_FILE).iter())
            .map(|s| s.to_string())
            .collect()
    }

    /// The dry run's FLOPs of the whole training: a step's FLOPs per row times the rows of
    /// every epoch, plus the forward of the held-out samples each epoch scores.
    fn cost_hint(&self, upstream: &BTreeMap<String, Upstream>) -> Option<f64> {
        let data = upstream.get(&self.p.data)?;
        let plan = self
            .task
            .plan(&self.name, &self.p, &self.model, &self.config, false)
            .ok()?;
        Some(training_flops(
            &plan.flops,
            plan.batch,
            &self.p,
            &data.manifest.splits,
        ))
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
        let best = best_epoch(epochs.iter())
            .map(|m| serde_json::json!({ "epoch": m.epoch, "score": m.test_acc }));
        let mut meta = serde_json::json!({
            "task": self.task.name(),
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
        if let Some(schedule) = &self.p.schedule {
            meta["schedule"] = schedule.clone().into();
        }
        if let Some(preset) = &self.p.preset {
            meta["preset"] = preset.clone().into();
        }
        if self.p.repeated_aug > 1 {
            meta["repeated_aug"] = self.p.repeated_aug.into();
        }
        if let Some(decay) = self.p.model_ema {
            meta["model_ema"] = decay.into();
        }
        // StreamingForecasting's warm-up pass (the first unit ran it).
        if let Some(w) = units.first().and_then(|u| u.meta.get("warmup_pass")) {
            meta["warmup_pass"] = w.clone();
        }
        // What the first unit loaded from `init` (load_state_dict-style report).
        if let Some(init) = units.first().and_then(|u| u.meta.get("init")) {
            meta["init"] = init.clone();
        }
        Ok(meta)
    }
}

// ---------------------------------------------------------------- eval

pub struct EvalStage {
    p: EvalParams,
    task: &'static dyn DynTask,
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
    task.check_eval(&p)
        .map_err(|e| issue_error(config, sc, e))?;
    Ok(Box::new(EvalStage { p, task, split }))
}

impl EvalStage {
    fn batch_size(&self) -> usize {
        self.p
            .batch_size
            .unwrap_or_else(|| self.task.defaults().batch_size)
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
        self.task.eval_key_params(&self.p, &mut k);
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
        self.task
            .eval_unit(&self.p, &self.split, self.batch_size(), ctx, out)
    }
    /// The common files and the predictions of each scored checkpoint.
    fn files(&self) -> Vec<String> {
        lm4ve_pipeline::trust::KNOWN_FILES
            .iter()
            .chain(super::predictions::FILES.iter())
            .map(|s| s.to_string())
            .collect()
    }
    fn finish(&self, _ctx: &StageCtx, units: &[UnitRecord]) -> Result<serde_json::Value> {
        Ok(units.first().map(|u| u.meta.clone()).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::params::tests::resolved_defaults;
    use crate::train::task::video::Video;

    #[test]
    fn training_flops_count_every_epoch_its_rows_and_the_scored_split() {
        // A step of 4 rows: 8 forward, 40 in all (exact in binary).
        let flops = Flops {
            forward: 8.0,
            backward: 32.0,
            total: 40.0,
            block_forward: 0.0,
        };
        let mut p = resolved_defaults(&Video);
        p.epochs = 3;
        p.repeated_aug = 2;
        p.ra_sampler = false;
        let splits = BTreeMap::from([("train".to_string(), 100), ("val".to_string(), 20)]);
        // Per row: 10 trained, 2 scored; 200 rows an epoch, 20 scored.
        let per_epoch = 10.0 * 200.0 + 2.0 * 20.0;
        assert_eq!(training_flops(&flops, 4, &p, &splits), 3.0 * per_epoch);
        // The RASampler keeps an epoch's length; data without a train split trains on all.
        p.ra_sampler = true;
        assert_eq!(
            training_flops(&flops, 4, &p, &splits),
            3.0 * (10.0 * 100.0 + 2.0 * 20.0)
        );
        let all = BTreeMap::from([("all".to_string(), 50)]);
        assert_eq!(training_flops(&flops, 4, &p, &all), 3.0 * 10.0 * 50.0);
    }
}
