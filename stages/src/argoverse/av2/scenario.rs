//! One Argoverse 2 motion-forecasting scenario, `scenario_<id>.parquet`, read with the
//! `parquet` crate's record API (the columns av2's `scenario_serialization` writes: one row
//! per track and timestep).
//!
//! Why tolerant about numeric types: the released files were written by fastparquet
//! (timestamps as doubles, `map_id` as uint64) while files written again with pandas/pyarrow
//! hold int64; only the columns the vectorizer needs are read, and each accepts any integer
//! (or an integral double for `timestep`).

use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::Field;
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
pub fn read_scenario(path: &Path, steps: usize) -> Result<Scenario, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let damaged = |e: parquet::errors::ParquetError| {
        format!("damaged parquet ({e}); re-extract the scenario from the AV2 archive")
    };
    let reader = SerializedFileReader::new(file).map_err(damaged)?;
    let schema = reader.metadata().file_metadata().schema();
    let fields: Vec<_> = schema
        .get_fields()
        .iter()
        .filter(|f| COLUMNS.contains(&f.name()))
        .cloned()
        .collect();
    for c in COLUMNS {
        if !fields.iter().any(|f| f.name() == c) {
            return Err(format!(
                "missing column `{c}` (an AV2 scenario has {}); not an AV2 scenario file",
                COLUMNS.join(", ")
            ));
        }
    }
    let projection = parquet::schema::types::Type::group_type_builder(schema.name())
        .with_fields(fields)
        .build()
        .map_err(damaged)?;

    let mut tracks: Vec<Track> = Vec::new();
    let mut by_id: HashMap<String, usize> = HashMap::new();
    let mut focal_id: Option<String> = None;
    let mut city: Option<String> = None;
    let rows = reader.get_row_iter(Some(projection)).map_err(damaged)?;
    for (r, row) in rows.enumerate() {
        let row = row.map_err(damaged)?;
        let mut v = RowValues::default();
        for (name, field) in row.get_column_iter() {
            v.set(name, field)
                .map_err(|e| format!("row {r}, column `{name}`: {e}"))?;
        }
        let track_id = v
            .track_id
            .ok_or_else(|| format!("row {r}: null track_id"))?;
        let ty = v
            .object_type
            .ok_or_else(|| format!("row {r}: null object_type"))?;
        let object_type = OBJECT_TYPES.iter().position(|t| *t == ty).ok_or_else(|| {
            format!(
                "track {track_id}: unknown object type `{ty}` (av2's types: {})",
                OBJECT_TYPES.join(", ")
            )
        })? as u8;
        let category = v
            .category
            .ok_or_else(|| format!("row {r}: null object_category"))?;
        if !(0..=3).contains(&category) {
            return Err(format!(
                "track {track_id}: object_category {category} is not a track category (0..=3)"
            ));
        }
        let step = v
            .timestep
            .ok_or_else(|| format!("row {r}: null timestep"))?;
        if step < 0 {
            return Err(format!("track {track_id}: negative timestep {step}"));
        }
        let (x, y) = match (v.x, v.y) {
            (Some(x), Some(y)) if x.is_finite() && y.is_finite() => (x, y),
            (x, y) => {
                return Err(format!(
                    "track {track_id}, timestep {step}: position ({}, {}) is not a finite number; fix or drop the row",
                    x.map_or("null".into(), |x| x.to_string()),
                    y.map_or("null".into(), |y| y.to_string())
                ))
            }
        };
        if focal_id.is_none() {
            focal_id = v.focal;
        }
        if city.is_none() {
            city = v.city;
        }
        let t = *by_id.entry(track_id.clone()).or_insert_with(|| {
            tracks.push(Track {
                id: track_id.clone(),
                object_type,
                category: category as u8,
                points: vec![None; steps],
            });
            tracks.len() - 1
        });
        let track = &mut tracks[t];
        if track.object_type != object_type || track.category != category as u8 {
            return Err(format!(
                "track {track_id} changes its object type or category at timestep {step}"
            ));
        }
        let Some(slot) = track.points.get_mut(step as usize) else {
            continue;
        };
        if slot.is_some() {
            return Err(format!("track {track_id}: timestep {step} appears twice"));
        }
        *slot = Some([x, y]);
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

/// The values of one row (None = null or not read).
#[derive(Default)]
struct RowValues {
    track_id: Option<String>,
    object_type: Option<String>,
    category: Option<i64>,
    timestep: Option<i64>,
    x: Option<f64>,
    y: Option<f64>,
    focal: Option<String>,
    city: Option<String>,
}

impl RowValues {
    fn set(&mut self, name: &str, f: &Field) -> Result<(), String> {
        match name {
            "track_id" => self.track_id = string(f)?,
            "object_type" => self.object_type = string(f)?,
            "object_category" => self.category = integer(f)?,
            "timestep" => self.timestep = integer(f)?,
            "position_x" => self.x = number(f)?,
            "position_y" => self.y = number(f)?,
            "focal_track_id" => self.focal = string(f)?,
            "city" => self.city = string(f)?,
            _ => {}
        }
        Ok(())
    }
}

fn string(f: &Field) -> Result<Option<String>, String> {
    match f {
        Field::Null => Ok(None),
        Field::Str(s) => Ok(Some(s.clone())),
        // Track ids are strings in av2; an integer column is read as its decimal text.
        other => integer(other).map(|v| v.map(|v| v.to_string())),
    }
}

fn integer(f: &Field) -> Result<Option<i64>, String> {
    Ok(Some(match f {
        Field::Null => return Ok(None),
        Field::Byte(v) => i64::from(*v),
        Field::Short(v) => i64::from(*v),
        Field::Int(v) => i64::from(*v),
        Field::Long(v) => *v,
        Field::UByte(v) => i64::from(*v),
        Field::UShort(v) => i64::from(*v),
        Field::UInt(v) => i64::from(*v),
        Field::ULong(v) => i64::try_from(*v).map_err(|_| format!("{v} is too large"))?,
        Field::Double(v) if v.fract() == 0.0 && v.abs() < 9e15 => *v as i64,
        Field::Float(v) if v.fract() == 0.0 && v.abs() < 1e7 => *v as i64,
        other => return Err(format!("expected an integer, found {other}")),
    }))
}

fn number(f: &Field) -> Result<Option<f64>, String> {
    match f {
        Field::Double(v) => Ok(Some(*v)),
        Field::Float(v) => Ok(Some(f64::from(*v))),
        other => integer(other).map(|v| v.map(|v| v as f64)),
    }
}
