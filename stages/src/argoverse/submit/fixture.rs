//! Predictions files for tests, in the eval's schema ([`super::predictions`]): the
//! converters and `lm4ve pipeline submit` are tested on files these write, and
//! `scripts/fixtures/submission_roundtrip.py` reads the submissions made from
//! [`forecasts`] with the official loaders. Not the eval's own writer.

use super::{Challenge, ScenarioForecast};
use anyhow::{Context, Result};
use parquet::basic::Compression;
use parquet::data_type::{ByteArray, ByteArrayType, DoubleType, Int32Type, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;
use std::path::Path;
use std::sync::Arc;

const SCHEMA: &str = "message schema {
  optional int64 sample;
  optional binary scenario_id (STRING);
  optional binary track_id (STRING);
  optional int32 mode;
  optional double probability;
  optional group predicted_trajectory_x (LIST) { repeated group list { optional double element; } }
  optional group predicted_trajectory_y (LIST) { repeated group list { optional double element; } }
  optional group truth_x (LIST) { repeated group list { optional double element; } }
  optional group truth_y (LIST) { repeated group list { optional double element; } }
}";

/// Writes `f` as an eval's predictions file (truth columns null: a split without targets).
pub fn write_predictions(path: &Path, f: &[ScenarioForecast]) -> Result<()> {
    let ctx = || format!("writing {}", path.display());
    let schema = Arc::new(parse_message_type(SCHEMA).context("internal: predictions schema")?);
    let props = Arc::new(
        WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .build(),
    );
    let rows: Vec<(&ScenarioForecast, usize)> = f
        .iter()
        .flat_map(|s| (0..s.trajectories.len()).map(move |k| (s, k)))
        .collect();
    let n = rows.len();
    let flat = vec![1i16; n];
    let mut w = SerializedFileWriter::new(
        std::fs::File::create(path).with_context(ctx)?,
        schema,
        props,
    )
    .with_context(ctx)?;
    let mut rg = w.next_row_group().with_context(ctx)?;
    macro_rules! column {
        ($ty:ty, $values:expr, $defs:expr, $reps:expr) => {{
            let mut c = rg
                .next_column()
                .with_context(ctx)?
                .context("internal: column")?;
            c.typed::<$ty>()
                .write_batch(&$values, Some(&$defs), $reps)
                .with_context(ctx)?;
            c.close().with_context(ctx)?;
        }};
    }
    column!(
        Int64Type,
        rows.iter().map(|(s, _)| s.sample).collect::<Vec<_>>(),
        flat,
        None
    );
    let strings = |g: &dyn Fn(&ScenarioForecast) -> &str| -> Vec<ByteArray> {
        rows.iter().map(|(s, _)| ByteArray::from(g(s))).collect()
    };
    column!(ByteArrayType, strings(&|s| &s.scenario_id), flat, None);
    column!(ByteArrayType, strings(&|s| &s.track_id), flat, None);
    column!(
        Int32Type,
        rows.iter().map(|(_, k)| *k as i32).collect::<Vec<_>>(),
        flat,
        None
    );
    column!(
        DoubleType,
        rows.iter()
            .map(|(s, k)| s.probabilities[*k])
            .collect::<Vec<_>>(),
        flat,
        None
    );
    for axis in 0..2 {
        let mut values = Vec::new();
        let (mut defs, mut reps) = (Vec::new(), Vec::new());
        for (s, k) in &rows {
            for (i, p) in s.trajectories[*k].iter().enumerate() {
                values.push(p[axis]);
                defs.push(3i16);
                reps.push(i16::from(i > 0));
            }
        }
        column!(DoubleType, values, defs, Some(&reps[..]));
    }
    // truth_x, truth_y: null lists (definition level 0).
    for _ in 0..2 {
        column!(
            DoubleType,
            Vec::<f64>::new(),
            vec![0i16; n],
            Some(&vec![0i16; n][..])
        );
    }
    rg.close().with_context(ctx)?;
    w.close().with_context(ctx)?;
    Ok(())
}

/// Fixed forecasts for a challenge (world coordinates with fractions that float32 cannot
/// hold, distinct probabilities in rank order summing to 1; one scenario with fewer modes).
pub fn forecasts(c: Challenge) -> Vec<ScenarioForecast> {
    let steps = c.steps();
    let (ids, tracks): (&[&str], &[&str]) = match c {
        Challenge::Av1 => (&["1", "25", "41022"], &["", "", ""]),
        Challenge::Av2 => (
            &[
                "0f0e7a5c-26a2-4b1e-9d3c-5a6b7c8d9e0f",
                "7c1d2e3f-4a5b-4c6d-8e9f-0a1b2c3d4e5f",
                "d4c3b2a1-0f9e-4d8c-b7a6-5f4e3d2c1b0a",
            ],
            &["100000", "AV", "42"],
        ),
    };
    let probs: [&[f64]; 3] = [
        &[0.4, 0.25, 0.15, 0.1, 0.06, 0.04],
        &[0.31, 0.29, 0.2, 0.1, 0.07, 0.03],
        &[0.7, 0.2, 0.1],
    ];
    ids.iter()
        .zip(tracks)
        .zip(probs)
        .enumerate()
        .map(|(si, ((id, track), p))| ScenarioForecast {
            sample: si as i64,
            scenario_id: id.to_string(),
            track_id: track.to_string(),
            probabilities: p.to_vec(),
            trajectories: (0..p.len())
                .map(|k| {
                    (0..steps)
                        .map(|i| {
                            let t = (i + 1) as f64 / 10.0;
                            let (s, k) = (si as f64, k as f64);
                            [
                                2541.123456789 + 101.7 * s + (1.3 + 0.1 * k) * t * 10.0,
                                -712.987654321 - 33.3 * s + (0.37 * k - 0.5) * t * t * 10.0,
                            ]
                        })
                        .collect()
                })
                .collect(),
        })
        .collect()
}
