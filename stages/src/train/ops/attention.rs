//! Scaled dot-product attention, written once for every model: the ViT blocks of PointBERT
//! and the video ViT, VectorNet's global graph and the LLM block.
//!
//! Two implementations with the same values (to float rounding):
//! - [`AttnImpl::Full`] materialises the scores [B, H, Tq, Tk] and, under autograd, keeps the
//!   probabilities for the backward: memory grows with T².
//! - [`AttnImpl::Chunked`] walks the queries in chunks of [`CHUNK`] rows, so no more than
//!   [B, H, CHUNK, Tk] scores exist at a time, and keeps only q, k, v for the backward, which
//!   recomputes each chunk's probabilities (FlashAttention's recompute-instead-of-store, at the
//!   granularity of candle ops rather than one fused kernel). Under autograd it is one node
//!   ([`ChunkedAttention`]) with a hand-written backward.
//!
//! Scores, the bias and the softmax are f32; the two matmuls run in the dtype of q, k and v
//! (bf16 under autocast). q must already carry the 1/√d scale.
//!
//! Why not `candle_nn::ops::softmax_last_dim` under autograd: candle applies it without a
//! backward (`apply_op1_no_bwd`), so gradients stopped at the probabilities and q and k never
//! learned. The full path uses the differentiable `softmax` when anything is tracked.

use std::sync::Arc;

use candle_core::{
    CpuStorage, CudaStorage, CustomOp3, DType, Layout, MetalStorage, Result, Shape, Tensor, D,
};
use serde::{Deserialize, Serialize};

use super::handover::Handover;

/// Query rows per chunk. [B, H, 256, 1568] f32 scores are 1.6 MB per (batch, head).
pub const CHUNK: usize = 256;

/// Which attention implementation a model uses (`attention` in a `train` stage's params).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttnImpl {
    /// Materialise [B, H, T, T] (fastest for short sequences).
    #[default]
    Full,
    /// Query chunks, probabilities recomputed in the backward (memory O(T) per row).
    Chunked,
}

impl AttnImpl {
    pub fn is_default(&self) -> bool {
        *self == AttnImpl::Full
    }
}

/// Scores of q against k in f32, plus the bias.
fn scores(q: &Tensor, k: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let s = q.matmul(&k.t()?)?.to_dtype(DType::F32)?;
    match bias {
        Some(b) => s.broadcast_add(b),
        None => Ok(s),
    }
}

/// The bias rows of query chunk [i0, i0 + n) (a key-only bias [.., 1, Tk] serves every row).
fn bias_rows(bias: Option<&Tensor>, i0: usize, n: usize) -> Result<Option<Tensor>> {
    match bias {
        Some(b) if b.dim(D::Minus2)? > 1 => Ok(Some(b.narrow(D::Minus2, i0, n)?)),
        Some(b) => Ok(Some(b.clone())),
        None => Ok(None),
    }
}

/// softmax(q·kᵀ + bias)·v. q [.., Tq, hd], k and v [.., Tk, hd] (4-D), bias broadcastable to
/// [.., Tq, Tk] or None. Differentiable in q, k and v when any of them is tracked.
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    bias: Option<&Tensor>,
    imp: AttnImpl,
) -> Result<Tensor> {
    let tracked = q.track_op() || k.track_op() || v.track_op();
    match (imp, tracked) {
        (AttnImpl::Full, true) => {
            let p = candle_nn::ops::softmax(&scores(q, k, bias)?, D::Minus1)?;
            p.to_dtype(q.dtype())?.matmul(v)
        }
        (AttnImpl::Full, false) => forward_full(q, k, v, bias).map(|(o, _)| o),
        (AttnImpl::Chunked, false) => forward_chunked(q, k, v, bias, CHUNK),
        (AttnImpl::Chunked, true) => {
            let out = forward_chunked(&q.detach(), &k.detach(), &v.detach(), bias, CHUNK)?;
            let op = ChunkedAttention {
                bias: bias.map(|b| b.detach()),
                chunk: CHUNK,
                out: Handover::new(NAME, out),
            };
            q.apply_op3_arc(k, v, Arc::new(Box::new(op)))
        }
    }
}

/// Untracked full attention: the output and the probabilities (in q's dtype), which the
/// frozen block's hand-written backward may keep.
pub(crate) fn forward_full(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    bias: Option<&Tensor>,
) -> Result<(Tensor, Tensor)> {
    let p = candle_nn::ops::softmax_last_dim(&scores(q, k, bias)?)?.to_dtype(q.dtype())?;
    Ok((p.matmul(v)?, p))
}

/// Untracked chunked attention (see the module doc).
pub(crate) fn forward_chunked(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    bias: Option<&Tensor>,
    chunk: usize,
) -> Result<Tensor> {
    let tq = q.dim(D::Minus2)?;
    if tq <= chunk {
        return forward_full(q, k, v, bias).map(|(o, _)| o);
    }
    let mut outs = Vec::with_capacity(tq.div_ceil(chunk));
    for i0 in (0..tq).step_by(chunk) {
        let n = chunk.min(tq - i0);
        let qc = q.narrow(D::Minus2, i0, n)?;
        let bc = bias_rows(bias, i0, n)?;
        outs.push(forward_full(&qc, k, v, bc.as_ref())?.0);
    }
    Tensor::cat(&outs, D::Minus2)
}

/// Gradients (dq, dk, dv) of o = softmax(q·kᵀ + bias)·v given dO, in the dtype of q. With `p`
/// (the probabilities kept by the forward, in q's dtype) the whole backward is one set of
/// matmuls; without it the probabilities are recomputed `chunk` query rows at a time and dk,
/// dv are summed over the chunks in f32. dq is the gradient of the (already scaled) q.
pub(crate) fn backward(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    p: Option<&Tensor>,
    bias: Option<&Tensor>,
    d_o: &Tensor,
    chunk: usize,
) -> Result<(Tensor, Tensor, Tensor)> {
    let mmt = q.dtype();
    // The softmax backward, dS = p·(dP − Σ_j dP·p), for one block of query rows. Masked keys
    // have p = 0, so they get no gradient.
    let block = |p: &Tensor, d_o: &Tensor, qr: &Tensor| -> Result<(Tensor, Tensor, Tensor)> {
        let dp = d_o.matmul(&v.t()?)?.to_dtype(DType::F32)?;
        let dv = p.t()?.matmul(d_o)?;
        let pf = p.to_dtype(DType::F32)?;
        let ds = (&pf * dp.broadcast_sub(&(&dp * &pf)?.sum_keepdim(D::Minus1)?)?)?.to_dtype(mmt)?;
        let dq = ds.matmul(k)?;
        let dk = ds.t()?.matmul(qr)?;
        Ok((dq, dk, dv))
    };
    let tq = q.dim(D::Minus2)?;
    if let Some(p) = p {
        return block(p, d_o, q);
    }
    if tq <= chunk {
        let (_, p) = forward_full(q, k, v, bias)?;
        return block(&p, d_o, q);
    }
    let (mut dqs, mut dk, mut dv) = (Vec::new(), None::<Tensor>, None::<Tensor>);
    for i0 in (0..tq).step_by(chunk) {
        let n = chunk.min(tq - i0);
        let qc = q.narrow(D::Minus2, i0, n)?;
        let bc = bias_rows(bias, i0, n)?;
        let pc = candle_nn::ops::softmax_last_dim(&scores(&qc, k, bc.as_ref())?)?.to_dtype(mmt)?;
        let (dqc, dkc, dvc) = block(&pc, &d_o.narrow(D::Minus2, i0, n)?, &qc)?;
        dqs.push(dqc);
        let add = |acc: Option<Tensor>, x: Tensor| -> Result<Option<Tensor>> {
            let x = x.to_dtype(DType::F32)?;
            Ok(Some(match acc {
                Some(a) => (a + x)?,
                None => x,
            }))
        };
        dk = add(dk, dkc)?;
        dv = add(dv, dvc)?;
    }
    let (Some(dk), Some(dv)) = (dk, dv) else {
        candle_core::bail!("attention backward: no query rows");
    };
    Ok((
        Tensor::cat(&dqs, D::Minus2)?,
        dk.to_dtype(mmt)?,
        dv.to_dtype(mmt)?,
    ))
}

/// Chunked attention as one autograd node over (q, k, v). Its forward hands over the output
/// computed before the node was made; its backward recomputes the probabilities per chunk.
struct ChunkedAttention {
    bias: Option<Tensor>,
    chunk: usize,
    out: Handover,
}

const NAME: &str = "lm4ve-chunked-attention";

impl CustomOp3 for ChunkedAttention {
    fn name(&self) -> &'static str {
        NAME
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.out.cpu()
    }

    fn cuda_fwd(
        &self,
        _: &CudaStorage,
        _: &Layout,
        _: &CudaStorage,
        _: &Layout,
        _: &CudaStorage,
        _: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        self.out.cuda()
    }

    fn metal_fwd(
        &self,
        _: &MetalStorage,
        _: &Layout,
        _: &MetalStorage,
        _: &Layout,
        _: &MetalStorage,
        _: &Layout,
    ) -> Result<(MetalStorage, Shape)> {
        self.out.metal()
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dq, dk, dv) = backward(
            &q.detach(),
            &k.detach(),
            &v.detach(),
            None,
            self.bias.as_ref(),
            &grad_res.detach(),
            self.chunk,
        )?;
        Ok((Some(dq), Some(dk), Some(dv)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    fn max_abs(a: &Tensor) -> f32 {
        a.abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    /// Values and gradients of the chunked node against the full path, with and without a
    /// key mask, for sequences shorter and longer than a chunk (up to the video's 1568).
    fn check(b: usize, h: usize, t: usize, hd: usize, masked: bool) {
        let dev = Device::Cpu;
        let q = Var::from_tensor(
            &(Tensor::randn(0f32, 1.0, (b, h, t, hd), &dev).unwrap() * 0.3).unwrap(),
        )
        .unwrap();
        let k = Var::from_tensor(&Tensor::randn(0f32, 1.0, (b, h, t, hd), &dev).unwrap()).unwrap();
        let v = Var::from_tensor(&Tensor::randn(0f32, 1.0, (b, h, t, hd), &dev).unwrap()).unwrap();
        let bias = masked.then(|| {
            // The last third of each row's keys are padding.
            let m: Vec<f32> = (0..b * t)
                .map(|i| if i % t < t - t / 3 { 0.0 } else { -1e30 })
                .collect();
            Tensor::from_vec(m, (b, 1, 1, t), &dev).unwrap()
        });
        let r = Tensor::randn(0f32, 1.0, (b, h, t, hd), &dev).unwrap();
        let run = |imp| {
            let o = attention(
                q.as_tensor(),
                k.as_tensor(),
                v.as_tensor(),
                bias.as_ref(),
                imp,
            )
            .unwrap();
            let g = (&o * &r).unwrap().sum_all().unwrap().backward().unwrap();
            let grads: Vec<Tensor> = [&q, &k, &v]
                .iter()
                .map(|x| g.get(x.as_tensor()).expect("gradient").clone())
                .collect();
            (o, grads)
        };
        let (of, gf) = run(AttnImpl::Full);
        let (oc, gc) = run(AttnImpl::Chunked);
        assert!(
            max_diff(&of, &oc) < 1e-5,
            "values differ: {}",
            max_diff(&of, &oc)
        );
        for (name, (a, c)) in ["dq", "dk", "dv"].iter().zip(gf.iter().zip(&gc)) {
            let tol = 1e-5 * max_abs(a).max(1.0);
            assert!(
                max_diff(a, c) <= tol,
                "{name} differs by {} (T = {t})",
                max_diff(a, c)
            );
            assert!(
                max_abs(a) > 0.0,
                "{name} is zero: gradients must reach q, k and v"
            );
        }
        // Untracked calls give the same values.
        let o_plain = attention(
            &q.as_tensor().detach(),
            &k.as_tensor().detach(),
            &v.as_tensor().detach(),
            bias.as_ref(),
            AttnImpl::Chunked,
        )
        .unwrap();
        assert!(max_diff(&of, &o_plain) < 1e-5);
        if masked {
            // Padded keys receive no gradient.
            let dk = gc[1].narrow(2, t - t / 3, t / 3).unwrap();
            assert_eq!(max_abs(&dk), 0.0);
        }
    }

    #[test]
    fn chunked_matches_full_short() {
        check(2, 3, 40, 8, false);
        check(2, 3, 40, 8, true);
    }

    #[test]
    fn chunked_matches_full_across_chunks() {
        check(1, 2, 600, 16, true);
    }

    #[test]
    fn chunked_matches_full_at_video_length() {
        // 16×224×224 in 2×16×16 tubelets: 1568 tokens.
        check(1, 2, 1568, 16, false);
    }

    #[test]
    fn full_attention_trains_queries_and_keys() {
        // The regression: softmax_last_dim has no backward in candle, so q and k got none.
        let dev = Device::Cpu;
        let q = Var::from_tensor(&Tensor::randn(0f32, 1.0, (1, 1, 5, 4), &dev).unwrap()).unwrap();
        let k = Var::from_tensor(&Tensor::randn(0f32, 1.0, (1, 1, 5, 4), &dev).unwrap()).unwrap();
        let v = Tensor::randn(0f32, 1.0, (1, 1, 5, 4), &dev).unwrap();
        let o = attention(q.as_tensor(), k.as_tensor(), &v, None, AttnImpl::Full).unwrap();
        let g = o.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        assert!(max_abs(g.get(q.as_tensor()).unwrap()) > 0.0);
        assert!(max_abs(g.get(k.as_tensor()).unwrap()) > 0.0);
    }
}
