//! One Argoverse 2 motion-forecasting scenario, `scenario_<id>.parquet`, read with the
//! `parquet` crate's record API (the columns av2's `scenario_serialization` writes: one row
//! per track and timestep).
//!
//! Why tolerant about numeric types: the released files were written by fastparquet
//! (timestamps as doubles, `map_id` as uint64) while files written again with pandas/pyarrow
//! hold int64; only the columns the vectorizer needs are read, and each accepts any integer
//! physical type (or an integral double where av2 has an integer).

use parquet::column::reader::{ColumnReader, ColumnReaderImpl};
use parquet::data_type::{ByteArray, DataType};
use parquet::file::reader::{FileReader, RowGroupReader, SerializedFileReader};
use std::collections::HashMap;
use std::path::Path;

/// av2's `ObjectType` values, in the order their code is stored (`actor_type`, and the
/// 7th actor feature).
pub const OBJECT_TYPES: [&str; 10] = [
    "vehicle",
    "pedestrian",
    "motorcyclist",
    "cyclist",
    "bus",
    "static",
    "background",
    "construction",
    "riderless_bicycle",
    "unknown",
];

/// av2's `TrackCategory`: 0 fragment, 1 unscored, 2 scored, 3 focal.
pub const CATEGORY_SCORED: u8 = 2;
pub const CATEGORY_FOCAL: u8 = 3;

/// The columns read (the rest — heading, velocities, timestamps, map/slice ids — are not
/// used by the vectorizer).
const COLUMNS: [&str; 8] = [
    "track_id",
    "object_type",
    "object_category",
    "timestep",
    "position_x",
    "position_y",
    "focal_track_id",
    "city",
];

/// One track: its positions on the scenario's step grid (index = `timestep`).
#[derive(Debug, Clone, PartialEq)]
pub struct Track {
    pub id: String,
    /// Index into [`OBJECT_TYPES`].
    pub object_type: u8,
    /// av2's track category (0..=3).
    pub category: u8,
    pub points: Vec<Option<[f64; 2]>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    pub city: String,
    pub tracks: Vec<Track>,
    /// Index of the focal track in `tracks`.
    pub focal: usize,
}

/// Reads a scenario file onto a grid of `steps` timesteps (rows at later timesteps are
/// ignored, as `av.tokens` ignores rows off its grid). Every error is a reject reason.
///
/// Column by column (typed column readers), not row by row: the record API's per-row
/// `Row`s of named fields cost ~10x the decoding itself (measured: 60% of the stage's time).
pub fn read_scenario(path: &Path, steps: usize) -> Result<Scenario, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let reader = SerializedFileReader::new(file).map_err(damaged)?;
    let meta = reader.metadata();
    let descr = meta.file_metadata().schema_descr();
    let index = |c: &str| -> Result<usize, String> {
        (0..descr.num_columns())
            .find(|&i| descr.column(i).path().string() == c)
            .ok_or_else(|| {
                format!(
                    "missing column `{c}` (an AV2 scenario has {}); not an AV2 scenario file",
                    COLUMNS.join(", ")
                )
            })
    };
    let idx: Vec<usize> = COLUMNS.iter().map(|c| index(c)).collect::<Result<_, _>>()?;

    let mut tracks: Vec<Track> = Vec::new();
    let mut by_id: HashMap<String, usize> = HashMap::new();
    let mut focal_id: Option<String> = None;
    let mut city: Option<String> = None;
    for g in 0..meta.num_row_groups() {
        let rg = reader.get_row_group(g).map_err(damaged)?;
        let rows = usize::try_from(rg.metadata().num_rows()).unwrap_or(0);
        let cols: Vec<Col> = idx
            .iter()
            .zip(COLUMNS)
            .map(|(&i, name)| read_column(rg.as_ref(), i, rows, name))
            .collect::<Result<_, _>>()?;
        let [ids, types, cats, times, xs, ys, focals, cities] = &cols[..] else {
            return Err("internal: column count".into());
        };
        if g == 0 && rows > 0 {
            focal_id = Some(focals.text(0, "focal_track_id")?);
            city = Some(cities.text(0, "city")?);
        }
        // Rows come grouped by track (av2 writes one track after another): the last track's
        // index is reused without a lookup while the id repeats.
        let mut last: Option<(usize, usize)> = None; // (row, track)
        for r in 0..rows {
            let same = last.is_some_and(|(p, _)| ids.same(p, r));
            let t = match (same, last) {
                (true, Some((_, t))) => t,
                _ => {
                    let track_id = ids.text(r, "track_id")?;
                    let ty = types.text(r, "object_type")?;
                    let object_type =
                        OBJECT_TYPES.iter().position(|t| *t == ty).ok_or_else(|| {
                            format!(
                                "track {track_id}: unknown object type `{ty}` (av2's types: {})",
                                OBJECT_TYPES.join(", ")
                            )
                        })? as u8;
                    let category = cats.int(r, "object_category")?;
                    if !(0..=3).contains(&category) {
                        return Err(format!(
                            "track {track_id}: object_category {category} is not a track category (0..=3)"
                        ));
                    }
                    let t = match by_id.get(&track_id) {
                        Some(&t) => t,
                        None => {
                            tracks.push(Track {
                                id: track_id.clone(),
                                object_type,
                                category: category as u8,
                                points: vec![None; steps],
                            });
                            by_id.insert(track_id.clone(), tracks.len() - 1);
                            tracks.len() - 1
                        }
                    };
                    if tracks[t].object_type != object_type || tracks[t].category != category as u8
                    {
                        return Err(format!(
                            "track {track_id} changes its object type or category at row {r}"
                        ));
                    }
                    t
                }
            };
            last = Some((r, t));
            let track = &mut tracks[t];
            let step = times.int(r, "timestep")?;
            if step < 0 {
                return Err(format!("track {}: negative timestep {step}", track.id));
            }
            let (x, y) = (xs.num(r, "position_x")?, ys.num(r, "position_y")?);
            if !(x.is_finite() && y.is_finite()) {
                return Err(format!(
                    "track {}, timestep {step}: position ({x}, {y}) is not a finite number; fix or drop the row",
                    track.id
                ));
            }
            let Some(slot) = track.points.get_mut(step as usize) else {
                continue;
            };
            if slot.is_some() {
                return Err(format!("track {}: timestep {step} appears twice", track.id));
            }
            *slot = Some([x, y]);
        }
    }
    let focal_id = focal_id.ok_or("no focal_track_id: the file has no rows")?;
    let focal = *by_id.get(&focal_id).ok_or_else(|| {
        format!("no focal track: focal_track_id `{focal_id}` names no track of the scenario")
    })?;
    Ok(Scenario {
        city: city.unwrap_or_default(),
        tracks,
        focal,
    })
}

fn damaged(e: parquet::errors::ParquetError) -> String {
    format!("damaged parquet ({e}); re-extract the scenario from the AV2 archive")
}

/// One column of a row group, by physical type.
enum Col {
    Int(Vec<i64>),
    Float(Vec<f64>),
    Bytes(Vec<ByteArray>),
}

impl Col {
    fn int(&self, r: usize, name: &str) -> Result<i64, String> {
        match self {
            Col::Int(v) => Ok(v[r]),
            Col::Float(v) if v[r].fract() == 0.0 && v[r].abs() < 9e15 => Ok(v[r] as i64),
            Col::Float(v) => Err(format!(
                "row {r}, column `{name}`: {} is not an integer",
                v[r]
            )),
            Col::Bytes(_) => Err(format!("column `{name}` holds text, not integers")),
        }
    }
    fn num(&self, r: usize, name: &str) -> Result<f64, String> {
        match self {
            Col::Float(v) => Ok(v[r]),
            Col::Int(v) => Ok(v[r] as f64),
            Col::Bytes(_) => Err(format!("column `{name}` holds text, not numbers")),
        }
    }
    fn text(&self, r: usize, name: &str) -> Result<String, String> {
        match self {
            Col::Bytes(v) => std::str::from_utf8(v[r].data())
                .map(str::to_string)
                .map_err(|_| format!("row {r}, column `{name}`: not UTF-8")),
            // Track ids are strings in av2; an integer column is read as its decimal text.
            Col::Int(v) => Ok(v[r].to_string()),
            Col::Float(_) => Err(format!("column `{name}` holds numbers, not text")),
        }
    }
    /// Rows `a` and `b` hold the same value (only asked of the id column).
    fn same(&self, a: usize, b: usize) -> bool {
        match self {
            Col::Bytes(v) => v[a].data() == v[b].data(),
            Col::Int(v) => v[a] == v[b],
            Col::Float(_) => false,
        }
    }
}

/// Reads column `i` of a row group whole; a null anywhere is a reject (every column read
/// is needed in every row).
fn read_column(rg: &dyn RowGroupReader, i: usize, rows: usize, name: &str) -> Result<Col, String> {
    fn all<T: DataType>(
        mut r: ColumnReaderImpl<T>,
        rows: usize,
        name: &str,
    ) -> Result<Vec<T::T>, String> {
        let mut values = Vec::with_capacity(rows);
        let mut defs = Vec::with_capacity(rows);
        let mut got = 0;
        while got < rows {
            let (records, _, _) = r
                .read_records(rows - got, Some(&mut defs), None, &mut values)
                .map_err(damaged)?;
            if records == 0 {
                break;
            }
            got += records;
        }
        if got != rows {
            return Err(format!(
                "damaged parquet: column `{name}` has {got} of {rows} rows"
            ));
        }
        if values.len() != rows {
            return Err(format!(
                "column `{name}`: {} null values; every row needs one",
                rows - values.len()
            ));
        }
        Ok(values)
    }
    let reader = rg.get_column_reader(i).map_err(damaged)?;
    Ok(match reader {
        ColumnReader::Int32ColumnReader(r) => {
            Col::Int(all(r, rows, name)?.into_iter().map(i64::from).collect())
        }
        ColumnReader::Int64ColumnReader(r) => Col::Int(all(r, rows, name)?),
        ColumnReader::FloatColumnReader(r) => {
            Col::Float(all(r, rows, name)?.into_iter().map(f64::from).collect())
        }
        ColumnReader::DoubleColumnReader(r) => Col::Float(all(r, rows, name)?),
        ColumnReader::ByteArrayColumnReader(r) => Col::Bytes(all(r, rows, name)?),
        _ => return Err(format!("column `{name}` has a type av2 does not write")),
    })
}
