//! Reading predictions files back: the footer's row count and columns (`pipeline show`), and
//! the rows as the writers took them (the tests, `pipeline report --plot`).

use super::{ClassRow, ForecastRow, Mode};
use anyhow::{bail, Context, Result};
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::Field;
use std::path::Path;

/// What a file's footer says: rows and column names.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub rows: i64,
    pub columns: Vec<String>,
}

fn open(path: &Path) -> Result<SerializedFileReader<std::fs::File>> {
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    SerializedFileReader::new(f)
        .with_context(|| format!("{} is not a readable parquet file", path.display()))
}

/// The row count and top-level columns of a predictions file.
pub fn summary(path: &Path) -> Result<Summary> {
    let r = open(path)?;
    let meta = r.metadata().file_metadata();
    Ok(Summary {
        rows: meta.num_rows(),
        columns: meta
            .schema_descr()
            .root_schema()
            .get_fields()
            .iter()
            .map(|f| f.name().to_string())
            .collect(),
    })
}

/// Every row as (column, value) pairs.
fn rows(path: &Path) -> Result<Vec<Vec<(String, Field)>>> {
    let r = open(path)?;
    let iter = r
        .get_row_iter(None)
        .with_context(|| format!("reading {}", path.display()))?;
    let mut out = Vec::new();
    for row in iter {
        let row = row.with_context(|| format!("reading {}", path.display()))?;
        out.push(
            row.get_column_iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        );
    }
    Ok(out)
}

fn get<'a>(row: &'a [(String, Field)], name: &str) -> Result<&'a Field> {
    row.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
        .with_context(|| format!("predictions file has no column `{name}`"))
}

fn long(f: &Field) -> Result<i64> {
    match f {
        Field::Long(x) => Ok(*x),
        Field::Int(x) => Ok(i64::from(*x)),
        f => bail!("expected an integer, found {f}"),
    }
}

fn float(f: &Field) -> Result<f64> {
    match f {
        Field::Double(x) => Ok(*x),
        Field::Float(x) => Ok(f64::from(*x)),
        f => bail!("expected a number, found {f}"),
    }
}

fn text(f: &Field) -> Result<String> {
    match f {
        Field::Str(s) => Ok(s.clone()),
        f => bail!("expected a string, found {f}"),
    }
}

/// A list column's elements; None for a null list.
fn list<T>(f: &Field, each: fn(&Field) -> Result<T>) -> Result<Option<Vec<T>>> {
    match f {
        Field::Null => Ok(None),
        Field::ListInternal(l) => Ok(Some(l.elements().iter().map(each).collect::<Result<_>>()?)),
        f => bail!("expected a list, found {f}"),
    }
}

/// A classification file's rows.
pub fn read_classification(path: &Path) -> Result<Vec<ClassRow>> {
    rows(path)?
        .iter()
        .map(|r| {
            let classes = list(get(r, "top5_class")?, long)?.unwrap_or_default();
            let probs = list(get(r, "top5_prob")?, float)?.unwrap_or_default();
            Ok(ClassRow {
                sample: long(get(r, "sample")?)?,
                label: long(get(r, "label")?)?,
                top5: classes
                    .into_iter()
                    .zip(probs)
                    .map(|(c, p)| (c, p as f32))
                    .collect(),
                id: match get(r, "id") {
                    Ok(f) => Some(text(f)?),
                    Err(_) => None,
                },
            })
        })
        .collect()
}

/// A forecasting file's scenes: consecutive rows of one sample are its modes.
pub fn read_forecast(path: &Path) -> Result<Vec<ForecastRow>> {
    let mut scenes: Vec<ForecastRow> = Vec::new();
    for r in rows(path)? {
        let sample = long(get(&r, "sample")?)?;
        let mode = Mode {
            probability: float(get(&r, "probability")?)?,
            x: list(get(&r, "predicted_trajectory_x")?, float)?.unwrap_or_default(),
            y: list(get(&r, "predicted_trajectory_y")?, float)?.unwrap_or_default(),
        };
        match scenes.last_mut() {
            Some(s) if s.sample == sample => s.modes.push(mode),
            _ => {
                let tx = list(get(&r, "truth_x")?, float)?;
                let ty = list(get(&r, "truth_y")?, float)?;
                scenes.push(ForecastRow {
                    sample,
                    scenario_id: text(get(&r, "scenario_id")?)?,
                    track_id: text(get(&r, "track_id")?)?,
                    modes: vec![mode],
                    truth: tx.zip(ty),
                });
            }
        }
    }
    Ok(scenes)
}
