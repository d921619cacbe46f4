//! `cache verify` (re-hash every object, check every manifest's references) and `cache gc`
//! (drop artifacts the current config does not name, then objects nothing references).

use crate::artifact::{Manifest, UnitRecord};
use crate::cas::Cache;
use anyhow::{Context, Result};
use rayon::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

#[derive(Debug, Default)]
pub struct VerifyReport {
    pub objects: usize,
    pub bytes: u64,
    /// (object path, what uses it)
    pub corrupt: Vec<(PathBuf, String)>,
    /// (manifest path, missing object)
    pub missing: Vec<(PathBuf, String)>,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.corrupt.is_empty() && self.missing.is_empty()
    }
}

fn list_objects(cache: &Cache) -> Result<Vec<PathBuf>> {
    let mut objects = Vec::new();
    let root = cache.objects_dir();
    for entry in walkdir::WalkDir::new(&root)
        .min_depth(2)
        .max_depth(2)
        .sort_by_file_name()
    {
        let entry = entry.with_context(|| format!("listing {}", root.display()))?;
        if entry.file_type().is_file() {
            objects.push(entry.into_path());
        }
    }
    Ok(objects)
}

/// One artifact directory: its key, its manifest (if complete) and its unit records.
type ArtifactEntry = (String, Option<Manifest>, Vec<UnitRecord>);

/// Every artifact key directory of the cache.
fn list_artifacts(cache: &Cache) -> Result<Vec<ArtifactEntry>> {
    let dir = cache.root().join("artifacts");
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return Ok(out);
    };
    let mut keys: Vec<String> = rd
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    keys.sort();
    for key in keys {
        let manifest = Manifest::load(&cache.manifest_path(&key)).ok();
        let mut units = Vec::new();
        if let Ok(rd) = std::fs::read_dir(cache.units_dir(&key)) {
            for e in rd.filter_map(|e| e.ok()) {
                if let Ok(bytes) = std::fs::read(e.path()) {
                    if let Ok(rec) = serde_json::from_slice::<UnitRecord>(&bytes) {
                        units.push(rec);
                    }
                }
            }
        }
        out.push((key, manifest, units));
    }
    Ok(out)
}

/// object hash → human description of who uses it.
fn users(artifacts: &[ArtifactEntry]) -> BTreeMap<String, String> {
    let mut users = BTreeMap::new();
    for (key, manifest, units) in artifacts {
        let stage = manifest.as_ref().map(|m| m.stage.as_str()).unwrap_or("?");
        for u in units {
            for o in u.objects() {
                users.insert(
                    o.to_string(),
                    format!(
                        "stage {stage}, artifact {}, unit {}",
                        &key[..12.min(key.len())],
                        u.unit
                    ),
                );
            }
        }
    }
    users
}

pub fn verify(cache: &Cache) -> Result<VerifyReport> {
    let objects = list_objects(cache)?;
    let artifacts = list_artifacts(cache)?;
    let users = users(&artifacts);
    let checked: Vec<(PathBuf, u64, bool)> = objects
        .par_iter()
        .map(|p| {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            match std::fs::read(p) {
                Ok(bytes) => (
                    p.clone(),
                    bytes.len() as u64,
                    blake3::hash(&bytes).to_hex().as_str() == name,
                ),
                Err(_) => (p.clone(), 0, false),
            }
        })
        .collect();
    let mut report = VerifyReport {
        objects: checked.len(),
        ..Default::default()
    };
    for (p, bytes, ok) in checked {
        report.bytes += bytes;
        if !ok {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let user = users
                .get(&name)
                .cloned()
                .unwrap_or_else(|| "unreferenced".into());
            report.corrupt.push((p, user));
        }
    }
    for (key, manifest, _) in &artifacts {
        if let Some(m) = manifest {
            for o in m
                .shards
                .iter()
                .map(|s| &s.blake3)
                .chain(m.files.iter().map(|f| &f.blake3))
            {
                if !cache.object_path(o).exists() {
                    report.missing.push((cache.manifest_path(key), o.clone()));
                }
            }
        }
    }
    Ok(report)
}

#[derive(Debug, Default)]
pub struct GcReport {
    pub artifacts_removed: usize,
    pub objects_removed: usize,
    pub bytes_freed: u64,
    pub objects_kept: usize,
}

/// Keeps the artifacts (complete or partial) whose keys are in `keep`, removes the rest,
/// then every object none of the kept artifacts references. `dry_run` only counts.
pub fn gc(cache: &Cache, keep: &BTreeSet<String>, dry_run: bool) -> Result<GcReport> {
    let artifacts = list_artifacts(cache)?;
    let mut report = GcReport::default();
    let mut live = BTreeSet::new();
    for (key, manifest, units) in &artifacts {
        if keep.contains(key) {
            for u in units {
                live.extend(u.objects().map(str::to_string));
            }
            if let Some(m) = manifest {
                live.extend(m.shards.iter().map(|s| s.blake3.clone()));
                live.extend(m.files.iter().map(|f| f.blake3.clone()));
            }
        } else {
            report.artifacts_removed += 1;
            if !dry_run {
                remove_dir(&cache.artifact_dir(key))?;
            }
        }
    }
    for p in list_objects(cache)? {
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if live.contains(&name) {
            report.objects_kept += 1;
            continue;
        }
        report.objects_removed += 1;
        report.bytes_freed += std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
        if !dry_run {
            std::fs::remove_file(&p).with_context(|| format!("removing {}", p.display()))?;
        }
    }
    // Temp files of crashed runs; recent ones may belong to a run in progress.
    if let Ok(rd) = std::fs::read_dir(cache.root().join("tmp")) {
        for e in rd.filter_map(|e| e.ok()) {
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age.as_secs() > 3600);
            if old && !dry_run {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    Ok(report)
}

fn remove_dir(p: &Path) -> Result<()> {
    std::fs::remove_dir_all(p).with_context(|| format!("removing {}", p.display()))
}
