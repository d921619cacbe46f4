//! `cache gc`: drop the artifacts the current config does not name, then the objects
//! nothing references, then the stat cache's rows of deleted files. How it stays safe beside
//! running `lm4ve` processes: the parent module's docs.

use super::{list_artifacts, list_objects};
use crate::cas::Cache;
use anyhow::{Context, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

#[derive(Debug, Default)]
pub struct GcReport {
    pub artifacts_removed: usize,
    pub objects_removed: usize,
    pub bytes_freed: u64,
    pub objects_kept: usize,
    /// Artifacts kept only because a recent run made them (`--keep-days`).
    pub artifacts_recent: usize,
    /// Another lm4ve process was running on the cache: young files were kept.
    pub runs_active: bool,
    /// Unreferenced objects kept because a run may be about to name them.
    pub objects_young: usize,
    /// Symbolic links and entries that are not content keys: not followed, not deleted.
    pub refused: Vec<String>,
    /// Artifacts kept because their stage's key cannot be computed now (an input missing
    /// or unreadable): (key, stage, why).
    pub undecided: Vec<(String, String, String)>,
    /// Artifacts removed (or, with `dry_run`, that would be): (key, stage or "?").
    pub removed: Vec<(String, String)>,
    /// The stat cache's rows of deleted files (dropped unless `dry_run`) and the rest.
    pub stat_rows: crate::fingerprint::StatPrune,
}

/// How long a file counts as "possibly being written" when a run is active.
const IN_FLIGHT: std::time::Duration = std::time::Duration::from_secs(3600);

#[derive(Debug, Clone, Default)]
pub struct GcOptions {
    pub dry_run: bool,
    /// Also keep the artifacts of runs younger than this many days (by run record).
    pub keep_days: f64,
    /// Stages whose key cannot be computed now (stage → why): every artifact of theirs is
    /// kept, and so is every artifact whose stage cannot be told (gc deletes only what it
    /// can decide about).
    pub undecided: BTreeMap<String, String>,
}

/// Every run record (`runs/<stage>/<key>.json`) with its artifact key.
fn run_records(cache: &Cache) -> impl Iterator<Item = (walkdir::DirEntry, String)> {
    walkdir::WalkDir::new(cache.root().join("runs"))
        .min_depth(2)
        .max_depth(2)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let key = e.file_name().to_str()?.strip_suffix(".json")?.to_string();
            Some((e, key))
        })
}

/// The stage of each artifact key that has a run record (`runs/<stage>/<key>.json`).
fn stages_by_run_record(cache: &Cache) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (e, key) in run_records(cache) {
        if let Some(stage) = e.path().parent().and_then(|p| p.file_name()) {
            out.insert(key, stage.to_string_lossy().into_owned());
        }
    }
    out
}

/// Keys of the artifacts whose run record is younger than `keep_days` (any stage).
pub fn recent_keys(cache: &Cache, keep_days: f64) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    if keep_days <= 0.0 {
        return out;
    }
    let window = std::time::Duration::from_secs_f64(keep_days * 86_400.0);
    for (e, key) in run_records(cache) {
        let young = e
            .metadata()
            .ok()
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age < window);
        if young {
            out.insert(key);
        }
    }
    out
}

/// Modified within [`IN_FLIGHT`] (a file that does not exist is not young).
fn is_young(p: &Path) -> bool {
    match std::fs::metadata(p).and_then(|m| m.modified()) {
        Ok(t) => t.elapsed().map(|age| age < IN_FLIGHT).unwrap_or(true),
        Err(_) => false,
    }
}

/// Keys whose per-key lock another process holds right now.
fn held_keys(cache: &Cache) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let Ok(rd) = std::fs::read_dir(cache.locks_dir()) else {
        return out;
    };
    for e in rd.filter_map(|e| e.ok()) {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(stem) = name.strip_suffix(".lock") else {
            continue;
        };
        if stem == crate::lock::GC_LOCK {
            continue;
        }
        if let Ok(None) = crate::lock::try_exclusive(&cache.locks_dir(), stem) {
            out.insert(stem.split('.').next().unwrap_or(stem).to_string());
        }
    }
    out
}

/// Keeps the artifacts (complete or partial) whose keys are in `keep`, removes the rest,
/// then every object none of the kept artifacts references. `dry_run` only counts.
pub fn gc(cache: &Cache, keep: &BTreeSet<String>, dry_run: bool) -> Result<GcReport> {
    gc_with(
        cache,
        keep,
        &GcOptions {
            dry_run,
            ..Default::default()
        },
    )
}

/// [`gc`] with `--keep-days`; safe beside running `lm4ve` processes (module docs).
pub fn gc_with(cache: &Cache, keep: &BTreeSet<String>, opts: &GcOptions) -> Result<GcReport> {
    let dry_run = opts.dry_run;
    let _exclusive = crate::lock::try_exclusive(&cache.locks_dir(), crate::lock::GC_LOCK)?;
    let runs_active = _exclusive.is_none();
    let held = if runs_active {
        held_keys(cache)
    } else {
        BTreeSet::new()
    };
    let recent = recent_keys(cache, opts.keep_days);
    let mut refused = Vec::new();
    let mut links = Vec::new();
    let artifacts = list_artifacts(cache, &mut refused, &mut links)?;
    let (objects, object_links) = list_objects(cache)?;
    refused.extend(
        links
            .iter()
            .chain(&object_links)
            .map(|l| format!("{}: a symbolic link", l.display())),
    );
    let mut report = GcReport {
        runs_active,
        refused,
        ..Default::default()
    };
    let mut live = BTreeSet::new();
    let by_record = if opts.undecided.is_empty() {
        BTreeMap::new()
    } else {
        stages_by_run_record(cache)
    };
    for (key, manifest, units) in &artifacts {
        let stage = manifest
            .as_ref()
            .map(|m| m.stage.clone())
            .or_else(|| by_record.get(key).cloned());
        // Not deletable when its stage's key cannot be computed now, or when some stage's
        // cannot and this artifact's stage is unknown (it may be that stage's).
        let undecided = if keep.contains(key) || opts.undecided.is_empty() {
            None
        } else {
            match &stage {
                Some(s) => opts.undecided.get(s).cloned(),
                None => Some(format!(
                    "its stage is unknown and the keys of {} cannot be computed",
                    opts.undecided
                        .keys()
                        .map(|s| format!("`{s}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            }
        };
        if let Some(why) = undecided {
            report.undecided.push((
                key.clone(),
                stage.clone().unwrap_or_else(|| "?".into()),
                why,
            ));
            for u in units {
                live.extend(u.objects().map(str::to_string));
            }
            if let Some(m) = manifest {
                live.extend(m.shards.iter().map(|s| s.blake3.clone()));
                live.extend(m.files.iter().map(|f| f.blake3.clone()));
            }
            continue;
        }
        let in_flight = runs_active
            && (held.contains(key)
                || is_young(&cache.artifact_dir(key))
                || is_young(&cache.units_dir(key)));
        let recent_only = !keep.contains(key) && !in_flight && recent.contains(key);
        if recent_only {
            report.artifacts_recent += 1;
        }
        if keep.contains(key) || in_flight || recent_only {
            for u in units {
                live.extend(u.objects().map(str::to_string));
            }
            if let Some(m) = manifest {
                live.extend(m.shards.iter().map(|s| s.blake3.clone()));
                live.extend(m.files.iter().map(|f| f.blake3.clone()));
            }
        } else {
            report.artifacts_removed += 1;
            report
                .removed
                .push((key.clone(), stage.unwrap_or_else(|| "?".into())));
            if !dry_run {
                remove_dir(cache, &cache.artifact_dir(key))?;
            }
        }
    }
    // The staged rebuilds of `--force` runs (`tmp/force-<key>/`): a running one's units
    // are live; an abandoned one (its run gone) is removed.
    if let Ok(rd) = std::fs::read_dir(cache.tmp_dir()) {
        for e in rd.filter_map(|e| e.ok()) {
            let fname = e.file_name().to_string_lossy().into_owned();
            let Some(key) = fname.strip_prefix("force-") else {
                continue;
            };
            let key = key.strip_suffix(".old").unwrap_or(key);
            if !crate::trust::is_hash(key) || !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let running = runs_active && (held.contains(key) || is_young(&e.path()));
            if running {
                let staged = crate::artifact::Journal::staging(cache, key);
                for (rec, _) in staged.records() {
                    live.extend(rec.objects().map(str::to_string));
                }
            } else if !dry_run {
                remove_dir(cache, &e.path())?;
            }
        }
    }
    for p in objects {
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if live.contains(&name) {
            report.objects_kept += 1;
            continue;
        }
        if runs_active && is_young(&p) {
            report.objects_young += 1;
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
    report.stat_rows =
        crate::fingerprint::StatCache::prune_deleted(&cache.stat_cache_path(), dry_run)?;
    Ok(report)
}

/// Removes an artifact directory, refusing one that is (or lies behind) a link.
fn remove_dir(cache: &Cache, p: &Path) -> Result<()> {
    cache.check_inside(p)?;
    std::fs::remove_dir_all(p).with_context(|| format!("removing {}", p.display()))
}
