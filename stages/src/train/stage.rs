//! Stages `train` (an encoder + LLM block on token shards: PointBERT on `pc.tokens`, the
//! VideoMAE ViT on `ssv2.tokens`; see `task.rs`) and `eval` (accuracy of the trained model on
//! the held-out split). Training units are checkpoints: each unit trains
//! `epochs_per_checkpoint` epochs starting from the previous unit's checkpoint (weights,
//! AdamW moments, step; the shuffle and augmentation RNGs derive from (seed, epoch/step), so
//! the step is the whole RNG state and the epoch is the data cursor). A killed run resumes
//! from the last checkpoint and reaches the same weights as an uninterrupted one.

use super::block::{BlockMode, LlmBlock};
use super::nn::{init_vars, step_rng};
use super::optim::{cosine_lr, AdamW};
use super::plot::curves_png;
use super::task::{evaluate, train_loss, Dataset, Model, ModelConfig, Task};
use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use lm4ve_pipeline::{
    ConfigError, PipelineConfig, Stage, StageConfig, StageCtx, UnitOutput, UnitPlan, UnitRecord,
    Upstream,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

pub const TRAIN_KIND: &str = "train";
pub const EVAL_KIND: &str = "eval";
/// Bump when trained weights would change for the same inputs and params.
pub const TRAIN_VERSION: u32 = 1;
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
}

pub struct TrainStage {
    name: String,
    p: TrainParams,
    task: Task,
    model: ModelConfig,
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

/// The model and everything needed to train or run it.
pub struct Built {
    pub varmap: VarMap,
    pub model: Model,
    /// The block's weights as Vars in trainable mode, named `llm_block.<tensor>`.
    pub block_vars: Vec<(String, Var)>,
}

fn load_block(
    up: Option<&Upstream>,
    mode: BlockMode,
    seed: u64,
    device: &Device,
) -> Result<Option<(LlmBlock, BlockMode)>> {
    if mode == BlockMode::None {
        return Ok(None);
    }
    let up = up.context("the block stage is not built")?;
    let path = up
        .manifest
        .file_path(&up.manifest_path, "block.safetensors")
        .context("the `block` stage has no block.safetensors; it must be an llm.block stage")?;
    let (cfg, tensors, _meta) =
        crate::llm::load_block_file(&path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let block = match mode {
        BlockMode::Random => LlmBlock::random(&cfg, seed, device)?,
        _ => LlmBlock::from_tensors(&cfg, &tensors, device)?,
    };
    Ok(Some((block, mode)))
}

pub fn build_model(
    cfg: &ModelConfig,
    data: &Dataset,
    num_classes: usize,
    mode: BlockMode,
    block_up: Option<&Upstream>,
    seed: u64,
    device: &Device,
) -> Result<Built> {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
    let block = load_block(block_up, mode, seed, device)?;
    let mut block_vars = Vec::new();
    let block = match block {
        Some((mut b, BlockMode::Trainable)) => {
            let names: Vec<String> = b
                .config()
                .tensor_shapes()
                .iter()
                .map(|(n, _)| n.to_string())
                .collect();
            let vars = b.make_trainable()?;
            block_vars = names
                .into_iter()
                .zip(vars)
                .map(|(n, v)| (format!("llm_block.{n}"), v))
                .collect();
            Some((b, BlockMode::Trainable))
        }
        other => other,
    };
    let model = Model::build(cfg, data, num_classes, block, vb)?;
    init_vars(&varmap, seed)?;
    Ok(Built {
        varmap,
        model,
        block_vars,
    })
}

fn sorted_vars(varmap: &VarMap) -> Result<Vec<(String, Var)>> {
    let data = varmap
        .data()
        .lock()
        .map_err(|_| anyhow::anyhow!("varmap lock poisoned"))?;
    let mut v: Vec<(String, Var)> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(v)
}

fn is_running_stat(name: &str) -> bool {
    name.ends_with("running_mean") || name.ends_with("running_var")
}

fn num_classes(data: &Upstream) -> Result<usize> {
    let n = data
        .manifest
        .meta
        .get("num_classes")
        .and_then(|v| v.as_u64())
        .context("the data artifact does not say its number of classes (meta.num_classes)")?;
    anyhow::ensure!(n > 0, "the data artifact has no labelled samples");
    Ok(n as usize)
}

fn checkpoint_bytes(tensors: &HashMap<String, Tensor>) -> Result<Vec<u8>> {
    // candle writes files only; the object store wants bytes.
    let dir = tempdir_in_tmp()?;
    let path = dir.join("ckpt.safetensors");
    candle_core::safetensors::save(tensors, &path)?;
    let bytes = std::fs::read(&path)?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(bytes)
}

fn tempdir_in_tmp() -> Result<std::path::PathBuf> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let d = std::env::temp_dir().join(format!(
        "lm4ve-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

impl TrainStage {
    fn units(&self) -> usize {
        self.p.epochs.div_ceil(self.p.epochs_per_checkpoint)
    }

    fn unit_id(k: usize) -> String {
        format!("ckpt-{k:05}")
    }

    fn params_for(&self, built: &Built) -> Result<Vec<(String, Var, f64, f64)>> {
        let mut params = Vec::new();
        for (name, var) in sorted_vars(&built.varmap)? {
            if is_running_stat(&name) {
                continue;
            }
            let no_decay =
                var.rank() <= 1 || name.contains("cls_token") || name.contains("cls_pos");
            let mut lr_scale = if no_decay {
                self.p.no_decay_lr_scale
            } else {
                1.0
            };
            if name.starts_with("llm_adapter") {
                lr_scale *= self.p.adapter_lr_scale;
            }
            let wd = if no_decay { 0.0 } else { self.p.weight_decay };
            params.push((name, var, lr_scale, wd));
        }
        for (name, var) in &built.block_vars {
            let wd = if var.rank() <= 1 {
                0.0
            } else {
                self.p.weight_decay
            };
            params.push((name.clone(), var.clone(), 1.0, wd));
        }
        Ok(params)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct EpochMetrics {
    epoch: usize,
    step: u64,
    lr: f64,
    loss: f64,
    /// Fraction right on the training batches: classes, or for forecasts hits (best-of-K
    /// final error within 2 m).
    train_acc: f64,
    /// The held-out score of `task::Evaluation` (top-1, or 1 − miss rate).
    test_acc: f64,
    /// Wall-clock time: logged, never stored (artifacts are a pure function of their key;
    /// the run's time is in its run record).
    #[serde(skip)]
    seconds: f64,
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
        let k: usize = unit
            .id
            .trim_start_matches("ckpt-")
            .parse()
            .context("unit id")?;
        let device = super::device::device()?;
        let data = &ctx.upstream[&self.p.data];
        let classes = if self.task.is_classification() {
            num_classes(data)?
        } else {
            0
        };
        let train = Dataset::load(self.task, data, "train")?;
        let test = Dataset::load(self.task, data, self.task.eval_split())?;
        anyhow::ensure!(
            !train.is_empty(),
            "the data artifact has no `train` samples"
        );
        let block_up = self.p.block.as_ref().and_then(|b| ctx.upstream.get(b));
        let built = build_model(
            &self.model,
            &train,
            classes,
            self.p.mode,
            block_up,
            self.p.seed,
            &device,
        )?;
        let mut opt = AdamW::new(self.params_for(&built)?)?;
        let all_vars = sorted_vars(&built.varmap)?;
        let mut history: Vec<EpochMetrics> = Vec::new();
        if k > 0 {
            let prev = Self::unit_id(k - 1);
            let rec = ctx
                .unit_record(&prev)
                .with_context(|| format!("checkpoint {prev} is missing from the journal"))?;
            let file = rec
                .files
                .iter()
                .find(|f| f.name == "checkpoint.safetensors")
                .context("previous unit has no checkpoint")?;
            let ck = candle_core::safetensors::load(ctx.cache.object_path(&file.blake3), &device)?;
            for (name, var) in all_vars.iter().chain(built.block_vars.iter()) {
                let t = ck
                    .get(&format!("model.{name}"))
                    .with_context(|| format!("checkpoint lacks `{name}`"))?;
                var.set(t)?;
            }
            let step = ck
                .get("train.step")
                .context("checkpoint lacks train.step")?
                .to_vec1::<i64>()?[0] as u64;
            let state: BTreeMap<String, Tensor> = ck
                .iter()
                .filter_map(|(n, t)| n.strip_prefix("opt.").map(|s| (s.to_string(), t.clone())))
                .collect();
            opt.load_state(&state, step)?;
            for j in 0..k {
                if let Some(r) = ctx.unit_record(&Self::unit_id(j)) {
                    if let Ok(h) =
                        serde_json::from_value::<Vec<EpochMetrics>>(r.meta["epochs"].clone())
                    {
                        history.extend(h);
                    }
                }
            }
        }
        let per_epoch = if train.len() >= self.p.batch_size {
            train.len() / self.p.batch_size
        } else {
            1
        };
        let total_steps = (per_epoch * self.p.epochs) as u64;
        let warmup_steps = (per_epoch * self.p.warmup_epochs) as u64;
        let first_epoch = k * self.p.epochs_per_checkpoint;
        let last_epoch = (first_epoch + self.p.epochs_per_checkpoint).min(self.p.epochs);
        let mut new_metrics = Vec::new();
        for epoch in first_epoch..last_epoch {
            let t0 = Instant::now();
            let order = train.epoch_order(&mut step_rng(self.p.seed, "shuffle", epoch as u64));
            let (mut loss_sum, mut right, mut seen) = (0f64, 0u64, 0u64);
            let mut lr = 0.0;
            for b in 0..per_epoch {
                let idx: Vec<usize> = order
                    .iter()
                    .skip(b * self.p.batch_size)
                    .take(self.p.batch_size)
                    .copied()
                    .collect();
                let step = opt.step;
                lr = cosine_lr(step, total_steps, warmup_steps, self.p.lr, self.p.min_lr);
                let mut aug = step_rng(self.p.seed, "augment", step);
                let mut drop = step_rng(self.p.seed, "dropout", step);
                let (x, l) = train.train_batch(&idx, &mut aug, &device)?;
                let out = built.model.forward(&x, Some(&mut drop))?;
                let (loss, hits) = train_loss(&out, &l, self.p.label_smoothing)?;
                let mut grads = loss.backward()?;
                opt.clip_grad_norm(&mut grads, self.p.grad_clip)?;
                opt.step(&grads, lr)?;
                let lv = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
                anyhow::ensure!(lv.is_finite(), "loss became {lv} at step {step}; lower lr (OPT blocks below 1.3B need ~5x lower, PAPER.md §2)");
                loss_sum += lv * idx.len() as f64;
                right += hits;
                seen += idx.len() as u64;
            }
            let test_acc = if test.is_empty() {
                0.0
            } else {
                evaluate(&built.model, &test, classes, self.p.batch_size, &device)?.score
            };
            let m = EpochMetrics {
                epoch,
                step: opt.step,
                lr,
                loss: loss_sum / seen.max(1) as f64,
                train_acc: right as f64 / seen.max(1) as f64,
                test_acc,
                seconds: t0.elapsed().as_secs_f64(),
            };
            tracing::info!(
                "{}: epoch {} loss {:.4} train acc {:.3} test acc {:.3} ({:.1} s)",
                self.name,
                epoch + 1,
                m.loss,
                m.train_acc,
                m.test_acc,
                m.seconds
            );
            new_metrics.push(m);
        }
        // The checkpoint: trainable weights, BN statistics, AdamW moments, step.
        let mut ck: HashMap<String, Tensor> = HashMap::new();
        for (name, var) in all_vars.iter().chain(built.block_vars.iter()) {
            ck.insert(
                format!("model.{name}"),
                var.as_tensor().to_device(&Device::Cpu)?,
            );
        }
        for (name, t) in opt.state() {
            ck.insert(format!("opt.{name}"), t.to_device(&Device::Cpu)?);
        }
        ck.insert(
            "train.step".into(),
            Tensor::new(&[opt.step as i64], &Device::Cpu)?,
        );
        out.add_file("checkpoint.safetensors", &checkpoint_bytes(&ck)?)?;
        history.extend(new_metrics.iter().cloned());
        if k + 1 == self.units() {
            let weights: HashMap<String, Tensor> = ck
                .iter()
                .filter(|(n, _)| n.starts_with("model."))
                .map(|(n, t)| (n.trim_start_matches("model.").to_string(), t.clone()))
                .collect();
            out.add_file("model.safetensors", &checkpoint_bytes(&weights)?)?;
            let mut jsonl = String::new();
            for m in &history {
                jsonl.push_str(&serde_json::to_string(m)?);
                jsonl.push('\n');
            }
            out.add_file("metrics.jsonl", jsonl.as_bytes())?;
            let col = |f: fn(&EpochMetrics) -> f64| history.iter().map(f).collect::<Vec<_>>();
            out.add_file(
                "curves.png",
                &curves_png(
                    &col(|m| m.loss),
                    &col(|m| m.train_acc),
                    &col(|m| m.test_acc),
                )?,
            )?;
        }
        out.set_meta(serde_json::json!({ "epochs": new_metrics }));
        Ok(())
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
