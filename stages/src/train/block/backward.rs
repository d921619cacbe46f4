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
    let (h, kv, hd) = (cfg.num_heads, cfg.num_kv_heads, cfg.head_dim);
    let g = h / kv;
    let centred = cfg.arch == Arch::Opt;
    let mmt = prec.mm_dtype();
    let f32 = DType::F32;
    let dout = dout.to_dtype(f32)?.reshape((n, d))?;

    // Final RMSNorm (no weight).
    let dy = norm_back(&dout, &s.out, &s.rf, None, false)?;

    // MLP: y = hres + W_out·act(n2); the residual passes dy straight through.
    let dm = dy.to_dtype(mmt)?.matmul(&w.mlp_out)?;
    let dn2 = match (&s.mlp_u, cfg.arch) {
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
    .to_dtype(f32)?;
    let dh = (&dy + norm_back(&dn2, &s.xh2, &s.r2, Some(&w.norm2), centred)?)?;

    // Attention: hres = x + W_o·o.
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
    let dn1 = ((dq.matmul(&w.q)? + dk.matmul(&w.k)?)? + dv.matmul(&w.v)?)?.to_dtype(f32)?;
    let dx = (&dh + norm_back(&dn1, &s.xh1, &s.r1, Some(&w.norm1), centred)?)?;
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
) -> Result<Tensor> {
    if !x.track_op() {
        // No gradient will be asked for: skip keeping intermediates.
        return Ok(forward_impl(w, cfg, x, bias, prec, Mode::Fast, attn)?.0);
    }
    let (out, saved) = forward_impl(w, cfg, &x.detach(), bias, prec, Mode::Save, attn)?;
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
) -> Result<usize> {
    let (out, saved) = forward_impl(w, cfg, &x.detach(), None, prec, Mode::Save, attn)?;
    let saved = saved.map_or(0, |s| s.bytes());
    // Plus the node's own output copy.
    Ok(saved + out.elem_count() * out.dtype().size_in_bytes())
}
