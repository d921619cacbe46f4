//! The held-out evaluation of a model on every sample of a split, generic over the task:
//! batches in order, the task scores each, the totals become the metrics.

use super::dist::collective::Collective;
use super::task::{Evaluation, Task, Totals};
use anyhow::Result;
use candle_core::Device;

/// Evaluates `model` on every sample of `set`.
///
/// In a data-parallel job each rank scores every `world`-th batch and the totals are summed
/// over the ranks, so every rank returns the whole set's metrics.
pub fn evaluate<T: Task>(
    task: &T,
    model: &T::Model,
    set: &T::Data,
    classes: usize,
    batch: usize,
    device: &Device,
    coll: &dyn Collective,
) -> Result<Evaluation> {
    let mut totals = task.new_totals(model, classes);
    let idx: Vec<usize> = (0..task.len(set)).collect();
    let (rank, world) = (coll.rank(), coll.world_size());
    for (c, chunk) in idx.chunks(batch.max(1)).enumerate() {
        if c % world != rank {
            continue;
        }
        let (b, views) = task.eval_batch(set, chunk, device)?;
        let out = task.forward(model, &b, None)?;
        task.score(&mut totals, out, b, views)?;
    }
    if coll.is_joined() {
        let mut sums = totals.to_sums();
        coll.all_reduce_sum_host(&mut sums)?;
        totals.set_from_sums(&sums);
    }
    Ok(totals.evaluation())
}
