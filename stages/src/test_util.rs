//! Helpers shared by the unit tests.

use candle_core::Tensor;

/// max |a − b| over all elements (same shapes).
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .and_then(|d| d.abs())
        .and_then(|d| d.flatten_all())
        .and_then(|d| d.max(0))
        .and_then(|d| d.to_scalar::<f32>())
        .expect("tensors of the same shape and dtype f32")
}

/// Address of a tensor's storage: views (reshape, transpose) share it with their source.
pub fn storage_addr(t: &Tensor) -> usize {
    let (guard, _) = t.storage_and_layout();
    std::ptr::from_ref::<candle_core::Storage>(&guard) as usize
}

/// Bytes of the distinct non-Var storages candle's autograd graph keeps alive for the
/// backward of `out` (every tracked intermediate, whole allocations; views of the weights
/// are not counted).
pub fn graph_bytes(out: &Tensor) -> usize {
    let nodes = out.sorted_nodes();
    let vars: std::collections::HashSet<usize> = nodes
        .iter()
        .filter(|t| t.is_variable())
        .map(|t| storage_addr(t))
        .collect();
    let mut seen = std::collections::HashSet::new();
    nodes
        .iter()
        .filter(|t| {
            let a = storage_addr(t);
            !vars.contains(&a) && seen.insert(a)
        })
        .map(|t| {
            let (guard, _) = t.storage_and_layout();
            match &*guard {
                candle_core::Storage::Cpu(c) => c
                    .as_slice::<f32>()
                    .map_or(t.elem_count() * 4, |s| s.len() * 4),
                _ => t.elem_count() * t.dtype().size_in_bytes(),
            }
        })
        .sum()
}

/// `f` run inside a rayon pool of `threads` threads (what a `-j` gives the CPU nodes).
pub fn in_rayon_pool<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("rayon pool")
        .install(f)
}

/// The bit patterns of a tensor's f32 values (to compare outputs byte for byte).
pub fn f32_bits(t: &Tensor) -> Vec<u32> {
    t.flatten_all()
        .and_then(|t| t.to_vec1::<f32>())
        .expect("f32 values")
        .iter()
        .map(|v| v.to_bits())
        .collect()
}
