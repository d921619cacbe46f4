//! Argoverse 1.1's submission file, as argoverse-api's `generate_forecasting_h5` writes it:
//! one dataset `argoverse_forecasting`, float64 [rows, 4], gzip level 9, one row per
//! (sequence, mode, step) — `[seq_id, x, y, probability]` with x and y rounded through
//! float32 (the function's `np.float32(x)`) — sequences in order, each sequence's K modes
//! of 30 steps in rank order. The server groups rows by `seq_id`, reshapes each group to
//! (K, 30, 2) and takes the top-K modes by probability.

use super::{check_common, ScenarioForecast};
use anyhow::{Context, Result};
use hdf5_metno as hdf5;
use std::path::Path;

/// Argoverse 1.1's future steps (3 s at 10 Hz).
pub const PRED_STEPS: usize = 30;
/// The dataset the challenge reads.
pub const DATASET: &str = "argoverse_forecasting";
/// Rows per chunk (gzip works per chunk; h5py's automatic chunks are of this order).
const CHUNK_ROWS: usize = 1 << 14;

/// The AV1 challenge's rules: [`check_common`] with 30 steps and a sequence id that is an
/// integer a float64 holds exactly (the CSV's stem).
pub fn check(f: &[ScenarioForecast]) -> Result<()> {
    check_common(f, PRED_STEPS, "Argoverse 1.1")?;
    for s in f {
        seq_id(s)?;
    }
    Ok(())
}

fn seq_id(s: &ScenarioForecast) -> Result<f64> {
    let id: u64 = s.scenario_id.parse().map_err(|_| {
        anyhow::anyhow!(
            "scenario {} (sample {}): not an Argoverse 1.1 sequence id (the integer stem of <seq_id>.csv); are these Argoverse 2 predictions? write a .parquet instead",
            s.scenario_id,
            s.sample
        )
    })?;
    anyhow::ensure!(
        id < (1 << 53),
        "scenario {} (sample {}): the id is too large for the h5's float64 column",
        s.scenario_id,
        s.sample
    );
    Ok(id as f64)
}

/// Checks `f` ([`check`]) and writes the submission h5 to `path`.
pub fn write(path: &Path, f: &[ScenarioForecast]) -> Result<()> {
    check(f)?;
    let mut data = Vec::new();
    for s in f {
        let id = seq_id(s)?;
        for (t, p) in s.trajectories.iter().zip(&s.probabilities) {
            for q in t {
                data.extend([id, f64::from(q[0] as f32), f64::from(q[1] as f32), *p]);
            }
        }
    }
    let rows = data.len() / 4;
    let arr = ndarray::Array2::from_shape_vec((rows, 4), data).context("internal: h5 rows")?;
    let ctx = || format!("writing {}", path.display());
    let file = hdf5::File::with_options()
        .with_fcpl(|p| p.obj_track_times(false))
        .create(path)
        .with_context(ctx)?;
    file.new_dataset_builder()
        .obj_track_times(false)
        .chunk((rows.clamp(1, CHUNK_ROWS), 4))
        .deflate(9)
        .with_data(&arr)
        .create(DATASET)
        .with_context(ctx)?;
    file.close().with_context(ctx)?;
    Ok(())
}
