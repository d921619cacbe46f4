//! VectorNet's `[h, max over the polyline's vectors]` as ONE autograd node on the CPU (issue 28).
//!
//! With candle ops it is `max_keepdim(1)`, `broadcast_as`, and a last-dim `cat`, which candle
//! builds through transposes: the result is strided, and the backward runs a strided
//! `sum_keepdim` over the vectors (candle's CPU reduce walks those element by element), the
//! max's mask, and broadcast adds of strided gradients — in the demo's `train_av` the largest
//! share of the backward after the LayerNorm and bias fixes. Here the forward writes the
//! contiguous result in one pass (max is exact: the values are candle's), and the backward
//! gives each element its own gradient plus, where it equals its polyline's max (every tied
//! element, as candle's max backward does), the pooled half's gradient summed over the vectors
//! in order. Other devices and dtypes keep the candle ops.

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Result, Shape, Storage, Tensor, D};
use rayon::prelude::*;

use super::rows::f32_slice;

/// `[h, max_v h]` on the last dim: h [N, V, W] → [N, V, 2W], the max over dim 1 repeated for
/// every vector.
pub fn cat_with_max(h: &Tensor) -> Result<Tensor> {
    let fused =
        h.device().is_cpu() && h.dtype() == DType::F32 && h.rank() == 3 && h.elem_count() > 0;
    if !fused {
        let pooled = h.max_keepdim(1)?.broadcast_as(h.shape())?;
        return Tensor::cat(&[h, &pooled], D::Minus1);
    }
    h.contiguous()?.apply_op1(CatWithMax)
}

struct CatWithMax;

impl CustomOp1 for CatWithMax {
    fn name(&self) -> &'static str {
        "lm4ve-cat-with-max"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let h = f32_slice(s, l, "cat_with_max: input")?;
        let (n, v, w) = l.shape().dims3()?;
        let mut y = vec![0f32; 2 * h.len()];
        h.par_chunks(v * w)
            .zip(y.par_chunks_mut(2 * v * w))
            .for_each(|(hp, yp)| {
                let mut m = hp[..w].to_vec();
                for row in hp.chunks_exact(w).skip(1) {
                    for (a, &x) in m.iter_mut().zip(row) {
                        *a = a.max(x);
                    }
                }
                for (row, out) in hp.chunks_exact(w).zip(yp.chunks_exact_mut(2 * w)) {
                    out[..w].copy_from_slice(row);
                    out[w..].copy_from_slice(&m);
                }
            });
        Ok((CpuStorage::F32(y), Shape::from((n, v, 2 * w))))
    }

    fn bwd(&self, h: &Tensor, y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        let dy = dy.contiguous()?;
        let (_, v, w) = h.dims3()?;
        let (hs, hl) = h.storage_and_layout();
        let (ys, yl) = y.storage_and_layout();
        let (gs, gl) = dy.storage_and_layout();
        let (Storage::Cpu(hs), Storage::Cpu(ys), Storage::Cpu(gs)) = (&*hs, &*ys, &*gs) else {
            candle_core::bail!("cat_with_max: backward of a CPU node got tensors elsewhere");
        };
        let hv = f32_slice(hs, hl, "cat_with_max: input")?;
        let yv = f32_slice(ys, yl, "cat_with_max: output")?;
        let gv = f32_slice(gs, gl, "cat_with_max: gradient")?;
        let mut dh = vec![0f32; hv.len()];
        dh.par_chunks_mut(v * w)
            .zip(hv.par_chunks(v * w))
            .zip(yv.par_chunks(2 * v * w).zip(gv.par_chunks(2 * v * w)))
            .for_each(|((dp, hp), (yp, gp))| {
                // The pooled half's gradient, summed over the vectors in order.
                let mut pooled = vec![0f32; w];
                for g in gp.chunks_exact(2 * w) {
                    pooled.iter_mut().zip(&g[w..]).for_each(|(a, &x)| *a += x);
                }
                let max = &yp[w..2 * w];
                let rows = hp.chunks_exact(w).zip(gp.chunks_exact(2 * w));
                for (d, (row, g)) in dp.chunks_exact_mut(w).zip(rows) {
                    for c in 0..w {
                        let tied = if row[c] == max[c] { pooled[c] } else { 0.0 };
                        d[c] = g[c] + tied;
                    }
                }
            });
        Ok(Some(Tensor::from_vec(dh, h.shape(), h.device())?))
    }
}

#[cfg(test)]
mod tests {
    use super::cat_with_max;
    use candle_core::{Device, Tensor, Var, D};
    use rand::{RngExt, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn candle_ops(h: &Tensor) -> candle_core::Result<Tensor> {
        let pooled = h.max_keepdim(1)?.broadcast_as(h.shape())?;
        Tensor::cat(&[h, &pooled], D::Minus1)
    }

    /// Output and input gradient of Σ f(h)·R; values on a coarse grid so that maxima tie.
    fn run(
        f: impl Fn(&Tensor) -> candle_core::Result<Tensor>,
        shape: (usize, usize, usize),
    ) -> [Vec<f32>; 2] {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let n = shape.0 * shape.1 * shape.2;
        let vals: Vec<f32> = (0..n)
            .map(|_| (rng.random::<u32>() % 5) as f32 - 2.0)
            .collect();
        let r: Vec<f32> = (0..2 * n).map(|_| rng.random::<f32>() - 0.5).collect();
        let h = Var::from_vec(vals, shape, &Device::Cpu).expect("h");
        let y = f(h.as_tensor()).expect("forward");
        let r = Tensor::from_vec(r, (shape.0, shape.1, 2 * shape.2), &Device::Cpu).expect("r");
        let grads = (&y * r)
            .and_then(|t| t.sum_all())
            .and_then(|l| l.backward())
            .expect("backward");
        let flat = |t: &Tensor| {
            t.flatten_all()
                .and_then(|t| t.to_vec1::<f32>())
                .expect("values")
        };
        [flat(&y), flat(grads.get(h.as_tensor()).expect("grad"))]
    }

    #[test]
    fn equals_the_candle_ops_ties_included() {
        for shape in [(7, 19, 32), (1, 1, 3), (3, 4, 1), (2, 30, 9)] {
            let (ours, theirs) = (run(cat_with_max, shape), run(candle_ops, shape));
            assert_eq!(ours[0], theirs[0], "output of {shape:?}");
            for (a, b) in ours[1].iter().zip(&theirs[1]) {
                assert!(
                    (a - b).abs() <= 1e-5 * b.abs().max(1.0),
                    "gradient of {shape:?}: {a} vs {b}"
                );
            }
        }
    }
}
