//! A Linear layer's bias as ONE autograd node on the CPU (issue 28).
//!
//! candle-nn's `Linear` adds its bias with `broadcast_add`, and the bias's gradient comes back
//! through the broadcast's backward: a `sum_keepdim` over every leading dim of the output's
//! gradient, which candle's CPU reduce walks element by element through strided indices (in
//! VectorNet, whose Linears run over every vector of every polyline, about a fifth of a
//! training step after the LayerNorm fix; BENCHMARKS.md, "The demo, end to end"). Here the
//! forward is the same single add per element (the same bytes as `broadcast_add`), and the
//! backward hands the output's gradient on unchanged and sums the bias's gradient row after row
//! in memory order: per block of [`ROWS_PER_BLOCK`] rows, the blocks then in order, so the bytes
//! do not depend on the thread count. Other devices and dtypes keep `broadcast_add`.

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Module, Result, Shape, Storage, Tensor};
use rayon::prelude::*;

use super::rows::{f32_slice, map_rows, sum_in_order, ROWS_PER_BLOCK};

/// candle-nn's Linear whose forward adds its bias with [`add_bias`]; the same weights, names
/// and matmul. Derefs to the candle-nn layer (weight, bias, `precision::linear`).
#[derive(Clone, Debug)]
pub struct Linear(candle_nn::Linear);

impl std::ops::Deref for Linear {
    type Target = candle_nn::Linear;
    fn deref(&self) -> &candle_nn::Linear {
        &self.0
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        linear_forward(&self.0, x)
    }
}

/// `candle_nn::linear`: a Linear with bias, its weight and bias named under `vb`.
pub fn linear(inp: usize, out: usize, vb: candle_nn::VarBuilder) -> Result<Linear> {
    candle_nn::linear(inp, out, vb).map(Linear)
}

/// `candle_nn::linear_no_bias`: no bias, so its forward is candle-nn's.
pub fn linear_no_bias(inp: usize, out: usize, vb: candle_nn::VarBuilder) -> Result<Linear> {
    candle_nn::linear_no_bias(inp, out, vb).map(Linear)
}

/// `x · weightᵀ + bias` as candle-nn computes it, the bias added by [`add_bias`].
pub fn linear_forward(l: &candle_nn::Linear, x: &Tensor) -> Result<Tensor> {
    let product = candle_nn::Linear::new(l.weight().clone(), None).forward(x)?;
    match l.bias() {
        Some(b) => add_bias(&product, b),
        None => Ok(product),
    }
}

/// `x + bias` over the last dim of `x` (`bias` 1-D), with gradients for both.
pub fn add_bias(x: &Tensor, bias: &Tensor) -> Result<Tensor> {
    let d = x.dim(candle_core::D::Minus1)?;
    let fused = x.device().is_cpu()
        && x.dtype() == DType::F32
        && bias.dtype() == DType::F32
        && bias.dims() == [d]
        && x.elem_count() > 0;
    if !fused {
        return x.broadcast_add(bias);
    }
    x.contiguous()?.apply_op2(&bias.contiguous()?, AddBias)
}

struct AddBias;

impl CustomOp2 for AddBias {
    fn name(&self) -> &'static str {
        "lm4ve-add-bias"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s1, l1, "add_bias: input")?;
        let b = f32_slice(s2, l2, "add_bias: bias")?;
        let y = map_rows(x, b.len(), |row, out| {
            for ((o, &v), &bi) in out.iter_mut().zip(row).zip(b) {
                *o = v + bi;
            }
        });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        bias: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dyc = dy.contiguous()?;
        let db = {
            let (gs, gl) = dyc.storage_and_layout();
            let Storage::Cpu(gs) = &*gs else {
                candle_core::bail!("add_bias: backward of a CPU node got a gradient elsewhere");
            };
            column_sums(f32_slice(gs, gl, "add_bias: gradient")?, bias.elem_count())
        };
        Ok((
            Some(dy.clone()),
            Some(Tensor::from_vec(db, bias.shape(), bias.device())?),
        ))
    }
}

/// Σ over rows of `g` (rows of `d` values), per block of [`ROWS_PER_BLOCK`] rows, then the
/// blocks in order.
fn column_sums(g: &[f32], d: usize) -> Vec<f32> {
    let partials: Vec<Vec<f32>> = g
        .par_chunks(d * ROWS_PER_BLOCK)
        .map(|block| {
            let mut s = vec![0f32; d];
            for row in block.chunks_exact(d) {
                s.iter_mut().zip(row).for_each(|(a, v)| *a += v);
            }
            s
        })
        .collect();
    sum_in_order(&partials, d)
}

#[cfg(test)]
mod tests;
