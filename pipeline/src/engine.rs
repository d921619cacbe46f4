//! The engine: builds the stages of a config, computes their keys, runs what is stale in
//! DAG order, resumes interrupted artifacts unit by unit, and explains staleness.
//!
//! With a remote cache ([`crate::remote`]) the lookup order is local → remote → compute:
//! a stage whose manifest is local is fresh without any network traffic; otherwise the
//! remote's finished artifact is pulled; otherwise the stage runs, first adopting the units
//! the remote already has (what `--part` runs on other machines published). A run pushes
//! what it computed when `[cache] push = true` (or `--push`); a `--part` run always pushes
//! its units, since they are of no use to anyone else otherwise. A failed pull or push never
//! fails the run: it warns and computes (or leaves the push to `lm4ve cache push`).

use crate::artifact::{Journal, Manifest, Reject, UnitRecord};
use crate::cas::Cache;
use crate::config::{ConfigError, PipelineConfig, StageConfig};
use crate::dag::Dag;
use crate::fingerprint::{Inputs, StatCache, StatCacheLoad};
use crate::key::{short, KeyParts};
use crate::progress::Progress;
use crate::record::{host_name, RunRecord};
use crate::remote::sync::{self, PushReport};
use crate::remote::Remote;
use crate::stage::{Stage, StageCtx, UnitOutput, UnitPlan, Upstream};
use anyhow::{Context, Result};
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

mod artifacts;
mod keys;
pub mod reason;
mod run_stage;
mod schedule;
mod status;

use reason::{Damage, ObjectGone, StaleReason};

/// Bad command-line usage (exit status 2), as opposed to a failed stage (1).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// A stage that ran and failed as a whole (exit status 1).
#[derive(Debug, thiserror::Error)]
#[error("stage `{stage}` failed: {message}")]
pub struct StageFailed {
    pub stage: String,
    pub message: String,
}

/// Builds a stage object from its config table; lives in the domain crate.
pub type StageFactory<'f> =
    dyn Fn(&PipelineConfig, &StageConfig) -> Result<Box<dyn Stage>, ConfigError> + 'f;

/// `--part i/n`: this process does the units whose id hashes to `i` modulo `n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Part {
    pub index: u64,
    pub count: u64,
}

impl std::str::FromStr for Part {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("--part `{s}`: expected i/n with 0 <= i < n, e.g. 0/4");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count): (u64, u64) = (
            i.trim().parse().map_err(|_| bad())?,
            n.trim().parse().map_err(|_| bad())?,
        );
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Part { index, count })
    }
}

impl Part {
    pub fn owns(&self, unit_id: &str) -> bool {
        let h = blake3::hash(unit_id.as_bytes());
        let mut b = [0u8; 8];
        b.copy_from_slice(&h.as_bytes()[..8]);
        u64::from_le_bytes(b) % self.count == self.index
    }
}

#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// `None` = every stage.
    pub target: Option<String>,
    pub force: bool,
    pub rehash: bool,
    pub part: Option<Part>,
    /// Only assemble from finished units (local or remote); fail naming the missing ones
    /// instead of computing them.
    pub assemble: bool,
    /// This process is one rank of a data-parallel job of more than one process.
    pub data_parallel: Option<DataParallel>,
    /// How many independent stages may build at once (`--concurrent-stages`); 0 and 1 mean
    /// one at a time, in DAG order.
    pub concurrent_stages: usize,
}

/// A process's place in a data-parallel job (world size > 1): every rank runs the target
/// stage's units together (the stage talks to the other ranks); rank 0 alone writes the
/// cache (lock, journal, manifest). Ranks share the cache directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataParallel {
    pub rank: usize,
    pub world: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The artifact was already in the cache.
    Fresh,
    /// Another process built it while we waited for its lock.
    BuiltElsewhere,
    /// The remote had the finished artifact: pulled (and verified) instead of computed.
    Pulled {
        objects: usize,
        bytes: u64,
        seconds: f64,
    },
    Built {
        units_run: usize,
        units_reused: usize,
        /// Units other machines had finished, pulled from the remote.
        units_pulled: usize,
        samples: u64,
        rejects: u64,
        seconds: f64,
    },
    /// A data-parallel rank above 0 ran its share of these units; rank 0 stored them.
    Replica { rank: usize, units_run: usize },
    /// `--part` finished its units; the artifact is not assembled yet.
    PartDone {
        units_run: usize,
        units_pulled: usize,
        units_done: usize,
        units_total: usize,
    },
}

#[derive(Debug, Clone)]
pub struct StageReport {
    pub stage: String,
    pub key: String,
    pub outcome: Outcome,
    /// What this run pushed to the remote for the stage, if it pushed.
    pub pushed: Option<PushReport>,
}

/// A stage's key and what went into it.
#[derive(Debug, Clone)]
pub struct KeyInfo {
    pub key: String,
    pub parts: KeyParts,
    /// In key order, compact ([`Inputs::to_files`] for a run record).
    pub inputs: Inputs,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Fresh,
    Stale,
    Missing,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct StageStatus {
    pub stage: String,
    pub state: State,
    /// The reasons as one line ([`reason::joined`]), as people read them.
    pub reason: String,
    /// Why the stage is not fresh, typed (empty when fresh).
    pub reasons: Vec<reason::StaleReason>,
    pub key: String,
}

pub struct Pipeline {
    pub config: PipelineConfig,
    pub cache: Cache,
    stages: BTreeMap<String, Box<dyn Stage>>,
    dag: Dag,
    /// Stages that could not be built because an input is missing: stage → (the path, the
    /// build error naming the config file, line and fix).
    missing: BTreeMap<String, (String, String)>,
    keys: BTreeMap<String, KeyInfo>,
    remote: Option<Remote>,
    push: bool,
    /// The stat cache, being read since the pipeline was built.
    stat_cache: StatCacheLoad,
}

impl Pipeline {
    pub fn new(
        config: PipelineConfig,
        cache_dir: Option<PathBuf>,
        factory: &StageFactory,
    ) -> Result<Self> {
        let cache_dir = cache_dir.unwrap_or_else(|| config.cache_dir.clone());
        let stat_cache = StatCache::load_in_background(Cache::stat_cache_path_in(&cache_dir));
        let mut stages: BTreeMap<String, Box<dyn Stage>> = BTreeMap::new();
        let mut missing = BTreeMap::new();
        for (name, sc) in &config.stages {
            match factory(&config, sc) {
                Ok(s) => {
                    stages.insert(name.clone(), s);
                }
                // A missing input blocks this stage and its dependents only: a user who has
                // only one of the datasets can still run the stages of that one.
                Err(e) if e.missing_input.is_some() => {
                    let path = e.missing_input.clone().unwrap_or_default();
                    let error = e.to_string();
                    let upstream = referenced_stages(sc, &config);
                    stages.insert(
                        name.clone(),
                        Box::new(Unbuildable {
                            kind: sc.kind.clone(),
                            error: error.clone(),
                            upstream,
                        }),
                    );
                    missing.insert(name.clone(), (path, error));
                }
                Err(e) => return Err(e.into()),
            }
        }
        // Every sample a stage plans must be readable back (readers cap a sample at
        // `shard::MAX_SAMPLE_BYTES`): a schema over it is a config error now, not a huge
        // allocation later.
        for (name, stage) in &stages {
            if let Some(schema) = stage.schema() {
                if let Err(why) = crate::shard::check_schema(&schema) {
                    return Err(ConfigError {
                        file: config.path.display().to_string(),
                        line: None,
                        message: format!(
                            "[stages.{name}]: its samples cannot be stored: {why}; lower its size params"
                        ),
                        missing_input: None,
                    }
                    .into());
                }
            }
        }
        let edges = stages
            .iter()
            .map(|(n, s)| (n.clone(), s.upstream()))
            .collect();
        let dag = Dag::new(edges).map_err(|e| ConfigError {
            file: config.path.display().to_string(),
            line: None,
            message: e.to_string(),
            missing_input: None,
        })?;
        let cache = Cache::open(&cache_dir)?;
        Ok(Pipeline {
            config,
            cache,
            stages,
            dag,
            missing,
            keys: BTreeMap::new(),
            remote: None,
            push: false,
            stat_cache,
        })
    }

    /// Shares the cache with a remote; `push`: send what this machine computes.
    pub fn set_remote(&mut self, remote: Option<Remote>, push: bool) {
        self.remote = remote;
        self.push = push;
    }

    /// Push what this run computes (`--push`).
    pub fn set_push(&mut self, push: bool) {
        self.push = push;
    }

    pub fn remote(&self) -> Option<&Remote> {
        self.remote.as_ref()
    }

    pub fn dag(&self) -> &Dag {
        &self.dag
    }

    pub fn stage(&self, name: &str) -> Option<&dyn Stage> {
        self.stages.get(name).map(|b| b.as_ref())
    }

    fn check_target(&self, target: &str) -> Result<()> {
        if is_glob(target) {
            if self.config.matching(target).is_empty() {
                return Err(UsageError(format!(
                    "no stage matches `{target}` in {}",
                    self.config.path.display()
                ))
                .into());
            }
            return Ok(());
        }
        if !self.stages.contains_key(target) {
            let names: Vec<_> = self.stages.keys().cloned().collect();
            return Err(UsageError(format!(
                "no stage `{target}` in {}; stages: {} (or `all`, or a glob like 'train_pc@*')",
                self.config.path.display(),
                names.join(", ")
            ))
            .into());
        }
        Ok(())
    }

    /// The stages a run of `target` needs, in DAG order: its closure, or the union of the
    /// closures of every stage a glob matches.
    fn closure_of(&self, target: &str) -> Vec<String> {
        if !is_glob(target) {
            return self.dag.closure(target);
        }
        let mut want = std::collections::BTreeSet::new();
        for t in self.config.matching(target) {
            want.extend(self.dag.closure(&t));
        }
        self.dag
            .order()
            .iter()
            .filter(|s| want.contains(*s))
            .cloned()
            .collect()
    }

    /// Runs the target (and what it needs), or everything.
    pub fn run(&mut self, opts: &RunOptions, progress: &Progress) -> Result<Vec<StageReport>> {
        if let Some(t) = &opts.target {
            self.check_target(t)?;
        }
        if opts.part.is_some() && opts.target.is_none() {
            return Err(
                UsageError("--part splits one stage: name it with --stage NAME".into()).into(),
            );
        }
        if let Some(dp) = opts.data_parallel {
            check_data_parallel(opts, dp)?;
        }
        let todo = match &opts.target {
            Some(t) => self.closure_of(t),
            None => self.dag.order().to_vec(),
        };
        // Stages blocked by a missing input (their own or an upstream's): a named target
        // fails at once; `all` runs everything else first, then fails naming them.
        let blocked: Vec<(String, String)> = todo
            .iter()
            .filter_map(|s| self.blocked_by(s, true).map(|why| (s.clone(), why)))
            .collect();
        if let Some(t) = &opts.target {
            if let Some((_, why)) = blocked.iter().find(|(s, _)| s == t) {
                return Err(StageFailed {
                    stage: t.clone(),
                    message: why.clone(),
                }
                .into());
            }
        }
        let todo: Vec<String> = todo
            .into_iter()
            .filter(|s| !blocked.iter().any(|(b, _)| b == s))
            .collect();
        for (s, why) in &blocked {
            tracing::warn!("{s}: skipped, {why}");
        }
        self.compute_keys_of(&todo, opts.rehash)?;
        // Held shared for the whole run: `cache gc` takes it exclusively.
        let _gc_guard = self.hold_off_gc()?;
        let reports = self.run_todo(&todo, opts, progress)?;
        if let Some((stage, why)) = blocked.into_iter().next() {
            // Everything that could run did; the exit status still says what could not.
            return Err(StageFailed {
                stage,
                message: why,
            }
            .into());
        }
        Ok(reports)
    }
}

/// What a data-parallel launch may ask: one named stage, computed here (no `--part`,
/// `--assemble` or `--force`, which would make ranks disagree on the units).
fn check_data_parallel(opts: &RunOptions, dp: DataParallel) -> Result<()> {
    let why = match &opts.target {
        None => Some("name the training stage with --stage NAME".to_string()),
        Some(t) if is_glob(t) => Some(format!("--stage `{t}` is a pattern; name one stage")),
        Some(_) if opts.part.is_some() => Some("--part splits preprocessing; a data-parallel job splits batches".into()),
        Some(_) if opts.assemble => Some("--assemble computes nothing; run it with one process".into()),
        Some(t) if opts.force => Some(format!("--force: clear the stage with one process first (`lm4ve pipeline run --stage {t} --force` stops after it starts; or change a param), then launch the job")),
        Some(_) => None,
    };
    match why {
        Some(w) => Err(UsageError(format!(
            "rank {} of a data-parallel job of {}: {w}",
            dp.rank, dp.world
        ))
        .into()),
        None => Ok(()),
    }
}

impl Pipeline {
    /// Keeps `cache gc` away from this cache while the guard lives (gc takes the same lock
    /// exclusively, so it waits for runs and transfers, and they wait for it): what a run, a
    /// push and a pull hold.
    pub fn hold_off_gc(&self) -> Result<crate::lock::FileLock> {
        crate::lock::acquire_shared(&self.cache.locks_dir(), crate::lock::GC_LOCK, || {
            tracing::info!("`lm4ve cache gc` is running on this cache; waiting for it");
        })
    }

    /// Why `stage` cannot run: its own missing input, or an upstream stage's; `detail` adds
    /// the build error (config file, line, what to fix).
    fn blocked_by(&self, stage: &str, detail: bool) -> Option<String> {
        let (why, error) = self.blocked_with_error(stage)?;
        Some(if detail {
            format!("{why} ({error})")
        } else {
            why.to_string()
        })
    }

    /// [`Self::blocked_by`] as a typed reason.
    fn blocked(&self, stage: &str) -> Option<StaleReason> {
        self.blocked_with_error(stage).map(|(why, _)| why)
    }

    fn blocked_with_error(&self, stage: &str) -> Option<(StaleReason, &str)> {
        fn reason<'m>(
            upstream: Option<&String>,
            (path, error): &'m (String, String),
        ) -> (StaleReason, &'m str) {
            let why = StaleReason::MissingInput {
                upstream: upstream.cloned(),
                path: path.clone(),
            };
            (why, error.as_str())
        }
        if let Some(m) = self.missing.get(stage) {
            return Some(reason(None, m));
        }
        self.dag
            .closure(stage)
            .iter()
            .find_map(|s| self.missing.get(s).map(|m| reason(Some(s), m)))
    }
}

/// Whether a `--stage` argument is a glob over stage names.
fn is_glob(target: &str) -> bool {
    target.contains(['*', '?'])
}

/// The stage names a stage's params refer to (string values naming another stage: `data`,
/// `block`, `train`, ...): the upstream of a stage that could not be built, so that what
/// depends on it is blocked with it.
fn referenced_stages(sc: &StageConfig, config: &PipelineConfig) -> Vec<String> {
    let mut out: Vec<String> = sc
        .params
        .values()
        .filter_map(|v| v.as_str())
        .filter(|s| *s != sc.name && config.stages.contains_key(*s))
        .map(str::to_string)
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Stands in for a stage that could not be built because an input is missing: it keeps its
/// place in the DAG and fails with the build error if it is ever asked to run.
struct Unbuildable {
    kind: String,
    error: String,
    upstream: Vec<String>,
}

impl Stage for Unbuildable {
    fn kind(&self) -> &str {
        &self.kind
    }
    fn version(&self) -> u32 {
        0
    }
    fn key_params(&self) -> serde_json::Value {
        serde_json::json!({ "unbuildable": self.error })
    }
    fn upstream(&self) -> Vec<String> {
        self.upstream.clone()
    }
    fn plan(&self, _ctx: &StageCtx) -> Result<Vec<UnitPlan>> {
        anyhow::bail!("{}", self.error)
    }
    fn run_unit(&self, _ctx: &StageCtx, _unit: &UnitPlan, _out: &mut UnitOutput) -> Result<()> {
        anyhow::bail!("{}", self.error)
    }
}

fn check_unit_ids(stage: &str, units: &[UnitPlan]) -> Result<()> {
    let mut seen = std::collections::BTreeSet::new();
    for u in units {
        let ok = !u.id.is_empty()
            && u.id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !ok || !seen.insert(&u.id) {
            anyhow::bail!(
                "stage `{stage}` planned a bad or duplicate unit id `{}` (a bug in the stage)",
                u.id
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::status::diff_json;
    use super::*;

    #[test]
    fn part_parsing_and_partitioning() {
        assert!("1/0".parse::<Part>().is_err());
        assert!("4/4".parse::<Part>().is_err());
        assert!("x".parse::<Part>().is_err());
        let parts: Vec<Part> = (0..3).map(|i| Part { index: i, count: 3 }).collect();
        for id in ["a", "b", "train-00001", "test-00002"] {
            assert_eq!(parts.iter().filter(|p| p.owns(id)).count(), 1);
        }
    }

    #[test]
    fn json_diff_names_the_param() {
        let mut out = Vec::new();
        diff_json(
            "",
            &serde_json::json!({"num_points": 1024, "x": {"y": 1}}),
            &serde_json::json!({"num_points": 512, "x": {"y": 1}, "z": true}),
            &mut out,
        );
        let text: Vec<String> = out.iter().map(|r| r.to_string()).collect();
        assert_eq!(
            text,
            vec!["param num_points: 1024 → 512", "param z added: true"]
        );
    }
}
