//! The frozen block as one autograd node: its forward hands over the output computed on a
//! detached input, its hand-written backward returns only dL/dx.
//!
//! Why a custom node: with plain candle ops, backprop through `x @ Wᵀ` computes `dW` even
//! when W is a constant (candle's Matmul backward always fills both operands' grads), and the
//! graph keeps every intermediate of every op alive. For a 4096-wide block that is ~800 MB
//! of weight gradients per step that are thrown away. Here the forward runs on `x.detach()`
//! keeping only what dL/dx needs; the node's backward replays the chain rule for the input
//! alone.

use std::sync::Arc;

use candle_core::{
    CpuStorage, CudaStorage, CustomOp1, DType, Layout, MetalStorage, Shape, Tensor, D,
};

use super::forward::{forward_impl, Mode, Prec, Saved};
use super::weights::Weights;
use crate::llm::block_format::{Arch, BlockConfig};
use crate::train::ops::attention::{self, AttnImpl};
use crate::train::ops::handover::Handover;

type Result<T> = candle_core::Result<T>;

/// Input-gradient of `n = x̂·w (+ b)` with x̂ = norm(x): given dn, x̂ and r,
/// dx = r·(dx̂ − x̂·mean(dx̂·x̂)) for RMSNorm and additionally − mean(dx̂) for LayerNorm,
/// where dx̂ = dn·w.
fn norm_back(
    dn: &Tensor,
    xh: &Tensor,
    r: &Tensor,
    w: Option<&Tensor>,
    centred: bool,
) -> Result<Tensor> {
    let dxh = match w {
        Some(w) => dn.broadcast_mul(w)?,
        None => dn.clone(),
    };
    let proj = (&dxh * xh)?.mean_keepdim(D::Minus1)?;
    let mut g = (&dxh - xh.broadcast_mul(&proj)?)?;
    if centred {
        g = g.broadcast_sub(&dxh.mean_keepdim(D::Minus1)?)?;
    }
    g.broadcast_mul(r)
}

/// dL/d(MLP input) [N, D] f32 from dL/d(MLP output) `dy` [N, D] f32: back through
/// `W_out·act(W_in·n (+ b))` (SwiGLU for LLaMA, ReLU for OPT), weights frozen.
fn mlp_back(w: &Weights, cfg: &BlockConfig, s: &Saved, dy: &Tensor, mmt: DType) -> Result<Tensor> {
    let dm = dy.to_dtype(mmt)?.matmul(&w.mlp_out)?;
    match (&s.mlp_u, cfg.arch) {
        (Some(u), Arch::Llama) => {
            // m = silu(a)·u; silu'(a) = σ(a)·(1 + a·(1 − σ(a))).
            let a = &s.mlp_a;
            let sig = candle_nn::ops::sigmoid(a)?;
            let dsilu = (&sig * ((a * (1.0 - &sig)?)? + 1.0)?)?;
            let da = ((&dm * u)? * dsilu)?;
            let du = (&dm * (a * &sig)?)?;
            (da.matmul(&w.mlp_in)? + du.matmul(w.up()?)?)?
        }
        _ => {
            // m = relu(a): the gradient passes where a > 0.
            let pass = s.mlp_a.gt(0.0)?.to_dtype(mmt)?;
            (&dm * pass)?.matmul(&w.mlp_in)?
        }
    }
    .to_dtype(DType::F32)
}

/// dL/d(attention input) [N, D] f32 from dL/d(attention output, after W_o) `dh` [N, D].
fn attn_back(w: &Weights, cfg: &BlockConfig, s: &Saved, dh: &Tensor, mmt: DType) -> Result<Tensor> {
    let (b, t) = (s.b, s.t);
    let n = b * t;
    let (h, kv, hd) = (cfg.num_heads, cfg.num_kv_heads, cfg.head_dim);
    let g = h / kv;
    let do_ = dh
        .to_dtype(mmt)?
        .matmul(&w.o)?
        .reshape((b, t, h, hd))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((b, kv, g * t, hd))?;
    let (dq, dk, dv) = attention::backward(
        &s.qh,
        &s.kh,
        &s.vh,
        s.p.as_ref(),
        s.bias.as_ref(),
        &do_,
        attention::CHUNK,
    )?;
    let _ = s.attn;
    // q was scaled before the matmul, so dS·k is the grad of the scaled q.
    let dq = (dq * (1.0 / (hd as f64).sqrt()))?
        .reshape((b, h, t, hd))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((n, h * hd))?;
    let dk = dk.transpose(1, 2)?.contiguous()?.reshape((n, kv * hd))?;
    let dv = dv.transpose(1, 2)?.contiguous()?.reshape((n, kv * hd))?;
    ((dq.matmul(&w.q)? + dk.matmul(&w.k)?)? + dv.matmul(&w.v)?)?.to_dtype(DType::F32)
}

/// dL/dx [B, T, D] from dL/dout, the saved intermediates and the (frozen) weights, in the
/// same precision split as the forward.
pub(crate) fn backward(
    w: &Weights,
    cfg: &BlockConfig,
    s: &Saved,
    dout: &Tensor,
    prec: Prec,
) -> Result<Tensor> {
    let (b, t) = (s.b, s.t);
    let n = b * t;
    let d = cfg.hidden_size;
    let centred = cfg.arch == Arch::Opt;
    let mmt = prec.mm_dtype();
    let dout = dout.to_dtype(DType::F32)?.reshape((n, d))?;

    // Final RMSNorm (no weight), when this block has it.
    let dy = match &s.fin {
        Some((out, rf)) => norm_back(&dout, out, rf, None, false)?,
        None => dout,
    };

    let dx = if cfg.post_norm {
        // y = norm2(s2), s2 = h + mlp(h); h = norm1(s1), s1 = x + attn(x).
        let ds2 = norm_back(&dy, &s.xh2, &s.r2, Some(&w.norm2), centred)?;
        let dh = (&ds2 + mlp_back(w, cfg, s, &ds2, mmt)?)?;
        let ds1 = norm_back(&dh, &s.xh1, &s.r1, Some(&w.norm1), centred)?;
        (&ds1 + attn_back(w, cfg, s, &ds1, mmt)?)?
    } else {
        // y = h + mlp(norm2(h)); h = x + attn(norm1(x)): the residuals pass the grad through.
        let dn2 = mlp_back(w, cfg, s, &dy, mmt)?;
        let dh = (&dy + norm_back(&dn2, &s.xh2, &s.r2, Some(&w.norm2), centred)?)?;
        let dn1 = attn_back(w, cfg, s, &dh, mmt)?;
        (&dh + norm_back(&dn1, &s.xh1, &s.r1, Some(&w.norm1), centred)?)?
    };
    dx.reshape((b, t, d))
}

/// The frozen block as one autograd node. Its forward returns a copy of the output that was
/// already computed (the op only exists to carry the backward); its backward returns dL/dx.
struct FrozenBlockGrad {
    w: Weights,
    cfg: BlockConfig,
    prec: Prec,
    saved: Saved,
    out: Handover,
}

const NAME: &str = "lm4ve-frozen-llm-block";

impl CustomOp1 for FrozenBlockGrad {
    fn name(&self) -> &'static str {
        NAME
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        self.out.cpu()
    }

    fn cuda_fwd(&self, _: &CudaStorage, _: &Layout) -> Result<(CudaStorage, Shape)> {
        self.out.cuda()
    }

    fn metal_fwd(&self, _: &MetalStorage, _: &Layout) -> Result<(MetalStorage, Shape)> {
        self.out.metal()
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        backward(&self.w, &self.cfg, &self.saved, grad_res, self.prec).map(Some)
    }
}

/// The frozen forward: x [B, T, D] → [B, T, D]; one autograd node when x is tracked.
pub(crate) fn forward_frozen(
    w: &Weights,
    cfg: &BlockConfig,
    x: &Tensor,
    bias: Option<&Tensor>,
    prec: Prec,
    attn: AttnImpl,
    final_norm: bool,
) -> Result<Tensor> {
    if !x.track_op() {
        // No gradient will be asked for: skip keeping intermediates.
        return Ok(forward_impl(w, cfg, x, bias, prec, Mode::Fast, attn, final_norm)?.0);
    }
    let (out, saved) = forward_impl(
        w,
        cfg,
        &x.detach(),
        bias,
        prec,
        Mode::Save,
        attn,
        final_norm,
    )?;
    let Some(saved) = saved else {
        candle_core::bail!("frozen llm block: internal error, nothing saved");
    };
    let op = FrozenBlockGrad {
        w: w.clone(),
        cfg: cfg.clone(),
        prec,
        saved,
        out: Handover::new(NAME, out),
    };
    x.apply_op1_arc(Arc::new(Box::new(op)))
}

/// Bytes the frozen node keeps alive for its backward on input x (for measurements).
pub(crate) fn saved_bytes(
    w: &Weights,
    cfg: &BlockConfig,
    x: &Tensor,
    prec: Prec,
    attn: AttnImpl,
    final_norm: bool,
) -> Result<usize> {
    let (out, saved) = forward_impl(
        w,
        cfg,
        &x.detach(),
        None,
        prec,
        Mode::Save,
        attn,
        final_norm,
    )?;
    let saved = saved.map_or(0, |s| s.bytes());
    // Plus the node's own output copy.
    Ok(saved + out.elem_count() * out.dtype().size_in_bytes())
}
