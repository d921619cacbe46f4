//! Stage `av.tokens`: Argoverse 1.1 motion-forecasting scenarios (CSV) + the city vector maps
//! (XML) → VectorNet polyline tokens (PAPER.md §5; the conventions are in [`super::vectorize`],
//! the bytes in SHARDS.md). One unit = `shard_samples` scenario files of one split = one shard.
//!
//! Why this shape: every CSV and map file is an input (so the stat cache re-checks a 200k-file
//! dataset by `stat` alone), a city's map is parsed and indexed once per run and shared by all
//! threads, and scenarios of a unit are read, parsed and vectorized in parallel with rayon,
//! collected in file order so the bytes do not depend on the thread count. A bad scenario is
//! a named reject; a bad map or a missing folder fails the stage or the config.

use super::csv::parse_scenario;
use super::encode::check_finite;
pub use super::encode::{encode_vectorized, schema_for};
use super::index::CityLanes;
use super::map::{find_city_maps, parse_vector_map};
use super::vectorize::{vectorize, VecParams, Vectorized, ACTOR_FEATURES, LANE_FEATURES};
use crate::shard_params::shard_param_problem;
use anyhow::{Context, Result};
use lm4ve_pipeline::shard::{Schema, ShardWriter};
use lm4ve_pipeline::{
    ConfigError, InputSpec, PipelineConfig, Stage, StageConfig, StageCtx, UnitOutput, UnitPlan,
    UnitRecord,
};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub const KIND: &str = "av.tokens";
/// Bump when the bytes of the shards would change for the same inputs and params.
/// 2: every actor's position now and future (`actor_ctrs`, `actor_futures`, `actor_future_mask`).
/// 3: lanes chosen as the reference does (world-axis box, lane-id order).
pub const VERSION: u32 = 3;
/// The split names, in unit order; `test` has no futures (Argoverse 1.1's test CSVs hold the
/// 20 observed steps only).
pub const SPLITS: [&str; 3] = ["train", "val", "test"];

/// `[stages.NAME.params]` of an `av.tokens` stage.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AvParams {
    /// Folder of `<seq_id>.csv` training scenarios (Argoverse `train/data`).
    #[serde(skip_serializing)]
    pub train: Option<PathBuf>,
    /// Folder of validation scenarios (Argoverse `val/data`).
    #[serde(skip_serializing)]
    pub val: Option<PathBuf>,
    /// Folder of test scenarios (Argoverse `test_obs/data`: `obs_steps` steps, no future):
    /// samples without a target, scored only through `lm4ve pipeline submit`.
    #[serde(skip_serializing)]
    pub test: Option<PathBuf>,
    /// Folder with `pruned_argoverse_<CITY>_<ID>_vector_map.xml`, one per city (required).
    #[serde(skip_serializing)]
    pub map: PathBuf,
    pub obs_steps: usize,
    pub pred_steps: usize,
    pub radius: f64,
    pub max_actors: usize,
    pub max_lanes: usize,
    pub lane_points: usize,
    pub shard_samples: usize,
    pub zstd_level: i32,
}

impl Default for AvParams {
    fn default() -> Self {
        AvParams {
            train: None,
            val: None,
            test: None,
            map: PathBuf::new(),
            obs_steps: 20,
            pred_steps: 30,
            radius: 100.0,
            max_actors: 64,
            max_lanes: 512,
            lane_points: 10,
            shard_samples: 256,
            // Level 1, not the 3 of `pc.tokens`: these samples are f32 coordinates and zero padding,
            // level 3 makes them 1% smaller and takes 40% longer.
            zstd_level: 1,
        }
    }
}

struct Split {
    name: &'static str,
    files: Vec<PathBuf>,
}

pub struct AvTokensStage {
    params: AvParams,
    vec: VecParams,
    schema: Schema,
    map_dir: PathBuf,
    /// city → its vector-map file.
    maps: BTreeMap<String, PathBuf>,
    splits: Vec<Split>,
    inputs: Vec<InputSpec>,
    /// Cities whose map has been parsed and indexed in this process (loaded on first use).
    cities: Mutex<BTreeMap<String, Arc<CityLanes>>>,
}

/// The largest count param (actors, lanes, points, steps, samples per shard).
const MAX_SIZE_PARAM: usize = 1 << 16;

pub fn build(config: &PipelineConfig, sc: &StageConfig) -> Result<Box<dyn Stage>, ConfigError> {
    let params: AvParams = config.typed_params(sc)?;
    let err = |key: &str, msg: String| config.param_error(&sc.name, Some(key), msg);
    // An absent or empty dataset folder: blocks this stage and its dependents only.
    let missing = |key: &str, path: &Path, msg: String| {
        config.missing_input_error(&sc.name, Some(key), path, msg)
    };
    if params.map.as_os_str().is_empty() {
        return Err(err(
            "map",
            "missing: the folder with the vector maps (pruned_argoverse_<CITY>_<ID>_vector_map.xml)"
                .into(),
        ));
    }
    let p = &params;
    if p.obs_steps < 2 {
        return Err(err(
            "obs_steps",
            format!(
                "obs_steps = {} is too small: the heading needs at least 2 observed steps",
                p.obs_steps
            ),
        ));
    }
    if p.pred_steps < 1 {
        return Err(err("pred_steps", "pred_steps must be positive".into()));
    }
    if !(p.radius.is_finite() && p.radius > 0.0) {
        return Err(err(
            "radius",
            format!("radius = {} must be a positive number of metres", p.radius),
        ));
    }
    if p.max_actors < 1 {
        return Err(err(
            "max_actors",
            "max_actors must be at least 1 (actor 0 is the AGENT)".into(),
        ));
    }
    if p.max_lanes < 1 {
        return Err(err("max_lanes", "max_lanes must be positive".into()));
    }
    if p.lane_points < 2 {
        return Err(err(
            "lane_points",
            format!(
                "lane_points = {} must be at least 2 (one vector)",
                p.lane_points
            ),
        ));
    }
    if let Some((key, msg)) = shard_param_problem(p.shard_samples, p.zstd_level) {
        return Err(err(key, msg));
    }
    // Every size below is allocated per sample (and per thread): bounded before use.
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
    let per_sample = |a: usize, b: usize, c: usize| a.checked_mul(b)?.checked_mul(c);
    let floats = per_sample(p.max_actors, p.obs_steps, 16)
        .zip(per_sample(p.max_lanes, p.lane_points, 16))
        .zip(per_sample(p.max_actors, p.pred_steps, 4))
        .and_then(|((a, b), c)| a.checked_add(b)?.checked_add(c));
    if floats.is_none_or(|n| n > lm4ve_pipeline::shard::MAX_STAGE_SAMPLE_BYTES / 4) {
        return Err(err(
            "max_actors",
            format!(
                "max_actors = {}, max_lanes = {}, lane_points = {}, obs_steps = {}, pred_steps = {} make a sample over {} MiB; lower them",
                p.max_actors,
                p.max_lanes,
                p.lane_points,
                p.obs_steps,
                p.pred_steps,
                lm4ve_pipeline::shard::MAX_STAGE_SAMPLE_BYTES >> 20
            ),
        ));
    }

    let map_dir = config.resolve(&p.map);
    if !map_dir.is_dir() {
        return Err(missing(
            "map",
            &map_dir,
            format!(
                "map folder {} does not exist; point `map` at Argoverse's map_files (paths are relative to the config file)",
                map_dir.display()
            ),
        ));
    }
    let maps = find_city_maps(&map_dir).map_err(|e| err("map", e))?;
    if maps.is_empty() {
        return Err(err(
            "map",
            format!(
                "map folder {} has no pruned_argoverse_<CITY>_<ID>_vector_map.xml",
                map_dir.display()
            ),
        ));
    }
    let mut inputs: Vec<InputSpec> = maps
        .values()
        .map(|path| InputSpec::file_as("map", path.clone(), file_name(path)))
        .collect();

    let mut splits = Vec::new();
    for (name, folder) in SPLITS.into_iter().zip([&p.train, &p.val, &p.test]) {
        let Some(folder) = folder else { continue };
        let dir = config.resolve(folder);
        let files = list_csvs(&dir).map_err(|e| missing(name, &dir, e))?;
        // One listed declaration per split (a per-file one cost ~150 bytes a file per run).
        inputs.extend(InputSpec::files_below(
            name,
            &dir,
            files.iter().map(|f| (f.clone(), file_name(f))),
        ));
        splits.push(Split { name, files });
    }
    if splits.is_empty() {
        return Err(err(
            "train",
            "no scenarios: set `train`, `val` and/or `test` (folders of Argoverse <seq_id>.csv files)"
                .into(),
        ));
    }
    let vec = VecParams {
        obs_steps: p.obs_steps,
        pred_steps: p.pred_steps,
        radius: p.radius,
        max_actors: p.max_actors,
        max_lanes: p.max_lanes,
        lane_points: p.lane_points,
    };
    let schema = schema_for(&vec);
    Ok(Box::new(AvTokensStage {
        params,
        vec,
        schema,
        map_dir,
        maps,
        splits,
        inputs,
        cities: Mutex::new(BTreeMap::new()),
    }))
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The `*.csv` files directly in `dir`, in scenario-id order (numeric stems first, by value;
/// then any other names, which the stage rejects, by name).
pub fn list_csvs(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        format!(
            "scenario folder {}: {e}; point it at Argoverse's <split>/data (paths are relative to the config file)",
            dir.display()
        )
    })?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| format!("{}: {e}", dir.display()))?;
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "csv") {
            continue;
        }
        // The directory entry's type is free; only links need a stat to see their target.
        let is_file = match entry.file_type() {
            Ok(t) if t.is_symlink() => path.is_file(),
            Ok(t) => t.is_file(),
            Err(_) => path.is_file(),
        };
        if is_file {
            files.push(path);
        }
    }
    if files.is_empty() {
        return Err(format!(
            "scenario folder {} has no .csv files",
            dir.display()
        ));
    }
    let key = |p: &PathBuf| {
        let stem = p.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        (stem.parse::<i64>().map_or((1, 0), |v| (0, v)), file_name(p))
    };
    files.sort_by_cached_key(key);
    Ok(files)
}

/// What one scenario became: its encoded frame, or the reason it was rejected.
type Encoded = std::result::Result<(Vec<u8>, Stats), String>;

#[derive(Debug, Clone, Default)]
struct Stats {
    city: String,
    actors_in_range: usize,
    lanes_in_range: usize,
}

impl AvTokensStage {
    pub(crate) fn schema_fields(&self) -> Schema {
        self.schema.clone()
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
        let n = self.splits[si].files.len();
        let start = index * self.params.shard_samples;
        Ok((si, start.min(n)..(start + self.params.shard_samples).min(n)))
    }

    /// Parses and indexes the maps of `needed` cities not loaded yet (cities in parallel).
    fn ensure_cities(&self, needed: &BTreeSet<&str>) -> Result<BTreeMap<String, Arc<CityLanes>>> {
        let missing: Vec<(&str, &PathBuf)> = {
            let loaded = self.cities.lock().unwrap_or_else(|e| e.into_inner());
            needed
                .iter()
                .filter(|c| !loaded.contains_key(**c))
                .filter_map(|c| self.maps.get(*c).map(|p| (*c, p)))
                .collect()
        };
        let built: Vec<Result<CityLanes>> = missing
            .par_iter()
            .map(|(city, path)| load_city(city, path))
            .collect();
        let mut loaded = self.cities.lock().unwrap_or_else(|e| e.into_inner());
        for city in built {
            let city = city?;
            loaded.insert(city.city.clone(), Arc::new(city));
        }
        Ok(loaded.clone())
    }

    fn encode(&self, scenario_id: i64, v: &Vectorized) -> std::result::Result<Vec<u8>, String> {
        encode_vectorized(&self.vec, self.params.zstd_level, scenario_id, v)
    }
}

/// Reads, parses and indexes one city's vector map; any problem fails the stage.
pub fn load_city(city: &str, path: &Path) -> Result<CityLanes> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the {city} vector map {}", path.display()))?;
    let lanes = parse_vector_map(&text).map_err(|e| {
        anyhow::anyhow!(
            "{}: {e}; the vector map is damaged (re-extract map_files from the Argoverse archive)",
            path.display()
        )
    })?;
    Ok(CityLanes::new(city, lanes))
}

/// The scenario id: the file stem as an integer (Argoverse names files `<seq_id>.csv`).
fn scenario_id(path: &Path) -> std::result::Result<i64, String> {
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
    stem.parse::<i64>().map_err(|_| {
        format!(
            "file name `{}` is not `<integer scenario id>.csv`",
            file_name(path)
        )
    })
}

impl Stage for AvTokensStage {
    fn kind(&self) -> &str {
        KIND
    }
    fn version(&self) -> u32 {
        VERSION
    }
    fn key_params(&self) -> serde_json::Value {
        // The whole params struct (the folders are keyed by their content, as inputs) and
        // the splits present.
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
        Some(self.schema_fields())
    }

    fn plan(&self, _ctx: &StageCtx) -> Result<Vec<UnitPlan>> {
        let mut units = Vec::new();
        for split in &self.splits {
            let n = split.files.len();
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
        let files = &split.files[range];
        // The test split's files end at the last observed step.
        let total = if split.name == "test" {
            self.vec.obs_steps
        } else {
            self.vec.obs_steps + self.vec.pred_steps
        };
        let t0 = std::time::Instant::now();
        let parsed: Vec<std::result::Result<(i64, super::csv::Scenario), String>> = files
            .par_iter()
            .map(|path| {
                let id = scenario_id(path)?;
                let bytes = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
                let scn =
                    parse_scenario(&bytes, self.vec.obs_steps, total).map_err(|e| e.to_string())?;
                Ok((id, scn))
            })
            .collect();
        let needed: BTreeSet<&str> = parsed
            .iter()
            .filter_map(|r| r.as_ref().ok().map(|(_, s)| s.city.as_str()))
            .collect();
        let t1 = std::time::Instant::now();
        let cities = self.ensure_cities(&needed)?;
        let t2 = std::time::Instant::now();
        let encoded: Vec<Encoded> = parsed
            .par_iter()
            .map(|r| {
                let (id, scn) = r.as_ref().map_err(Clone::clone)?;
                let city = cities.get(&scn.city).ok_or_else(|| {
                    format!(
                        "unknown city `{}`: no pruned_argoverse_{}_<ID>_vector_map.xml in {} (maps for: {})",
                        scn.city,
                        scn.city,
                        self.map_dir.display(),
                        self.maps.keys().cloned().collect::<Vec<_>>().join(", ")
                    )
                })?;
                let v = vectorize(scn, city, &self.vec)?;
                check_finite(&v)?;
                let bytes = self.encode(*id, &v)?;
                Ok((
                    bytes,
                    Stats {
                        city: scn.city.clone(),
                        actors_in_range: v.actors_in_range,
                        lanes_in_range: v.lanes_in_range,
                    },
                ))
            })
            .collect();
        let t3 = std::time::Instant::now();
        let mut writer = ShardWriter::new(self.schema_fields());
        let mut agg = SplitStats::default();
        for (path, enc) in files.iter().zip(encoded) {
            match enc {
                Ok((frame, stats)) => {
                    agg.add(&stats, &self.vec);
                    writer.push_encoded(frame);
                }
                Err(reason) => out.reject(&path.display().to_string(), "whole file", &reason),
            }
        }
        let n = writer.len() as u64;
        if n > 0 {
            out.add_shard(split.name, n, &writer.finish())?;
        }
        tracing::debug!(
            "{}: read+parse {:.1} ms, maps {:.1} ms, vectorize+encode {:.1} ms, store {:.1} ms",
            unit.id,
            (t1 - t0).as_secs_f64() * 1e3,
            (t2 - t1).as_secs_f64() * 1e3,
            (t3 - t2).as_secs_f64() * 1e3,
            t3.elapsed().as_secs_f64() * 1e3
        );
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
                    "av_tokens {split}: {} lanes over max_lanes = {} dropped in {} of {} scenarios (at most {} in range), {} actors over max_actors = {} in {} (the farthest; stage meta)",
                    st.lanes_dropped,
                    p.max_lanes,
                    st.lanes_truncated,
                    st.scenarios,
                    st.max_lanes_in_range,
                    st.actors_dropped,
                    p.max_actors,
                    st.actors_truncated
                );
            }
        }
        let mut meta = serde_json::json!({
            "obs_steps": p.obs_steps,
            "pred_steps": p.pred_steps,
            "max_actors": p.max_actors,
            "max_lanes": p.max_lanes,
            "lane_points": p.lane_points,
            "radius": p.radius,
            "actor_features": ACTOR_FEATURES,
            "lane_features": LANE_FEATURES,
            "frame": "world = R(theta)·p + origin, R(theta) = [[cos, -sin], [sin, cos]]; the AGENT's heading points along +y",
            "maps": self.maps.iter().map(|(c, p)| (c.clone(), file_name(p))).collect::<BTreeMap<_, _>>(),
            "splits": per_split,
        });
        // Only with a test split, so the manifests of the others stay what they were.
        if per_split.contains_key("test") {
            meta["targets"] = per_split
                .keys()
                .filter(|s| *s != "test")
                .cloned()
                .collect::<Vec<_>>()
                .into();
        }
        Ok(meta)
    }
}

/// Counts over a unit (and, merged, a split); serialized into the unit's meta.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
struct SplitStats {
    scenarios: u64,
    /// Sums over scenarios (divide by `scenarios` for the mean).
    actors_in_range: u64,
    lanes_in_range: u64,
    max_actors_in_range: u64,
    max_lanes_in_range: u64,
    /// Scenarios that had more actors / lanes in range than the maxima (the farthest dropped).
    actors_truncated: u64,
    lanes_truncated: u64,
    /// Actors / lanes dropped over the maxima, summed over scenarios (never silent).
    #[serde(default)]
    actors_dropped: u64,
    #[serde(default)]
    lanes_dropped: u64,
    /// Scenarios by lanes in range, in buckets of 32 (key = the bucket's lower bound): what
    /// `max_lanes` must hold to keep every lane.
    #[serde(default)]
    lanes_in_range_hist: BTreeMap<u64, u64>,
    cities: BTreeMap<String, u64>,
}

impl SplitStats {
    fn add(&mut self, s: &Stats, p: &VecParams) {
        self.scenarios += 1;
        self.actors_in_range += s.actors_in_range as u64;
        self.lanes_in_range += s.lanes_in_range as u64;
        self.max_actors_in_range = self.max_actors_in_range.max(s.actors_in_range as u64);
        self.max_lanes_in_range = self.max_lanes_in_range.max(s.lanes_in_range as u64);
        self.actors_truncated += (s.actors_in_range > p.max_actors) as u64;
        self.lanes_truncated += (s.lanes_in_range > p.max_lanes) as u64;
        self.actors_dropped += s.actors_in_range.saturating_sub(p.max_actors) as u64;
        self.lanes_dropped += s.lanes_in_range.saturating_sub(p.max_lanes) as u64;
        *self
            .lanes_in_range_hist
            .entry(s.lanes_in_range as u64 / 32 * 32)
            .or_insert(0) += 1;
        *self.cities.entry(s.city.clone()).or_insert(0) += 1;
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
        for (b, n) in &o.lanes_in_range_hist {
            *self.lanes_in_range_hist.entry(*b).or_insert(0) += n;
        }
        for (c, n) in &o.cities {
            *self.cities.entry(c.clone()).or_insert(0) += n;
        }
    }
}

#[cfg(test)]
mod key_tests {
    /// Every param enters the key (derived from the struct, so none can be forgotten);
    /// paths do not (their files do, by content).
    #[test]
    fn every_param_changes_the_key() {
        crate::keyed::assert_every_field_keys::<super::AvParams>(&["train", "val", "test", "map"]);
    }
}
