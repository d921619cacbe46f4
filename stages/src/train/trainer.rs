//! The training loop of a `train` stage: build the model from the upstream artifacts, restore
//! the previous work unit's checkpoint, run `epochs_per_checkpoint` epochs (forward, loss,
//! backward, loss scaling, clipping, AdamW), evaluate each epoch, and write the checkpoint,
//! and after the last unit the model, metrics and curves.

use super::block::{BlockCore, BlockMode, LlmBlock, MlpBlock, MlpConfig};
use super::checkpoint;
use super::data::pointcloud::PcViews;
use super::data::prefetch::prefetched;
use super::dist::collective::Collective;
use super::dist::grads::{average_gradients, broadcast_vars};
use super::models::layers::{init_vars, init_vars_xavier, step_rng, Execution};
use super::ops::mixup::MixSpec;
use super::ops::precision::LossScaler;
use super::ops::recompute::GradSink;
use super::ops::video_aug::TrainAugment;
use super::optim::{cosine_lr, AdamW};
use super::stage::{TrainParams, TrainStage};
use super::task::{evaluate, train_loss, Dataset, Model, ModelConfig};
use crate::llm::block_format::BlockConfig;
use crate::plot::{curves_png, curves_png_axes, Series};
use anyhow::{Context, Result};
use candle_core::{DType, Device, Var};
use candle_nn::{VarBuilder, VarMap};
use lm4ve_pipeline::{StageCtx, UnitOutput, UnitPlan, Upstream};
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// Batches made ahead of the one training (enough to hide a resampling or a shard read behind
/// a step; each holds one batch of inputs in memory).
const PREFETCH_BATCHES: usize = 2;

/// The model and everything needed to train or run it.
pub struct Built {
    pub varmap: VarMap,
    pub model: Model,
    /// The block's (or the MLP's) weights as Vars when they train, named `llm_block.<tensor>`
    /// (`llm_block.<i>.<tensor>` in a stack, `llm_mlp.<tensor>` for the MLP).
    pub block_vars: Vec<(String, Var)>,
}

/// Seed of layer `i` of a randomly initialised stack: layer 0 keeps the stage's seed (a
/// single random block is what it always was), later layers get their own streams.
fn layer_seed(seed: u64, i: usize) -> u64 {
    if i == 0 {
        seed
    } else {
        seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }
}

/// The block of `mode` from the `llm.block` artifact: its layers (pretrained or seeded random,
/// stacked with the final norm once after the last), or for `mlp` the MLP of its shape (only
/// the file's header is read); `mlp_hidden` overrides the MLP's FFN size.
fn load_block(
    up: Option<&Upstream>,
    mode: BlockMode,
    mlp_hidden: Option<usize>,
    seed: u64,
    device: &Device,
) -> Result<Option<(BlockCore, BlockMode)>> {
    if mode == BlockMode::None {
        return Ok(None);
    }
    let up = up.context("the block stage is not built")?;
    let path = up
        .manifest
        .file_path(&up.manifest_path, "block.safetensors")
        .context("the `block` stage has no block.safetensors; it must be an llm.block stage")?;
    let (cfg, n, _) = crate::llm::block_file_config(&path)?;
    let core = core_of(
        mode,
        &cfg,
        n,
        || Ok(crate::llm::load_block_stack(&path)?.1),
        mlp_hidden,
        seed,
        device,
    )?;
    Ok(Some((core, mode)))
}

/// The block core of `mode` for `n` layers of shape `cfg`: the pretrained layers
/// (`pretrained` is read only for the modes that use the weights), seeded random ones, or for
/// `mlp` the MLP of that shape. Not for `none`.
pub(super) fn core_of(
    mode: BlockMode,
    cfg: &BlockConfig,
    n: usize,
    pretrained: impl FnOnce() -> Result<Vec<BlockTensors>>,
    mlp_hidden: Option<usize>,
    seed: u64,
    device: &Device,
) -> Result<BlockCore> {
    Ok(match mode {
        BlockMode::None => anyhow::bail!("mode none has no block"),
        BlockMode::Mlp => BlockCore::Mlp(MlpBlock::random(
            &MlpConfig::of_block(cfg, mlp_hidden),
            seed,
            device,
        )?),
        m if m.is_random() => BlockCore::stack(
            (0..n)
                .map(|i| LlmBlock::random(cfg, layer_seed(seed, i), device))
                .collect::<Result<_>>()?,
        )?,
        _ => {
            let layers = pretrained()?;
            anyhow::ensure!(
                layers.len() == n,
                "the block file holds {} layers, its metadata says {n}",
                layers.len()
            );
            BlockCore::stack(
                layers
                    .iter()
                    .map(|t| LlmBlock::from_tensors(cfg, t, device))
                    .collect::<Result<_>>()?,
            )?
        }
    })
}

type BlockTensors = std::collections::BTreeMap<String, (Vec<usize>, Vec<f32>)>;

/// Makes the weights of a trainable core Vars, named for checkpoints: `llm_block.<tensor>`
/// for one layer (as before stacks existed), `llm_block.<i>.<tensor>` for layer i of a stack,
/// `llm_mlp.<tensor>` for the MLP.
fn trainable_vars(core: &mut BlockCore) -> Result<Vec<(String, Var)>> {
    Ok(match core {
        BlockCore::Llm(layers) => {
            let n = layers.len();
            let mut out = Vec::new();
            for (i, b) in layers.iter_mut().enumerate() {
                let names: Vec<String> = b
                    .config()
                    .tensor_shapes()
                    .iter()
                    .map(|(t, _)| t.to_string())
                    .collect();
                let prefix = if n == 1 {
                    "llm_block.".to_string()
                } else {
                    format!("llm_block.{i}.")
                };
                let vars = b.make_trainable()?;
                out.extend(
                    names
                        .into_iter()
                        .zip(vars)
                        .map(|(t, v)| (format!("{prefix}{t}"), v)),
                );
            }
            out
        }
        BlockCore::Mlp(m) => m
            .make_trainable()?
            .into_iter()
            .map(|(t, v)| (format!("llm_mlp.{t}"), v))
            .collect(),
    })
}

/// The model of a train stage: encoder + block core of `mode` from the block artifact.
#[allow(clippy::too_many_arguments)] // the model, its data, and the block's source
pub fn build_model(
    cfg: &ModelConfig,
    data: &Dataset,
    num_classes: usize,
    mode: BlockMode,
    mlp_hidden: Option<usize>,
    block_up: Option<&Upstream>,
    seed: u64,
    device: &Device,
) -> Result<Built> {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
    let mut block = load_block(block_up, mode, mlp_hidden, seed, device)?;
    let block_vars = match block.as_mut() {
        Some((core, mode)) if mode.is_trainable() => trainable_vars(core)?,
        _ => Vec::new(),
    };
    let model = Model::build(cfg, data, num_classes, block, vb)?;
    match cfg {
        // VectorNet's reference initialises its own way (xavier, biases U(0, 1)).
        ModelConfig::VectorNet(_) => init_vars_xavier(&varmap, seed)?,
        _ => init_vars(&varmap, seed)?,
    }
    Ok(Built {
        varmap,
        model,
        block_vars,
    })
}

pub(super) fn sorted_vars(varmap: &VarMap) -> Result<Vec<(String, Var)>> {
    let data = varmap
        .data()
        .lock()
        .map_err(|_| anyhow::anyhow!("varmap lock poisoned"))?;
    let mut v: Vec<(String, Var)> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(v)
}

/// The positions of a global batch of `n` samples that rank `rank` of `world` makes: a
/// contiguous share, the first `n % world` ranks one sample more.
pub(super) fn rank_rows(n: usize, rank: usize, world: usize) -> std::ops::Range<usize> {
    let (base, extra) = (n / world, n % world);
    let start = rank * base + rank.min(extra);
    start..start + base + usize::from(rank < extra)
}

/// A generator purpose of rank `rank`'s own stream (dropout, drop-path): rank 0 keeps the
/// plain purpose, so a job of one draws what it always drew.
fn rank_purpose(purpose: &str, rank: usize) -> String {
    if rank == 0 {
        purpose.to_string()
    } else {
        format!("{purpose}.rank{rank}")
    }
}

fn is_running_stat(name: &str) -> bool {
    name.ends_with("running_mean") || name.ends_with("running_var")
}

pub(super) fn num_classes(data: &Upstream) -> Result<usize> {
    let n = data
        .manifest
        .meta
        .get("num_classes")
        .and_then(|v| v.as_u64())
        .context("the data artifact does not say its number of classes (meta.num_classes)")?;
    anyhow::ensure!(n > 0, "the data artifact has no labelled samples");
    Ok(n as usize)
}

/// The backward and the update of one step: loss scaling (f16), the weight gradients of
/// checkpointed blocks, unscaling and the overflow check (a step whose gradients overflowed is
/// skipped and halves the scale), clipping, AdamW.
///
/// In a data-parallel job the gradients are averaged over the ranks right after the backward
/// (`dist::grads`), so every rank sees the same gradients, overflow check and clipping, and
/// takes the same step.
#[allow(clippy::too_many_arguments)] // the step's parts, each a different concern
pub(crate) fn backward_and_step(
    loss: &candle_core::Tensor,
    opt: &mut AdamW,
    scaler: Option<&mut LossScaler>,
    sink: &GradSink,
    coll: &dyn Collective,
    grad_clip: f64,
    lr: f64,
) -> Result<()> {
    let scale = scaler.as_ref().map_or(1.0, |s| s.scale);
    let mut grads = if scale == 1.0 {
        loss.backward()?
    } else {
        (loss * scale)?.backward()?
    };
    sink.merge_into(&mut grads)?;
    if coll.is_joined() {
        let vars: Vec<&Var> = opt.params.iter().map(|p| &p.var).collect();
        average_gradients(coll, &vars, &mut grads)?;
    }
    let mut finite = true;
    if let Some(sc) = scaler {
        opt.scale_grads(&mut grads, 1.0 / sc.scale)?;
        finite = sc.update(opt.grad_norm(&grads)?.is_finite());
    }
    if finite {
        opt.clip_grad_norm(&mut grads, grad_clip)?;
        opt.step(&grads, lr)?;
    } else {
        opt.skip_step();
    }
    Ok(())
}

/// The optimizer's parameters: (name, var, lr scale, weight decay), in the reference's groups
/// (LM4VisualEncoding `tools/builder.py`): the adapters around the LLM block (`llm_adapter_*`)
/// train at `adapter_lr_scale` with no weight decay; 1-D tensors, biases and tokens
/// (`cls_token`; not `cls_pos`, which the reference decays) at `no_decay_lr_scale` without
/// decay; everything else at the full lr with `weight_decay`. A trainable LLM block's own
/// weights decay like the encoder's matrices.
pub(super) fn params_for(
    p: &TrainParams,
    varmap: &VarMap,
    block_vars: &[(String, Var)],
    vit_depth: Option<usize>,
) -> Result<Vec<(String, Var, f64, f64)>> {
    let mut params = Vec::new();
    let layer_decay = p.layer_decay.zip(vit_depth);
    for (name, var) in sorted_vars(varmap)? {
        if is_running_stat(&name) {
            continue;
        }
        let (lr_scale, wd) = if let Some((decay, depth)) = layer_decay {
            // VideoMAE's `get_parameter_groups`: no decay for 1-D tensors, biases and its
            // skip list (`pos_embed`, `cls_token`); everything else, the adapters included,
            // decays. The lr scale is the layer's.
            let scale = decay.powi((depth + 1 - vit_layer_id(&name, depth)) as i32);
            let no_decay = var.rank() <= 1
                || name.ends_with(".bias")
                || name == "pos_embed"
                || name == "cls_token";
            if no_decay {
                (scale * p.no_decay_lr_scale, 0.0)
            } else if name.starts_with("llm_adapter") {
                (scale * p.adapter_lr_scale, p.weight_decay)
            } else {
                (scale, p.weight_decay)
            }
        } else if name.starts_with("llm_adapter") {
            (p.adapter_lr_scale, 0.0)
        } else if var.rank() <= 1 || name.ends_with(".bias") || name.contains("token") {
            (p.no_decay_lr_scale, 0.0)
        } else {
            (1.0, p.weight_decay)
        };
        params.push((name, var, lr_scale, wd));
    }
    for (name, var) in block_vars {
        let wd = if var.rank() <= 1 { 0.0 } else { p.weight_decay };
        params.push((name.clone(), var.clone(), 1.0, wd));
    }
    Ok(params)
}

/// VideoMAE's `get_num_layer_for_vit` for a model of `depth` blocks: 0 for the embeddings
/// (`patch_embed*`, `cls_token`, `mask_token`, `pos_embed`), i + 1 for `blocks.i.*`, and
/// depth + 1 for everything else (norm, head, the adapters and the LLM block).
pub(super) fn vit_layer_id(name: &str, depth: usize) -> usize {
    if matches!(name, "cls_token" | "mask_token" | "pos_embed") || name.starts_with("patch_embed") {
        return 0;
    }
    name.strip_prefix("blocks.")
        .and_then(|rest| rest.split('.').next())
        .and_then(|i| i.parse::<usize>().ok())
        .map_or(depth + 1, |i| (i + 1).min(depth + 1))
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct EpochMetrics {
    pub(super) epoch: usize,
    pub(super) step: u64,
    pub(super) lr: f64,
    pub(super) loss: f64,
    /// Fraction right on the training batches: classes, or for forecasts hits (best-of-K
    /// final error within 2 m).
    pub(super) train_acc: f64,
    /// The held-out score of `task::Evaluation` (top-1, or 1 − miss rate).
    pub(super) test_acc: f64,
    /// Forecasting: the held-out minADE / minFDE (m) and miss rate at K modes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) forecast: Option<ForecastEpoch>,
    /// Wall-clock time: logged, never stored (artifacts are a pure function of their key;
    /// the run's time is in its run record).
    #[serde(skip)]
    pub(super) seconds: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct ForecastEpoch {
    pub(super) min_ade: f64,
    pub(super) min_fde: f64,
    pub(super) miss_rate: f64,
}

impl TrainStage {
    /// The `init` checkpoint or the `init_stage` artifact's `model.safetensors`, loaded into
    /// the encoder (the first unit only; later ones resume from their checkpoint).
    fn load_init(
        &self,
        ctx: &StageCtx,
        varmap: &VarMap,
    ) -> Result<Option<super::init::InitReport>> {
        let (path, from_stage) = match (&self.p.init, &self.p.init_stage) {
            (Some(path), _) => (path.clone(), None),
            (None, Some(stage)) => {
                let up = ctx
                    .upstream
                    .get(stage)
                    .with_context(|| format!("init_stage `{stage}` is not built"))?;
                let path = up
                    .manifest
                    .file_path(&up.manifest_path, "model.safetensors")
                    .with_context(|| {
                        format!("init_stage `{stage}`: its artifact has no model.safetensors")
                    })?;
                (path, Some(stage))
            }
            (None, None) => return Ok(None),
        };
        let fam =
            super::init::family(self.task).context("`init` is not supported for this task")?;
        let mut report = super::init::load_into(&path, fam, &sorted_vars(varmap)?)?;
        if let Some(stage) = from_stage {
            // The cache object's name says nothing; the stage does.
            report.file = format!("{stage}/model.safetensors");
        }
        Ok(Some(report))
    }

    /// One work unit: `epochs_per_checkpoint` epochs from the previous unit's checkpoint.
    pub(super) fn train_unit(
        &self,
        ctx: &StageCtx,
        unit: &UnitPlan,
        out: &mut UnitOutput,
    ) -> Result<()> {
        let k: usize = unit
            .id
            .trim_start_matches("ckpt-")
            .parse()
            .context("unit id")?;
        let device = super::device::device()?;
        let coll = super::dist::current();
        let (rank, world) = (coll.rank(), coll.world_size());
        if coll.is_joined() {
            // Every rank reads the journal; rank 0 commits. Agreeing here also waits for rank
            // 0 to have committed the unit before (it reaches this after committing).
            let at = coll.broadcast_u64(k as u64)?;
            anyhow::ensure!(
                at == k as u64,
                "rank {rank} of {world} is at unit {k}, rank 0 at unit {at}: the ranks read different caches; every rank must use the same cache directory (a shared filesystem)"
            );
            anyhow::ensure!(
                self.p.batch_size.is_multiple_of(world),
                "batch_size = {} (the global batch) does not split evenly over {world} ranks; use a multiple of {world}",
                self.p.batch_size
            );
        }
        let data = &ctx.upstream[&self.p.data];
        let classes = if self.task.is_classification() {
            num_classes(data)?
        } else {
            0
        };
        let mut train = Dataset::load(self.task, data, "train")?;
        if let (Dataset::Av(a), ModelConfig::VectorNet(c)) = (&mut train, &self.model) {
            a.agent_only_loss = c.agent_only_loss;
        }
        if let Dataset::Video(v) = &mut train {
            if let Some(crop) = v.frames_crop() {
                // The output side is the data stage's crop (the model's input), whatever
                // the table says.
                v.augment = self.p.augment.clone().map(|a| TrainAugment { crop, ..a });
                v.repeats = self.p.repeated_aug;
            }
            v.mix = Some(MixSpec {
                mixup_alpha: self.p.mixup,
                cutmix_alpha: self.p.cutmix,
                switch_prob: self.p.mixup_switch_prob,
                smoothing: self.p.label_smoothing,
            });
        }
        if let Dataset::Pc(pc) = &mut train {
            if self.p.resample {
                anyhow::ensure!(
                    pc.kept > 0,
                    "resample = true (Point-BERT's recipe, the default) needs the clouds' raw points, and `{}` kept none: set `keep_points = 2048` in its params, or resample = false in this stage to train on the cached tokens",
                    self.p.data
                );
                pc.views = PcViews::Resampled;
            }
        }
        let test = Dataset::load(self.task, data, self.task.eval_split())?;
        anyhow::ensure!(
            !train.is_empty(),
            "the data artifact has no `train` samples"
        );
        anyhow::ensure!(
            train.len() >= world,
            "{} training samples cannot be shared by {world} ranks; use fewer ranks",
            train.len()
        );
        let block_up = self.p.block.as_ref().and_then(|b| ctx.upstream.get(b));
        let mut built = build_model(
            &self.model,
            &train,
            classes,
            self.p.mode,
            self.p.mlp_hidden,
            block_up,
            self.p.seed,
            &device,
        )?;
        // Pretrained encoder weights, once: later units restore everything from the previous
        // unit's checkpoint.
        let init = if k == 0 {
            self.load_init(ctx, &built.varmap)?
        } else {
            None
        };
        if let Some(report) = &init {
            tracing::info!("{}: {}", self.name, report.summary());
        }
        let sink = GradSink::default();
        built.model.configure(&Execution {
            attn: self.p.attention,
            checkpoint: self.p.checkpoint_blocks.then(|| sink.clone()),
            precision: self.p.precision,
        });
        let mut scaler = self
            .p
            .precision
            .filter(|p| p.needs_loss_scaling())
            .map(|_| LossScaler::default());
        let vit_depth = match &self.model {
            ModelConfig::Video(c) => Some(c.depth),
            _ => None,
        };
        let mut opt = AdamW::new(params_for(
            &self.p,
            &built.varmap,
            &built.block_vars,
            vit_depth,
        )?)?;
        let all_vars = sorted_vars(&built.varmap)?;
        let mut history: Vec<EpochMetrics> = Vec::new();
        if k > 0 {
            let prev = Self::unit_id(k - 1);
            let path = ctx
                .unit_file(&prev, "checkpoint.safetensors")
                .with_context(|| format!("checkpoint {prev} is missing from the journal"))?;
            checkpoint::restore(
                &path,
                &device,
                all_vars.iter().chain(built.block_vars.iter()),
                &mut opt,
                scaler.as_mut(),
            )?;
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
        // Rank 0's parameters (and BatchNorm statistics) on every rank: they start equal by
        // construction (same seed, same checkpoint); this makes it so whatever happened.
        broadcast_vars(
            &*coll,
            all_vars
                .iter()
                .chain(built.block_vars.iter())
                .map(|(_, v)| v),
        )?;
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
            let batch_idx = |b: usize| -> Vec<usize> {
                order
                    .iter()
                    .skip(b * self.p.batch_size)
                    .take(self.p.batch_size)
                    .copied()
                    .collect()
            };
            // Every step's generators come from its number, so batches can be made ahead.
            let first_step = opt.step;
            let make = |b: usize| {
                let mut aug = step_rng(self.p.seed, "augment", first_step + b as u64);
                let idx = batch_idx(b);
                let rows = rank_rows(idx.len(), rank, world);
                train.train_batch(&idx, rows, &mut aug, &device)
            };
            prefetched(per_epoch, PREFETCH_BATCHES, make, |b, (x, l)| {
                let global = batch_idx(b).len();
                let n = rank_rows(global, rank, world).len();
                let step = opt.step;
                debug_assert_eq!(step, first_step + b as u64);
                let (peak, floor) = self.p.schedule_lrs();
                lr = match &self.p.lr_steps {
                    Some(steps) if step >= warmup_steps => steps.lr(epoch, peak),
                    _ => cosine_lr(step, total_steps, warmup_steps, peak, floor),
                };
                let mut drop = step_rng(self.p.seed, &rank_purpose("dropout", rank), step);
                let out = built.model.forward(&x, Some(&mut drop))?;
                let (loss, hits) = train_loss(&out, &l, self.p.label_smoothing)?;
                // Ranks' means weighted by their share, so the averaged gradient is the
                // global batch's mean even when the batch does not split evenly.
                let weight = (n * world) as f64 / global as f64;
                let to_step = if weight == 1.0 {
                    loss.clone()
                } else {
                    (&loss * weight)?
                };
                backward_and_step(
                    &to_step,
                    &mut opt,
                    scaler.as_mut(),
                    &sink,
                    &*coll,
                    self.p.grad_clip,
                    lr,
                )?;
                let lv = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
                anyhow::ensure!(lv.is_finite(), "loss became {lv} at step {step}; lower lr (OPT blocks below 1.3B need ~5x lower, PAPER.md §2)");
                loss_sum += lv * n as f64;
                right += hits;
                seen += n as u64;
                Ok(())
            })?;
            if coll.is_joined() {
                let mut sums = [loss_sum, right as f64, seen as f64];
                coll.all_reduce_sum_host(&mut sums)?;
                (loss_sum, right, seen) = (sums[0], sums[1] as u64, sums[2] as u64);
                // BatchNorm statistics are each rank's own (as in DDP); rank 0's are the
                // model's, as DDP broadcasts its buffers.
                broadcast_vars(
                    &*coll,
                    all_vars
                        .iter()
                        .filter(|(n, _)| is_running_stat(n))
                        .map(|(_, v)| v),
                )?;
            }
            let held = if test.is_empty() {
                None
            } else {
                Some(evaluate(
                    &built.model,
                    &test,
                    classes,
                    self.p.batch_size,
                    &device,
                    &*coll,
                )?)
            };
            let forecast = held
                .as_ref()
                .filter(|_| !self.task.is_classification())
                .map(|h| {
                    let f = |k: &str| h.metrics[k].as_f64().unwrap_or(f64::NAN);
                    ForecastEpoch {
                        min_ade: f("min_ade"),
                        min_fde: f("min_fde"),
                        miss_rate: f("miss_rate"),
                    }
                });
            let m = EpochMetrics {
                epoch,
                step: opt.step,
                lr,
                loss: loss_sum / seen.max(1) as f64,
                train_acc: right as f64 / seen.max(1) as f64,
                test_acc: held.as_ref().map_or(0.0, |h| h.score),
                forecast,
                seconds: t0.elapsed().as_secs_f64(),
            };
            match &m.forecast {
                Some(f) => tracing::info!(
                    "{}: epoch {} loss {:.4} train hits {:.3} held-out minADE {:.3} m minFDE {:.3} m miss rate {:.3} ({:.1} s)",
                    self.name,
                    epoch + 1,
                    m.loss,
                    m.train_acc,
                    f.min_ade,
                    f.min_fde,
                    f.miss_rate,
                    m.seconds
                ),
                None => tracing::info!(
                    "{}: epoch {} loss {:.4} train acc {:.3} test acc {:.3} ({:.1} s)",
                    self.name,
                    epoch + 1,
                    m.loss,
                    m.train_acc,
                    m.test_acc,
                    m.seconds
                ),
            }
            new_metrics.push(m);
        }
        let ck = checkpoint::save(
            all_vars.iter().chain(built.block_vars.iter()),
            &opt,
            scaler.as_ref(),
        )?;
        out.add_file("checkpoint.safetensors", &checkpoint::to_bytes(&ck)?)?;
        history.extend(new_metrics.iter().cloned());
        if k + 1 == self.units() {
            let weights = checkpoint::model_weights(&ck);
            out.add_file("model.safetensors", &checkpoint::to_bytes(&weights)?)?;
            let mut jsonl = String::new();
            for m in &history {
                jsonl.push_str(&serde_json::to_string(m)?);
                jsonl.push('\n');
            }
            out.add_file("metrics.jsonl", jsonl.as_bytes())?;
            // x = epoch number (1-based, the epoch just finished).
            let col = |f: fn(&EpochMetrics) -> f64| {
                history
                    .iter()
                    .map(|m| (m.epoch as f64 + 1.0, f(m)))
                    .collect::<Vec<_>>()
            };
            let (train_name, held_name) = if self.task.is_classification() {
                ("train accuracy", "held-out top-1")
            } else {
                ("train hits (final error < 2 m)", "held-out 1 − miss rate")
            };
            let curves = curves_png(
                &format!("{}: training curves", self.name),
                &Series {
                    name: "training loss",
                    points: col(|m| m.loss),
                    held_out: false,
                },
                &[
                    Series {
                        name: train_name,
                        points: col(|m| m.train_acc),
                        held_out: false,
                    },
                    Series {
                        name: held_name,
                        points: col(|m| m.test_acc),
                        held_out: true,
                    },
                ],
            )?;
            out.add_file("curves.png", &curves)?;
            if !self.task.is_classification() {
                let of = |f: fn(&ForecastEpoch) -> f64| {
                    history
                        .iter()
                        .filter_map(|m| m.forecast.as_ref().map(|x| (m.epoch as f64 + 1.0, f(x))))
                        .collect::<Vec<_>>()
                };
                let png = curves_png_axes(
                    &format!("{}: held-out forecasts of the AGENT", self.name),
                    "metres",
                    &[
                        Series {
                            name: "minADE, best of K modes (m)",
                            points: of(|f| f.min_ade),
                            held_out: true,
                        },
                        Series {
                            name: "minFDE, best of K modes (m)",
                            points: of(|f| f.min_fde),
                            held_out: true,
                        },
                    ],
                    "miss rate (final error > 2 m)",
                    &[Series {
                        name: "miss rate (right axis)",
                        points: of(|f| f.miss_rate),
                        held_out: true,
                    }],
                )?;
                out.add_file("forecast.png", &png)?;
            }
        }
        let mut meta = serde_json::json!({ "epochs": new_metrics });
        if let Some(report) = init {
            meta["init"] = serde_json::to_value(report)?;
        }
        out.set_meta(meta);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::task::Task;

    #[test]
    fn ranks_share_a_batch_in_order() {
        assert_eq!(rank_rows(8, 0, 1), 0..8);
        assert_eq!(rank_rows(8, 0, 2), 0..4);
        assert_eq!(rank_rows(8, 1, 2), 4..8);
        let parts: Vec<_> = (0..3).map(|r| rank_rows(7, r, 3)).collect();
        assert_eq!(parts, vec![0..3, 3..5, 5..7]);
        assert_eq!(rank_purpose("dropout", 0), "dropout");
        assert_ne!(rank_purpose("dropout", 1), "dropout");
    }

    /// VideoMAE's layer decay (`optim_factory.py`: `LayerDecayValueAssigner` with values
    /// `decay^(L + 1 − i)` for i in 0..L+2, `get_num_layer_for_vit`, `get_parameter_groups`).
    #[test]
    fn layer_decay_groups_follow_videomae() {
        let dev = Device::Cpu;
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
        for (name, shape) in [
            ("patch_embed.proj.weight", vec![8, 4]),
            ("patch_embed.proj.bias", vec![8]),
            ("blocks.0.attn.qkv.weight", vec![12, 4]),
            ("blocks.0.norm1.weight", vec![4]),
            ("blocks.11.mlp.fc1.weight", vec![16, 4]),
            ("fc_norm.weight", vec![4]),
            ("head.weight", vec![5, 4]),
            ("llm_adapter_up.weight", vec![8, 4]),
        ] {
            vb.get_with_hints(shape, name, candle_nn::Init::Const(0.0))
                .unwrap();
        }
        let mut p = super::super::stage::tests::resolved_defaults(Task::Video);
        assert_eq!(p.layer_decay, Some(0.7), "the reference's ViT-S script");
        p.weight_decay = 0.05;
        let groups: Vec<(String, f64, f64)> = params_for(&p, &varmap, &[], Some(12))
            .unwrap()
            .into_iter()
            .map(|(n, _, lr, wd)| (n, lr, wd))
            .collect();
        // lr scales to 1e-12 (powi may fold differently at compile time), decays exactly.
        let of = |n: &str| {
            groups
                .iter()
                .find(|g| g.0 == n)
                .map(|g| ((g.1 * 1e12).round() / 1e12, g.2))
                .unwrap()
        };
        let d = |k: i32| (0.7f64.powi(k) * 1e12).round() / 1e12;
        assert_eq!(of("patch_embed.proj.weight"), (d(13), 0.05));
        assert_eq!(of("patch_embed.proj.bias"), (d(13), 0.0));
        assert_eq!(of("blocks.0.attn.qkv.weight"), (d(12), 0.05));
        assert_eq!(of("blocks.0.norm1.weight"), (d(12), 0.0));
        assert_eq!(of("blocks.11.mlp.fc1.weight"), (d(1), 0.05));
        assert_eq!(of("fc_norm.weight"), (1.0, 0.0));
        assert_eq!(of("head.weight"), (1.0, 0.05));
        assert_eq!(
            of("llm_adapter_up.weight"),
            (1.0, 0.05),
            "the video reference decays its llama_dim_mappers, in the last group"
        );
        assert_eq!(vit_layer_id("pos_embed", 12), 0);
        assert_eq!(vit_layer_id("cls_token", 12), 0);
        assert_eq!(vit_layer_id("llm_block.mlp.up_proj.weight", 12), 13);
    }

    /// The reference's optimizer groups (LM4VisualEncoding tools/builder.py).
    #[test]
    fn optimizer_groups_follow_the_reference() {
        let dev = Device::Cpu;
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
        for (name, shape) in [
            ("llm_adapter_up.weight", vec![8, 4]),
            ("cls_token", vec![1, 1, 4]),
            ("cls_pos", vec![1, 1, 4]),
            ("blocks.0.attn.qkv.weight", vec![12, 4]),
            ("blocks.0.attn.proj.bias", vec![4]),
            ("blocks.0.norm1.weight", vec![4]),
            ("encoder.first_conv.1.running_mean", vec![4]),
        ] {
            vb.get_with_hints(shape, name, candle_nn::Init::Const(0.0))
                .unwrap();
        }
        let p = super::super::stage::tests::resolved_defaults(Task::PointCloud);
        let groups: Vec<(String, f64, f64)> = params_for(&p, &varmap, &[], None)
            .unwrap()
            .into_iter()
            .map(|(n, _, lr, wd)| (n, lr, wd))
            .collect();
        let of = |n: &str| groups.iter().find(|g| g.0 == n).map(|g| (g.1, g.2));
        assert_eq!(of("llm_adapter_up.weight"), Some((0.5, 0.0)));
        assert_eq!(of("cls_token"), Some((0.1, 0.0)));
        assert_eq!(
            of("cls_pos"),
            Some((1.0, 0.05)),
            "the reference decays cls_pos"
        );
        assert_eq!(of("blocks.0.attn.qkv.weight"), Some((1.0, 0.05)));
        assert_eq!(of("blocks.0.attn.proj.bias"), Some((0.1, 0.0)));
        assert_eq!(of("blocks.0.norm1.weight"), Some((0.1, 0.0)));
        assert_eq!(
            of("encoder.first_conv.1.running_mean"),
            None,
            "BN statistics are not trained"
        );
    }

    /// Every ablation on a tiny PointBERT, with one layer and with a stack of two: which
    /// weights exist, which enter the optimizer (and in which group), which get gradients in
    /// a step, and that frozen LLM weights get none.
    #[test]
    fn every_mode_trains_what_it_should() {
        use crate::train::block::tests::{llama_cfg, random_tensors};
        use crate::train::models::pointbert::{PointBert, PointBertConfig};
        let dev = Device::Cpu;
        let bcfg = llama_cfg();
        let p = super::super::stage::tests::resolved_defaults(Task::PointCloud);
        let pcfg = PointBertConfig {
            trans_dim: 16,
            depth: 1,
            heads: 2,
            pointnet_dims: [8, 16, 16],
            encoder_dims: 16,
            drop_path: 0.0,
            head_dropout: 0.0,
            ..Default::default()
        };
        let layer_params: usize = bcfg
            .tensor_shapes()
            .iter()
            .map(|(_, s)| s.iter().product::<usize>())
            .sum();
        let mut encoder_count = None;
        for n in [1usize, 2] {
            for mode in [
                BlockMode::Frozen,
                BlockMode::Random,
                BlockMode::RandomTrained,
                BlockMode::Trainable,
                BlockMode::Mlp,
                BlockMode::None,
            ] {
                let what = format!("{mode}, {n} layer(s)");
                let mut core = (mode != BlockMode::None).then(|| {
                    core_of(
                        mode,
                        &bcfg,
                        n,
                        || {
                            Ok((0..n)
                                .map(|i| random_tensors(&bcfg, 80 + i as u64))
                                .collect())
                        },
                        None,
                        5,
                        &dev,
                    )
                    .unwrap()
                });
                let block_vars = match core.as_mut() {
                    Some(c) if mode.is_trainable() => trainable_vars(c).unwrap(),
                    _ => Vec::new(),
                };
                // The frozen LLM weights, to check they get no gradient.
                let frozen: Vec<candle_core::Tensor> = match &core {
                    Some(BlockCore::Llm(ls)) if !mode.is_trainable() => ls
                        .iter()
                        .flat_map(|l| l.tensors().into_iter().map(|(_, t)| t))
                        .collect(),
                    _ => Vec::new(),
                };
                let core_params = core.as_ref().map_or(0, |c| c.num_params());
                let varmap = VarMap::new();
                let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
                let model = PointBert::new(&pcfg, 4, core.map(|c| (c, mode)), vb).unwrap();
                init_vars(&varmap, 0).unwrap();
                let params = params_for(&p, &varmap, &block_vars, None).unwrap();
                let names: Vec<&str> = params.iter().map(|(n, ..)| n.as_str()).collect();
                let has = |prefix: &str| names.iter().any(|n| n.starts_with(prefix));
                assert_eq!(has("llm_adapter_up"), mode != BlockMode::None, "{what}");
                assert_eq!(has("llm_adapter_down"), mode != BlockMode::None, "{what}");
                let llm_trains = matches!(mode, BlockMode::Trainable | BlockMode::RandomTrained);
                if n == 1 {
                    assert_eq!(
                        has("llm_block.self_attn.q_proj.weight"),
                        llm_trains,
                        "{what}"
                    );
                } else {
                    for i in 0..n {
                        assert_eq!(
                            has(&format!("llm_block.{i}.mlp.up_proj.weight")),
                            llm_trains,
                            "{what}"
                        );
                    }
                }
                assert_eq!(has("llm_block"), llm_trains, "{what}");
                assert_eq!(has("llm_mlp."), mode == BlockMode::Mlp, "{what}");
                if mode == BlockMode::Mlp {
                    // The MLP's matrices decay like a trainable block's, its norm does not.
                    let g = |name: &str| params.iter().find(|q| q.0 == name).map(|q| (q.2, q.3));
                    assert_eq!(g("llm_mlp.gate_proj.weight"), Some((1.0, p.weight_decay)));
                    assert_eq!(g("llm_mlp.norm.weight"), Some((1.0, 0.0)));
                }
                // Counts: what enters the optimizer is the encoder (+ adapters) plus the
                // block's weights exactly when they train.
                let trainable: usize = params.iter().map(|(_, v, ..)| v.elem_count()).sum();
                let adapters = if mode == BlockMode::None {
                    0
                } else {
                    2 * 16 * bcfg.hidden_size
                };
                let encoder =
                    trainable - adapters - if mode.is_trainable() { core_params } else { 0 };
                assert_eq!(*encoder_count.get_or_insert(encoder), encoder, "{what}");
                let want_core = match mode {
                    BlockMode::None => 0,
                    BlockMode::Mlp => MlpConfig::of_block(&bcfg, None).num_params(),
                    _ => n * layer_params,
                };
                assert_eq!(core_params, want_core, "{what}");
                // One step: every optimizer parameter that the forward reaches gets a
                // gradient, the frozen block's weights none.
                let c = candle_core::Tensor::randn(0f32, 0.5, (2, 8, 3), &dev).unwrap();
                let nb = candle_core::Tensor::randn(0f32, 0.05, (2, 8, 4, 3), &dev).unwrap();
                let mut rng = step_rng(0, "t", 0);
                let logits = model.forward(&c, &nb, Some(&mut rng)).unwrap();
                let grads = logits.sqr().unwrap().sum_all().unwrap().backward().unwrap();
                for (name, var, ..) in &params {
                    assert!(
                        grads.get(var.as_tensor()).is_some(),
                        "{what}: no grad for {name}"
                    );
                }
                for t in &frozen {
                    assert!(
                        grads.get(t).is_none(),
                        "{what}: a frozen LLM weight got a gradient"
                    );
                }
            }
        }
    }
}
