//! Pieces the encoders share: the pre-norm ViT block (timm's `Block`) and the LLM block with
//! its width adapters (PAPER.md §1: `Linear(d, D_llm, bias=False)` → block →
//! `Linear(D_llm, d, bias=False)`).

use super::attention::{attention, AttnImpl};
use super::block::{BlockMode, LlmBlock};
use super::nn::{drop_path, LayerNorm};
use super::precision::{linear, to_autocast, Precision};
use super::recompute::{checkpointed, GradSink, Recompute};
use candle_core::{DType, Module, Result, Tensor};
use candle_nn::{Linear, VarBuilder};
use rand_chacha::ChaCha8Rng;
use std::sync::Arc;

/// One pre-norm ViT block: x + attn(LN(x)), x + MLP(LN(x)).
#[derive(Clone)]
pub struct VitBlock {
    norm1: LayerNorm,
    qkv: Linear,
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
            proj: candle_nn::linear(dim, dim, vb.pp("attn.proj"))?,
            norm2: LayerNorm::new(dim, vb.pp("norm2"))?,
            fc1: candle_nn::linear(dim, hidden, vb.pp("mlp.fc1"))?,
            fc2: candle_nn::linear(hidden, dim, vb.pp("mlp.fc2"))?,
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
pub fn configure_trunk(blocks: &mut [VitBlock], llm: Option<&mut BlockAdapter>, exec: &Execution) {
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
pub fn drop_path_rate(max: f64, block: usize, depth: usize) -> f64 {
    max * block as f64 / (depth.max(1) - 1).max(1) as f64
}

/// The LLM block with its width adapters.
pub struct BlockAdapter {
    pub block: LlmBlock,
    up: Linear,
    down: Linear,
    mode: BlockMode,
    /// None: the adapters in f32 and a frozen block in bf16 on CUDA only (the default).
    prec: Option<Precision>,
}

impl BlockAdapter {
    /// The adapters (`llm_adapter_up`, `llm_adapter_down`) around `block` for an encoder of
    /// width `width`; None for the `none` ablation.
    pub fn maybe_new(
        width: usize,
        block: Option<(LlmBlock, BlockMode)>,
        vb: &VarBuilder,
    ) -> Result<Option<Self>> {
        Ok(match block {
            Some((block, mode)) if mode != BlockMode::None => {
                let d = block.config().hidden_size;
                Some(BlockAdapter {
                    up: candle_nn::linear_no_bias(width, d, vb.pp("llm_adapter_up"))?,
                    down: candle_nn::linear_no_bias(d, width, vb.pp("llm_adapter_down"))?,
                    block,
                    mode,
                    prec: None,
                })
            }
            _ => None,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_masked(x, None)
    }

    /// Full or chunked attention inside the LLM block, and the precision of the adapters
    /// and of a frozen block.
    pub fn configure(&mut self, attn: AttnImpl, prec: Option<Precision>) {
        self.block.set_attention(attn);
        self.prec = prec;
    }

    /// With a key-padding mask [B, T] (1 = real token): padded tokens get no attention
    /// (VectorNet's padded polylines, PAPER.md §5).
    pub fn forward_masked(&self, x: &Tensor, key_mask: Option<&Tensor>) -> Result<Tensor> {
        let h = linear(&self.up, x, self.prec)?;
        let h = match (self.mode, self.prec) {
            // Weights are Vars in trainable mode: plain ops carry their gradients (in f32).
            (BlockMode::Trainable, _) => self.block.forward_masked(&h, key_mask)?,
            // bf16 autocast on CUDA only (see LlmBlock::forward_frozen_autocast).
            (_, None) => self.block.forward_frozen_with(&h, key_mask, true)?,
            (_, Some(p)) => self.block.forward_frozen_at(&h, key_mask, p)?,
        };
        linear(&self.down, &h, self.prec)
    }
}
