//! What the encoders share: small layers (LayerNorm as one autograd node: `ops::layer_norm`,
//! since candle-nn's fused one has no backward), deterministic parameter init (candle's CPU RNG cannot be
//! seeded, and a resumed run must rebuild exactly the model it started with), and the
//! pre-norm ViT block and trunk of PointBERT and the video ViT.

use std::sync::Arc;

use crate::train::ops::bias::{linear as linear_with_bias, Linear};
use candle_core::{DType, Module, Result, Tensor, Var, D};
use candle_nn::{VarBuilder, VarMap};

use crate::train::block::{BlockAdapter, BlockCore, BlockMode};
use crate::train::ops::attention::{attention, AttnImpl};
use crate::train::ops::precision::{linear, to_autocast, Precision};
use crate::train::ops::recompute::{checkpointed, GradSink, Recompute};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// LayerNorm over the last dim (eps 1e-5 as PyTorch's default, unless set).
#[derive(Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    pub fn new(dim: usize, vb: VarBuilder) -> Result<Self> {
        Ok(LayerNorm {
            weight: vb.get_with_hints(dim, "weight", candle_nn::Init::Const(1.0))?,
            bias: vb.get_with_hints(dim, "bias", candle_nn::Init::Const(0.0))?,
            eps: 1e-5,
        })
    }

    /// The same norm with another eps (VideoMAE's are 1e-6).
    pub fn with_eps(mut self, eps: f64) -> Self {
        self.eps = eps;
        self
    }
}

impl LayerNorm {
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }
    pub fn bias(&self) -> &Tensor {
        &self.bias
    }
}

impl Module for LayerNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        crate::train::ops::layer_norm::layer_norm(x, &self.weight, &self.bias, self.eps)
    }
}

/// Max over dim `d` (the pooling of PointNet and of the classification head).
pub fn max_over(x: &Tensor, d: usize) -> Result<Tensor> {
    x.max(d)
}

/// Cross-entropy with label smoothing, mean over the batch. `logits` [B, C], `labels` u32 [B].
pub fn smoothed_cross_entropy(logits: &Tensor, labels: &Tensor, smoothing: f64) -> Result<Tensor> {
    let logp = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let nll = logp
        .gather(&labels.unsqueeze(1)?, 1)?
        .squeeze(1)?
        .neg()?
        .mean_all()?;
    if smoothing == 0.0 {
        return Ok(nll);
    }
    let uniform = logp.mean(D::Minus1)?.neg()?.mean_all()?;
    (nll * (1.0 - smoothing))? + (uniform * smoothing)?
}

/// A dropout mask drawn from a seeded RNG (candle's own dropout uses an unseedable RNG).
pub fn dropout(x: &Tensor, p: f64, rng: &mut ChaCha8Rng) -> Result<Tensor> {
    if p <= 0.0 {
        return Ok(x.clone());
    }
    let n = x.elem_count();
    let keep = 1.0 - p;
    let mask: Vec<f32> = (0..n)
        .map(|_| {
            if rng.random::<f64>() < keep {
                (1.0 / keep) as f32
            } else {
                0.0
            }
        })
        .collect();
    let mask = Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(x.dtype())?;
    x * mask
}

/// Stochastic depth: drop the whole residual branch of some samples. `x` [B, ...].
pub fn drop_path(x: &Tensor, p: f64, rng: &mut ChaCha8Rng) -> Result<Tensor> {
    if p <= 0.0 {
        return Ok(x.clone());
    }
    let b = x.dim(0)?;
    let keep = 1.0 - p;
    let mask: Vec<f32> = (0..b)
        .map(|_| {
            if rng.random::<f64>() < keep {
                (1.0 / keep) as f32
            } else {
                0.0
            }
        })
        .collect();
    let mut shape = vec![b];
    shape.extend(std::iter::repeat_n(1, x.rank() - 1));
    let mask = Tensor::from_vec(mask, shape, x.device())?.to_dtype(x.dtype())?;
    x.broadcast_mul(&mask)
}

/// Overwrites every variable with the reference init (PointBERT's `_init_weights`):
/// matrices truncated-normal(0.02), norm scales 1, biases 0, BN running var 1. Each
/// variable's values come from its own RNG stream seeded by (seed, name), so the result
/// does not depend on creation order.
pub fn init_vars(varmap: &VarMap, seed: u64) -> Result<()> {
    for_each_var_by_name(varmap, |_, name, var| init_var(name, var, seed))
}

/// Calls `f(all vars, name, var)` for every variable in name order (so an init does not
/// depend on creation order).
fn for_each_var_by_name(
    varmap: &VarMap,
    mut f: impl FnMut(&std::collections::HashMap<String, Var>, &str, &Var) -> Result<()>,
) -> Result<()> {
    let vars = varmap
        .data()
        .lock()
        .map_err(|_| candle_core::Error::Msg("varmap lock poisoned".into()))?;
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort();
    for name in names {
        f(&vars, name, &vars[name])?;
    }
    Ok(())
}

fn init_var(name: &str, var: &Var, seed: u64) -> Result<()> {
    let shape = var.shape().clone();
    let n = shape.elem_count();
    let leaf = name.rsplit('.').next().unwrap_or(name);
    let values: Vec<f32> = if leaf == "running_var" {
        vec![1.0; n]
    } else if leaf == "running_mean" || leaf.ends_with("bias") {
        vec![0.0; n]
    } else if leaf == "weight" && shape.rank() == 1 {
        vec![1.0; n]
    } else {
        let h = blake3::hash(format!("{seed}:{name}").as_bytes());
        let mut s = [0u8; 32];
        s.copy_from_slice(h.as_bytes());
        let mut rng = ChaCha8Rng::from_seed(s);
        (0..n).map(|_| trunc_normal(&mut rng) * 0.02).collect()
    };
    let t = Tensor::from_vec(values, shape, var.device())?.to_dtype(var.dtype())?;
    var.set(&t)
}

/// Overwrites every variable with the VectorNet reference's init (StreamingForecasting,
/// `tools/pretrain/train_forecaster_vectornet.py`: `model.apply(init_weights)`): every
/// Linear weight Xavier-uniform (`U(±sqrt(6 / (fan_in + fan_out)))`), every Linear bias
/// `U(0, 1)`; norms keep PyTorch's defaults (scale 1, shift 0). A Linear is a rank-2
/// `weight`, its bias the rank-1 `bias` beside it. Seeded per (seed, name) as [`init_vars`].
pub fn init_vars_xavier(varmap: &VarMap, seed: u64) -> Result<()> {
    for_each_var_by_name(varmap, |vars, name, var| {
        let shape = var.shape().clone();
        let (stem, leaf) = name.rsplit_once('.').unwrap_or(("", name));
        let linear_bias = leaf == "bias"
            && vars
                .get(&format!("{stem}.weight"))
                .is_some_and(|w| w.rank() == 2);
        let uniform = |lo: f32, hi: f32| -> Vec<f32> {
            let h = blake3::hash(format!("{seed}:{name}").as_bytes());
            let mut rng = ChaCha8Rng::from_seed(*h.as_bytes());
            (0..shape.elem_count())
                .map(|_| lo + (hi - lo) * rng.random::<f32>())
                .collect()
        };
        let values = match (leaf, shape.dims()) {
            ("weight", &[out, inp]) => {
                let a = (6.0 / (out + inp) as f64).sqrt() as f32;
                uniform(-a, a)
            }
            _ if linear_bias => uniform(0.0, 1.0),
            _ => return init_var(name, var, seed),
        };
        var.set(&Tensor::from_vec(values, shape, var.device())?.to_dtype(var.dtype())?)
    })
}

/// Standard normal truncated to [-2, 2] (timm's trunc_normal_ bounds at std 1), Box-Muller.
fn trunc_normal(rng: &mut ChaCha8Rng) -> f32 {
    loop {
        let u1: f64 = rng.random::<f64>().max(1e-12);
        let u2: f64 = rng.random();
        let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
        if z.abs() <= 2.0 {
            return z as f32;
        }
    }
}

/// A seeded RNG for one purpose at one step (augmentation, dropout), so a resumed run draws
/// exactly what the uninterrupted one drew.
pub fn step_rng(seed: u64, purpose: &str, step: u64) -> ChaCha8Rng {
    let h = blake3::hash(format!("{seed}:{purpose}:{step}").as_bytes());
    let mut s = [0u8; 32];
    s.copy_from_slice(h.as_bytes());
    ChaCha8Rng::from_seed(s)
}

pub fn f32_vec(t: &Tensor) -> Result<Vec<f32>> {
    t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()
}

// ---------- the pre-norm ViT block that PointBERT and the video ViT share ----------

/// One pre-norm ViT block: x + attn(LN(x)), x + MLP(LN(x)).
#[derive(Clone)]
pub struct VitBlock {
    norm1: LayerNorm,
    qkv: candle_nn::Linear,
    /// VideoMAE's attention has learned q and v biases and no k bias (`attn.q_bias`,
    /// `attn.v_bias`); PointBERT's has none.
    qv_bias: Option<(Tensor, Tensor)>,
    proj: Linear,
    norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    heads: usize,
    /// Full or chunked attention (same values; chunked keeps no [B, H, T, T] for backward).
    pub attn: AttnImpl,
    /// Set: the block is checkpointed (recomputed in the backward), its weight gradients
    /// going to this sink.
    pub checkpoint: Option<GradSink>,
    /// Autocast of the matmuls (None = f32).
    pub prec: Option<Precision>,
}

impl VitBlock {
    pub fn new(
        dim: usize,
        heads: usize,
        mlp_ratio: f64,
        qv_bias: bool,
        vb: VarBuilder,
    ) -> Result<Self> {
        let hidden = (dim as f64 * mlp_ratio) as usize;
        let qv_bias = if qv_bias {
            Some((vb.get(dim, "attn.q_bias")?, vb.get(dim, "attn.v_bias")?))
        } else {
            None
        };
        Ok(VitBlock {
            norm1: LayerNorm::new(dim, vb.pp("norm1"))?,
            qkv: candle_nn::linear_no_bias(dim, dim * 3, vb.pp("attn.qkv"))?,
            qv_bias,
            proj: linear_with_bias(dim, dim, vb.pp("attn.proj"))?,
            norm2: LayerNorm::new(dim, vb.pp("norm2"))?,
            fc1: linear_with_bias(dim, hidden, vb.pp("mlp.fc1"))?,
            fc2: linear_with_bias(hidden, dim, vb.pp("mlp.fc2"))?,
            heads,
            attn: AttnImpl::Full,
            checkpoint: None,
            prec: None,
        })
    }

    fn attention(&self, x: &Tensor) -> Result<Tensor> {
        let (b, t, c) = x.dims3()?;
        let hd = c / self.heads;
        let mut qkv = linear(&self.qkv, x, self.prec)?;
        if let Some((qb, vb)) = &self.qv_bias {
            let kb = qb.zeros_like()?;
            qkv = qkv.broadcast_add(&Tensor::cat(&[qb, &kb, vb], 0)?)?;
        }
        let qkv = qkv
            .reshape((b, t, 3, self.heads, hd))?
            .permute((2, 0, 3, 1, 4))?; // [3, B, H, T, hd]
                                        // Under autocast the two attention matmuls take q, k, v in the autocast dtype.
        let cast = |t: Tensor| to_autocast(&t.contiguous()?, self.prec);
        let q = cast((qkv.get(0)? * (1.0 / (hd as f64).sqrt()))?)?;
        let k = cast(qkv.get(1)?)?;
        let v = cast(qkv.get(2)?)?;
        let out = attention(&q, &k, &v, None, self.attn)?
            .to_dtype(DType::F32)?
            .transpose(1, 2)?
            .reshape((b, t, c))?;
        linear(&self.proj, &out, self.prec)
    }

    /// `drop`: this block's drop-path rate; `rng` Some = training.
    pub fn forward(&self, x: &Tensor, drop: f64, rng: Option<&mut ChaCha8Rng>) -> Result<Tensor> {
        match &self.checkpoint {
            Some(sink) if x.track_op() => {
                let mut plain = self.clone();
                plain.checkpoint = None;
                checkpointed(Arc::new(VitStep { block: plain, drop }), x, rng, sink)
            }
            _ => self.forward_plain(x, drop, rng),
        }
    }

    /// The trained tensors of the block.
    fn params(&self) -> Vec<Tensor> {
        let mut p = vec![
            self.norm1.weight().clone(),
            self.norm1.bias().clone(),
            self.qkv.weight().clone(),
            self.proj.weight().clone(),
            self.norm2.weight().clone(),
            self.norm2.bias().clone(),
            self.fc1.weight().clone(),
            self.fc2.weight().clone(),
        ];
        for l in [&self.proj, &self.fc1, &self.fc2] {
            if let Some(b) = l.bias() {
                p.push(b.clone());
            }
        }
        if let Some((q, v)) = &self.qv_bias {
            p.push(q.clone());
            p.push(v.clone());
        }
        p
    }

    fn forward_plain(&self, x: &Tensor, drop: f64, rng: Option<&mut ChaCha8Rng>) -> Result<Tensor> {
        let a = self.attention(&self.norm1.forward(x)?)?;
        let (a, rng) = match rng {
            Some(r) => (drop_path(&a, drop, r)?, Some(r)),
            None => (a, None),
        };
        let x = (x + a)?;
        let h = linear(&self.fc1, &self.norm2.forward(&x)?, self.prec)?.gelu_erf()?;
        let m = linear(&self.fc2, &h, self.prec)?;
        let m = match rng {
            Some(r) => drop_path(&m, drop, r)?,
            None => m,
        };
        x + m
    }
}

/// A ViT block with its drop-path rate, as a checkpointed node runs it.
struct VitStep {
    block: VitBlock,
    drop: f64,
}

impl Recompute for VitStep {
    fn forward(&self, x: &Tensor, rng: Option<&mut ChaCha8Rng>) -> Result<Tensor> {
        self.block.forward_plain(x, self.drop, rng)
    }
    fn params(&self) -> Vec<Tensor> {
        self.block.params()
    }
}

/// How a model's attention and encoder blocks run (the `attention` and `checkpoint_blocks`
/// params of a `train` stage). Neither changes what is computed, only what is kept.
#[derive(Clone, Default)]
pub struct Execution {
    pub attn: AttnImpl,
    /// Some: every encoder block is checkpointed, weight gradients going to this sink.
    pub checkpoint: Option<GradSink>,
    /// Matmul precision (None: the default split, see `train::precision`).
    pub precision: Option<Precision>,
}

/// Applies `exec` to a stack of ViT blocks and the LLM block after them.
fn configure_trunk(blocks: &mut [VitBlock], llm: Option<&mut BlockAdapter>, exec: &Execution) {
    for b in blocks {
        b.attn = exec.attn;
        b.checkpoint = exec.checkpoint.clone();
        b.prec = exec.precision;
    }
    if let Some(l) = llm {
        l.configure(exec.attn, exec.precision);
    }
}

/// Linearly increasing drop-path rate over the blocks, as timm, PointBERT and VideoMAE.
/// The attention heads must split the width evenly (`what` names the width's config key):
/// checked before any weight is made, so a bad `[model]` table is a message, not a shape panic.
pub fn check_heads(what: &str, dim: usize, heads: usize) -> Result<()> {
    if heads == 0 || !dim.is_multiple_of(heads) {
        candle_core::bail!("{what} {dim} must be a multiple of heads {heads}");
    }
    Ok(())
}

pub fn drop_path_rate(max: f64, block: usize, depth: usize) -> f64 {
    max * block as f64 / (depth.max(1) - 1).max(1) as f64
}

/// Where the LLM block (with its adapters) sits in the encoder trunk (PAPER.md §2 ablation:
/// end 75.84, middle 75.55, start 72.66 on ImageNet at 100 epochs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlockPosition {
    /// After the last encoder block (the paper's method).
    #[default]
    End,
    /// After the first half of the encoder blocks.
    Middle,
    /// Before the first encoder block.
    Start,
}

impl BlockPosition {
    pub fn is_default(&self) -> bool {
        *self == BlockPosition::End
    }

    /// How many encoder blocks run before the LLM block.
    fn blocks_before(self, depth: usize) -> usize {
        match self {
            BlockPosition::End => depth,
            BlockPosition::Middle => depth / 2,
            BlockPosition::Start => 0,
        }
    }
}

/// The encoder trunk PointBERT and the video ViT share: pre-norm ViT blocks with a linearly
/// increasing drop-path rate, then the LLM block between its width adapters. The models add
/// their own embedding before it and their own norm and head after it.
pub struct VitTrunk {
    blocks: Vec<VitBlock>,
    llm: Option<BlockAdapter>,
    drop_path: f64,
    position: BlockPosition,
}

impl VitTrunk {
    /// Blocks under `blocks.{i}` and the adapters under `llm_adapter_{up,down}` of `vb`.
    /// `qv_bias`: VideoMAE's learned q and v biases (PointBERT has none).
    #[allow(clippy::too_many_arguments)] // one argument per size of the trunk
    pub fn new(
        dim: usize,
        depth: usize,
        heads: usize,
        mlp_ratio: f64,
        qv_bias: bool,
        drop_path: f64,
        position: BlockPosition,
        block: Option<(BlockCore, BlockMode)>,
        vb: &VarBuilder,
    ) -> Result<Self> {
        let llm = BlockAdapter::maybe_new(dim, block, vb)?;
        let blocks = (0..depth)
            .map(|i| VitBlock::new(dim, heads, mlp_ratio, qv_bias, vb.pp(format!("blocks.{i}"))))
            .collect::<Result<_>>()?;
        Ok(VitTrunk {
            blocks,
            llm,
            drop_path,
            position,
        })
    }

    pub fn has_block(&self) -> bool {
        self.llm.is_some()
    }

    /// Sets the eps of every block's two LayerNorms (default 1e-5; VideoMAE's 1e-6).
    pub fn with_norm_eps(mut self, eps: f64) -> Self {
        for b in &mut self.blocks {
            b.norm1 = b.norm1.clone().with_eps(eps);
            b.norm2 = b.norm2.clone().with_eps(eps);
        }
        self
    }

    pub fn configure(&mut self, exec: &Execution) {
        configure_trunk(&mut self.blocks, self.llm.as_mut(), exec);
    }

    /// x [B, T, dim] → [B, T, dim]. `pos` is added before every block when given
    /// (PointBERT's learned center embedding); `rng` Some = training (drop path). The LLM
    /// block runs at its `position` among the encoder blocks.
    pub fn forward(
        &self,
        x: &Tensor,
        pos: Option<&Tensor>,
        mut rng: Option<&mut ChaCha8Rng>,
    ) -> Result<Tensor> {
        let mut x = x.clone();
        let depth = self.blocks.len();
        let before = self.position.blocks_before(depth);
        for (i, blk) in self.blocks.iter().enumerate() {
            if i == before {
                x = self.llm_block(&x)?;
            }
            let dp = drop_path_rate(self.drop_path, i, depth);
            let input = match pos {
                Some(p) => (x + p)?,
                None => x,
            };
            x = blk.forward(&input, dp, rng.as_deref_mut())?;
        }
        if before >= depth {
            x = self.llm_block(&x)?;
        }
        Ok(x)
    }

    fn llm_block(&self, x: &Tensor) -> Result<Tensor> {
        match &self.llm {
            Some(llm) => llm.forward(x, None),
            None => Ok(x.clone()),
        }
    }
}
