//! An eval artifact's predictions files in the commands: what `pipeline show` lists of them,
//! and the pictures `pipeline report --plot` draws from them (a confusion matrix per
//! classification eval, four forecast scenes per forecasting eval).

use anyhow::{Context, Result};
use lm4ve_pipeline::{Manifest, Upstream};
use lm4ve_stages::plot::eval::{confusion_png, scenes_png, Scene};
use lm4ve_stages::train::predictions::read::{read_classification, read_forecast, summary};
use lm4ve_stages::train::predictions::scene::scene_maps;
use lm4ve_stages::train::predictions::{to_frame, FILES};
use std::path::{Path, PathBuf};

/// The predictions files of an artifact: (name, path, rows and columns or why not).
pub fn listing(m: &Manifest, manifest_path: &Path) -> Vec<serde_json::Value> {
    FILES
        .iter()
        .filter_map(|name| {
            let path = m.file_path(manifest_path, name)?;
            let mut v = serde_json::json!({"name": name, "path": path.display().to_string()});
            match summary(&path) {
                Ok(s) => {
                    v["rows"] = s.rows.into();
                    v["columns"] = s.columns.into();
                }
                Err(e) => v["error"] = format!("{e:#}").into(),
            }
            Some(v)
        })
        .collect()
}

/// `pipeline show`'s lines for [`listing`].
pub fn show_lines(m: &Manifest, manifest_path: &Path) -> Vec<String> {
    listing(m, manifest_path)
        .iter()
        .map(|v| match v["rows"].as_i64() {
            Some(rows) => format!(
                "predictions {} ({rows} rows: {}) {}",
                v["name"].as_str().unwrap_or_default(),
                v["columns"]
                    .as_array()
                    .map(|c| c
                        .iter()
                        .filter_map(|x| x.as_str())
                        .collect::<Vec<_>>()
                        .join(", "))
                    .unwrap_or_default(),
                v["path"].as_str().unwrap_or_default()
            ),
            None => format!(
                "predictions {} unreadable: {}",
                v["name"].as_str().unwrap_or_default(),
                v["error"].as_str().unwrap_or_default()
            ),
        })
        .collect()
}

/// One eval to draw: its predictions file and the data stage it scored.
pub struct EvalPlot {
    pub eval: String,
    /// The checkpoint whose predictions these are (`last`, `best`).
    pub checkpoint: String,
    pub file: PathBuf,
    pub data: Option<Upstream>,
    pub split: String,
}

/// The file name part of a stage name.
fn safe(name: &str) -> String {
    name.replace(|c: char| !c.is_ascii_alphanumeric() && c != '_', "-")
}

/// Draws each eval's pictures into `dir`; returns the files written. An eval whose file or
/// data cannot be read is reported and skipped (the rest of the report stands).
pub fn plots(dir: &Path, evals: &[EvalPlot]) -> Vec<PathBuf> {
    let mut written = Vec::new();
    for e in evals {
        match plot_one(dir, e) {
            Ok(Some(f)) => written.push(f),
            Ok(None) => {}
            Err(err) => eprintln!("{}: no predictions plot: {err:#}", e.eval),
        }
    }
    written
}

fn plot_one(dir: &Path, e: &EvalPlot) -> Result<Option<PathBuf>> {
    let columns = summary(&e.file)?.columns;
    let title = format!("{}, {} weights", e.eval, e.checkpoint);
    let (name, png) = if columns.iter().any(|c| c == "label") {
        (
            format!("confusion-{}.png", safe(&e.eval)),
            confusion(e, &title)?,
        )
    } else if columns.iter().any(|c| c == "mode") {
        match scenes(e, &title)? {
            Some(png) => (format!("scenes-{}.png", safe(&e.eval)), png),
            None => return Ok(None),
        }
    } else {
        return Ok(None);
    };
    let f = dir.join(name);
    std::fs::write(&f, png).with_context(|| format!("writing {}", f.display()))?;
    Ok(Some(f))
}

/// The confusion matrix over the data's classes (`num_classes`, names from `classes`).
fn confusion(e: &EvalPlot, title: &str) -> Result<Vec<u8>> {
    let rows = read_classification(&e.file)?;
    let meta = e.data.as_ref().map(|d| &d.manifest.meta);
    let names: Vec<String> = meta
        .and_then(|m| m.get("classes"))
        .and_then(|c| c.as_array())
        .map(|c| {
            c.iter()
                .map(|x| x.as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default();
    let seen = rows
        .iter()
        .flat_map(|r| [r.label, r.top5.first().map_or(0, |t| t.0)])
        .max()
        .map_or(0, |m| m.max(0) as usize + 1);
    let declared = meta
        .and_then(|m| m.get("num_classes"))
        .and_then(|n| n.as_u64())
        .unwrap_or(0) as usize;
    let c = seen.max(declared).max(names.len()).max(1);
    let mut counts = vec![vec![0u64; c]; c];
    for r in &rows {
        let pred = r.top5.first().map_or(-1, |t| t.0);
        if let (Ok(t), Ok(p)) = (usize::try_from(r.label), usize::try_from(pred)) {
            counts[t.min(c - 1)][p.min(c - 1)] += 1;
        }
    }
    let right: u64 = (0..c).map(|i| counts[i][i]).sum();
    let title = format!(
        "{title}: top-1 {:.1}% of {}",
        100.0 * right as f64 / rows.len().max(1) as f64,
        rows.len()
    );
    confusion_png(&title, &names, &counts)
}

/// Four scenes spread over the split, in the agent's frame, over the lanes of the data
/// stage's shards. None when the data stage is not built.
fn scenes(e: &EvalPlot, title: &str) -> Result<Option<Vec<u8>>> {
    let Some(up) = &e.data else {
        return Ok(None);
    };
    let rows = read_forecast(&e.file)?;
    if rows.is_empty() {
        return Ok(None);
    }
    let n = rows.len();
    let mut picks: Vec<usize> = (0..4).map(|j| j * n / 4).collect();
    picks.dedup();
    let which: Vec<usize> = picks
        .iter()
        .map(|&i| rows[i].sample.max(0) as usize)
        .collect();
    let maps = scene_maps(up, &e.split, &which)?;
    let drawn: Vec<Scene> = picks
        .iter()
        .zip(maps)
        .map(|(&i, map)| {
            let r = &rows[i];
            let local = |xs: &[f64], ys: &[f64]| -> Vec<(f64, f64)> {
                xs.iter()
                    .zip(ys)
                    .map(|(&x, &y)| {
                        let p = to_frame(map.frame, [x, y]);
                        (p[0], p[1])
                    })
                    .collect()
            };
            Scene {
                title: format!("scenario {} (sample {})", r.scenario_id, r.sample),
                history: map.history,
                truth: r.truth.as_ref().map(|(x, y)| local(x, y)),
                modes: r
                    .modes
                    .iter()
                    .map(|m| (m.probability, local(&m.x, &m.y)))
                    .collect(),
                lanes: map.lanes,
            }
        })
        .collect();
    Ok(Some(scenes_png(title, &drawn)?))
}
