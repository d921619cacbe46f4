//! What the CPU autograd nodes (`layer_norm`, `bias`, `pool`) share: their storages read as
//! f32 rows, and the fixed blocking that keeps their sums independent of the thread count.

use candle_core::{CpuStorage, Layout, Result};
use rayon::prelude::*;

/// Rows per parallel task and per partial sum: fixed, so the sums' order does not follow the
/// thread count.
pub(crate) const ROWS_PER_BLOCK: usize = 64;

/// The f32 values of a storage by its (contiguous) layout.
pub(crate) fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let all = match s {
        CpuStorage::F32(v) => v.as_slice(),
        _ => candle_core::bail!("{what} is not f32"),
    };
    match l.contiguous_offsets() {
        Some((from, to)) => Ok(&all[from..to]),
        None => candle_core::bail!("{what} is not contiguous"),
    }
}

/// `each(row, out)` for every row of `x` (rows of `d` values), written into a new vector of
/// `x`'s length; blocks of [`ROWS_PER_BLOCK`] rows run in parallel (a row's output depends on
/// that row only, so the bytes do not depend on the thread count).
pub(crate) fn map_rows(x: &[f32], d: usize, each: impl Fn(&[f32], &mut [f32]) + Sync) -> Vec<f32> {
    let mut y = vec![0f32; x.len()];
    x.par_chunks(d * ROWS_PER_BLOCK)
        .zip(y.par_chunks_mut(d * ROWS_PER_BLOCK))
        .for_each(|(xb, yb)| {
            for (row, out) in xb.chunks_exact(d).zip(yb.chunks_exact_mut(d)) {
                each(row, out);
            }
        });
    y
}

/// The blocks' partial sums added in block order.
pub(crate) fn sum_in_order(partials: &[Vec<f32>], d: usize) -> Vec<f32> {
    let mut total = vec![0f32; d];
    for p in partials {
        total.iter_mut().zip(p).for_each(|(a, v)| *a += v);
    }
    total
}
