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

use std::collections::HashMap;

use anyhow::{Context as _, Result};
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::{VarBuilder, VarMap};
use lm4ve_pipeline::{PipelineConfig, StageConfig};
use serde::Serialize;

use super::block::{BlockCore, BlockMode, LlmBlock, MlpBlock, MlpConfig};
use super::models::pointbert::PointBert;
use super::models::vectornet::VectorNet;
use super::models::video_vit::VideoVit;
use super::ops::attention::AttnImpl;
use super::ops::precision::Precision;
use super::stage::parse_train;
use super::task::{ModelConfig, Task};
use crate::llm::block_format::{Arch, BlockConfig};

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
    pub task: Task,
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

/// The inputs a model sees, from the data stage's params.
#[derive(Debug, Clone, Copy)]
enum DataShape {
    Pc {
        groups: usize,
        group_size: usize,
    },
    Video {
        tokens: usize,
        token_dim: usize,
    },
    Av {
        actors: usize,
        actor_vectors: usize,
        actor_features: usize,
        lanes: usize,
        lane_vectors: usize,
        lane_features: usize,
        pred_steps: usize,
    },
}

impl DataShape {
    fn tokens(&self) -> usize {
        match *self {
            DataShape::Pc { groups, .. } => groups + 1,
            DataShape::Video { tokens, .. } => tokens,
            DataShape::Av { actors, lanes, .. } => actors + lanes,
        }
    }
}

fn data_shape(config: &PipelineConfig, sc: &StageConfig, task: Task) -> Result<DataShape> {
    Ok(match task {
        Task::PointCloud => {
            let p: crate::pointcloud::stage::PcParams = config.typed_params(sc)?;
            DataShape::Pc {
                groups: p.num_groups,
                group_size: p.group_size,
            }
        }
        Task::Video => {
            let p: crate::ssv2::stage::Ssv2Params = config.typed_params(sc)?;
            anyhow::ensure!(
                p.tubelet_frames > 0 && p.patch > 0,
                "tubelet_frames and patch must be positive"
            );
            let side = p.crop / p.patch;
            DataShape::Video {
                tokens: (p.num_frames / p.tubelet_frames) * side * side,
                token_dim: p.tubelet_frames * p.patch * p.patch * 3,
            }
        }
        Task::Forecast => {
            let p: crate::argoverse::stage::AvParams = config.typed_params(sc)?;
            DataShape::Av {
                actors: p.max_actors,
                actor_vectors: p.obs_steps.saturating_sub(1),
                actor_features: crate::argoverse::vectorize::ACTOR_FEATURES,
                lanes: p.max_lanes,
                lane_vectors: p.lane_points.saturating_sub(1),
                lane_features: crate::argoverse::vectorize::LANE_FEATURES,
                pred_steps: p.pred_steps,
            }
        }
    })
}

/// The class count of the benchmark a task's data comes from (the plan reads no labels).
fn benchmark_classes(task: Task) -> (usize, &'static str) {
    match task {
        Task::PointCloud => (15, "ScanObjectNN"),
        Task::Video => (174, "Something-Something-v2"),
        Task::Forecast => (0, "Argoverse"),
    }
}

/// The block's shape from the `llm.block` stage `name`: its checkpoint's config only.
fn block_source(config: &PipelineConfig, name: &str) -> Result<BlockSource> {
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

/// A `VarBuilder` backend that hands out zero-stride broadcasts of one zero: every tensor has
/// its real shape and costs one float (how the plan builds a 7B layer without its 800 MB).
struct ShapeOnly;

impl candle_nn::var_builder::SimpleBackend for ShapeOnly {
    fn get(
        &self,
        s: Shape,
        _name: &str,
        _h: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        Tensor::zeros((), dtype, dev)?.broadcast_as(s)
    }
    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("shape-only weights: `{name}` has no shape")
    }
    fn contains_tensor(&self, _name: &str) -> bool {
        true
    }
}

/// The block core of `mode` at its real shape, weights shape-only.
fn shape_only_core(
    mode: BlockMode,
    src: &BlockSource,
    mlp_hidden: Option<usize>,
) -> Result<BlockCore> {
    let dev = Device::Cpu;
    Ok(match mode {
        BlockMode::Mlp => {
            let cfg = MlpConfig::of_block(&src.config, mlp_hidden);
            let named: HashMap<&'static str, Tensor> = cfg
                .tensor_shapes()
                .into_iter()
                .map(|(n, s)| Ok((n, Tensor::zeros((), DType::F32, &dev)?.broadcast_as(s)?)))
                .collect::<candle_core::Result<_>>()?;
            BlockCore::Mlp(MlpBlock::from_named(&cfg, named, &dev)?)
        }
        _ => BlockCore::stack(
            (0..src.layers)
                .map(|_| {
                    LlmBlock::load(
                        &src.config,
                        VarBuilder::from_backend(Box::new(ShapeOnly), DType::F32, dev.clone()),
                    )
                })
                .collect::<Result<_>>()?,
        )?,
    })
}

/// Counts by building the model with the real code (encoder weights allocated on the CPU,
/// the block shape-only).
fn count_params(
    model: &ModelConfig,
    shape: DataShape,
    classes: usize,
    core: Option<(BlockCore, BlockMode)>,
) -> Result<ParamCounts> {
    let mode = core.as_ref().map_or(BlockMode::None, |c| c.1);
    let block = core.as_ref().map_or(0, |(c, _)| c.num_params());
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    match (model, shape) {
        (ModelConfig::PointBert(c), DataShape::Pc { .. }) => {
            PointBert::new(c, classes, core, vb)?;
        }
        (ModelConfig::Video(c), DataShape::Video { tokens, token_dim }) => {
            VideoVit::new(c, tokens, token_dim, classes, core, vb)?;
        }
        (
            ModelConfig::VectorNet(c),
            DataShape::Av {
                actor_features,
                lane_features,
                pred_steps,
                ..
            },
        ) => {
            VectorNet::new(c, actor_features, lane_features, pred_steps, core, vb)?;
        }
        _ => anyhow::bail!("the model config does not match the data's kind"),
    }
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

// ---------------------------------------------------------------- FLOPs and activations

/// One forward's cost: FLOPs of layers whose weights train, of frozen projections and of
/// frozen attention; activations kept for the backward, in bytes.
#[derive(Debug, Clone, Copy, Default)]
struct Cost {
    trained: f64,
    frozen_proj: f64,
    frozen_attn: f64,
    act_bytes: f64,
    /// The encoder blocks' forward (recomputed under `checkpoint_blocks`).
    trunk: f64,
}

impl Cost {
    fn add(&mut self, o: Cost) {
        self.trained += o.trained;
        self.frozen_proj += o.frozen_proj;
        self.frozen_attn += o.frozen_attn;
        self.act_bytes += o.act_bytes;
        self.trunk += o.trunk;
    }
}

const F32: f64 = 4.0;

/// How the encoder blocks run.
#[derive(Debug, Clone, Copy)]
struct Exec {
    attn: AttnImpl,
    checkpoint: bool,
}

/// One pre-norm ViT block on B sequences of T tokens of width d (h heads, MLP ratio r).
/// Activations measured on the autograd graph: (25 + 3r) floats per token and channel
/// (+2 with drop path), 4 per head and token pair (scores and probabilities under full
/// attention; chunked attention keeps 3 per token and channel instead), 2 per head and
/// token, 12 per token.
fn vit_block(b: f64, t: f64, d: f64, h: f64, r: f64, drop_path: bool, exec: Exec) -> Cost {
    let flops = 2.0 * b * t * (4.0 * d * d + 2.0 * r * d * d) + 4.0 * b * t * t * d;
    let acts = if exec.checkpoint {
        // Only the block's input is kept; its insides are recomputed in the backward.
        b * t * d
    } else {
        let per_token = (25.0 + 3.0 * r + if drop_path { 2.0 } else { 0.0 }) * d + 12.0;
        let attn = match exec.attn {
            AttnImpl::Full => 4.0 * b * h * t * t + 2.0 * b * h * t,
            // No probabilities; the chunked node's own q, k, v and output copies instead.
            AttnImpl::Chunked => 3.0 * b * t * d,
        };
        b * t * per_token + attn
    };
    Cost {
        trained: flops,
        act_bytes: acts * F32,
        trunk: flops,
        ..Default::default()
    }
}

/// The adapters and the block core on B·T tokens (encoder width d).
#[allow(clippy::too_many_arguments)] // the sizes, the block, and how it runs
fn block_cost(
    b: f64,
    t: f64,
    d: f64,
    mode: BlockMode,
    src: &BlockSource,
    mlp_hidden: Option<usize>,
    block_prec: Precision,
    attn: AttnImpl,
) -> (Cost, f64) {
    let c = &src.config;
    let n = b * t;
    let hw = c.hidden_size as f64;
    // Adapters: d → H → d, no bias; they keep the H-wide input of the block and their outputs.
    let mut cost = Cost {
        trained: 2.0 * 2.0 * n * d * hw,
        act_bytes: (n * hw + n * d) * F32,
        ..Default::default()
    };
    let f = c.intermediate_size as f64;
    let llama = c.arch == Arch::Llama;
    let mut block_fwd = 0.0;
    if mode == BlockMode::Mlp {
        let fm = mlp_hidden.unwrap_or(c.intermediate_size) as f64;
        let mats = if llama { 3.0 } else { 2.0 };
        let fl = 2.0 * n * mats * hw * fm;
        let per_f = if llama { 4.0 } else { 2.0 };
        block_fwd += fl;
        cost.add(Cost {
            trained: fl,
            act_bytes: n * (7.0 * hw + per_f * fm + 10.0) * F32,
            ..Default::default()
        });
        return (cost, block_fwd);
    }
    let hq = (c.num_heads * c.head_dim) as f64;
    let kv = (c.num_kv_heads * c.head_dim) as f64;
    let heads = c.num_heads as f64;
    let mlp_mats = if llama { 3.0 } else { 2.0 };
    let proj = 2.0 * n * (hw * hq + 2.0 * hw * kv + hq * hw + mlp_mats * hw * f);
    let att = 4.0 * b * t * t * hq;
    for i in 0..src.layers {
        let last = i + 1 == src.layers;
        block_fwd += proj + att;
        if mode.is_trainable() {
            // Plain candle ops in f32 (coefficients measured on the autograd graph).
            let per_f = if llama { 4.0 } else { 2.0 };
            let probs = match attn {
                AttnImpl::Full => 4.0 * b * heads * t * t + 2.0 * b * heads * t,
                AttnImpl::Chunked => 0.0,
            };
            let acts = n * (12.0 * hw + 5.0 * hq + 4.0 * kv + per_f * f + 15.0) + probs;
            cost.add(Cost {
                trained: proj + att,
                act_bytes: acts * F32,
                ..Default::default()
            });
        } else {
            // The frozen node keeps exactly `Saved` (block/forward.rs) and its output.
            let mm = match block_prec {
                Precision::F32 => 4.0,
                Precision::Bf16 | Precision::F16 => 2.0,
            };
            let mut bytes = F32 * (2.0 * n * hw + 2.0 * n) // x̂1, r1, x̂2, r2
                + mm * n * (hq + 2.0 * kv) // q, k, v
                + mm * n * f * if llama { 2.0 } else { 1.0 } // MLP pre-activations
                + F32 * n * hw; // the node's output
            if attn == AttnImpl::Full {
                bytes += mm * b * heads * t * t;
            }
            if last {
                bytes += F32 * (n * hw + n); // the final norm's output and 1/rms
            }
            cost.add(Cost {
                frozen_proj: proj,
                frozen_attn: att,
                act_bytes: bytes,
                ..Default::default()
            });
        }
    }
    (cost, block_fwd)
}

/// VectorNet's global graph: floats kept per polyline and channel (measured).
const GLOBAL_PER_TOKEN: f64 = 22.0;
/// A decoder head's residual MLP per actor and channel (measured).
const HEAD_PER_ACTOR: f64 = 15.0;
/// The prediction fusion and confidence head per actor, mode and channel (measured).
const FUSION_PER_MODE: f64 = 33.0;

/// The encoder and head of each model (without the block), per training step at batch B.
fn encoder_cost(model: &ModelConfig, shape: DataShape, b: f64, classes: f64, exec: Exec) -> Cost {
    let mut cost = Cost::default();
    match (model, shape) {
        (ModelConfig::PointBert(c), DataShape::Pc { groups, group_size }) => {
            let [c1, c2, c3] = c.pointnet_dims.map(|v| v as f64);
            let (enc, d) = (c.encoder_dims as f64, c.trans_dim as f64);
            let points = b * (groups * group_size) as f64;
            let n = b * groups as f64;
            let t = (groups + 1) as f64;
            // Mini-PointNet per point (measured: 9 floats per c1 and c3 channel, 6 per c2,
            // 2 per output channel), center embedding, the head.
            cost.trained += 2.0 * points * (3.0 * c1 + c1 * c2 + 2.0 * c2 * c3 + c3 * enc)
                + 2.0 * n * enc * d
                + 2.0 * n * (3.0 * 128.0 + 128.0 * d)
                + 2.0 * b * (2.0 * d * 256.0 + 256.0 * classes);
            cost.act_bytes += F32
                * (points * (9.0 * c1 + 6.0 * c2 + 9.0 * c3 + 2.0 * enc)
                    + n * (c2 + enc + 128.0)
                    + 7.0 * b * t * d
                    + b * (4.0 * 256.0 + 2.0 * d));
            for i in 0..c.depth {
                let drop = super::models::layers::drop_path_rate(c.drop_path, i, c.depth) > 0.0;
                cost.add(vit_block(b, t, d, c.heads as f64, c.mlp_ratio, drop, exec));
                // The center embedding is added before every block.
                cost.act_bytes += F32 * b * t * d;
            }
        }
        (ModelConfig::Video(c), DataShape::Video { tokens, token_dim }) => {
            let (t, d) = (tokens as f64, c.embed_dim as f64);
            cost.trained += 2.0 * b * t * token_dim as f64 * d + 2.0 * b * d * classes;
            cost.act_bytes += F32 * (3.0 * b * t * d + b * (4.0 * d + classes));
            for i in 0..c.depth {
                let drop = super::models::layers::drop_path_rate(c.drop_path, i, c.depth) > 0.0;
                cost.add(vit_block(b, t, d, c.heads as f64, c.mlp_ratio, drop, exec));
            }
        }
        (
            ModelConfig::VectorNet(c),
            DataShape::Av {
                actors,
                actor_vectors,
                actor_features,
                lanes,
                lane_vectors,
                lane_features,
                pred_steps,
            },
        ) => {
            let d = c.width() as f64;
            for (polys, vecs, feat) in [
                (actors, actor_vectors, actor_features),
                (lanes, lane_vectors, lane_features),
            ] {
                let v = b * (polys * vecs) as f64;
                let mut inp = feat as f64;
                for &w in &c.subgraph_widths {
                    let w = w as f64;
                    cost.trained += 2.0 * v * (inp * w + w * w);
                    // Linear, LayerNorm, ReLU twice, then [x, max]: 18.5 floats per vector
                    // and channel (measured).
                    cost.act_bytes += F32 * v * 18.5 * w;
                    inp = 2.0 * w;
                }
            }
            let t = (actors + lanes) as f64;
            // The global graph: q, k, v, the attention's output projection and the skip
            // projection, one head over all polylines.
            cost.trained += 2.0 * b * t * 5.0 * d * d + 4.0 * b * t * t * d;
            cost.act_bytes += F32 * (b * t * GLOBAL_PER_TOKEN * d + 3.0 * b * t * t);
            // The decoder on every actor slot: K mode heads and the single-mode head (residual
            // MLP → 2P offsets), the prediction fusion and the confidence head per mode.
            let na = b * actors as f64;
            let k = c.modes as f64;
            let p2 = 2.0 * pred_steps as f64;
            let head = 2.0 * d * d + d * p2;
            cost.trained +=
                2.0 * na * ((k + 1.0) * head + k * (2.0 * d + 3.0 * d * d) + k * (2.0 * d * d + d));
            cost.act_bytes +=
                F32 * na * ((k + 1.0) * (HEAD_PER_ACTOR * d + 2.0 * p2) + k * FUSION_PER_MODE * d);
        }
        _ => {}
    }
    cost
}

fn encoder_width(model: &ModelConfig) -> usize {
    match model {
        ModelConfig::PointBert(c) => c.trans_dim,
        ModelConfig::Video(c) => c.embed_dim,
        ModelConfig::VectorNet(c) => c.width(),
    }
}

/// The plan of the `train` stage `sc`. `cuda`: whether the run would use CUDA (the default
/// precision of a frozen block depends on it).
pub fn plan_train(config: &PipelineConfig, sc: &StageConfig, cuda: bool) -> Result<TrainPlan> {
    let (p, task, model) = parse_train(config, sc, false)?;
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
    let shape = data_shape(config, data_sc, task)
        .with_context(|| format!("the shapes of data stage `{}`", p.data))?;
    let (classes, bench) = benchmark_classes(task);
    if task.is_classification() {
        notes.push(format!(
            "classes: {classes} assumed ({bench}); a dry run reads no labels (the head has 257·classes weights)"
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
        Some(src) => Some((shape_only_core(mode, src, p.mlp_hidden)?, mode)),
        None => None,
    };
    let params = count_params(&model, shape, classes, core)?;

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

    // Rows per step: each clip is augmented `repeated_aug` times (video; 1 elsewhere).
    let b = (p.batch_size * p.repeated_aug) as f64;
    let exec = Exec {
        attn: p.attention,
        checkpoint: p.checkpoint_blocks,
    };
    let mut cost = encoder_cost(&model, shape, b, classes as f64, exec);
    let mut block_fwd = 0.0;
    if let Some(src) = &block {
        let (c, f) = block_cost(
            b,
            shape.tokens() as f64,
            encoder_width(&model) as f64,
            mode,
            src,
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
        stage: sc.name.clone(),
        task,
        mode: p.mode,
        batch: p.batch_size * p.repeated_aug,
        tokens: shape.tokens(),
        classes,
        block,
        precision,
        params,
        memory,
        flops,
        units: p.epochs.div_ceil(p.epochs_per_checkpoint),
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
                "{:?}, mode {}, batch {} rows, {} tokens per sample, {} ({} checkpoint units)",
                self.task, self.mode, self.batch, self.tokens, self.precision, self.units
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
mod tests {
    use super::*;
    use crate::train::block::tests::llama_cfg;
    use crate::train::models::layers::{init_vars, step_rng};
    use crate::train::models::pointbert::PointBertConfig;
    use crate::train::models::vectornet::VectorNetConfig;
    use crate::train::models::video_vit::VideoVitConfig;
    use std::path::Path;

    /// LLaMA-7B's config.json as Hugging Face ships it (the weights are not needed).
    const LLAMA7B_CONFIG: &str = r#"{"architectures": ["LlamaForCausalLM"], "hidden_act": "silu", "hidden_size": 4096, "intermediate_size": 11008, "max_position_embeddings": 2048, "model_type": "llama", "num_attention_heads": 32, "num_hidden_layers": 32, "rms_norm_eps": 1e-06, "torch_dtype": "float16", "vocab_size": 32000}"#;

    /// The paper's point-cloud stage (configs/pipeline.toml's train_pc_hardest: every
    /// hyper-parameter at the task's default) with `extra` train params and block params.
    fn paper_config(dir: &Path, extra: &str, block_extra: &str) -> PipelineConfig {
        let m = dir.join("llama-7b-hf");
        std::fs::create_dir_all(&m).unwrap();
        std::fs::write(m.join("config.json"), LLAMA7B_CONFIG).unwrap();
        PipelineConfig::parse(
            &dir.join("p.toml"),
            &format!(
                r#"[stages.llm_block]
kind = "llm.block"
[stages.llm_block.params]
checkpoint = "llama-7b-hf"
{block_extra}
[stages.pc]
kind = "pc.tokens"
[stages.pc.params]
train = "absent/train.h5"
test = "absent/test.h5"
num_points = 1024
num_groups = 64
group_size = 32
[stages.ssv2]
kind = "ssv2.tokens"
[stages.ssv2.params]
root = "absent"
num_frames = 16
tubelet_frames = 2
patch = 16
crop = 224
[stages.train_pc]
kind = "train"
[stages.train_pc.params]
data = "pc"
block = "llm_block"
precision = "f32"
{extra}
[stages.train_video]
kind = "train"
[stages.train_video.params]
data = "ssv2"
block = "llm_block"
{extra}
"#
            ),
        )
        .unwrap()
    }

    fn plan(c: &PipelineConfig, stage: &str) -> TrainPlan {
        plan_train(c, &c.stages[stage], false).unwrap()
    }

    /// PointBERT + the LLaMA-7B block from a config.json alone: the reference's sizes
    /// (Point-BERT ~22.1M; the LLaMA-7B layer 4·4096² + 3·4096·11008 + 2·4096, frozen;
    /// adapters 2·384·4096), and what each ablation changes.
    #[test]
    fn paper_pointbert_llama7b_counts_from_config_json_alone() {
        let dir = tempfile::tempdir().unwrap();
        let c = paper_config(dir.path(), "", "");
        let p = plan(&c, "train_pc");
        println!("{}", p.render());
        let n = &p.params;
        assert!(
            (22_000_000..22_200_000).contains(&n.encoder),
            "PointBERT encoder + head: {}",
            n.encoder
        );
        assert_eq!(n.block, 202_383_360);
        assert_eq!(n.adapters, 2 * 384 * 4096);
        assert_eq!(n.frozen, n.block);
        assert_eq!(n.trainable, n.encoder + n.adapters);
        assert_eq!(n.total, n.trainable + n.frozen);
        assert_eq!(p.tokens, 65);
        let b = p.block.as_ref().unwrap();
        assert_eq!((b.first_layer, b.layers, b.num_layers), (31, 1, 32));
        // Memory: f32 weights of everything, grads and AdamW for the trainable part.
        assert_eq!(p.memory.weights, 4.0 * (n.total + n.buffers) as f64);
        assert_eq!(p.memory.grads, 4.0 * n.trainable as f64);
        assert_eq!(p.memory.optimizer, 8.0 * n.trainable as f64);
        assert!(p.memory.activations > 1e9, "{}", p.memory.activations);
        // FLOPs: the block's forward is 404.8 MFLOPs per token plus attention.
        let per_token = 2.0 * 202_375_168.0; // the layer's matrices, without its 2 norms
        let want = 32.0 * (65.0 * per_token + 4.0 * 65.0 * 65.0 * 4096.0);
        assert!(
            (p.flops.block_forward - want).abs() < 1.0,
            "{}",
            p.flops.block_forward
        );
        assert!(p.flops.backward > p.flops.forward);

        // The ablations.
        let with = |extra: &str, block: &str| {
            plan(&paper_config(dir.path(), extra, block), "train_pc").params
        };
        let t = with("mode = \"trainable\"", "");
        assert_eq!((t.trainable, t.frozen), (t.total, 0));
        let r = with("mode = \"random\"", "");
        assert_eq!((r.frozen, r.block), (n.block, n.block));
        let m = with("mode = \"mlp\"", "");
        assert_eq!((m.block, m.frozen), (135_270_400, 0));
        assert_eq!(m.trainable, n.encoder + n.adapters + 135_270_400);
        let m2 = with("mode = \"mlp\"\nmlp_hidden = 16470", "");
        assert_eq!(m2.block, 202_387_456);
        let none = with("mode = \"none\"", "");
        assert_eq!((none.adapters, none.block, none.total), (0, 0, n.encoder));
        let two = with("", "blocks = 2");
        assert_eq!((two.block, two.frozen), (2 * n.block, 2 * n.block));
        let two_plan = plan(&paper_config(dir.path(), "", "blocks = 2"), "train_pc");
        assert_eq!(two_plan.block.unwrap().first_layer, 30);
        assert!((two_plan.flops.block_forward - 2.0 * want).abs() < 1.0);
    }

    /// Meta's release gives the same shape from its params.json alone, and an `init`
    /// checkpoint that is not there yet does not stop a plan (it changes no shape).
    #[test]
    fn meta_params_json_alone_and_missing_init() {
        let dir = tempfile::tempdir().unwrap();
        let c = paper_config(dir.path(), "init = \"absent/Point-BERT.pth\"", "");
        let hf = plan(&c, "train_pc");
        assert!(hf
            .notes
            .iter()
            .any(|n| n.contains("Point-BERT.pth") && n.contains("not there")));
        let meta = dir.path().join("llama-7b-meta");
        std::fs::create_dir_all(&meta).unwrap();
        std::fs::write(
            meta.join("params.json"),
            r#"{"dim": 4096, "multiple_of": 256, "n_heads": 32, "n_layers": 32, "norm_eps": 1e-06, "vocab_size": -1}"#,
        )
        .unwrap();
        let mut c = paper_config(dir.path(), "", "");
        c.stages
            .get_mut("llm_block")
            .unwrap()
            .params
            .insert("checkpoint".into(), meta.display().to_string().into());
        let p = plan(&c, "train_pc");
        assert_eq!(p.block.unwrap().config.intermediate_size, 11008);
        assert_eq!(p.params, hf.params);
    }

    /// The FLOPs formula against the paper's own numbers (PAPER.md §2): the LLaMA-7B block
    /// costs ~80 GFLOPs per 197-token image and ~675 GFLOPs per 1568-token clip.
    #[test]
    fn block_flops_match_the_papers_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let c = paper_config(dir.path(), "batch_size = 1", "");
        let p = plan(&c, "train_video");
        assert_eq!(p.tokens, 1568);
        let g = p.flops.block_forward / 1e9;
        assert!((g - 675.0).abs() < 5.0, "{g} GFLOPs per clip");
        println!("{}", p.render());
        // 196 tokens ≈ an image's 197: one 2-frame tubelet layer of 14 × 14 patches.
        let mut c = paper_config(dir.path(), "batch_size = 1", "");
        c.stages
            .get_mut("ssv2")
            .unwrap()
            .params
            .insert("num_frames".into(), 2.into());
        let p = plan(&c, "train_video");
        assert_eq!(p.tokens, 196);
        let g = p.flops.block_forward / 1e9;
        assert!((g - 80.0).abs() < 1.0, "{g} GFLOPs per image-sized input");
    }

    /// The plan's count is the built model's: with real random weights instead of the
    /// shape-only ones, at a small size, for every mode and a stack.
    #[test]
    fn shape_only_counts_equal_the_built_model() {
        let bcfg = llama_cfg();
        let src = BlockSource {
            stage: "b".into(),
            config: bcfg.clone(),
            first_layer: 0,
            layers: 2,
            num_layers: 2,
        };
        let model = ModelConfig::PointBert(PointBertConfig {
            trans_dim: 16,
            depth: 1,
            heads: 2,
            pointnet_dims: [8, 16, 16],
            encoder_dims: 16,
            ..Default::default()
        });
        let shape = DataShape::Pc {
            groups: 8,
            group_size: 4,
        };
        for mode in [BlockMode::Frozen, BlockMode::Trainable, BlockMode::Mlp] {
            let planned = count_params(
                &model,
                shape,
                5,
                Some((shape_only_core(mode, &src, None).unwrap(), mode)),
            )
            .unwrap();
            let dev = Device::Cpu;
            let real = match mode {
                BlockMode::Mlp => BlockCore::Mlp(
                    MlpBlock::random(&MlpConfig::of_block(&bcfg, None), 0, &dev).unwrap(),
                ),
                _ => BlockCore::stack(vec![
                    LlmBlock::random(&bcfg, 0, &dev).unwrap(),
                    LlmBlock::random(&bcfg, 1, &dev).unwrap(),
                ])
                .unwrap(),
            };
            let weights: usize = match &real {
                BlockCore::Llm(ls) => ls
                    .iter()
                    .flat_map(|l| l.tensors())
                    .map(|(_, t)| t.elem_count())
                    .sum(),
                BlockCore::Mlp(m) => m.tensors().iter().map(|(_, t)| t.elem_count()).sum(),
            };
            let varmap = VarMap::new();
            let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
            let ModelConfig::PointBert(pc) = &model else {
                unreachable!()
            };
            PointBert::new(pc, 5, Some((real, mode)), vb).unwrap();
            let vars: usize = varmap.all_vars().iter().map(|v| v.elem_count()).sum();
            assert_eq!(planned.block, weights, "{mode}");
            assert_eq!(planned.total + planned.buffers, vars + weights, "{mode}");
        }
    }

    use crate::test_util::graph_bytes;

    /// The activation estimate against what candle's autograd graph keeps (plus what the
    /// frozen nodes keep inside themselves), at small sizes, for each model and mode.
    #[test]
    fn activation_estimate_matches_the_autograd_graph() {
        let dev = Device::Cpu;
        let bcfg = llama_cfg();
        let b = 4usize;
        let cases: Vec<(&str, ModelConfig, DataShape)> = vec![
            (
                "pointbert",
                ModelConfig::PointBert(PointBertConfig {
                    trans_dim: 32,
                    depth: 2,
                    heads: 4,
                    pointnet_dims: [32, 64, 64],
                    encoder_dims: 64,
                    ..Default::default()
                }),
                DataShape::Pc {
                    groups: 16,
                    group_size: 16,
                },
            ),
            (
                "video",
                ModelConfig::Video(VideoVitConfig {
                    embed_dim: 32,
                    depth: 2,
                    heads: 4,
                    ..Default::default()
                }),
                DataShape::Video {
                    tokens: 32,
                    token_dim: 24,
                },
            ),
            (
                "vectornet",
                ModelConfig::VectorNet(VectorNetConfig {
                    subgraph_widths: vec![16, 32],
                    modes: 3,
                    agent_only_loss: false,
                }),
                DataShape::Av {
                    actors: 8,
                    actor_vectors: 9,
                    actor_features: 6,
                    lanes: 12,
                    lane_vectors: 9,
                    lane_features: 7,
                    pred_steps: 10,
                },
            ),
        ];
        let src = BlockSource {
            stage: "b".into(),
            config: bcfg.clone(),
            first_layer: 0,
            layers: 1,
            num_layers: 1,
        };
        let modes = [
            BlockMode::None,
            BlockMode::Frozen,
            BlockMode::Trainable,
            BlockMode::Mlp,
        ];
        let runs = cases
            .iter()
            .flat_map(|c| modes.iter().map(move |m| (c, *m, AttnImpl::Full)))
            // Chunked attention (no [B, H, T, T] kept) on the model that uses it.
            .chain(modes.iter().map(|m| (&cases[1], *m, AttnImpl::Chunked)));
        for ((what, model, shape), mode, attn) in runs {
            let exec = Exec {
                attn,
                checkpoint: false,
            };
            {
                let classes = 5;
                let mut core = match mode {
                    BlockMode::None => None,
                    BlockMode::Mlp => Some(BlockCore::Mlp(
                        MlpBlock::random(&MlpConfig::of_block(&bcfg, None), 0, &dev).unwrap(),
                    )),
                    _ => Some(BlockCore::from(LlmBlock::random(&bcfg, 0, &dev).unwrap())),
                };
                if mode.is_trainable() {
                    match core.as_mut().unwrap() {
                        BlockCore::Llm(ls) => {
                            ls[0].make_trainable().unwrap();
                        }
                        BlockCore::Mlp(m) => {
                            m.make_trainable().unwrap();
                        }
                    }
                }
                let t = shape.tokens();
                // What the frozen node keeps besides its output (the graph sees the output).
                let frozen_inside = match (&core, mode) {
                    (Some(BlockCore::Llm(ls)), BlockMode::Frozen) => {
                        let x = Tensor::zeros((b, t, bcfg.hidden_size), DType::F32, &dev).unwrap();
                        ls[0]
                            .clone()
                            .with_attention(attn)
                            .frozen_saved_bytes(&x)
                            .unwrap()
                            - b * t * bcfg.hidden_size * 4
                    }
                    _ => 0,
                };
                let varmap = VarMap::new();
                let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
                let core = core.map(|c| (c, mode));
                let mut rng = step_rng(0, "t", 0);
                let out = match (model, *shape) {
                    (ModelConfig::PointBert(c), DataShape::Pc { groups, group_size }) => {
                        let m = PointBert::new(c, classes, core, vb).unwrap();
                        init_vars(&varmap, 0).unwrap();
                        let ce = Tensor::randn(0f32, 0.5, (b, groups, 3), &dev).unwrap();
                        let nb =
                            Tensor::randn(0f32, 0.05, (b, groups, group_size, 3), &dev).unwrap();
                        m.forward(&ce, &nb, Some(&mut rng)).unwrap()
                    }
                    (ModelConfig::Video(c), DataShape::Video { tokens, token_dim }) => {
                        let mut m = VideoVit::new(c, tokens, token_dim, classes, core, vb).unwrap();
                        init_vars(&varmap, 0).unwrap();
                        m.configure(&crate::train::models::layers::Execution {
                            attn,
                            checkpoint: None,
                            precision: None,
                        });
                        let x = Tensor::randn(0f32, 1.0, (b, tokens, token_dim), &dev).unwrap();
                        m.forward(&x, Some(&mut rng)).unwrap()
                    }
                    (
                        ModelConfig::VectorNet(c),
                        DataShape::Av {
                            actors,
                            actor_vectors,
                            actor_features,
                            lanes,
                            lane_vectors,
                            lane_features,
                            pred_steps,
                        },
                    ) => {
                        let m =
                            VectorNet::new(c, actor_features, lane_features, pred_steps, core, vb)
                                .unwrap();
                        init_vars(&varmap, 0).unwrap();
                        let a = Tensor::randn(
                            0f32,
                            1.0,
                            (b, actors, actor_vectors, actor_features),
                            &dev,
                        )
                        .unwrap();
                        let l =
                            Tensor::randn(0f32, 1.0, (b, lanes, lane_vectors, lane_features), &dev)
                                .unwrap();
                        let am = Tensor::ones((b, actors), DType::F32, &dev).unwrap();
                        let lm = Tensor::ones((b, lanes), DType::F32, &dev).unwrap();
                        let ctrs = Tensor::randn(0f32, 1.0, (b, actors, 2), &dev).unwrap();
                        let f = m.forward(&a, &am, &l, &lm, &ctrs).unwrap();
                        // One node that depends on every output.
                        (f.modes.sum_all().unwrap()
                            + f.confidence.sum_all().unwrap()
                            + f.single.sum_all().unwrap())
                        .unwrap()
                    }
                    _ => unreachable!(),
                };
                let measured = (graph_bytes(&out) + frozen_inside) as f64;
                let mut est = encoder_cost(model, *shape, b as f64, classes as f64, exec);
                if mode != BlockMode::None {
                    let (c, _) = block_cost(
                        b as f64,
                        t as f64,
                        encoder_width(model) as f64,
                        mode,
                        &src,
                        None,
                        Precision::F32,
                        attn,
                    );
                    est.add(c);
                }
                let ratio = est.act_bytes / measured;
                println!(
                    "{what} {mode} {attn:?}: estimate {:.0} vs graph {measured:.0} ({ratio:.3})",
                    est.act_bytes
                );
                assert!(
                    (0.9..1.1).contains(&ratio),
                    "{what} {mode} {attn:?}: estimate {} vs graph {measured} bytes",
                    est.act_bytes
                );
            }
        }
    }
}
