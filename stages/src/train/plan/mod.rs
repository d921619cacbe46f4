//! The dry run of a `train` stage (`lm4ve pipeline run --stage S --dry-run`): the model's
//! parameter counts (total, trainable, frozen), a per-step memory estimate (weights, gradients,
//! AdamW state, activations at the configured batch and precision) and the FLOPs of one
//! training step at the configured size, without training, reading shards or loading weights.
//!
//! What it reads: the stage's params; its data stage's params, for the input shapes (groups ×
//! points, tubelets, polylines); and for the block its `llm.block` stage's checkpoint config —
//! a Hugging Face `config.json` (the weight files need not exist) or a GGUF header. What it
//! cannot know is said in [`TrainPlan::notes`]: the class count when the data is not read (the
//! benchmark's is assumed), and the block when its checkpoint's config is not there.
//!
//! How the numbers are made:
//! - **Parameters**: the model is built by the real model code (`PointBert::new`, …) on the
//!   CPU; the LLM layers are loaded through a `VarBuilder` whose tensors are zero-stride
//!   broadcasts of one scalar (the real shapes, no memory), the MLP likewise. Trainable = the
//!   encoder, head and adapters, plus the block's weights when `mode` trains them; frozen = the
//!   block's weights otherwise; BatchNorm running statistics are buffers, in neither.
//! - **FLOPs** (2 per multiply-add, matmuls and attention only): forward analytic per layer;
//!   backward = 2× forward for layers whose weights train (dX and dW), 1× for a frozen LLM
//!   layer's projections (its hand-written backward computes dX only) and 2× for its attention
//!   (dQ, dK, dV, dP); `checkpoint_blocks` adds one forward of the encoder blocks. The formula
//!   gives the paper's ~80 GFLOPs per 197-token image and ~675 GFLOPs per 1568-token clip for
//!   the LLaMA-7B block (PAPER.md §2; tested).
//! - **Memory**: f32 weights (plus the bf16/f16 copy of a frozen block's matrices under
//!   autocast), f32 gradients and two f32 AdamW moments per trainable weight, and the
//!   activations kept for the backward: the frozen LLM node's saved tensors exactly as
//!   `block/forward.rs` keeps them, the rest from per-layer coefficients (floats kept per
//!   token and width) measured on candle's autograd graph and checked against it in the tests
//!   (within 10% at small sizes). Encoder activations are counted in f32 also under autocast
//!   (an upper bound there); the allocator's fragmentation and the backward's transient
//!   buffers are not counted.

pub mod cost;

use anyhow::{Context as _, Result};
use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use lm4ve_pipeline::PipelineConfig;
use serde::Serialize;

use self::cost::{block_cost, Exec, F32};
use super::assemble::{core_of, LayerWeights};
use super::block::{BlockCore, BlockMode};
use super::ops::precision::Precision;
use super::params::TrainParams;
use super::task::Task;
use crate::llm::block_format::BlockConfig;

/// Where the block's shape came from.
#[derive(Debug, Clone, Serialize)]
pub struct BlockSource {
    pub stage: String,
    pub config: BlockConfig,
    /// First layer and number of stacked layers (`layer`, `blocks` of the llm.block stage).
    pub first_layer: usize,
    pub layers: usize,
    pub num_layers: usize,
}

/// Parameter counts (weights; BatchNorm running statistics are `buffers`).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct ParamCounts {
    /// Encoder and head, without the adapters.
    pub encoder: usize,
    /// The two width adapters around the block.
    pub adapters: usize,
    /// The LLM layers (all of a stack) or the MLP of the `mlp` mode.
    pub block: usize,
    pub buffers: usize,
    pub total: usize,
    pub trainable: usize,
    pub frozen: usize,
}

/// Bytes of one training step.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Memory {
    pub weights: f64,
    pub grads: f64,
    pub optimizer: f64,
    pub activations: f64,
    pub total: f64,
}

/// FLOPs of one training step (2 per multiply-add).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Flops {
    pub forward: f64,
    pub backward: f64,
    pub total: f64,
    /// The block's share of the forward (LLM layers or MLP, without the adapters).
    pub block_forward: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct TrainPlan {
    pub stage: String,
    /// The task (`pointcloud`, `video`, `forecast`, …).
    pub task: &'static str,
    /// The task in messages (`PointCloud`, …).
    #[serde(skip)]
    pub task_title: &'static str,
    pub mode: BlockMode,
    pub batch: usize,
    /// Tokens per sample through the encoder trunk and the block.
    pub tokens: usize,
    pub classes: usize,
    /// The block's shape, None with mode `none` or when it could not be read.
    pub block: Option<BlockSource>,
    /// The precision the encoder and the block run in.
    pub precision: String,
    pub params: ParamCounts,
    pub memory: Memory,
    pub flops: Flops,
    /// Steps per epoch cannot be known without the data; the units (checkpoints) can.
    pub units: usize,
    /// What the plan assumed or could not know.
    pub notes: Vec<String>,
}

/// The block's shape from the `llm.block` stage `name`: its checkpoint's config only.
pub fn block_source(config: &PipelineConfig, name: &str) -> Result<BlockSource> {
    let sc = config
        .stages
        .get(name)
        .with_context(|| format!("no stage `{name}`"))?;
    anyhow::ensure!(
        sc.kind == crate::llm::stage::KIND,
        "`{name}` is a {} stage, not llm.block",
        sc.kind
    );
    let p: crate::llm::stage::BlockParams = config.typed_params(sc)?;
    let path = config.resolve(&p.checkpoint);
    let (cfg, num_layers) = crate::llm::checkpoint_shape(&path)?;
    let layers = p.blocks.unwrap_or(1).max(1);
    let first_layer = p
        .layer
        .unwrap_or_else(|| crate::llm::checkpoint::default_first_layer(num_layers, layers));
    Ok(BlockSource {
        stage: name.to_string(),
        config: cfg,
        first_layer,
        layers,
        num_layers,
    })
}

/// Counts by building the model with the real code (encoder weights allocated on the CPU,
/// the block shape-only).
pub fn count_params<T: Task>(
    task: &T,
    model: &T::Config,
    shape: T::Shape,
    classes: usize,
    core: Option<(BlockCore, BlockMode)>,
) -> Result<ParamCounts> {
    let mode = core.as_ref().map_or(BlockMode::None, |c| c.1);
    let block = core.as_ref().map_or(0, |(c, _)| c.num_params());
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    task.build_model(model, shape, classes, core, vb)?;
    let mut n = ParamCounts {
        block,
        ..Default::default()
    };
    let data = varmap
        .data()
        .lock()
        .map_err(|_| anyhow::anyhow!("varmap lock poisoned"))?;
    for (name, var) in data.iter() {
        let k = var.elem_count();
        if name.ends_with("running_mean") || name.ends_with("running_var") {
            n.buffers += k;
        } else if name.starts_with("llm_adapter") {
            n.adapters += k;
        } else {
            n.encoder += k;
        }
    }
    n.total = n.encoder + n.adapters + n.block;
    if mode.is_trainable() {
        n.trainable = n.total;
    } else {
        n.trainable = n.encoder + n.adapters;
        n.frozen = n.block;
    }
    Ok(n)
}

/// The plan of the `train` stage `stage` of `task`, its params `p` and typed `model` config.
/// `cuda`: whether the run would use CUDA (the default precision of a frozen block depends
/// on it).
pub fn plan_train<T: Task>(
    task: &T,
    stage: &str,
    p: &TrainParams,
    model: &T::Config,
    config: &PipelineConfig,
    cuda: bool,
) -> Result<TrainPlan> {
    let mut notes = Vec::new();
    if let Some(init) = &p.init {
        // Pretrained encoder weights change no shape: the plan is the same either way.
        notes.push(format!(
            "init: {}{}",
            init.display(),
            if init.is_file() {
                ""
            } else {
                " (not there yet: the run would stop until it is)"
            }
        ));
    }
    if let Some(stage) = &p.init_stage {
        notes.push(format!(
            "init: the model.safetensors of train stage `{stage}` (built first)"
        ));
    }
    let data_sc = config
        .stages
        .get(&p.data)
        .with_context(|| format!("no data stage `{}`", p.data))?;
    let shape = task
        .shape_of_params(config, data_sc)
        .with_context(|| format!("the shapes of data stage `{}`", p.data))?;
    let (classes, bench) = task.benchmark_classes();
    if task.is_classification() {
        notes.push(format!(
            "classes: {classes} assumed ({bench}); a dry run reads no labels (the head grows with the class count)"
        ));
    }
    let block = match (p.mode, &p.block) {
        (BlockMode::None, _) | (_, None) => None,
        (_, Some(name)) => match block_source(config, name) {
            Ok(s) => Some(s),
            Err(e) => {
                notes.push(format!(
                    "block unknown: {e:#}; counts, memory and FLOPs below leave out the block and its adapters"
                ));
                None
            }
        },
    };
    let mode = if block.is_some() {
        p.mode
    } else {
        BlockMode::None
    };
    let core = match &block {
        Some(src) => Some((
            core_of(
                mode,
                &src.config,
                src.layers,
                LayerWeights::ShapeOnly,
                p.mlp_hidden,
                0,
                &Device::Cpu,
            )?,
            mode,
        )),
        None => None,
    };
    let params = count_params(task, model, shape, classes, core)?;

    // Precision: explicit for the whole model, else the encoder in f32 and a frozen block in
    // bf16 on CUDA (BlockAdapter::maybe_new).
    let enc_prec = p.precision.unwrap_or(Precision::F32);
    let block_prec = match p.precision {
        Some(x) => x,
        None if cuda && !mode.is_trainable() => Precision::Bf16,
        None => Precision::F32,
    };
    let precision = format!(
        "encoder {}, block {}{}",
        prec_name(enc_prec),
        prec_name(if mode.is_trainable() {
            Precision::F32
        } else {
            block_prec
        }),
        if p.precision.is_none() {
            if cuda {
                " (default on CUDA)"
            } else {
                " (default off CUDA)"
            }
        } else {
            ""
        }
    );

    let b = rows_per_step(p) as f64;
    let exec = Exec {
        attn: p.attention,
        checkpoint: p.checkpoint_blocks,
    };
    let mut cost = task.encoder_cost(model, shape, b, classes as f64, exec);
    let mut block_fwd = 0.0;
    if let Some(src) = &block {
        let (c, f) = block_cost(
            b,
            task.tokens(model, shape) as f64,
            task.width(model) as f64,
            mode,
            &src.config,
            src.layers,
            p.mlp_hidden,
            block_prec,
            p.attention,
        );
        cost.add(c);
        block_fwd = f;
    }
    let forward = cost.trained + cost.frozen_proj + cost.frozen_attn;
    let mut backward = 2.0 * cost.trained + cost.frozen_proj + 2.0 * cost.frozen_attn;
    if p.checkpoint_blocks {
        backward += cost.trunk;
    }
    let flops = Flops {
        forward,
        backward,
        total: forward + backward,
        block_forward: block_fwd,
    };

    let half_copy = if !mode.is_trainable() && block_prec != Precision::F32 {
        2.0 * params.block as f64
    } else {
        0.0
    };
    let weights = F32 * (params.total + params.buffers) as f64 + half_copy;
    let grads = F32 * params.trainable as f64;
    let optimizer = 2.0 * F32 * params.trainable as f64;
    let memory = Memory {
        weights,
        grads,
        optimizer,
        activations: cost.act_bytes,
        total: weights + grads + optimizer + cost.act_bytes,
    };
    if enc_prec != Precision::F32 {
        notes.push("encoder activations are counted in f32 (an upper bound under autocast)".into());
    }
    Ok(TrainPlan {
        stage: stage.to_string(),
        task: task.name(),
        task_title: task.title(),
        mode: p.mode,
        batch: rows_per_step(p),
        tokens: task.tokens(model, shape),
        classes,
        block,
        precision,
        params,
        memory,
        flops,
        units: p.units(),
        notes,
    })
}

fn prec_name(p: Precision) -> &'static str {
    match p {
        Precision::F32 => "f32",
        Precision::Bf16 => "bf16",
        Precision::F16 => "f16",
    }
}

impl TrainPlan {
    /// The plan for people: one block of aligned lines.
    pub fn render(&self) -> String {
        let m = |v: usize| format!("{:.2}M", v as f64 / 1e6);
        let gb = |v: f64| format!("{:.2} GB", v / 1e9);
        let p = &self.params;
        let mut out = String::new();
        let mut line = |k: &str, v: String| out.push_str(&format!("  {k:<13} {v}\n"));
        line(
            "model",
            format!(
                "{}, mode {}, batch {} rows, {} tokens per sample, {} ({} checkpoint units)",
                self.task_title, self.mode, self.batch, self.tokens, self.precision, self.units
            ),
        );
        if let Some(b) = &self.block {
            let c = &b.config;
            line(
                "block",
                format!(
                    "{} (`{}`): {} layer{} from {} of {}, hidden {}, heads {} (kv {}), ffn {}{}",
                    c.arch,
                    b.stage,
                    b.layers,
                    if b.layers == 1 { "" } else { "s" },
                    b.first_layer,
                    b.num_layers,
                    c.hidden_size,
                    c.num_heads,
                    c.num_kv_heads,
                    c.intermediate_size,
                    if c.post_norm { ", post-LayerNorm" } else { "" }
                ),
            );
        }
        line(
            "parameters",
            format!(
                "{} total: {} trainable, {} frozen (encoder + head {}, adapters {}, {} {}; {} BN buffers)",
                m(p.total),
                m(p.trainable),
                m(p.frozen),
                m(p.encoder),
                m(p.adapters),
                if self.mode == BlockMode::Mlp { "MLP" } else { "block" },
                m(p.block),
                p.buffers
            ),
        );
        let mem = &self.memory;
        line(
            "memory/step",
            format!(
                "~{} = weights {} + grads {} + AdamW {} + activations {} (estimate)",
                gb(mem.total),
                gb(mem.weights),
                gb(mem.grads),
                gb(mem.optimizer),
                gb(mem.activations)
            ),
        );
        let f = &self.flops;
        line(
            "FLOPs/step",
            format!(
                "{:.1} TFLOPs = forward {:.1} + backward {:.1} (block forward {:.1}; {:.1} GFLOPs per sample)",
                f.total / 1e12,
                f.forward / 1e12,
                f.backward / 1e12,
                f.block_forward / 1e12,
                f.total / 1e9 / self.batch.max(1) as f64
            ),
        );
        for n in &self.notes {
            line("note", n.clone());
        }
        out
    }
}

#[cfg(test)]
mod tests;

/// Rows per step: a video batch holds each clip `repeated_aug` times; DeiT's sampler puts its
/// copies in the epoch's order instead, so an image batch is `batch_size` rows.
fn rows_per_step(p: &TrainParams) -> usize {
    if p.ra_sampler {
        p.batch_size
    } else {
        p.batch_size * p.repeated_aug
    }
}
