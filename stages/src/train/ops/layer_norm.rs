//! LayerNorm over the last dim as ONE autograd node on the CPU (issue 28).
//!
//! candle-nn's fused `layer_norm` has no backward, so the encoders used `layer_norm_slow`:
//! ten tensor ops forward (mean, centre, square, mean, add eps, sqrt, divide, scale, shift),
//! each a pass over the activations, and in backward each op's gradient plus candle's
//! accumulation of it (a zero tensor, then an add) and the sums of broadcast gradients. In
//! VectorNet, whose subgraphs run six LayerNorms over every vector of every polyline, that was
//! most of a training step (BENCHMARKS.md, "The demo, end to end"). Here the forward is one
//! pass per row and the backward two, written for f32 rows in memory order.
//!
//! The arithmetic is layer_norm_slow's (mean, then the mean of centred squares, `1/sqrt(var +
//! eps)`), summed in a fixed order of eight lanes, so the output depends on the data only,
//! never on the thread count: rows are independent, and the weight and bias gradients are
//! summed per block of [`ROWS_PER_BLOCK`] rows, the blocks then in order. Other devices and
//! dtypes (CUDA, the bf16/f16 autocast) keep layer_norm_slow.

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Result, Shape, Storage, Tensor};
use rayon::prelude::*;

use super::rows::{f32_slice, map_rows, sum_in_order, ROWS_PER_BLOCK};

/// `(x − mean) / sqrt(var + eps) · weight + bias` over the last dim of `x`, with gradients
/// for all three. `weight` and `bias` are 1-D of the last dim's size.
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    let d = x.dim(candle_core::D::Minus1)?;
    let fused = x.device().is_cpu()
        && [x, weight, bias].iter().all(|t| t.dtype() == DType::F32)
        && weight.dims() == [d]
        && bias.dims() == [d]
        && x.elem_count() > 0;
    if !fused {
        return candle_nn::ops::layer_norm_slow(x, weight, bias, eps as f32);
    }
    x.contiguous()?.apply_op3(
        &weight.contiguous()?,
        &bias.contiguous()?,
        FusedLayerNorm { eps: eps as f32 },
    )
}

struct FusedLayerNorm {
    eps: f32,
}

impl CustomOp3 for FusedLayerNorm {
    fn name(&self) -> &'static str {
        "lm4ve-layer-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s1, l1, "layer_norm: input")?;
        let w = f32_slice(s2, l2, "layer_norm: weight")?;
        let b = f32_slice(s3, l3, "layer_norm: bias")?;
        let y = forward(x, w, b, self.eps);
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        _bias: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dy = dy.contiguous()?;
        let (xs, xl) = x.storage_and_layout();
        let (ws, wl) = weight.storage_and_layout();
        let (gs, gl) = dy.storage_and_layout();
        let (Storage::Cpu(xs), Storage::Cpu(ws), Storage::Cpu(gs)) = (&*xs, &*ws, &*gs) else {
            candle_core::bail!("layer_norm: backward of a CPU node got tensors elsewhere");
        };
        let (xv, wv, gv) = (
            f32_slice(xs, xl, "layer_norm: input")?,
            f32_slice(ws, wl, "layer_norm: weight")?,
            f32_slice(gs, gl, "layer_norm: output gradient")?,
        );
        let mut dx = vec![0f32; xv.len()];
        let (dw, db) = backward(xv, wv, gv, self.eps, &mut dx);
        let dev = x.device();
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), dev)?),
            Some(Tensor::from_vec(dw, weight.shape(), dev)?),
            Some(Tensor::from_vec(db, weight.shape(), dev)?),
        ))
    }
}

/// Σ f(i) for i < n in eight lanes (i mod 8), the lanes added pairwise, then the tail.
#[inline(always)]
fn lane_sum(n: usize, f: impl Fn(usize) -> f32) -> f32 {
    let mut acc = [0f32; 8];
    let whole = n / 8 * 8;
    let mut i = 0;
    while i < whole {
        for (lane, a) in acc.iter_mut().enumerate() {
            *a += f(i + lane);
        }
        i += 8;
    }
    let mut s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for j in whole..n {
        s += f(j);
    }
    s
}

/// Mean and `1/sqrt(var + eps)` of one row; var is the mean of the centred squares.
#[inline(always)]
fn row_stats(row: &[f32], eps: f32) -> (f32, f32) {
    let n = row.len() as f32;
    let mean = lane_sum(row.len(), |i| row[i]) / n;
    let var = lane_sum(row.len(), |i| {
        let c = row[i] - mean;
        c * c
    }) / n;
    (mean, 1.0 / (var + eps).sqrt())
}

/// y = x̂·w + b per row of `w.len()` values.
fn forward(x: &[f32], w: &[f32], b: &[f32], eps: f32) -> Vec<f32> {
    map_rows(x, w.len(), |row, out| {
        let (mean, r) = row_stats(row, eps);
        for (((o, &v), &wi), &bi) in out.iter_mut().zip(row).zip(w).zip(b) {
            *o = (v - mean) * r * wi + bi;
        }
    })
}

/// Fills dx and returns (dweight, dbias). With g = dy·w and x̂ = (x − mean)·r:
/// dx = r·(g − mean(g) − x̂·mean(g·x̂)), dweight = Σ_rows dy·x̂, dbias = Σ_rows dy.
fn backward(x: &[f32], w: &[f32], dy: &[f32], eps: f32, dx: &mut [f32]) -> (Vec<f32>, Vec<f32>) {
    let d = w.len();
    let partials: Vec<(Vec<f32>, Vec<f32>)> = x
        .par_chunks(d * ROWS_PER_BLOCK)
        .zip(dy.par_chunks(d * ROWS_PER_BLOCK))
        .zip(dx.par_chunks_mut(d * ROWS_PER_BLOCK))
        .map(|((xb, gb), dxb)| {
            let (mut dw, mut db) = (vec![0f32; d], vec![0f32; d]);
            let mut xh = vec![0f32; d];
            let rows = xb.chunks_exact(d).zip(gb.chunks_exact(d));
            for ((row, g), out) in rows.zip(dxb.chunks_exact_mut(d)) {
                let (mean, r) = row_stats(row, eps);
                let sums = dw.iter_mut().zip(db.iter_mut());
                for ((h, (&v, &gi)), (dwi, dbi)) in xh.iter_mut().zip(row.iter().zip(g)).zip(sums) {
                    *h = (v - mean) * r;
                    *dwi += gi * *h;
                    *dbi += gi;
                }
                let n = d as f32;
                let mean_g = lane_sum(d, |i| g[i] * w[i]) / n;
                let mean_gx = lane_sum(d, |i| g[i] * w[i] * xh[i]) / n;
                for (((o, &gi), &wi), &h) in out.iter_mut().zip(g).zip(w).zip(&xh) {
                    *o = r * (gi * wi - mean_g - h * mean_gx);
                }
            }
            (dw, db)
        })
        .collect();
    let (dw, db): (Vec<Vec<f32>>, Vec<Vec<f32>>) = partials.into_iter().unzip();
    (sum_in_order(&dw, d), sum_in_order(&db, d))
}

#[cfg(test)]
mod tests;
