//! Argoverse 2's submission file: the parquet that av2's `ChallengeSubmission.to_parquet`
//! writes and `ChallengeSubmission.from_parquet` reads — one row per (scenario, track, mode):
//! `scenario_id` (string), `track_id` (string), `probability` (double),
//! `predicted_trajectory_x`, `predicted_trajectory_y` (list<double>, 60 world-frame points).
//! The loader sorts rows by probability, groups by scenario and track, and rejects a track
//! whose trajectories are not (*, 60, 2) or a scenario whose probabilities do not sum to 1
//! (`np.isclose`); the challenge scores at most 6 modes. [`check`] applies those rules
//! first, naming the scenario, so the server never sees a file its loader refuses.

use super::{check_common, ScenarioForecast};
use anyhow::{Context, Result};
use parquet::basic::Compression;
use parquet::data_type::{ByteArray, ByteArrayType, DoubleType};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;
use std::path::Path;
use std::sync::Arc;

/// `AV2_SCENARIO_PRED_TIMESTEPS`.
pub const PRED_STEPS: usize = 60;
/// The most modes the AV2 single-agent challenge scores (K = 6).
pub const MAX_MODES: usize = 6;

/// The columns as pyarrow writes a pandas frame of str, float and numpy float64 arrays
/// (nullable fields, 3-level lists).
const SCHEMA: &str = "message schema {
  optional binary scenario_id (STRING);
  optional binary track_id (STRING);
  optional double probability;
  optional group predicted_trajectory_x (LIST) { repeated group list { optional double element; } }
  optional group predicted_trajectory_y (LIST) { repeated group list { optional double element; } }
}";

/// The AV2 challenge's rules: [`check_common`] with 60 steps, at most 6 modes, a scenario id
/// as AV2 names scenarios (a lowercase UUID) and the focal track's id.
pub fn check(f: &[ScenarioForecast]) -> Result<()> {
    check_common(f, PRED_STEPS, "Argoverse 2")?;
    for s in f {
        let name = format!("scenario {} (sample {})", s.scenario_id, s.sample);
        anyhow::ensure!(
            crate::argoverse::av2::stage::uuid_bytes(&s.scenario_id).is_some(),
            "{name}: not an Argoverse 2 scenario id (a lowercase UUID); are these Argoverse 1.1 predictions? write a .h5 instead"
        );
        anyhow::ensure!(
            !s.track_id.is_empty(),
            "{name}: no track id; the AV2 submission names the focal track (the av2.tokens shard field `focal_track_id`, since av2.tokens version 2: rebuild the shards)"
        );
        anyhow::ensure!(
            s.trajectories.len() <= MAX_MODES,
            "{name}: {} modes; the Argoverse 2 challenge scores at most {MAX_MODES} (set the model's `modes` to 6)",
            s.trajectories.len()
        );
    }
    Ok(())
}

/// Checks `f` ([`check`]) and writes the submission parquet to `path` (scenarios in order,
/// modes in rank order).
pub fn write(path: &Path, f: &[ScenarioForecast]) -> Result<()> {
    check(f)?;
    let ctx = || format!("writing {}", path.display());
    let schema = Arc::new(parse_message_type(SCHEMA).context("internal: submission schema")?);
    let props = Arc::new(
        WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .build(),
    );
    let rows: Vec<(&ScenarioForecast, usize)> = f
        .iter()
        .flat_map(|s| (0..s.trajectories.len()).map(move |k| (s, k)))
        .collect();
    let file = std::fs::File::create(path).with_context(ctx)?;
    let mut w = SerializedFileWriter::new(file, schema, props).with_context(ctx)?;
    let mut rg = w.next_row_group().with_context(ctx)?;
    let n = rows.len();
    let flat = vec![1i16; n];
    let strings = |g: &dyn Fn(&ScenarioForecast) -> &str| -> Vec<ByteArray> {
        rows.iter().map(|(s, _)| ByteArray::from(g(s))).collect()
    };
    for values in [strings(&|s| &s.scenario_id), strings(&|s| &s.track_id)] {
        let mut c = rg
            .next_column()
            .with_context(ctx)?
            .context("internal: column")?;
        c.typed::<ByteArrayType>()
            .write_batch(&values, Some(&flat), None)
            .with_context(ctx)?;
        c.close().with_context(ctx)?;
    }
    let probs: Vec<f64> = rows.iter().map(|(s, k)| s.probabilities[*k]).collect();
    let mut c = rg
        .next_column()
        .with_context(ctx)?
        .context("internal: column")?;
    c.typed::<DoubleType>()
        .write_batch(&probs, Some(&flat), None)
        .with_context(ctx)?;
    c.close().with_context(ctx)?;
    // A list of 60 present doubles: definition level 3 (list, element slot, value present),
    // repetition level 0 to start a row's list and 1 to continue it.
    let defs = vec![3i16; n * PRED_STEPS];
    let reps: Vec<i16> = (0..n * PRED_STEPS)
        .map(|i| i16::from(i % PRED_STEPS != 0))
        .collect();
    for axis in 0..2 {
        let values: Vec<f64> = rows
            .iter()
            .flat_map(|(s, k)| s.trajectories[*k].iter().map(move |p| p[axis]))
            .collect();
        let mut c = rg
            .next_column()
            .with_context(ctx)?
            .context("internal: column")?;
        c.typed::<DoubleType>()
            .write_batch(&values, Some(&defs), Some(&reps))
            .with_context(ctx)?;
        c.close().with_context(ctx)?;
    }
    rg.close().with_context(ctx)?;
    w.close().with_context(ctx)?;
    Ok(())
}
