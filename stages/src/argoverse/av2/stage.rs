//! Stage `av2.tokens`: Argoverse 2 motion-forecasting scenarios as released
//! (`<split>/<scenario_id>/scenario_<scenario_id>.parquet` and
//! `log_map_archive_<scenario_id>.json`) → VectorNet polyline tokens, the `av.tokens`
//! contract with AV2's sizes and extras ([`super::vectorize`], SHARDS.md). One unit =
//! `shard_samples` scenario folders of one split = one shard.
//!
//! Why this shape: each scenario carries its own map, so a scenario is read, vectorized and
//! encoded independently (in parallel, collected in folder order: the bytes do not depend
//! on the thread count); both of its files are inputs, so an unchanged dataset is
//! re-checked by `stat` alone. A bad scenario is a named reject; a missing split folder
//! fails the config.

use super::map::parse_map;
use super::scenario::read_scenario;
use super::vectorize::{vectorize, VecParams, Vectorized, ACTOR_FEATURES, LANE_FEATURES};
use crate::shard_params::shard_param_problem;
use anyhow::{Context, Result};
use lm4ve_pipeline::shard::{encode_sample, Dtype, Field, Schema, ShardWriter};
use lm4ve_pipeline::{
    ConfigError, InputSpec, PipelineConfig, Stage, StageConfig, StageCtx, UnitOutput, UnitPlan,
    UnitRecord,
};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const KIND: &str = "av2.tokens";
/// Bump when the bytes of the shards would change for the same inputs and params.
/// 2: the `focal_track_id` field (a submission names the focal track); scenario ids must be
/// lowercase, so the stored bytes give back the exact id string.
pub const VERSION: u32 = 2;
/// Bytes of the `focal_track_id` field (NUL-padded UTF-8; AV2's ids are short decimal
/// strings or `AV`).
pub const TRACK_ID_BYTES: usize = 64;
/// The split names, in unit order; `test` has no futures.
pub const SPLITS: [&str; 3] = ["train", "val", "test"];

/// `[stages.NAME.params]` of an `av2.tokens` stage.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Av2Params {
    /// Folder of scenario folders (AV2 `train/`).
    #[serde(skip_serializing)]
    pub train: Option<PathBuf>,
    /// AV2 `val/`.
    #[serde(skip_serializing)]
    pub val: Option<PathBuf>,
    /// AV2 `test/` (no futures: samples without a target).
    #[serde(skip_serializing)]
    pub test: Option<PathBuf>,
    pub obs_steps: usize,
    pub pred_steps: usize,
    pub radius: f64,
    pub max_actors: usize,
    pub max_lanes: usize,
    pub lane_points: usize,
    pub shard_samples: usize,
    pub zstd_level: i32,
}

impl Default for Av2Params {
    fn default() -> Self {
        Av2Params {
            train: None,
            val: None,
            test: None,
            // AV2: 110 steps at 10 Hz, 5 s observed, 6 s to predict.
            obs_steps: 50,
            pred_steps: 60,
            radius: 100.0,
            max_actors: 64,
            // A scenario's map is local (tens to a few hundred lanes and crossing edges).
            max_lanes: 256,
            lane_points: 10,
            shard_samples: 256,
            zstd_level: 1,
        }
    }
}

/// The largest count param (actors, lanes, points, steps, samples per shard).
const MAX_SIZE_PARAM: usize = 1 << 16;

struct Split {
    name: &'static str,
    /// Scenario folders, by name.
    scenarios: Vec<PathBuf>,
}

pub struct Av2TokensStage {
    params: Av2Params,
    vec: VecParams,
    schema: Schema,
    splits: Vec<Split>,
    inputs: Vec<InputSpec>,
}

/// The vectorization sizes of the params (shared with the forecast task's shape).
pub fn vec_params(p: &Av2Params) -> VecParams {
    VecParams {
        obs_steps: p.obs_steps,
        pred_steps: p.pred_steps,
        radius: p.radius,
        max_actors: p.max_actors,
        max_lanes: p.max_lanes,
        lane_points: p.lane_points,
    }
}

pub fn build(config: &PipelineConfig, sc: &StageConfig) -> Result<Box<dyn Stage>, ConfigError> {
    let params: Av2Params = config.typed_params(sc)?;
    let err = |key: &str, msg: String| config.param_error(&sc.name, Some(key), msg);
    let p = &params;
    if p.obs_steps < 2 {
        return Err(err(
            "obs_steps",
            format!(
                "obs_steps = {} is too small: the heading needs 2 observed steps",
                p.obs_steps
            ),
        ));
    }
    for (key, v, min) in [
        ("pred_steps", p.pred_steps, 1),
        ("max_actors", p.max_actors, 1),
        ("max_lanes", p.max_lanes, 1),
        ("lane_points", p.lane_points, 2),
        ("shard_samples", p.shard_samples, 1),
    ] {
        if v < min {
            return Err(err(key, format!("{key} = {v} must be at least {min}")));
        }
    }
    for (key, v) in [
        ("max_actors", p.max_actors),
        ("max_lanes", p.max_lanes),
        ("lane_points", p.lane_points),
        ("obs_steps", p.obs_steps),
        ("pred_steps", p.pred_steps),
        ("shard_samples", p.shard_samples),
    ] {
        if v > MAX_SIZE_PARAM {
            return Err(err(
                key,
                format!("{key} = {v} is over {MAX_SIZE_PARAM}; lower it"),
            ));
        }
    }
    if !(p.radius.is_finite() && p.radius > 0.0) {
        return Err(err(
            "radius",
            format!("radius = {} must be a positive number of metres", p.radius),
        ));
    }
    if let Some((key, msg)) = shard_param_problem(p.shard_samples, p.zstd_level) {
        return Err(err(key, msg));
    }
    let vec = vec_params(p);
    let schema = schema_for(&vec);
    let bytes: usize = schema
        .iter()
        .map(|f| f.checked_byte_len().unwrap_or(usize::MAX))
        .fold(0, usize::saturating_add);
    if bytes > lm4ve_pipeline::shard::MAX_STAGE_SAMPLE_BYTES {
        return Err(err(
            "max_lanes",
            format!(
                "max_actors = {}, max_lanes = {}, lane_points = {}, obs_steps = {}, pred_steps = {} make a sample over {} MiB; lower them",
                p.max_actors, p.max_lanes, p.lane_points, p.obs_steps, p.pred_steps,
                lm4ve_pipeline::shard::MAX_STAGE_SAMPLE_BYTES >> 20
            ),
        ));
    }
    let mut splits = Vec::new();
    let mut inputs = Vec::new();
    for (name, folder) in SPLITS.into_iter().zip([&p.train, &p.val, &p.test]) {
        let Some(folder) = folder else { continue };
        let dir = config.resolve(folder);
        let scenarios = list_scenarios(&dir)
            .map_err(|e| config.missing_input_error(&sc.name, Some(name), &dir, e))?;
        let mut files = Vec::with_capacity(scenarios.len() * 2);
        for s in &scenarios {
            let id = file_name(s);
            for f in [scenario_file(s), map_file(s)] {
                // A missing file is the scenario's reject, not the config's error.
                if f.is_file() {
                    let rel = format!("{id}/{}", file_name(&f));
                    files.push((f, rel));
                }
            }
        }
        // One listed declaration per split (a per-file one cost ~150 bytes a file per run).
        inputs.extend(InputSpec::files_below(name, &dir, files));
        splits.push(Split { name, scenarios });
    }
    if splits.is_empty() {
        return Err(err(
            "train",
            "no scenarios: set `train`, `val` and/or `test` (folders of AV2 scenario folders)"
                .into(),
        ));
    }
    Ok(Box::new(Av2TokensStage {
        params,
        vec,
        schema,
        splits,
        inputs,
    }))
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

pub fn scenario_file(dir: &Path) -> PathBuf {
    dir.join(format!("scenario_{}.parquet", file_name(dir)))
}

pub fn map_file(dir: &Path) -> PathBuf {
    dir.join(format!("log_map_archive_{}.json", file_name(dir)))
}

/// The scenario folders directly in `dir`, by name.
pub fn list_scenarios(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        format!(
            "scenario folder {}: {e}; point it at AV2's <split>/ (paths are relative to the config file)",
            dir.display()
        )
    })?;
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| format!("{}: {e}", dir.display()))?;
        if entry.path().is_dir() {
            out.push(entry.path());
        }
    }
    if out.is_empty() {
        return Err(format!(
            "{} has no scenario folders (<scenario_id>/scenario_<scenario_id>.parquet)",
            dir.display()
        ));
    }
    out.sort();
    Ok(out)
}

/// A scenario id as AV2 names them (a lowercase UUID) → its 16 bytes. Uppercase hex is
/// refused: [`uuid_string`] gives back the lowercase form, and a submission must carry the
/// exact id string the challenge knows.
pub fn uuid_bytes(id: &str) -> Option<[u8; 16]> {
    let b = id.as_bytes();
    if b.len() != 36 || [8, 13, 18, 23].iter().any(|&i| b[i] != b'-') {
        return None;
    }
    if b.iter().any(u8::is_ascii_uppercase) {
        return None;
    }
    let hex: Vec<u8> = b.iter().copied().filter(|c| *c != b'-').collect();
    let mut out = [0u8; 16];
    for (i, pair) in hex.chunks(2).enumerate() {
        let s = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(s, 16).ok()?;
    }
    Some(out)
}

/// The `scenario_id` field's 16 bytes → the scenario id string (`8-4-4-4-12` lowercase hex),
/// the inverse of [`uuid_bytes`].
pub fn uuid_string(b: &[u8; 16]) -> String {
    let mut s = String::with_capacity(36);
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        s.push_str(&format!("{byte:02x}"));
    }
    s
}

/// A track id → the `focal_track_id` field's bytes (UTF-8, NUL-padded). None when it does not
/// fit or holds a NUL (the padding could not be told from the id).
pub fn track_id_bytes(id: &str) -> Option<[u8; TRACK_ID_BYTES]> {
    let b = id.as_bytes();
    if b.is_empty() || b.len() > TRACK_ID_BYTES || b.contains(&0) {
        return None;
    }
    let mut out = [0u8; TRACK_ID_BYTES];
    out[..b.len()].copy_from_slice(b);
    Some(out)
}

/// The `focal_track_id` field's bytes → the track id (up to the first NUL). None when the
/// bytes are not UTF-8.
pub fn track_id_string(b: &[u8]) -> Option<String> {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    std::str::from_utf8(&b[..end]).ok().map(str::to_string)
}

/// The sample layout (SHARDS.md, `av2.tokens`).
pub fn schema_for(p: &VecParams) -> Schema {
    let (a, ps) = (p.max_actors, p.pred_steps);
    vec![
        Field::new(
            "actors",
            Dtype::Float32,
            &[a, p.obs_steps - 1, ACTOR_FEATURES],
        ),
        Field::new("actor_mask", Dtype::Uint8, &[a]),
        Field::new(
            "lanes",
            Dtype::Float32,
            &[p.max_lanes, p.lane_points - 1, LANE_FEATURES],
        ),
        Field::new("lane_mask", Dtype::Uint8, &[p.max_lanes]),
        Field::new("target", Dtype::Float32, &[ps, 2]),
        Field::new("frame", Dtype::Float32, &[3]),
        Field::new("scenario_id", Dtype::Uint8, &[16]),
        Field::new("actor_ctrs", Dtype::Float32, &[a, 2]),
        Field::new("actor_futures", Dtype::Float32, &[a, ps, 2]),
        Field::new("actor_future_mask", Dtype::Uint8, &[a, ps]),
        Field::new("actor_type", Dtype::Uint8, &[a]),
        Field::new("actor_category", Dtype::Uint8, &[a]),
        Field::new("focal_track_id", Dtype::Uint8, &[TRACK_ID_BYTES]),
    ]
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// One sample's compressed frame, in [`schema_for`]'s field order.
pub fn encode(
    schema: &Schema,
    level: i32,
    id: [u8; 16],
    focal: [u8; TRACK_ID_BYTES],
    v: &Vectorized,
) -> Result<Vec<u8>, String> {
    let frame = v.frame.to_f32();
    let parts: [(&str, &[f32]); 6] = [
        ("actor", &v.actors),
        ("map", &v.lanes),
        ("target", &v.target),
        ("frame", &frame),
        ("actor center", &v.actor_ctrs),
        ("actor future", &v.actor_futures),
    ];
    for (what, xs) in parts {
        if let Some(i) = xs.iter().position(|x| !x.is_finite()) {
            return Err(format!(
                "a {what} feature (value {i}) is not finite: a coordinate is too large for f32 (over ~3e38 m); fix the scenario"
            ));
        }
    }
    let fields: [Vec<u8>; 13] = [
        f32_bytes(&v.actors),
        v.actor_mask.clone(),
        f32_bytes(&v.lanes),
        v.lane_mask.clone(),
        f32_bytes(&v.target),
        f32_bytes(&frame),
        id.to_vec(),
        f32_bytes(&v.actor_ctrs),
        f32_bytes(&v.actor_futures),
        v.actor_future_mask.clone(),
        v.actor_type.clone(),
        v.actor_category.clone(),
        focal.to_vec(),
    ];
    let refs: Vec<&[u8]> = fields.iter().map(Vec::as_slice).collect();
    encode_sample(schema, &refs, level).map_err(|e| format!("internal: {e}"))
}

/// Reads, vectorizes and encodes one scenario folder; the error is its reject reason.
pub fn process(
    dir: &Path,
    p: &VecParams,
    schema: &Schema,
    level: i32,
    with_future: bool,
) -> Result<(Vec<u8>, Stats), String> {
    let id = file_name(dir);
    let uuid = uuid_bytes(&id).ok_or_else(|| {
        format!(
            "folder name `{id}` is not a scenario id (a lowercase UUID, as AV2 names its scenario folders)"
        )
    })?;
    let scn_path = scenario_file(dir);
    if !scn_path.is_file() {
        return Err(format!("missing scenario file {}", file_name(&scn_path)));
    }
    let map_path = map_file(dir);
    let map_bytes = std::fs::read(&map_path)
        .map_err(|e| format!("missing map {} ({e})", file_name(&map_path)))?;
    let map = parse_map(&map_bytes)?;
    let scn = read_scenario(&scn_path, p.obs_steps + p.pred_steps)?;
    let focal_id = scn
        .tracks
        .get(scn.focal)
        .map(|t| t.id.as_str())
        .unwrap_or_default();
    let focal = track_id_bytes(focal_id).ok_or_else(|| {
        format!(
            "focal_track_id `{focal_id}` does not fit the shard's {TRACK_ID_BYTES}-byte field (empty, longer, or holding a NUL)"
        )
    })?;
    let v = vectorize(&scn, &map, p, with_future)?;
    let bytes = encode(schema, level, uuid, focal, &v)?;
    Ok((
        bytes,
        Stats {
            actors_in_range: v.actors_in_range,
            lanes_in_range: v.lanes_in_range,
            lanes_degenerate: v.lanes_degenerate,
            scored: v
                .actor_category
                .iter()
                .filter(|c| **c == super::scenario::CATEGORY_SCORED)
                .count(),
        },
    ))
}

#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub actors_in_range: usize,
    pub lanes_in_range: usize,
    pub lanes_degenerate: usize,
    /// Scored tracks among the kept actors.
    pub scored: usize,
}

impl Av2TokensStage {
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
        let n = self.splits[si].scenarios.len();
        let start = index * self.params.shard_samples;
        Ok((si, start.min(n)..(start + self.params.shard_samples).min(n)))
    }
}

impl Stage for Av2TokensStage {
    fn kind(&self) -> &str {
        KIND
    }
    fn version(&self) -> u32 {
        VERSION
    }
    fn key_params(&self) -> serde_json::Value {
        crate::keyed::params_key(
            &self.params,
            [(
                "splits",
                serde_json::json!(self.splits.iter().map(|s| s.name).collect::<Vec<_>>()),
            )],
        )
    }
    fn inputs(&self) -> Vec<InputSpec> {
        self.inputs.clone()
    }
    fn schema(&self) -> Option<Schema> {
        Some(self.schema.clone())
    }

    fn plan(&self, _ctx: &StageCtx) -> Result<Vec<UnitPlan>> {
        let mut units = Vec::new();
        for split in &self.splits {
            let n = split.scenarios.len();
            for (i, start) in (0..n).step_by(self.params.shard_samples).enumerate() {
                units.push(UnitPlan {
                    id: format!("{}-{i:05}", split.name),
                    work: ((start + self.params.shard_samples).min(n) - start) as u64,
                });
            }
        }
        Ok(units)
    }

    fn run_unit(&self, _ctx: &StageCtx, unit: &UnitPlan, out: &mut UnitOutput) -> Result<()> {
        let (si, range) = self.unit_range(&unit.id)?;
        let split = &self.splits[si];
        let with_future = split.name != "test";
        let dirs = &split.scenarios[range];
        let encoded: Vec<Result<(Vec<u8>, Stats), String>> = dirs
            .par_iter()
            .map(|d| {
                process(
                    d,
                    &self.vec,
                    &self.schema,
                    self.params.zstd_level,
                    with_future,
                )
            })
            .collect();
        let mut writer = ShardWriter::new(self.schema.clone());
        let mut agg = SplitStats::default();
        for (dir, enc) in dirs.iter().zip(encoded) {
            match enc {
                Ok((frame, stats)) => {
                    agg.add(&stats, &self.vec);
                    writer.push_encoded(frame);
                }
                Err(reason) => out.reject(&dir.display().to_string(), "whole scenario", &reason),
            }
        }
        let n = writer.len() as u64;
        if n > 0 {
            out.add_shard(split.name, n, &writer.finish())?;
        }
        out.set_meta(serde_json::json!({ "split": split.name, "stats": agg }));
        Ok(())
    }

    fn finish(&self, _ctx: &StageCtx, units: &[UnitRecord]) -> Result<serde_json::Value> {
        let mut per_split: BTreeMap<String, SplitStats> = BTreeMap::new();
        for u in units {
            let (Some(split), Some(stats)) = (u.meta.get("split"), u.meta.get("stats")) else {
                continue;
            };
            let (Some(split), Ok(stats)) = (
                split.as_str(),
                serde_json::from_value::<SplitStats>(stats.clone()),
            ) else {
                continue;
            };
            per_split
                .entry(split.to_string())
                .or_default()
                .merge(&stats);
        }
        let p = &self.params;
        for (split, st) in &per_split {
            if st.lanes_dropped + st.actors_dropped > 0 {
                tracing::warn!(
                    "av2_tokens {split}: {} map polylines over max_lanes = {} dropped in {} of {} scenarios, {} actors over max_actors = {} in {} (the farthest; stage meta)",
                    st.lanes_dropped, p.max_lanes, st.lanes_truncated, st.scenarios,
                    st.actors_dropped, p.max_actors, st.actors_truncated
                );
            }
        }
        Ok(serde_json::json!({
            "obs_steps": p.obs_steps,
            "pred_steps": p.pred_steps,
            "max_actors": p.max_actors,
            "max_lanes": p.max_lanes,
            "lane_points": p.lane_points,
            "radius": p.radius,
            "actor_features": ACTOR_FEATURES,
            "lane_features": LANE_FEATURES,
            "object_types": super::scenario::OBJECT_TYPES,
            "lane_types": super::map::LANE_TYPES,
            "mark_types": super::map::MARK_TYPES,
            "frame": "world = R(theta)·p + origin, R(theta) = [[cos, -sin], [sin, cos]]; the focal track's heading points along +y",
            "targets": per_split.keys().filter(|s| *s != "test").collect::<Vec<_>>(),
            "splits": per_split,
        }))
    }
}

/// Counts over a unit (and, merged, a split); serialized into the unit's meta.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct SplitStats {
    scenarios: u64,
    actors_in_range: u64,
    lanes_in_range: u64,
    max_actors_in_range: u64,
    max_lanes_in_range: u64,
    actors_truncated: u64,
    lanes_truncated: u64,
    actors_dropped: u64,
    lanes_dropped: u64,
    /// Lanes skipped for a zero-length boundary (no centerline).
    lanes_degenerate: u64,
    /// Scored tracks kept (beside the focal track).
    scored_actors: u64,
}

impl SplitStats {
    fn add(&mut self, s: &Stats, p: &VecParams) {
        self.scenarios += 1;
        self.actors_in_range += s.actors_in_range as u64;
        self.lanes_in_range += s.lanes_in_range as u64;
        self.max_actors_in_range = self.max_actors_in_range.max(s.actors_in_range as u64);
        self.max_lanes_in_range = self.max_lanes_in_range.max(s.lanes_in_range as u64);
        self.actors_truncated += u64::from(s.actors_in_range > p.max_actors);
        self.lanes_truncated += u64::from(s.lanes_in_range > p.max_lanes);
        self.actors_dropped += s.actors_in_range.saturating_sub(p.max_actors) as u64;
        self.lanes_dropped += s.lanes_in_range.saturating_sub(p.max_lanes) as u64;
        self.lanes_degenerate += s.lanes_degenerate as u64;
        self.scored_actors += s.scored as u64;
    }
    fn merge(&mut self, o: &SplitStats) {
        self.scenarios += o.scenarios;
        self.actors_in_range += o.actors_in_range;
        self.lanes_in_range += o.lanes_in_range;
        self.max_actors_in_range = self.max_actors_in_range.max(o.max_actors_in_range);
        self.max_lanes_in_range = self.max_lanes_in_range.max(o.max_lanes_in_range);
        self.actors_truncated += o.actors_truncated;
        self.lanes_truncated += o.lanes_truncated;
        self.actors_dropped += o.actors_dropped;
        self.lanes_dropped += o.lanes_dropped;
        self.lanes_degenerate += o.lanes_degenerate;
        self.scored_actors += o.scored_actors;
    }
}

#[cfg(test)]
mod key_tests {
    #[test]
    fn every_param_changes_the_key() {
        crate::keyed::assert_every_field_keys::<super::Av2Params>(&["train", "val", "test"]);
    }
}
