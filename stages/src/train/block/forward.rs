//! The block's forward pass, written once for both architectures: what the frozen node, the
//! tracked (trainable) path and inference all run. Norms, softmax, the residual stream and
//! the final norm are f32; the projections and attention matmuls run in the precision's
//! matmul dtype (bf16/f16 under autocast).
//!
//! Shapes: N = B·T tokens, D hidden, H query heads, KV key/value heads, G = H/KV, hd head dim.
//! Attention runs on q reshaped to [B, KV, G·T, hd] against k, v [B, KV, T, hd]: each kv head
//! serves its group of G query heads without materialising repeated k/v, and in the backward
//! `pᵀ·dO` and `dSᵀ·q` sum over the group's rows by themselves (the GQA grad reduction).

use candle_core::{DType, Tensor, D};

use super::weights::Weights;
use crate::llm::block_format::{Arch, BlockConfig, FINAL_NORM_EPS};
use crate::train::ops::attention::{self, AttnImpl};

type Result<T> = candle_core::Result<T>;

/// Matmul precision. Norms (statistics and affine), softmax, the residual stream and the
/// final norm stay f32 either way, as under PyTorch autocast in the official code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Prec {
    F32,
    /// Autocast: the projections, their biases, activations and attention matmuls in bf16
    /// (weights pre-converted); norm inputs/outputs, softmax and residuals in f32.
    Bf16,
    /// The same split with f16 matmuls (the trainer scales the loss to keep gradients in
    /// f16's range).
    F16,
}

impl Prec {
    pub(crate) fn mm_dtype(self) -> DType {
        match self {
            Prec::F32 => DType::F32,
            Prec::Bf16 => DType::BF16,
            Prec::F16 => DType::F16,
        }
    }
}

/// How the forward runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Differentiable candle ops only (autograd through x and/or Var weights).
    Tracked,
    /// Nothing tracked, nothing kept: fused kernels where candle has them.
    Fast,
    /// Like Fast, and keep the intermediates the hand-written backward needs.
    Save,
}

/// Intermediates of one forward, all detached. Norm inputs are kept normalised (x̂) with
/// their inverse std r, which is all a norm's input-gradient needs. `xh1`/`r1` belong to the
/// first norm (before attention in a pre-norm layer, after its residual add in a post-norm
/// one), `xh2`/`r2` to the second. Tensors marked "mm" are
/// in the matmul dtype (bf16 under autocast, halving what is kept).
pub(crate) struct Saved {
    pub(super) b: usize,
    pub(super) t: usize,
    pub(super) xh1: Tensor,
    pub(super) r1: Tensor,
    /// mm: q·(1/sqrt(hd)) as [B, KV, G·T, hd], k and v as [B, KV, T, hd].
    pub(super) qh: Tensor,
    pub(super) kh: Tensor,
    pub(super) vh: Tensor,
    /// mm: attention probabilities [B, KV, G·T, T] under full attention; None under chunked
    /// attention, whose backward recomputes them.
    pub(super) p: Option<Tensor>,
    /// The key-mask score bias [B, 1, 1, T], for that recomputation.
    pub(super) bias: Option<Tensor>,
    pub(super) attn: AttnImpl,
    pub(super) xh2: Tensor,
    pub(super) r2: Tensor,
    /// mm: LLaMA gate pre-activation; OPT fc1 output (pre-ReLU) [N, F].
    pub(super) mlp_a: Tensor,
    /// mm: LLaMA up projection [N, F]; OPT: None.
    pub(super) mlp_u: Option<Tensor>,
    /// With the all-ones final RMSNorm: the output [N, D] (= y·rf) and the norm's inverse
    /// rms [N, 1]; None for a block of a stack that is not the last (no final norm).
    pub(super) fin: Option<(Tensor, Tensor)>,
}

impl Saved {
    /// Bytes held by the saved intermediates (what the frozen node keeps alive until its
    /// backward runs).
    pub(crate) fn bytes(&self) -> usize {
        let mut ts = vec![
            &self.xh1,
            &self.r1,
            &self.qh,
            &self.kh,
            &self.vh,
            &self.xh2,
            &self.r2,
            &self.mlp_a,
        ];
        if let Some((out, rf)) = &self.fin {
            ts.push(out);
            ts.push(rf);
        }
        if let Some(u) = &self.mlp_u {
            ts.push(u);
        }
        if let Some(p) = &self.p {
            ts.push(p);
        }
        ts.iter()
            .map(|t| t.elem_count() * t.dtype().size_in_bytes())
            .sum()
    }
}

/// `x @ wᵀ (+ b)` for x [N, in], w [out, in], all in the same (matmul) dtype.
pub(super) fn lin(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    let y = x.matmul(&w.t()?)?;
    match b {
        Some(b) => y.broadcast_add(b),
        None => Ok(y),
    }
}

/// Normalised input and inverse std over the last dim: RMS for LLaMA (and the final norm),
/// mean-centred for OPT's LayerNorm. Built from differentiable ops so Tracked mode can use it.
pub(super) fn norm_stats(x: &Tensor, centred: bool, eps: f64) -> Result<(Tensor, Tensor)> {
    let xc = if centred {
        x.broadcast_sub(&x.mean_keepdim(D::Minus1)?)?
    } else {
        x.clone()
    };
    let r = (xc.sqr()?.mean_keepdim(D::Minus1)? + eps)?
        .sqrt()?
        .recip()?;
    Ok((xc.broadcast_mul(&r)?, r))
}

pub(super) fn affine(xh: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    let y = xh.broadcast_mul(w)?;
    match b {
        Some(b) => y.broadcast_add(b),
        None => Ok(y),
    }
}

/// The block's forward on x [B, T, D] f32. `bias` is the key-mask score bias [B, 1, 1, T].
/// `w` must hold its matrices and projection biases in `prec`'s matmul dtype. `final_norm`:
/// end with the all-ones RMSNorm (every block but the inner ones of a stack).
/// Returns the output [B, T, D] f32 and, in Save mode, the intermediates.
///
/// Pre-norm (LLaMA, most OPT): `h = x + attn(norm1(x))`, `y = h + mlp(norm2(h))`.
/// Post-norm (OPT with `do_layer_norm_before = false`): `h = norm1(x + attn(x))`,
/// `y = norm2(h + mlp(h))`, as transformers' `OPTDecoderLayer` runs it.
#[allow(clippy::too_many_arguments)] // the weights, the input and how to run
pub(crate) fn forward_impl(
    w: &Weights,
    cfg: &BlockConfig,
    x: &Tensor,
    bias: Option<&Tensor>,
    prec: Prec,
    mode: Mode,
    attn: AttnImpl,
    final_norm: bool,
) -> Result<(Tensor, Option<Saved>)> {
    let (b, t, d) = x.dims3()?;
    let (h, kv, hd) = (cfg.num_heads, cfg.num_kv_heads, cfg.head_dim);
    let g = h / kv;
    let n = b * t;
    let centred = cfg.arch == Arch::Opt;
    let mmt = prec.mm_dtype();
    let f32 = DType::F32;
    let x2 = x.reshape((n, d))?;

    let post = cfg.post_norm;
    // (x̂, r, norm(v)) of a norm with weight `nw` and bias `nb`.
    let norm = |v: &Tensor, nw: &Tensor, nb: Option<&Tensor>| -> Result<(Tensor, Tensor, Tensor)> {
        let (xh, r) = norm_stats(v, centred, cfg.norm_eps)?;
        let y = affine(&xh, nw, nb)?;
        Ok((xh, r, y))
    };

    // Attention. (Every to_dtype below is a no-op in f32.)
    let mut stats1 = None;
    let a_in = if post {
        x2.clone()
    } else {
        let (xh, r, y) = norm(&x2, &w.norm1, w.norm1_b.as_ref())?;
        stats1 = Some((xh, r));
        y
    };
    let n1 = a_in.to_dtype(mmt)?;
    let scale = 1.0 / (hd as f64).sqrt();
    let q = (lin(&n1, &w.q, w.q_b.as_ref())? * scale)?;
    let k = lin(&n1, &w.k, w.k_b.as_ref())?;
    let v = lin(&n1, &w.v, w.v_b.as_ref())?;
    // Head h = kv·G + g, so [B, H, T, hd] regroups into [B, KV, G·T, hd] without a copy.
    let qh = q
        .reshape((b, t, h, hd))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((b, kv, g * t, hd))?;
    let kh = k.reshape((b, t, kv, hd))?.transpose(1, 2)?.contiguous()?;
    let vh = v.reshape((b, t, kv, hd))?.transpose(1, 2)?.contiguous()?;
    let (o, p) = match (mode, attn) {
        (Mode::Save, AttnImpl::Full) => {
            let (o, p) = attention::forward_full(&qh, &kh, &vh, bias)?;
            (o, Some(p))
        }
        _ => (attention::attention(&qh, &kh, &vh, bias, attn)?, None),
    };
    let o = o
        .reshape((b, h, t, hd))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((n, h * hd))?;
    let sum1 = (&x2 + lin(&o, &w.o, w.o_b.as_ref())?.to_dtype(f32)?)?;
    let hres = if post {
        let (xh, r, y) = norm(&sum1, &w.norm1, w.norm1_b.as_ref())?;
        stats1 = Some((xh, r));
        y
    } else {
        sum1
    };

    // MLP.
    let mut stats2 = None;
    let m_in = if post {
        hres.clone()
    } else {
        let (xh, r, y) = norm(&hres, &w.norm2, w.norm2_b.as_ref())?;
        stats2 = Some((xh, r));
        y
    };
    let n2 = m_in.to_dtype(mmt)?;
    let a = lin(&n2, &w.mlp_in, w.mlp_in_b.as_ref())?;
    let (m, u) = match cfg.arch {
        Arch::Llama => {
            let u = lin(&n2, w.up()?, None)?;
            ((a.silu()? * &u)?, Some(u))
        }
        Arch::Opt => (a.relu()?, None),
    };
    let sum2 = (&hres + lin(&m, &w.mlp_out, w.mlp_out_b.as_ref())?.to_dtype(f32)?)?;
    let y = if post {
        let (xh, r, y) = norm(&sum2, &w.norm2, w.norm2_b.as_ref())?;
        stats2 = Some((xh, r));
        y
    } else {
        sum2
    };
    let (Some((xh1, r1)), Some((xh2, r2))) = (stats1, stats2) else {
        candle_core::bail!("llm block: internal error, a norm was skipped");
    };

    // The all-ones final RMSNorm (PAPER.md §2), once after the last block of a stack.
    let (out, fin) = if final_norm {
        let (out, rf) = norm_stats(&y, false, FINAL_NORM_EPS)?;
        (out.clone(), Some((out, rf)))
    } else {
        (y, None)
    };
    let out3 = out.reshape((b, t, d))?;
    let saved = match mode {
        Mode::Save => Some(Saved {
            b,
            t,
            xh1,
            r1,
            qh,
            kh,
            vh,
            p,
            bias: bias.cloned(),
            attn,
            xh2,
            r2,
            mlp_a: a,
            mlp_u: u,
            fin,
        }),
        Mode::Tracked | Mode::Fast => None,
    };
    Ok((out3, saved))
}
