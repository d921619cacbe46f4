//! Stage `pc.tokens`: point clouds (ScanObjectNN h5 or raw .bin, or LAS/LAZ scans) →
//! PointBERT tokens: FPS to `num_points`, `num_groups` FPS centers, `group_size` nearest
//! neighbours per center expressed relative to it (PAPER.md §3). One unit = one shard.

use super::bin::{for_each_split_entry, read_bin_cloud};
use super::geometry::{keep_points, normalize_unit_sphere, tokenize, Point};
use super::h5::H5Clouds;
use super::las::{read_labels_csv, read_las_cloud};
use anyhow::{Context, Result};
use lm4ve_pipeline::shard::{Dtype, Field, Schema, ShardWriter};
use lm4ve_pipeline::{
    ConfigError, FileList, InputSpec, PipelineConfig, Stage, StageConfig, StageCtx, UnitOutput,
    UnitPlan, UnitRecord,
};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

mod build;
pub use build::build;

pub const KIND: &str = "pc.tokens";
/// Bump when the bytes of the shards would change for the same inputs and params.
/// 2: `normalize` (h5 clouds as they are, as the reference) and the kept `points` field.
pub const VERSION: u32 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// ScanObjectNN h5 files (`data` [N,P,3], `label` [N]).
    H5,
    /// ScanObjectNN raw objects: `root/<category>/<file>.bin` listed in a split file.
    Bin,
    /// LAS/LAZ scans listed in a `labels.csv`.
    Las,
}

/// `[stages.NAME.params]` of a `pc.tokens` stage.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PcParams {
    pub format: Format,
    /// h5: the training file (e.g. main_split/training_objectdataset.h5).
    #[serde(skip_serializing)]
    pub train: Option<PathBuf>,
    /// h5: the test file.
    #[serde(skip_serializing)]
    pub test: Option<PathBuf>,
    /// bin: the object_dataset directory.
    #[serde(skip_serializing)]
    pub root: Option<PathBuf>,
    /// bin: split_new.txt (`file<TAB>category<TAB>t-for-test`).
    #[serde(skip_serializing)]
    pub split: Option<PathBuf>,
    /// las: labels.csv (`file,label[,split]`, files relative to the csv).
    #[serde(skip_serializing)]
    pub labels: Option<PathBuf>,
    /// Normalize every cloud to the unit sphere before sampling. Unset: off for h5 (the
    /// reference feeds ScanObjectNN's coordinates as they are: re-centering PB_T50_RS would
    /// undo its translation perturbation), on for bin and LAS (raw, georeferenced scans).
    /// Resolved at config time, so the key says what was done.
    pub normalize: Option<bool>,
    pub num_points: usize,
    pub num_groups: usize,
    pub group_size: usize,
    /// Raw points kept per cloud (field `points` [keep_points, 3]) for the trainer's per-step
    /// resampling and test-time voting (Point-BERT's recipe); 0 keeps none. ScanObjectNN
    /// clouds have 2048 points and are kept as they are; larger clouds are FPS'd down,
    /// smaller ones repeat their points.
    pub keep_points: usize,
    pub shard_samples: usize,
    /// 1, not zstd's default 3: float tokens barely compress, and what they do gain is
    /// Huffman-coded literals, no matches. Level 3 saves 9.2% of the raw bytes for ~0.25 ms
    /// of CPU a cloud (a quarter of the stage), level 1 8.5% for ~0.1 ms; the fast levels
    /// (-1..=-7) store them raw (BENCHMARKS.md, pc_tokens, "zstd level").
    pub zstd_level: i32,
}

impl Default for PcParams {
    fn default() -> Self {
        PcParams {
            format: Format::H5,
            train: None,
            test: None,
            root: None,
            split: None,
            labels: None,
            normalize: None,
            num_points: 1024,
            num_groups: 64,
            group_size: 32,
            keep_points: 2048,
            shard_samples: 256,
            zstd_level: 1,
        }
    }
}

/// Where the clouds of one split come from.
#[derive(Debug, Clone)]
enum Source {
    H5 {
        path: PathBuf,
    },
    /// Files below `root` (`names` is shared with the stage's input declaration): per
    /// sample, the index of its name and its label. No path per file: at 200,000 objects
    /// those were a third of a no-op run's memory.
    Files {
        root: PathBuf,
        names: Arc<FileList>,
        entries: Vec<(u32, i64)>,
    },
}

#[derive(Debug, Clone)]
struct Split {
    name: &'static str,
    source: Source,
}

pub struct PcTokensStage {
    params: PcParams,
    splits: Vec<Split>,
    inputs: Vec<InputSpec>,
    /// Class names when labels were names (LAS); index = label id.
    classes: Option<Vec<String>>,
    /// Samples per split, filled by `plan` (h5 needs its header read).
    counts: OnceLock<Vec<usize>>,
}

impl PcTokensStage {
    fn counts(&self) -> Result<&Vec<usize>> {
        if let Some(c) = self.counts.get() {
            return Ok(c);
        }
        let mut counts = Vec::new();
        for split in &self.splits {
            counts.push(match &split.source {
                Source::H5 { path } => {
                    let clouds = H5Clouds::open(path)?;
                    if clouds.points_per_cloud() < self.params.num_points {
                        anyhow::bail!(
                            "{}: clouds have {} points, fewer than num_points = {}; lower num_points in the config",
                            path.display(),
                            clouds.points_per_cloud(),
                            self.params.num_points
                        );
                    }
                    clouds.len()
                }
                Source::Files { entries, .. } => entries.len(),
            });
        }
        Ok(self.counts.get_or_init(|| counts))
    }

    fn unit_range(&self, unit: &str) -> Result<(usize, std::ops::Range<usize>)> {
        let (split, index) = unit
            .rsplit_once('-')
            .and_then(|(s, i)| Some((s, i.parse::<usize>().ok()?)))
            .with_context(|| format!("malformed unit id `{unit}`"))?;
        let si = self
            .splits
            .iter()
            .position(|s| s.name == split)
            .with_context(|| format!("unit `{unit}` names no split"))?;
        let n = self.counts()?[si];
        let start = index * self.params.shard_samples;
        Ok((si, start..(start + self.params.shard_samples).min(n)))
    }

    fn tokenize_bytes(&self, points: &[Point], label: i64) -> std::result::Result<Vec<u8>, String> {
        let p = &self.params;
        let normalize = p.normalize.unwrap_or(true);
        let t = tokenize(points, normalize, p.num_points, p.num_groups, p.group_size)
            .map_err(|e| e.to_string())?;
        if !t
            .centers
            .iter()
            .chain(&t.neighborhoods)
            .all(|v| v.is_finite())
        {
            return Err(
                "the tokens are not finite (coordinates too large or too spread out); fix the cloud"
                    .into(),
            );
        }
        // The sample's fields laid end to end, written once into the buffer zstd reads
        // (not one `Vec` per field, then their concatenation).
        let schema = self.schema_fields();
        let mut raw = Vec::with_capacity(schema.iter().map(|f| f.byte_len()).sum());
        let mut lens = Vec::with_capacity(schema.len());
        let mut field = |raw: &mut Vec<u8>, put: &dyn Fn(&mut Vec<u8>)| {
            let start = raw.len();
            put(raw);
            lens.push(raw.len() - start);
        };
        field(&mut raw, &|r| push_f32s(r, &t.centers));
        field(&mut raw, &|r| push_f32s(r, &t.neighborhoods));
        field(&mut raw, &|r| r.extend_from_slice(&label.to_le_bytes()));
        if p.keep_points > 0 {
            // The same coordinates the tokens were made from (tokenize checked them); a
            // cloud of exactly keep_points points is kept as it is, without a copy.
            let normalized;
            let pts: &[Point] = if normalize {
                let mut v = points.to_vec();
                normalize_unit_sphere(&mut v);
                normalized = v;
                &normalized
            } else {
                points
            };
            if pts.len() == p.keep_points {
                field(&mut raw, &|r| push_f32s(r, pts.as_flattened()));
            } else {
                let kept = keep_points(pts, p.keep_points);
                field(&mut raw, &|r| push_f32s(r, kept.as_flattened()));
            }
        }
        let sizes_ok =
            lens.len() == schema.len() && schema.iter().zip(&lens).all(|(f, &n)| f.byte_len() == n);
        if !sizes_ok {
            return Err(format!(
                "internal: sample fields of {lens:?} bytes do not match the schema; please report"
            ));
        }
        compress_reusing_context(&raw, p.zstd_level)
    }

    /// The sample of one loaded cloud, or why it is rejected.
    fn encode(&self, l: &Loaded) -> Encoded {
        match &l.cloud {
            Ok((label, points)) => check_label(*label)
                .and_then(|()| check_magnitude(points))
                .and_then(|()| self.tokenize_bytes(points, *label))
                .map(|b| (*label, b)),
            Err(e) => Err(e.clone()),
        }
    }

    /// Clouds `range` of an h5 file, read piece by piece (`H5Clouds::piece_len`), each piece
    /// tokenized by the pool while the next is read: the read (inflate, under libhdf5's
    /// global lock) is serial, and reading the whole unit first left the other cores idle
    /// meanwhile. A file that cannot be read fails the unit (the input as a whole is
    /// wrong); single bad clouds in it are rejected by `encode`.
    fn read_and_encode_h5(
        &self,
        path: &Path,
        range: std::ops::Range<usize>,
    ) -> Result<(Vec<Loaded>, Vec<Encoded>)> {
        let clouds = H5Clouds::open(path)?;
        let piece = clouds.piece_len();
        let file = path.display().to_string();
        // Piece boundaries at multiples of `piece` in the file, so pieces match its chunks.
        let mut pieces = Vec::new();
        let mut start = range.start;
        while start < range.end {
            let end = ((start / piece + 1) * piece).min(range.end);
            pieces.push(start..end);
            start = end;
        }
        type Slot = std::sync::Mutex<Option<(Vec<Loaded>, Vec<Encoded>)>>;
        let slots: Vec<Slot> = pieces.iter().map(|_| Default::default()).collect();
        rayon::scope(|s| -> Result<()> {
            for (piece, slot) in pieces.iter().zip(&slots) {
                let read = clouds.read_range(piece.start, piece.end)?;
                let loaded: Vec<Loaded> = read
                    .into_iter()
                    .zip(piece.clone())
                    .map(|(cloud, i)| Loaded {
                        file: file.clone(),
                        sample: format!("index {i}"),
                        cloud: Ok(cloud),
                    })
                    .collect();
                s.spawn(move |_| {
                    let encoded = loaded.par_iter().map(|l| self.encode(l)).collect();
                    if let Ok(mut slot) = slot.lock() {
                        *slot = Some((loaded, encoded));
                    }
                });
            }
            Ok(())
        })?;
        let (mut loaded, mut encoded) = (Vec::new(), Vec::new());
        for slot in slots {
            let done = slot.into_inner().ok().flatten();
            // Every spawned piece has finished when the scope returns.
            let (l, e) = done.context("internal: a piece of the unit was not tokenized")?;
            loaded.extend(l);
            encoded.extend(e);
        }
        Ok((loaded, encoded))
    }

    fn schema_fields(&self) -> Schema {
        let p = &self.params;
        vec![
            Field::new("centers", Dtype::Float32, &[p.num_groups, 3]),
            Field::new(
                "neighborhoods",
                Dtype::Float32,
                &[p.num_groups, p.group_size, 3],
            ),
            Field::new("label", Dtype::Int64, &[]),
        ]
        .into_iter()
        .chain(
            (p.keep_points > 0).then(|| Field::new("points", Dtype::Float32, &[p.keep_points, 3])),
        )
        .collect()
    }
}

/// The most points a cloud may be sampled to or keep, and the most samples in a shard.
pub const MAX_POINTS: usize = 1 << 20;

/// The largest class id a sample may carry: class tables are indexed by it downstream
/// (ImageNet-21k has 21 841 classes; ScanObjectNN 15).
pub const MAX_LABEL: i64 = 100_000;

/// The largest coordinate magnitude accepted (before normalization): far beyond any scan in
/// metres, yet small enough that squares and sums stay finite in f32.
pub const MAX_COORD: f32 = 1e9;

fn check_label(label: i64) -> std::result::Result<(), String> {
    if (0..=MAX_LABEL).contains(&label) {
        Ok(())
    } else {
        Err(format!(
            "label {label} is out of range: class ids are 0 to {MAX_LABEL}; fix the label in the source file"
        ))
    }
}

fn check_magnitude(points: &[Point]) -> std::result::Result<(), String> {
    match points
        .iter()
        .position(|p| p.iter().any(|c| c.is_finite() && c.abs() > MAX_COORD))
    {
        Some(i) => Err(format!(
            "point {i} has a coordinate of magnitude over {MAX_COORD:e} ({:?}); the tokens would overflow: fix or drop that point",
            points[i]
        )),
        None => Ok(()),
    }
}

thread_local! {
    /// One zstd context per worker thread and level: `encode_sample` makes (and zeroes) a
    /// fresh one per sample, a few percent of a cloud's time.
    static ZSTD: std::cell::RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { std::cell::RefCell::new(None) };
}

/// `encode_sample`'s frame with a reused compression context. The bytes are the same:
/// `zstd::bulk::compress` is `Compressor::new(level)?.compress(data)`, and a context's
/// parameters stay as set while each `compress` starts a new frame (tested below). The
/// stage lays its fields out itself and calls `compress_reusing_context`; this is the
/// tests' bridge between the two.
#[cfg(test)]
fn encode_reusing_context(
    schema: &Schema,
    fields: &[&[u8]],
    level: i32,
) -> std::result::Result<Vec<u8>, String> {
    let sizes_ok = fields.len() == schema.len()
        && schema
            .iter()
            .zip(fields)
            .all(|(f, b)| f.byte_len() == b.len());
    if !sizes_ok {
        // Never expected; let `encode_sample` name the field that is off.
        return lm4ve_pipeline::shard::encode_sample(schema, fields, level)
            .map_err(|e| e.to_string());
    }
    compress_reusing_context(&fields.concat(), level)
}

/// zstd frame of `raw` (a sample's fields laid end to end, as `encode_sample` lays them)
/// with this thread's reused context.
fn compress_reusing_context(raw: &[u8], level: i32) -> std::result::Result<Vec<u8>, String> {
    ZSTD.with_borrow_mut(|slot| {
        if slot.as_ref().is_none_or(|(l, _)| *l != level) {
            let c = zstd::bulk::Compressor::new(level).map_err(|e| format!("zstd: {e}"))?;
            *slot = Some((level, c));
        }
        match slot {
            Some((_, c)) => c.compress(raw).map_err(|e| format!("zstd: {e}")),
            None => Err("zstd: no compression context".into()),
        }
    })
}

/// Appends `v` as little-endian f32s. Writing into a sized slice lets LLVM copy whole
/// vectors; an iterator of 4-byte arrays went byte by byte.
fn push_f32s(out: &mut Vec<u8>, v: &[f32]) {
    let start = out.len();
    out.resize(start + 4 * v.len(), 0);
    for (dst, x) in out[start..].chunks_exact_mut(4).zip(v) {
        dst.copy_from_slice(&x.to_le_bytes());
    }
}

#[cfg(test)]
fn f32_bytes(v: &[f32]) -> Vec<u8> {
    let mut out = Vec::new();
    push_f32s(&mut out, v);
    out
}

/// A cloud's (label, sample frame), or why it is rejected.
type Encoded = std::result::Result<(i64, Vec<u8>), String>;

/// One cloud of a unit: where it came from, and its label + points or why it is unreadable.
struct Loaded {
    file: String,
    sample: String,
    cloud: std::result::Result<(i64, Vec<Point>), String>,
}

impl Stage for PcTokensStage {
    fn kind(&self) -> &str {
        KIND
    }
    fn version(&self) -> u32 {
        VERSION
    }
    fn key_params(&self) -> serde_json::Value {
        // The whole params struct (paths are keyed by their content, as inputs), plus what
        // the inputs decided: the splits present and the class table.
        crate::keyed::params_key(
            &self.params,
            [
                (
                    "splits",
                    serde_json::json!(self.splits.iter().map(|s| s.name).collect::<Vec<_>>()),
                ),
                ("classes", serde_json::json!(self.classes)),
            ],
        )
    }
    fn inputs(&self) -> Vec<InputSpec> {
        self.inputs.clone()
    }
    fn schema(&self) -> Option<Schema> {
        Some(self.schema_fields())
    }

    fn plan(&self, _ctx: &StageCtx) -> Result<Vec<UnitPlan>> {
        let counts = self.counts()?;
        let mut units = Vec::new();
        for (split, n) in self.splits.iter().zip(counts) {
            for (i, start) in (0..*n).step_by(self.params.shard_samples).enumerate() {
                units.push(UnitPlan {
                    id: format!("{}-{i:05}", split.name),
                    work: ((start + self.params.shard_samples).min(*n) - start) as u64,
                });
            }
        }
        Ok(units)
    }

    fn run_unit(&self, _ctx: &StageCtx, unit: &UnitPlan, out: &mut UnitOutput) -> Result<()> {
        let (si, range) = self.unit_range(&unit.id)?;
        let split = &self.splits[si];
        let (loaded, encoded): (Vec<Loaded>, Vec<Encoded>) = match &split.source {
            Source::H5 { path } => self.read_and_encode_h5(path, range)?,
            Source::Files {
                root,
                names,
                entries,
            } => {
                let loaded: Vec<Loaded> = entries[range.clone()]
                    .par_iter()
                    .map(|(i, label)| {
                        let path = &root.join(names.get(*i as usize).unwrap_or_default());
                        let is_bin = path.extension().is_some_and(|e| e == "bin");
                        let cloud = if is_bin {
                            read_bin_cloud(path).map_err(|e| e.to_string())
                        } else {
                            read_las_cloud(path).map_err(|e| e.to_string())
                        };
                        Loaded {
                            file: path.display().to_string(),
                            sample: "whole file".into(),
                            cloud: cloud.map(|c| (*label, c)),
                        }
                    })
                    .collect();
                let encoded = loaded.par_iter().map(|l| self.encode(l)).collect();
                (loaded, encoded)
            }
        };
        let mut writer = ShardWriter::new(self.schema_fields());
        let mut labels: BTreeMap<i64, u64> = BTreeMap::new();
        for (l, enc) in loaded.iter().zip(encoded) {
            match enc {
                Ok((label, frame)) => {
                    *labels.entry(label).or_insert(0) += 1;
                    writer.push_encoded(frame);
                }
                Err(reason) => out.reject(&l.file, &l.sample, &reason),
            }
        }
        let n = writer.len() as u64;
        if n > 0 {
            out.add_shard(split.name, n, &writer.finish())?;
        }
        out.set_meta(serde_json::json!({ "labels": labels }));
        Ok(())
    }

    fn finish(&self, _ctx: &StageCtx, units: &[UnitRecord]) -> Result<serde_json::Value> {
        let mut counts: BTreeMap<i64, u64> = BTreeMap::new();
        for u in units {
            if let Some(map) = u.meta.get("labels").and_then(|v| v.as_object()) {
                for (k, v) in map {
                    if let (Ok(k), Some(v)) = (k.parse::<i64>(), v.as_u64()) {
                        *counts.entry(k).or_insert(0) += v;
                    }
                }
            }
        }
        let num_classes = counts.keys().next_back().map(|m| m + 1).unwrap_or(0);
        Ok(serde_json::json!({
            "num_points": self.params.num_points,
            "num_classes": num_classes,
            "label_counts": counts,
            "classes": self.classes,
        }))
    }
}

#[cfg(test)]
mod encode_tests {
    use super::*;
    use lm4ve_pipeline::shard::encode_sample;

    /// The reused context gives `encode_sample`'s bytes, sample after sample and across a
    /// level change.
    #[test]
    fn reused_zstd_context_gives_encode_samples_bytes() {
        let schema = vec![
            Field::new("a", Dtype::Float32, &[300, 3]),
            Field::new("b", Dtype::Int64, &[]),
        ];
        // -1 and -7: the fast levels (blocks stored raw), then back to a normal level.
        for (i, level) in [3, 3, 1, 3, 19, -1, -7, 3].into_iter().enumerate() {
            let a: Vec<f32> = (0..900)
                .map(|k| ((k * 7 + i * 13) % 101) as f32 * 0.37)
                .collect();
            let a = f32_bytes(&a);
            let b = (i as i64).to_le_bytes();
            let fields: [&[u8]; 2] = [&a, &b];
            let frame = encode_reusing_context(&schema, &fields, level).unwrap();
            assert_eq!(
                frame,
                encode_sample(&schema, &fields, level).unwrap(),
                "sample {i}, level {level}"
            );
            let raw = zstd::bulk::decompress(&frame, a.len() + b.len()).unwrap();
            assert_eq!(raw, [&a[..], &b[..]].concat(), "sample {i}, level {level}");
        }
        let short: [&[u8]; 2] = [&[0u8; 4], &[0u8; 8]];
        assert!(encode_reusing_context(&schema, &short, 3).is_err());
    }
}

#[cfg(test)]
mod key_tests {
    /// Every param enters the key (derived from the struct, so none can be forgotten);
    /// paths do not (their files do, by content).
    #[test]
    fn every_param_changes_the_key() {
        crate::keyed::assert_every_field_keys::<super::PcParams>(&[
            "train", "test", "root", "split", "labels",
        ]);
    }
}
