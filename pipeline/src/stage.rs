//! The stage contract: what the engine needs from a domain stage, and what it gives it.

use crate::artifact::{FileOut, Journal, Manifest, Reject, ShardOut, UnitRecord};
use crate::cas::Cache;
use crate::fingerprint::InputSpec;
use crate::shard::Schema;
use anyhow::Result;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// One piece of a stage's work, committed on its own (a shard, N training steps).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitPlan {
    /// Stable, file-name-safe id (`train-00003`); the same inputs and params give the same ids.
    pub id: String,
    /// Samples (or steps) the unit covers, for progress bars.
    pub work: u64,
}

/// A finished upstream artifact handed to a downstream stage.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub manifest_path: PathBuf,
    pub manifest: Manifest,
}

/// What a running stage can see.
pub struct StageCtx<'a> {
    pub name: &'a str,
    pub key: &'a str,
    pub cache: &'a Cache,
    pub upstream: &'a BTreeMap<String, Upstream>,
    /// A `--force` run: its finished units live in the staging journal beside the old
    /// artifact (which stays whole until the new one replaces it).
    pub forced: bool,
}

impl StageCtx<'_> {
    /// The record of an already finished unit of this artifact (e.g. the previous checkpoint).
    pub fn unit_record(&self, unit: &str) -> Option<UnitRecord> {
        Journal::for_run(self.cache, self.key, self.forced).get(unit)
    }

    /// Where the file `name` that an already finished unit of this artifact wrote lies (e.g.
    /// the previous checkpoint), so that stages never compute object paths themselves. The
    /// file is checked against its hash first (`crate::verified`): a damaged one is moved
    /// aside and its unit is no longer finished, so this says `None`.
    pub fn unit_file(&self, unit: &str, name: &str) -> Option<std::path::PathBuf> {
        let rec = self.unit_record(unit)?;
        let file = rec.files.iter().find(|f| f.name == name)?;
        if let Err(e) = crate::verified::check_object(self.cache, &file.blake3) {
            tracing::error!(
                "{}: unit {unit}'s {name}: {e}; that unit is computed again on the next run",
                self.name
            );
            return None;
        }
        Some(self.cache.object_path(&file.blake3))
    }
}

/// What one unit produced; the engine commits it after `run_unit` returns.
pub struct UnitOutput<'a> {
    /// None: a replica's output (rank > 0 of a data-parallel job), hashed and dropped.
    cache: Option<&'a Cache>,
    pub(crate) shards: Vec<ShardOut>,
    pub(crate) files: Vec<FileOut>,
    pub(crate) rejects: Vec<Reject>,
    pub(crate) meta: serde_json::Value,
    /// The file names the stage declares ([`Stage::files`]); `add_file` refuses others.
    pub(crate) allowed_files: Vec<String>,
}

impl<'a> UnitOutput<'a> {
    pub(crate) fn new(cache: &'a Cache) -> Self {
        Self::with(Some(cache))
    }

    /// An output that stores nothing: what a replica computes (rank 0 of its job stores the
    /// same unit), so only one process writes the cache.
    pub(crate) fn discarding() -> Self {
        Self::with(None)
    }

    fn with(cache: Option<&'a Cache>) -> Self {
        UnitOutput {
            cache,
            shards: Vec::new(),
            files: Vec::new(),
            rejects: Vec::new(),
            meta: serde_json::Value::Null,
            allowed_files: crate::trust::KNOWN_FILES
                .iter()
                .map(|s| s.to_string())
                .collect(),
        }
    }

    /// The file names this output may hold: the stage's declared files.
    pub(crate) fn allowing(mut self, files: Vec<String>) -> Self {
        self.allowed_files = files;
        self
    }

    /// Stores a finished shard (bytes from [`crate::shard::ShardWriter::finish`]).
    pub fn add_shard(&mut self, split: &str, samples: u64, bytes: &[u8]) -> Result<()> {
        let obj = self.put(bytes)?;
        self.shards.push(ShardOut {
            split: split.to_string(),
            samples,
            blake3: obj.blake3,
            bytes: obj.bytes,
        });
        Ok(())
    }

    /// Stores a named file (a checkpoint, a metrics JSON, a plot).
    pub fn add_file(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
        // Readers refuse records naming files the stage does not declare (crate::trust).
        anyhow::ensure!(
            self.allowed_files.iter().any(|f| f == name),
            "file name `{name}` is not one the stage declares in `Stage::files` (a bug in the stage)"
        );
        let obj = self.put(bytes)?;
        self.files.push(FileOut {
            name: name.to_string(),
            blake3: obj.blake3,
            bytes: obj.bytes,
        });
        Ok(())
    }

    fn put(&self, bytes: &[u8]) -> Result<crate::cas::ObjectRef> {
        match self.cache {
            Some(c) => c.put(bytes),
            None => Ok(crate::cas::ObjectRef {
                blake3: blake3::hash(bytes).to_hex().to_string(),
                bytes: bytes.len() as u64,
            }),
        }
    }

    pub fn reject(&mut self, file: &str, sample: &str, reason: &str) {
        self.rejects.push(Reject {
            file: file.to_string(),
            sample: sample.to_string(),
            reason: reason.to_string(),
        });
    }

    pub fn set_meta(&mut self, meta: serde_json::Value) {
        self.meta = meta;
    }
}

/// A domain stage. Implementations live in `lm4ve-stages`; this crate never names one.
pub trait Stage: Send + Sync {
    /// `pc.tokens`, `train`, ...
    fn kind(&self) -> &str;
    /// Bump whenever the output would change for the same inputs and params.
    fn version(&self) -> u32;
    /// Params as they enter the content key: typed, defaults filled, input paths left out.
    fn key_params(&self) -> serde_json::Value;
    /// Raw input files/directories (hashed into the key).
    fn inputs(&self) -> Vec<InputSpec> {
        Vec::new()
    }
    /// Names of the stages whose artifacts this one reads.
    fn upstream(&self) -> Vec<String> {
        Vec::new()
    }
    /// The shard schema, for stages that write shards.
    fn schema(&self) -> Option<Schema> {
        None
    }
    /// The work units, in order. Must be cheap (read headers, not data) and deterministic.
    fn plan(&self, ctx: &StageCtx) -> Result<Vec<UnitPlan>>;
    /// Does one unit. Sample-level problems go to `out.reject`; an `Err` fails the stage
    /// (finished units stay committed).
    fn run_unit(&self, ctx: &StageCtx, unit: &UnitPlan, out: &mut UnitOutput) -> Result<()>;
    /// The names of the files this stage stores in an artifact (beside its shards):
    /// `add_file` refuses others, and so does a reader of its records. Default: the common
    /// ones ([`crate::trust::KNOWN_FILES`]).
    fn files(&self) -> Vec<String> {
        crate::trust::KNOWN_FILES
            .iter()
            .map(|s| s.to_string())
            .collect()
    }
    /// Extra facts for the manifest once all units are done (class names, metrics).
    fn finish(&self, _ctx: &StageCtx, _units: &[UnitRecord]) -> Result<serde_json::Value> {
        Ok(serde_json::Value::Null)
    }
    /// How much work a build of this stage is, relative to other stages that answer (a
    /// training stage: its floating-point operations), asked once its upstream artifacts are
    /// built. With `--concurrent-stages`, ready stages that answer `None` (data preparation,
    /// evaluations: short, and they unblock others) start first, then the costliest: the
    /// longest training does not start last and run alone at the end. Only the order of
    /// starts depends on it, never a byte.
    fn cost_hint(&self, _upstream: &BTreeMap<String, Upstream>) -> Option<f64> {
        None
    }
}
