//! What a data-parallel step communicates: the trainable parameters once (broadcast from rank
//! 0 when a unit starts) and their gradients every step (summed over ranks and divided by the
//! world size, in buckets as DDP does). The frozen block's weights are not optimizer
//! parameters, so they never travel.
//!
//! candle's backward returns every gradient at once (it has no per-tensor hooks), so the
//! buckets go out after the backward, not overlapped with it as DDP does.

use super::collective::Collective;
use anyhow::Result;
use candle_core::{backprop::GradStore, DType, Tensor, Var};

/// Bytes of gradients per collective call: DDP's default bucket (`bucket_cap_mb = 25`).
pub const BUCKET_BYTES: usize = 25 << 20;

/// Groups of consecutive tensors of at most `cap` elements each (a larger tensor is a group
/// of its own), as index ranges.
pub fn buckets(sizes: &[usize], cap: usize) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut filled) = (0, 0);
    for (i, &n) in sizes.iter().enumerate() {
        if filled > 0 && filled + n > cap {
            out.push(start..i);
            (start, filled) = (i, 0);
        }
        filled += n;
    }
    if start < sizes.len() {
        out.push(start..sizes.len());
    }
    out
}

/// Replaces each parameter's gradient by its mean over the ranks. A parameter the forward did
/// not reach on this rank counts as a zero gradient (so every rank sends the same buckets);
/// afterwards every parameter has a gradient.
pub fn average_gradients(
    coll: &dyn Collective,
    vars: &[&Var],
    grads: &mut GradStore,
) -> Result<()> {
    if !coll.is_joined() {
        return Ok(());
    }
    let sizes: Vec<usize> = vars.iter().map(|v| v.elem_count()).collect();
    let scale = 1.0 / coll.world_size() as f64;
    for group in buckets(&sizes, BUCKET_BYTES / 4) {
        let flat = group
            .clone()
            .map(|i| {
                let v = vars[i];
                Ok(match grads.get(v.as_tensor()) {
                    Some(g) => g.to_dtype(DType::F32)?.flatten_all()?,
                    None => Tensor::zeros(v.elem_count(), DType::F32, v.device())?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let summed = (coll.all_reduce_sum(&Tensor::cat(&flat, 0)?)? * scale)?;
        let mut offset = 0;
        for i in group {
            let v = vars[i];
            let g = summed
                .narrow(0, offset, sizes[i])?
                .reshape(v.shape())?
                .to_dtype(v.dtype())?;
            grads.insert(v.as_tensor(), g);
            offset += sizes[i];
        }
    }
    Ok(())
}

/// Sets every var to rank 0's value.
pub fn broadcast_vars<'a>(
    coll: &dyn Collective,
    vars: impl IntoIterator<Item = &'a Var>,
) -> Result<()> {
    if !coll.is_joined() {
        return Ok(());
    }
    for v in vars {
        v.set(&coll.broadcast(v.as_tensor(), 0)?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_fill_up_to_the_cap_and_keep_big_tensors_alone() {
        assert_eq!(buckets(&[3, 3, 3, 10, 1], 6), vec![0..2, 2..3, 3..4, 4..5]);
        assert_eq!(buckets(&[1, 1, 1], 6), vec![0..3]);
        assert_eq!(buckets(&[], 6), Vec::<std::ops::Range<usize>>::new());
        assert_eq!(buckets(&[7], 6), vec![0..1]);
    }
}
