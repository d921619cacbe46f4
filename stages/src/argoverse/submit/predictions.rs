//! Reading an eval's forecasts: `predictions-<checkpoint>.parquet` (written by the eval,
//! README "Submitting to the leaderboards"). Long format, one row per (sample, mode) in rank
//! order: `sample` (int64), `scenario_id` (utf8), `track_id` (utf8; AV2 the focal track,
//! AV1 empty), `mode` (int32), `probability` (float64), `predicted_trajectory_x`,
//! `predicted_trajectory_y` (list<float64>, world coordinates); other columns (`truth_x`,
//! `truth_y`) are not read. Rows of one sample are consecutive, modes 0, 1, … in order.

use anyhow::{Context, Result};
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::{Field, Row};
use std::path::Path;

/// The predictions file of an eval artifact for `checkpoint` (`last` or `best`).
pub fn predictions_file(checkpoint: &str) -> String {
    format!("predictions-{checkpoint}.parquet")
}

/// One scenario's forecast: K modes in rank order, world coordinates.
#[derive(Debug, Clone, PartialEq)]
pub struct ScenarioForecast {
    /// The sample's index in the split (for messages).
    pub sample: i64,
    pub scenario_id: String,
    /// AV2: the focal track's id; AV1: empty.
    pub track_id: String,
    pub probabilities: Vec<f64>,
    /// `[mode][step] = [x, y]`.
    pub trajectories: Vec<Vec<[f64; 2]>>,
}

/// The columns read, in the order the row parser keeps them.
const COLUMNS: [&str; 7] = [
    "sample",
    "scenario_id",
    "track_id",
    "mode",
    "probability",
    "predicted_trajectory_x",
    "predicted_trajectory_y",
];

/// One parsed row.
struct PredRow {
    sample: i64,
    scenario_id: String,
    track_id: String,
    mode: i64,
    probability: f64,
    xs: Vec<f64>,
    ys: Vec<f64>,
}

fn int(v: &Field) -> Option<i64> {
    match v {
        Field::Long(x) => Some(*x),
        Field::Int(x) => Some(i64::from(*x)),
        Field::Short(x) => Some(i64::from(*x)),
        _ => None,
    }
}

fn doubles(v: &Field) -> Option<Vec<f64>> {
    match v {
        Field::ListInternal(list) => list
            .elements()
            .iter()
            .map(|e| match e {
                Field::Double(x) => Some(*x),
                Field::Float(x) => Some(f64::from(*x)),
                _ => None,
            })
            .collect(),
        _ => None,
    }
}

fn parse_row(r: &Row, at: usize) -> Result<PredRow, String> {
    let mut vals: [Option<&Field>; 7] = [None; 7];
    for (k, v) in r.get_column_iter() {
        if let Some(i) = COLUMNS.iter().position(|c| c == k) {
            vals[i] = Some(v);
        }
    }
    let get = |i: usize| vals[i].ok_or_else(|| format!("row {at}: no `{}` value", COLUMNS[i]));
    let bad = |i: usize, want: &str, v: &Field| {
        format!(
            "row {at}: `{}` is {v:?}, expected {want} (the eval's predictions schema)",
            COLUMNS[i]
        )
    };
    let text = |i: usize| -> Result<String, String> {
        match get(i)? {
            Field::Str(s) => Ok(s.clone()),
            v => Err(bad(i, "a string", v)),
        }
    };
    let sample = get(0).and_then(|v| int(v).ok_or_else(|| bad(0, "an integer", v)))?;
    let mode = get(3).and_then(|v| int(v).ok_or_else(|| bad(3, "an integer", v)))?;
    let probability = match get(4)? {
        Field::Double(x) => *x,
        Field::Float(x) => f64::from(*x),
        v => return Err(bad(4, "a float64", v)),
    };
    let list = |i: usize| -> Result<Vec<f64>, String> {
        let v = get(i)?;
        doubles(v).ok_or_else(|| bad(i, "a list of float64", v))
    };
    Ok(PredRow {
        sample,
        scenario_id: text(1)?,
        track_id: text(2)?,
        mode,
        probability,
        xs: list(5)?,
        ys: list(6)?,
    })
}

/// Reads a predictions file into one forecast per sample, in file order. Fails naming the
/// file and row on a missing column, a wrong type, modes out of order, or x and y of
/// different lengths.
pub fn read_predictions(path: &Path) -> Result<Vec<ScenarioForecast>> {
    let ctx = || format!("predictions file {}", path.display());
    let file = std::fs::File::open(path).with_context(ctx)?;
    let reader = SerializedFileReader::new(file)
        .with_context(|| format!("{}: not a parquet file", ctx()))?;
    let fields = reader.metadata().file_metadata().schema().get_fields();
    for c in COLUMNS {
        anyhow::ensure!(
            fields.iter().any(|f| f.name() == c),
            "{}: no column `{c}`; expected {} (an eval's predictions-last.parquet / predictions-best.parquet)",
            ctx(),
            COLUMNS.join(", ")
        );
    }
    let mut out: Vec<ScenarioForecast> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let rows = reader.get_row_iter(None).with_context(ctx)?;
    for (at, r) in rows.enumerate() {
        let r = r.with_context(ctx)?;
        let row = parse_row(&r, at).map_err(|e| anyhow::anyhow!("{}: {e}", ctx()))?;
        anyhow::ensure!(
            row.xs.len() == row.ys.len(),
            "{}: row {at} (sample {}, mode {}): {} x values but {} y values",
            ctx(),
            row.sample,
            row.mode,
            row.xs.len(),
            row.ys.len()
        );
        let points: Vec<[f64; 2]> = row.xs.iter().zip(&row.ys).map(|(&x, &y)| [x, y]).collect();
        let same = out.last().is_some_and(|s| s.sample == row.sample);
        if !same {
            anyhow::ensure!(
                seen.insert(row.sample),
                "{}: row {at}: sample {}'s rows are not consecutive",
                ctx(),
                row.sample
            );
            out.push(ScenarioForecast {
                sample: row.sample,
                scenario_id: row.scenario_id.clone(),
                track_id: row.track_id.clone(),
                probabilities: Vec::new(),
                trajectories: Vec::new(),
            });
        }
        let s = out.last_mut().context("internal: no forecast")?;
        anyhow::ensure!(
            row.mode == s.trajectories.len() as i64,
            "{}: row {at}: sample {} has mode {} where mode {} was due (modes 0, 1, … in order)",
            ctx(),
            row.sample,
            row.mode,
            s.trajectories.len()
        );
        anyhow::ensure!(
            row.scenario_id == s.scenario_id && row.track_id == s.track_id,
            "{}: row {at}: sample {} changes scenario or track between its modes",
            ctx(),
            row.sample
        );
        s.probabilities.push(row.probability);
        s.trajectories.push(points);
    }
    Ok(out)
}
