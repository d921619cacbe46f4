//! The per-sample predictions an `eval` stage stores beside `metrics.json`, one parquet file
//! per scored checkpoint (`predictions-last.parquet`, `predictions-best.parquet`), so a person
//! can read them with pandas and `pipeline submit` can turn them into a leaderboard file.
//!
//! Two layouts (README "Predictions"):
//! - classification: one row per sample, `sample`, `label`, `pred`, `top5_class`,
//!   `top5_prob` and, when the data carries one, `id`;
//! - forecasting: one row per (sample, mode), modes in rank order, trajectories in world
//!   coordinates.
//!
//! Written with the `parquet` crate's column writers (the workspace builds it without arrow):
//! lists in the standard three-level LIST layout pandas/pyarrow read as list columns. The
//! bytes are a function of the rows alone: a fixed `created_by`, no timestamps, fixed row
//! groups of [`ROW_GROUP`] rows.

pub mod read;
pub mod rows;
pub mod samples;
pub mod scene;

use super::task::Checkpoint;
use anyhow::{Context, Result};
use parquet::basic::Compression;
use parquet::data_type::{ByteArray, ByteArrayType, DoubleType, FloatType, Int32Type, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;
use std::sync::Arc;

/// Rows per row group: fixed, so the bytes never depend on a writer default.
pub const ROW_GROUP: usize = 8192;

/// The names an eval artifact may hold (`Stage::files`).
pub const FILES: [&str; 3] = [
    "predictions-last.parquet",
    "predictions-best.parquet",
    "predictions-ema.parquet",
];

/// The predictions file of one checkpoint's weights.
pub fn file_name(c: Checkpoint) -> &'static str {
    match c {
        Checkpoint::Last => FILES[0],
        Checkpoint::Best => FILES[1],
        Checkpoint::Ema => FILES[2],
    }
}

/// One classified sample.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassRow {
    /// The shard's `index` field when the data has one, else the position in the split.
    pub sample: i64,
    pub label: i64,
    /// Up to five (class, probability), most probable first; the first is the prediction.
    pub top5: Vec<(i64, f32)>,
    /// The data's own name of the sample (SSv2's video id), when it has one.
    pub id: Option<String>,
}

/// One mode of a forecast: its probability and its future positions, world coordinates.
#[derive(Debug, Clone, PartialEq)]
pub struct Mode {
    pub probability: f64,
    pub x: Vec<f64>,
    pub y: Vec<f64>,
}

/// One forecast scene: its K modes in rank order (highest probability first).
#[derive(Debug, Clone, PartialEq)]
pub struct ForecastRow {
    pub sample: i64,
    pub scenario_id: String,
    /// AV2's focal track id when the shard has it, else empty.
    pub track_id: String,
    pub modes: Vec<Mode>,
    /// The truth (x, y) in world coordinates; None where the split has no futures.
    pub truth: Option<(Vec<f64>, Vec<f64>)>,
}

/// One column's values for one row group, with the levels lists need.
enum Col {
    I64(Vec<i64>),
    I32(Vec<i32>),
    F64(Vec<f64>),
    Str(Vec<ByteArray>),
    ListI64(Levels<i64>),
    ListF32(Levels<f32>),
    ListF64(Levels<f64>),
}

/// A list column flattened: the present values and the definition / repetition levels.
struct Levels<T> {
    values: Vec<T>,
    def: Vec<i16>,
    rep: Vec<i16>,
}

/// Levels of lists whose element is `required`: in a `required` list (max definition 1) an
/// element is 1 and an empty list 0; in an `optional` one (max 2) null is 0, empty 1,
/// an element 2.
fn levels<T: Copy>(lists: &[Option<&[T]>], optional: bool) -> Levels<T> {
    let base = i16::from(optional);
    let mut l = Levels {
        values: Vec::new(),
        def: Vec::new(),
        rep: Vec::new(),
    };
    for list in lists {
        match list {
            None => {
                l.def.push(0);
                l.rep.push(0);
            }
            Some([]) => {
                l.def.push(base);
                l.rep.push(0);
            }
            Some(xs) => {
                for (i, x) in xs.iter().enumerate() {
                    l.values.push(*x);
                    l.def.push(base + 1);
                    l.rep.push(i16::from(i > 0));
                }
            }
        }
    }
    l
}

/// Writes `rows` rows under `schema`, [`ROW_GROUP`] at a time; `group` gives a range's
/// columns in schema order.
fn write(
    schema: &str,
    rows: usize,
    group: impl Fn(std::ops::Range<usize>) -> Vec<Col>,
) -> Result<Vec<u8>> {
    let schema = Arc::new(parse_message_type(schema).context("the predictions schema")?);
    let props = Arc::new(
        WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_created_by("lm4ve".into())
            .set_max_row_group_size(ROW_GROUP)
            .build(),
    );
    let mut w = SerializedFileWriter::new(Vec::new(), schema, props)?;
    let mut start = 0;
    // An empty split still gets a file with its schema (and one empty row group).
    loop {
        let end = (start + ROW_GROUP).min(rows);
        let mut rg = w.next_row_group()?;
        for col in group(start..end) {
            let mut c = rg
                .next_column()?
                .context("predictions: more columns than the schema has")?;
            match col {
                Col::I64(v) => c.typed::<Int64Type>().write_batch(&v, None, None)?,
                Col::I32(v) => c.typed::<Int32Type>().write_batch(&v, None, None)?,
                Col::F64(v) => c.typed::<DoubleType>().write_batch(&v, None, None)?,
                Col::Str(v) => c.typed::<ByteArrayType>().write_batch(&v, None, None)?,
                Col::ListI64(l) => {
                    c.typed::<Int64Type>()
                        .write_batch(&l.values, Some(&l.def), Some(&l.rep))?
                }
                Col::ListF32(l) => {
                    c.typed::<FloatType>()
                        .write_batch(&l.values, Some(&l.def), Some(&l.rep))?
                }
                Col::ListF64(l) => {
                    c.typed::<DoubleType>()
                        .write_batch(&l.values, Some(&l.def), Some(&l.rep))?
                }
            };
            c.close()?;
        }
        rg.close()?;
        start = end;
        if start >= rows {
            break;
        }
    }
    Ok(w.into_inner()?)
}

fn strs<'a>(xs: impl Iterator<Item = &'a str>) -> Vec<ByteArray> {
    xs.map(ByteArray::from).collect()
}

/// The classification file: rows in the split's order.
pub fn write_classification(rows: &[ClassRow]) -> Result<Vec<u8>> {
    // `id` only when every sample has one (a data set has names for all or for none).
    let with_id = !rows.is_empty() && rows.iter().all(|r| r.id.is_some());
    let mut schema = String::from(
        "message predictions { required int64 sample; required int64 label; \
         required int64 pred; \
         required group top5_class (LIST) { repeated group list { required int64 element; } } \
         required group top5_prob (LIST) { repeated group list { required float element; } }",
    );
    if with_id {
        schema.push_str(" required binary id (STRING);");
    }
    schema.push_str(" }");
    write(&schema, rows.len(), |r| {
        let rs = &rows[r];
        let classes: Vec<Vec<i64>> = rs
            .iter()
            .map(|x| x.top5.iter().map(|t| t.0).collect())
            .collect();
        let probs: Vec<Vec<f32>> = rs
            .iter()
            .map(|x| x.top5.iter().map(|t| t.1).collect())
            .collect();
        let mut cols = vec![
            Col::I64(rs.iter().map(|x| x.sample).collect()),
            Col::I64(rs.iter().map(|x| x.label).collect()),
            Col::I64(
                rs.iter()
                    .map(|x| x.top5.first().map_or(-1, |t| t.0))
                    .collect(),
            ),
            Col::ListI64(levels(
                &classes
                    .iter()
                    .map(|v| Some(v.as_slice()))
                    .collect::<Vec<_>>(),
                false,
            )),
            Col::ListF32(levels(
                &probs.iter().map(|v| Some(v.as_slice())).collect::<Vec<_>>(),
                false,
            )),
        ];
        if with_id {
            cols.push(Col::Str(strs(
                rs.iter().map(|x| x.id.as_deref().unwrap_or_default()),
            )));
        }
        cols
    })
}

/// The forecasting file, long format: one row per (sample, mode), modes in the rows' order.
pub fn write_forecast(scenes: &[ForecastRow]) -> Result<Vec<u8>> {
    let schema = "message predictions { required int64 sample; \
         required binary scenario_id (STRING); required binary track_id (STRING); \
         required int32 mode; required double probability; \
         required group predicted_trajectory_x (LIST) { repeated group list { required double element; } } \
         required group predicted_trajectory_y (LIST) { repeated group list { required double element; } } \
         optional group truth_x (LIST) { repeated group list { required double element; } } \
         optional group truth_y (LIST) { repeated group list { required double element; } } }";
    // (scene, mode) per row.
    let flat: Vec<(&ForecastRow, usize)> = scenes
        .iter()
        .flat_map(|s| (0..s.modes.len()).map(move |k| (s, k)))
        .collect();
    write(schema, flat.len(), |r| {
        let rs = &flat[r];
        vec![
            Col::I64(rs.iter().map(|(s, _)| s.sample).collect()),
            Col::Str(strs(rs.iter().map(|(s, _)| s.scenario_id.as_str()))),
            Col::Str(strs(rs.iter().map(|(s, _)| s.track_id.as_str()))),
            Col::I32(rs.iter().map(|(_, k)| *k as i32).collect()),
            Col::F64(rs.iter().map(|(s, k)| s.modes[*k].probability).collect()),
            list_col(rs, |s, k| Some(s.modes[k].x.as_slice()), false),
            list_col(rs, |s, k| Some(s.modes[k].y.as_slice()), false),
            list_col(rs, |s, _| s.truth.as_ref().map(|t| t.0.as_slice()), true),
            list_col(rs, |s, _| s.truth.as_ref().map(|t| t.1.as_slice()), true),
        ]
    })
}

/// A list column of the forecast rows `rs` ((scene, mode) each).
fn list_col<'a>(
    rs: &[(&'a ForecastRow, usize)],
    f: impl Fn(&'a ForecastRow, usize) -> Option<&'a [f64]>,
    optional: bool,
) -> Col {
    let lists: Vec<Option<&[f64]>> = rs.iter().map(|&(s, k)| f(s, k)).collect();
    Col::ListF64(levels(&lists, optional))
}

/// A point of a scene's frame in world coordinates: `world = R(θ)·p + origin`, `frame` =
/// [x0, y0, θ] as `av.tokens` / `av2.tokens` store it (SHARDS.md), in f64.
pub fn to_world(frame: [f32; 3], p: [f64; 2]) -> [f64; 2] {
    let [x0, y0, th] = frame.map(f64::from);
    let (s, c) = th.sin_cos();
    [c * p[0] - s * p[1] + x0, s * p[0] + c * p[1] + y0]
}

/// The inverse of [`to_world`]: a world point in the scene's frame.
pub fn to_frame(frame: [f32; 3], w: [f64; 2]) -> [f64; 2] {
    let [x0, y0, th] = frame.map(f64::from);
    let (s, c) = th.sin_cos();
    let (dx, dy) = (w[0] - x0, w[1] - y0);
    [c * dx + s * dy, -s * dx + c * dy]
}

#[cfg(test)]
mod tests;
