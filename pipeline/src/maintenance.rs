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
use std::path::PathBuf;

mod gc;
pub use gc::{gc, gc_with, recent_keys, GcOptions, GcReport};

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
