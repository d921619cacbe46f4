//! Run records (`runs/<stage>/<key>.json`): what a finished run used and produced, kept so
//! `pipeline status` can say *why* a stage is stale, and for the lab notebook (timings, host).

use crate::cas::Cache;
use crate::fingerprint::InputFile;
use crate::key::KeyParts;
use anyhow::Result;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    pub stage: String,
    pub key: String,
    pub key_parts: KeyParts,
    pub inputs: Vec<InputFile>,
    pub samples: u64,
    pub rejects: u64,
    pub shards: usize,
    pub bytes: u64,
    pub units_run: usize,
    pub units_reused: usize,
    pub started_unix: u64,
    pub seconds: f64,
    pub threads: usize,
    pub tool_version: String,
    pub host: String,
    /// The `-S` overrides of this stage that the run was made with (the key holds their
    /// values; this says where they came from).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overrides: Vec<String>,
}

impl RunRecord {
    pub fn save(&self, cache: &Cache) -> Result<()> {
        let dir = cache.runs_dir(&self.stage);
        cache.write_file(
            &dir.join(format!("{}.json", self.key)),
            &serde_json::to_vec_pretty(self)?,
        )?;
        cache.write_file(&dir.join("latest"), self.key.as_bytes())
    }

    /// The record of the stage's last completed run, if any.
    pub fn latest(cache: &Cache, stage: &str) -> Option<RunRecord> {
        let dir = cache.runs_dir(stage);
        let key = std::fs::read_to_string(dir.join("latest")).ok()?;
        let bytes = std::fs::read(dir.join(format!("{}.json", key.trim()))).ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}

pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "unknown".into())
}
