//! `cache verify` (re-hash every object, check every manifest's references) and `cache gc`
//! (drop artifacts the current config does not name, then objects nothing references).
//!
//! gc and concurrent runs: a run stores a unit's objects before the record that names them,
//! so for a moment a live object looks unreferenced. Every run holds the cache's gc lock
//! shared ([`crate::lock::GC_LOCK`]); gc takes it exclusively, so new runs wait for gc. When
//! a run is already going, gc does not wait (runs take hours): it keeps the artifacts whose
//! per-key locks are held, artifact directories and objects younger than an hour, and
//! removes only what is older and unreferenced.

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
    /// (shard path, why): bytes that match their hash but whose header disagrees with the
    /// manifest or cannot be read safely.
    pub bad_shards: Vec<(PathBuf, String)>,
    /// Records (manifests, unit records, artifact directories) that fail
    /// [`crate::trust`], with why.
    pub bad_records: Vec<String>,
    /// Symbolic links inside the cache: never followed, never deleted.
    pub links: Vec<PathBuf>,
    /// Files and folders where the cache layout has none (`cache/README.md`): not read,
    /// not deleted.
    pub stray: Vec<PathBuf>,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.corrupt.is_empty()
            && self.missing.is_empty()
            && self.bad_shards.is_empty()
            && self.bad_records.is_empty()
            && self.links.is_empty()
            && self.stray.is_empty()
    }
}

/// Walks the whole cache without following a link: every symbolic link anywhere, and every
/// entry the layout (`cas.rs`) has no place for. `tmp/` holds writes in progress of any
/// name: only its links are reported.
fn walk_layout(cache: &Cache, links: &mut Vec<PathBuf>, stray: &mut Vec<PathBuf>) {
    use crate::trust::is_hash;
    let root = cache.root();
    let walker = walkdir::WalkDir::new(root)
        .follow_links(false)
        .min_depth(1)
        .sort_by_file_name()
        .into_iter();
    let mut it = walker;
    while let Some(entry) = it.next() {
        let Ok(entry) = entry else { continue };
        let path = entry.path();
        let rel: Vec<String> = path
            .strip_prefix(root)
            .map(|r| {
                r.components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        let ft = entry.file_type();
        if ft.is_symlink() {
            links.push(path.to_path_buf());
            continue;
        }
        let (dir, file) = (ft.is_dir(), ft.is_file());
        let r: Vec<&str> = rel.iter().map(String::as_str).collect();
        let fits = match r.as_slice() {
            ["objects" | "artifacts" | "runs" | "locks" | "tmp"] => dir,
            // stat-cache.tsv: the older form, until a run replaces it.
            ["stat-cache.bin" | "stat-cache.tsv" | "README.md" | ".gitignore"] => file,
            ["objects", fan] => dir && fan.len() == 2 && fan.bytes().all(|b| b.is_ascii_hexdigit()),
            ["objects", fan, h] => file && is_hash(h) && h.starts_with(fan),
            ["artifacts", key] => dir && is_hash(key),
            ["artifacts", _, "manifest.json" | "rejects.jsonl"] => file,
            ["artifacts", _, "units"] => dir,
            ["artifacts", _, "units", u] => file && u.ends_with(".json"),
            ["runs", stage] => dir && crate::trust::is_stage_name(stage),
            ["runs", _, "latest"] => file,
            ["runs", _, f] => file && f.strip_suffix(".json").is_some_and(is_hash),
            ["locks", f] => file && f.ends_with(".lock"),
            ["tmp", ..] => true,
            _ => false,
        };
        if !fits {
            stray.push(path.to_path_buf());
            if dir {
                it.skip_current_dir();
            }
        }
    }
}

/// A manifest must be what its unit records assemble to: the same shards and files (a
/// `model.safetensors` that names another file's object is caught here), sample and reject
/// counts. `None` when they agree (or when there are no unit records to compare with).
fn manifest_vs_units(m: &Manifest, units: &[UnitRecord]) -> Option<String> {
    if units.is_empty() {
        return None;
    }
    let mut from_units: Vec<(String, String, u64, u64)> = Vec::new();
    let mut rejects = 0u64;
    for u in units {
        rejects += u.rejects.len() as u64;
        for sh in &u.shards {
            from_units.push((
                format!("shard {}", sh.split),
                sh.blake3.clone(),
                sh.bytes,
                sh.samples,
            ));
        }
        for f in &u.files {
            from_units.push((format!("file {}", f.name), f.blake3.clone(), f.bytes, 0));
        }
    }
    let mut in_manifest: Vec<(String, String, u64, u64)> = m
        .shards
        .iter()
        .map(|sh| {
            (
                format!("shard {}", sh.split),
                sh.blake3.clone(),
                sh.bytes,
                sh.samples,
            )
        })
        .chain(
            m.files
                .iter()
                .map(|f| (format!("file {}", f.name), f.blake3.clone(), f.bytes, 0)),
        )
        .collect();
    from_units.sort();
    in_manifest.sort();
    if let Some(extra) = in_manifest.iter().find(|x| !from_units.contains(x)) {
        return Some(format!(
            "its {} names object {} (or a size/count) that no unit record has",
            extra.0,
            crate::key::short(&extra.1)
        ));
    }
    if let Some(gone) = from_units.iter().find(|x| !in_manifest.contains(x)) {
        return Some(format!(
            "unit records name {} object {} that the manifest lacks",
            gone.0,
            crate::key::short(&gone.1)
        ));
    }
    if in_manifest.len() != from_units.len() || m.rejects != rejects {
        return Some("its counts are not what its unit records add up to".into());
    }
    None
}

/// Object files, and symbolic links found where objects live.
fn list_objects(cache: &Cache) -> Result<(Vec<PathBuf>, Vec<PathBuf>)> {
    let mut objects = Vec::new();
    let mut links = Vec::new();
    let root = cache.objects_dir();
    for entry in walkdir::WalkDir::new(&root)
        .min_depth(1)
        .max_depth(2)
        .sort_by_file_name()
    {
        let entry = entry.with_context(|| format!("listing {}", root.display()))?;
        if entry.file_type().is_symlink() {
            links.push(entry.into_path());
        } else if entry.depth() == 2 && entry.file_type().is_file() {
            objects.push(entry.into_path());
        }
    }
    Ok((objects, links))
}

/// One artifact directory: its key, its manifest (if complete and valid) and its valid
/// unit records.
type ArtifactEntry = (String, Option<Manifest>, Vec<UnitRecord>);

/// Every artifact key directory of the cache, checked by [`crate::trust`]: directories
/// that are not content keys and records that fail are listed in `bad` (and left alone),
/// symbolic links in `links`.
fn list_artifacts(
    cache: &Cache,
    bad: &mut Vec<String>,
    links: &mut Vec<PathBuf>,
) -> Result<Vec<ArtifactEntry>> {
    let dir = cache.root().join("artifacts");
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return Ok(out);
    };
    let mut keys: Vec<(String, bool)> = Vec::new();
    for e in rd.filter_map(|e| e.ok()) {
        let name = e.file_name().to_string_lossy().into_owned();
        let link = e.file_type().map(|t| t.is_symlink()).unwrap_or(false);
        if link {
            links.push(e.path());
        } else if crate::trust::is_hash(&name) {
            keys.push((name, true));
        } else {
            bad.push(format!(
                "{}: not a content key (left alone)",
                crate::trust::shown(&e.path().display().to_string())
            ));
        }
    }
    keys.sort();
    for (key, _) in keys {
        let mpath = cache.manifest_path(&key);
        let manifest = if std::fs::symlink_metadata(&mpath).is_ok() {
            match Manifest::load_checked(&mpath, &key) {
                Ok(m) => Some(m),
                Err(e) => {
                    // The reason whole: only the record's own values in it are cut.
                    bad.push(crate::trust::escaped(&format!("{e:#}"), usize::MAX));
                    None
                }
            }
        } else {
            None
        };
        let mut units = Vec::new();
        if let Ok(rd) = std::fs::read_dir(cache.units_dir(&key)) {
            for e in rd.filter_map(|e| e.ok()) {
                if e.file_type().map(|t| t.is_symlink()).unwrap_or(false) {
                    links.push(e.path());
                    continue;
                }
                let name = e.file_name().to_string_lossy().into_owned();
                let id = name.strip_suffix(".json").unwrap_or(&name);
                let checked = crate::artifact::read_capped(&e.path())
                    .map_err(|e| format!("{e:#}"))
                    .and_then(|b| crate::trust::parse_unit(&b, id).map_err(|e| e.to_string()));
                match checked {
                    Ok(rec) => units.push(rec),
                    Err(why) => bad.push(format!(
                        "{}: {}",
                        e.path().display(),
                        crate::trust::escaped(&why, usize::MAX)
                    )),
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
                        crate::key::short(key),
                        u.unit
                    ),
                );
            }
        }
    }
    users
}

pub fn verify(cache: &Cache) -> Result<VerifyReport> {
    let mut bad_records = Vec::new();
    let (objects, mut links) = list_objects(cache)?;
    let artifacts = list_artifacts(cache, &mut bad_records, &mut links)?;
    let mut stray = Vec::new();
    walk_layout(cache, &mut links, &mut stray);
    links.sort();
    links.dedup();
    for (key, manifest, units) in &artifacts {
        if let Some(why) = manifest.as_ref().and_then(|m| manifest_vs_units(m, units)) {
            bad_records.push(format!(
                "{}: {why}; run the stage again with --force",
                cache.manifest_path(key).display()
            ));
        }
    }
    let users = users(&artifacts);
    let checked: Vec<(PathBuf, u64, bool)> = objects
        .par_iter()
        .map(|p| {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            match crate::verified::hash_file(p) {
                Ok((hash, bytes)) => (p.clone(), bytes, hash == name),
                Err(_) => (p.clone(), 0, false),
            }
        })
        .collect();
    let mut report = VerifyReport {
        objects: checked.len(),
        bad_records,
        links,
        stray,
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
    let corrupt: BTreeSet<PathBuf> = report.corrupt.iter().map(|c| c.0.clone()).collect();
    for (key, manifest, _) in &artifacts {
        if let Some(m) = manifest {
            for o in m
                .shards
                .iter()
                .map(|s| &s.blake3)
                .chain(m.files.iter().map(|f| &f.blake3))
            {
                if !cache.has_object(o) {
                    report.missing.push((cache.manifest_path(key), o.clone()));
                }
            }
            // A shard can match its hash and still carry a header that lies (issue 16):
            // check it the way a reader will read it.
            let bad: Vec<(PathBuf, String)> = m
                .shards
                .par_iter()
                .filter_map(|s| {
                    let p = cache.object_path(&s.blake3);
                    if corrupt.contains(&p) || !cache.has_object(&s.blake3) {
                        return None;
                    }
                    crate::shard::check_shard(&p, s.samples, m.schema.as_ref())
                        .err()
                        .map(|e| (p, e.to_string()))
                })
                .collect();
            report.bad_shards.extend(bad);
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

/// The stage of each artifact key that has a run record (`runs/<stage>/<key>.json`).
fn stages_by_run_record(cache: &Cache) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for e in walkdir::WalkDir::new(cache.root().join("runs"))
        .min_depth(2)
        .max_depth(2)
        .into_iter()
        .filter_map(|e| e.ok())
    {
        let name = e.file_name().to_string_lossy();
        let Some(key) = name.strip_suffix(".json") else {
            continue;
        };
        if let Some(stage) = e.path().parent().and_then(|p| p.file_name()) {
            out.insert(key.to_string(), stage.to_string_lossy().into_owned());
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
    for e in walkdir::WalkDir::new(cache.root().join("runs"))
        .min_depth(2)
        .max_depth(2)
        .into_iter()
        .filter_map(|e| e.ok())
    {
        let name = e.file_name().to_string_lossy();
        let Some(key) = name.strip_suffix(".json") else {
            continue;
        };
        let young = e
            .metadata()
            .ok()
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age < window);
        if young {
            out.insert(key.to_string());
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lock::{acquire_shared, GC_LOCK};

    #[test]
    fn gc_beside_a_running_run_keeps_what_it_may_be_writing() {
        let dir = tempfile::tempdir().unwrap();
        let c = Cache::open(dir.path()).unwrap();
        // Stored by a run, not yet named by a unit record.
        let o = c.put(b"in flight").unwrap();
        let none = BTreeSet::new();
        {
            let _run = acquire_shared(&c.locks_dir(), GC_LOCK, || {}).unwrap();
            let r = gc_with(&c, &none, &GcOptions::default()).unwrap();
            assert!(r.runs_active);
            assert_eq!((r.objects_young, r.objects_removed), (1, 0));
            assert!(c.object_path(&o.blake3).exists());
        }
        let r = gc_with(&c, &none, &GcOptions::default()).unwrap();
        assert!(!r.runs_active);
        assert_eq!(r.objects_removed, 1);
        assert!(!c.object_path(&o.blake3).exists());
    }

    #[test]
    fn gc_keeps_the_artifacts_of_stages_it_cannot_key() {
        let dir = tempfile::tempdir().unwrap();
        let c = Cache::open(dir.path()).unwrap();
        let (a, b) = ("ab".repeat(32), "cd".repeat(32));
        for key in [&a, &b] {
            let o = c.put(key.as_bytes()).unwrap();
            let rec = UnitRecord {
                unit: "u".into(),
                shards: Vec::new(),
                files: vec![crate::artifact::FileOut {
                    name: "metrics.json".into(),
                    blake3: o.blake3.clone(),
                    bytes: o.bytes,
                }],
                rejects: Vec::new(),
                meta: serde_json::Value::Null,
            };
            crate::artifact::Journal::new(&c, key).commit(&rec).unwrap();
        }
        // `a` is stage s1's (its run record says so); `b`'s stage is unknown.
        c.write_file(&c.runs_dir("s1").join(format!("{a}.json")), b"{}")
            .unwrap();
        let none = BTreeSet::new();
        let mut opts = GcOptions::default();
        opts.undecided
            .insert("s1".into(), "its input /x is missing".into());
        let r = gc_with(&c, &none, &opts).unwrap();
        assert_eq!(r.artifacts_removed, 0, "{r:?}");
        assert_eq!(r.undecided.len(), 2);
        assert!(c.artifact_dir(&a).exists() && c.artifact_dir(&b).exists());
        // Once every key is computable, the unused ones go.
        let r = gc_with(&c, &none, &GcOptions::default()).unwrap();
        assert_eq!(r.artifacts_removed, 2);
    }

    #[test]
    fn keep_days_keeps_artifacts_of_recent_runs() {
        let dir = tempfile::tempdir().unwrap();
        let c = Cache::open(dir.path()).unwrap();
        let key = "ab".repeat(32);
        let o = c.put(b"shard").unwrap();
        let rec = UnitRecord {
            unit: "u".into(),
            shards: Vec::new(),
            files: vec![crate::artifact::FileOut {
                name: "metrics.json".into(),
                blake3: o.blake3.clone(),
                bytes: o.bytes,
            }],
            rejects: Vec::new(),
            meta: serde_json::Value::Null,
        };
        crate::artifact::Journal::new(&c, &key)
            .commit(&rec)
            .unwrap();
        c.write_file(&c.runs_dir("s").join(format!("{key}.json")), b"{}")
            .unwrap();
        let none = BTreeSet::new();
        let opts = GcOptions {
            keep_days: 1.0,
            ..Default::default()
        };
        let r = gc_with(&c, &none, &opts).unwrap();
        assert_eq!((r.artifacts_recent, r.artifacts_removed), (1, 0));
        assert!(c.object_path(&o.blake3).exists());
        let r = gc_with(&c, &none, &GcOptions::default()).unwrap();
        assert_eq!((r.artifacts_removed, r.objects_removed), (1, 1));
    }
}
