//! The held-out evaluation of a model on every sample of a split, generic over the task:
//! batches in order, the task scores each, the totals become the metrics; the `eval` stage
//! also keeps each sample's predictions ([`Task::prediction_rows`]).

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
    Ok(evaluate_rows(task, model, set, classes, batch, device, coll, false)?.0)
}

/// [`evaluate`], and with `keep` each sample's flat prediction row in the split's order
/// (empty when the task keeps none). A data-parallel job adds the ranks' rows up in a
/// zero-filled table, so every rank returns them all.
#[allow(clippy::too_many_arguments)]
pub fn evaluate_rows<T: Task>(
    task: &T,
    model: &T::Model,
    set: &T::Data,
    classes: usize,
    batch: usize,
    device: &Device,
    coll: &dyn Collective,
    keep: bool,
) -> Result<(Evaluation, Vec<Vec<f64>>)> {
    let mut totals = task.new_totals(model, classes);
    let n = task.len(set);
    let idx: Vec<usize> = (0..n).collect();
    let (rank, world) = (coll.rank(), coll.world_size());
    // (position in the split, row) of the samples this rank scored.
    let mut rows: Vec<(usize, Vec<f64>)> = Vec::new();
    for (c, chunk) in idx.chunks(batch.max(1)).enumerate() {
        if c % world != rank {
            continue;
        }
        let (b, views) = task.eval_batch(set, chunk, device)?;
        let out = task.forward(model, &b, None)?;
        if keep {
            rows.extend(
                chunk
                    .iter()
                    .copied()
                    .zip(task.prediction_rows(&out, &b, views)?),
            );
        }
        task.score(&mut totals, out, b, views)?;
    }
    if coll.is_joined() {
        let mut sums = totals.to_sums();
        coll.all_reduce_sum_host(&mut sums)?;
        totals.set_from_sums(&sums);
    }
    let rows = if keep && coll.is_joined() {
        gather(rows, n, coll)?
    } else {
        rows.into_iter().map(|(_, r)| r).collect()
    };
    Ok((totals.evaluation(), rows))
}

/// Every rank's rows in split order: the width agreed first (a rank may have scored no
/// batch), then one all-reduce of an n × width table where each rank fills its own rows.
fn gather(rows: Vec<(usize, Vec<f64>)>, n: usize, coll: &dyn Collective) -> Result<Vec<Vec<f64>>> {
    let width = rows.first().map_or(0, |(_, r)| r.len());
    let mut w = vec![width as f64, f64::from(u8::from(width > 0))];
    coll.all_reduce_sum_host(&mut w)?;
    if w[1] == 0.0 {
        return Ok(Vec::new());
    }
    let width = (w[0] / w[1]).round() as usize;
    let mut table = vec![0.0; n * width];
    for (i, r) in rows {
        anyhow::ensure!(
            r.len() == width,
            "prediction rows of {} and {width} numbers",
            r.len()
        );
        table[i * width..(i + 1) * width].copy_from_slice(&r);
    }
    coll.all_reduce_sum_host(&mut table)?;
    Ok(table.chunks(width).map(<[f64]>::to_vec).collect())
}
