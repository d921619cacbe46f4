//! Artifacts between the local cache and a [`Remote`]: pull a finished artifact, pull
//! finished units (to assemble what `--part` runs published), push an artifact or its
//! units, and the remote's `verify` and `gc`.
//!
//! The order of writes is the whole consistency story (module docs of [`crate::remote`]):
//! a push uploads objects, then unit records, then `rejects.jsonl`, then the manifest, then
//! the run record; a pull stores verified objects, then records, then the manifest, locally.
//! `gc` deletes in the opposite order: manifests, records, and only then unreferenced
//! objects that are older than a grace period (a push in flight uploads objects first).
//!
//! Everything read from the remote is checked before use ([`crate::trust`]): object names
//! must be blake3 hex (they become file names), unit ids must be file-name safe, a manifest
//! must carry the key it was fetched under, point at its objects the standard way, agree
//! with its unit records and with what this machine's stage would write (kind, schema, unit
//! ids, meta), and every shard's header must agree with the manifest. A pull writes the
//! manifest it re-derived, not the bytes it was sent.

use super::{object_key, Remote, RemoteError};
use crate::artifact::{Journal, Manifest, UnitRecord};
use crate::cas::Cache;
use crate::key::short;
use crate::progress::Progress;
use crate::trust::{self, is_hash, is_name, Expected, TrustError};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant, SystemTime};

/// What a pull brought in.
#[derive(Debug, Default, Clone)]
pub struct PullReport {
    /// Objects downloaded (ones already local are not counted).
    pub objects: usize,
    pub bytes: u64,
    /// Unit records adopted (unit pulls only).
    pub units: usize,
    pub seconds: f64,
}

/// What a push sent.
#[derive(Debug, Default, Clone)]
pub struct PushReport {
    pub objects_uploaded: usize,
    pub objects_present: usize,
    pub bytes: u64,
    pub units: usize,
    /// The manifest was pushed (the artifact is complete on the remote now).
    pub manifest: bool,
    /// The remote already had the complete artifact; nothing was sent.
    pub already: bool,
    /// Multipart uploads that resumed an interrupted push.
    pub resumed: usize,
    /// Objects the remote had but that were old, uploaded again so remote gc spares them.
    pub refreshed: usize,
    pub seconds: f64,
}

pub fn manifest_rel(key: &str) -> String {
    format!("artifacts/{key}/manifest.json")
}
fn units_rel(key: &str) -> String {
    format!("artifacts/{key}/units")
}
fn unit_rel(key: &str, unit: &str) -> String {
    format!("artifacts/{key}/units/{unit}.json")
}
fn rejects_rel(key: &str) -> String {
    format!("artifacts/{key}/rejects.jsonl")
}
fn run_rel(stage: &str, key: &str) -> String {
    format!("runs/{stage}/{key}.json")
}

fn bad_record(remote: &Remote, path: &str, why: impl std::fmt::Display) -> RemoteError {
    RemoteError::BadRecord {
        path: trust::shown(path),
        kind: remote.kind_name(),
        why: why.to_string(),
    }
}

fn check_manifest(remote: &Remote, key: &str, bytes: &[u8]) -> Result<Manifest, RemoteError> {
    trust::parse_manifest(bytes, key).map_err(|e| bad_record(remote, &manifest_rel(key), e))
}

fn check_unit(
    remote: &Remote,
    rel: &str,
    id: &str,
    bytes: &[u8],
) -> Result<UnitRecord, RemoteError> {
    trust::parse_unit(bytes, id).map_err(|e| bad_record(remote, rel, e))
}

fn manifest_objects(m: &Manifest) -> Vec<(String, u64)> {
    let mut seen = BTreeSet::new();
    m.shards
        .iter()
        .map(|s| (s.blake3.clone(), s.bytes))
        .chain(m.files.iter().map(|f| (f.blake3.clone(), f.bytes)))
        .filter(|(h, _)| seen.insert(h.clone()))
        .collect()
}

fn unit_objects(u: &UnitRecord) -> impl Iterator<Item = (String, u64)> + '_ {
    u.shards
        .iter()
        .map(|s| (s.blake3.clone(), s.bytes))
        .chain(u.files.iter().map(|f| (f.blake3.clone(), f.bytes)))
}

fn local(e: anyhow::Error) -> RemoteError {
    RemoteError::Local(format!("{e:#}"))
}

/// Whether the remote has the finished artifact `key`.
pub fn has_artifact(remote: &Remote, key: &str) -> Result<bool, RemoteError> {
    Ok(remote.head(&manifest_rel(key))?.is_some())
}

/// Pulls the finished artifact `key` of `stage` into the local cache: its manifest and
/// unit records (checked, and the manifest re-derived from the records and `expect`), its
/// objects (verified by hash and size), its shard headers (checked against the manifest);
/// then, locally, the unit records, `rejects.jsonl` (re-derived), the re-derived manifest
/// (last) and the run record. `Ok(None)` when the remote does not have it. On anything
/// refused nothing is marked complete locally (good objects stay: a unit pull or the
/// stage's own run uses them).
pub fn pull_artifact(
    remote: &Remote,
    cache: &Cache,
    key: &str,
    stage: &str,
    expect: &Expected,
    progress: &Progress,
) -> Result<Option<PullReport>, RemoteError> {
    let started = Instant::now();
    let rel = manifest_rel(key);
    let Some(bytes) = remote.get_small(&rel)? else {
        return Ok(None);
    };
    let m = check_manifest(remote, key, &bytes)?;
    let ids: Vec<String> = match &expect.units {
        Some(plan) => plan.clone(),
        None => remote_units(remote, key)?.into_iter().collect(),
    };
    let rels: Vec<String> = ids.iter().map(|u| unit_rel(key, u)).collect();
    let bodies = remote.get_many(&rels)?;
    let mut units = Vec::with_capacity(ids.len());
    for ((id, urel), body) in ids.iter().zip(&rels).zip(bodies) {
        let Some(b) = body else {
            return Err(bad_record(
                remote,
                &rel,
                TrustError::Inconsistent(format!("the record of its unit {id} is missing")),
            ));
        };
        units.push(check_unit(remote, urel, id, &b)?);
    }
    let (manifest, ordered) =
        trust::rederive(&m, units, expect).map_err(|e| bad_record(remote, &rel, e))?;
    let objects = manifest_objects(&manifest);
    let missing: Vec<(String, u64)> = objects
        .iter()
        .filter(|(h, _)| !cache.has_object(h))
        .cloned()
        .collect();
    let total: u64 = missing.iter().fold(0u64, |a, o| a.saturating_add(o.1));
    let bar = progress.bytes_bar(total, &format!("pull {stage} {}", short(key)));
    let results = remote.pull_objects(cache, &missing, &bar);
    bar.finish_and_clear();
    let mut report = PullReport::default();
    let mut failed = Vec::new();
    let sizes: BTreeMap<&str, u64> = missing.iter().map(|(h, s)| (h.as_str(), *s)).collect();
    for (h, r) in &results {
        match r {
            Ok(true) => {
                report.objects += 1;
                report.bytes += sizes.get(h.as_str()).copied().unwrap_or(0);
            }
            Ok(false) => {}
            Err(e) => failed.push(e.to_string()),
        }
    }
    if !failed.is_empty() {
        return Err(RemoteError::Pull {
            failed: failed.len(),
            total: objects.len(),
            first: failed.swap_remove(0),
        });
    }
    // The bytes match their hashes; now the shards must be what the manifest says they are
    // (a correctly hashed shard can still carry a header that lies).
    for s in &manifest.shards {
        crate::shard::check_shard(
            &cache.object_path(&s.blake3),
            s.samples,
            manifest.schema.as_ref(),
        )
        .map_err(|e| bad_record(remote, &rel, format!("shard {}: {e}", short(&s.blake3))))?;
    }
    let journal = Journal::new(cache, key);
    for u in &ordered {
        journal.commit(u).map_err(local)?;
    }
    let mut rejects = String::new();
    for r in ordered.iter().flat_map(|u| &u.rejects) {
        rejects.push_str(&serde_json::to_string(r).map_err(|e| RemoteError::Local(e.to_string()))?);
        rejects.push('\n');
    }
    cache
        .write_file(
            &cache.artifact_dir(key).join("rejects.jsonl"),
            rejects.as_bytes(),
        )
        .map_err(local)?;
    let pretty =
        serde_json::to_vec_pretty(&manifest).map_err(|e| RemoteError::Local(e.to_string()))?;
    cache
        .write_file(&cache.manifest_path(key), &pretty)
        .map_err(local)?;
    // The run record says when/where it was built (for `status`); optional.
    if let Ok(Some(rec)) = remote.get_small(&run_rel(stage, key)) {
        if trust::parse_run_record(&rec, stage, key).is_ok() {
            let dir = cache.runs_dir(stage);
            let _ = cache.write_file(&dir.join(format!("{key}.json")), &rec);
            let _ = cache.write_file(&dir.join("latest"), key.as_bytes());
        }
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(Some(report))
}

/// Finished units of `key` that the remote has, among `wanted`.
pub fn remote_units(remote: &Remote, key: &str) -> Result<BTreeSet<String>, RemoteError> {
    let dir = units_rel(key);
    Ok(remote
        .list(&dir)?
        .into_iter()
        .filter_map(|l| {
            let name = l.rel.strip_prefix(&dir)?.strip_prefix('/')?;
            let id = name.strip_suffix(".json")?;
            is_name(id).then(|| id.to_string())
        })
        .collect())
}

/// Units pulled by [`pull_units`].
#[derive(Debug, Default)]
pub struct PulledUnits {
    pub records: Vec<UnitRecord>,
    pub report: PullReport,
    /// Units the remote has but that were refused (a bad object or record), with why.
    pub refused: Vec<String>,
}

/// Pulls the finished units among `wanted` that the remote has: their objects (verified),
/// then their records into the local journal. A unit with a refused object is left out
/// (and listed in `refused`) so the stage computes it.
/// A unit's shards must have the stage's `schema` and the sample counts the record says.
pub fn pull_units(
    remote: &Remote,
    cache: &Cache,
    key: &str,
    stage: &str,
    wanted: &BTreeSet<String>,
    schema: Option<&crate::shard::Schema>,
    progress: &Progress,
) -> Result<PulledUnits, RemoteError> {
    let started = Instant::now();
    let mut out = PulledUnits::default();
    let have = remote_units(remote, key)?;
    let ids: Vec<String> = have.intersection(wanted).cloned().collect();
    if ids.is_empty() {
        return Ok(out);
    }
    let rels: Vec<String> = ids.iter().map(|u| unit_rel(key, u)).collect();
    let bodies = remote.get_many(&rels)?;
    let mut recs = Vec::new();
    for ((id, rel), body) in ids.iter().zip(&rels).zip(bodies) {
        let Some(bytes) = body else { continue };
        match check_unit(remote, rel, id, &bytes) {
            Ok(rec) => recs.push((rec, bytes)),
            Err(e) => out.refused.push(e.to_string()),
        }
    }
    let mut seen = BTreeSet::new();
    let objects: Vec<(String, u64)> = recs
        .iter()
        .flat_map(|(r, _)| unit_objects(r))
        .filter(|(h, _)| !cache.has_object(h) && seen.insert(h.clone()))
        .collect();
    let total = objects.iter().map(|o| o.1).sum();
    let bar = progress.bytes_bar(total, &format!("pull {stage} units {}", short(key)));
    let results: BTreeMap<String, Result<bool, RemoteError>> = remote
        .pull_objects(cache, &objects, &bar)
        .into_iter()
        .collect();
    bar.finish_and_clear();
    for (h, size) in &objects {
        if let Some(Ok(true)) = results.get(h) {
            out.report.objects += 1;
            out.report.bytes += size;
        }
    }
    let journal = Journal::new(cache, key);
    for (rec, bytes) in recs {
        let bad: Vec<String> = rec
            .objects()
            .filter_map(|h| match results.get(h) {
                Some(Err(e)) => Some(e.to_string()),
                _ if !cache.has_object(h) => Some(format!("object {h} not pulled")),
                _ => None,
            })
            .chain(rec.shards.iter().filter_map(|s| {
                crate::shard::check_shard(&cache.object_path(&s.blake3), s.samples, schema)
                    .err()
                    .map(|e| format!("shard {}: {e}", short(&s.blake3)))
            }))
            .collect();
        if let Some(first) = bad.into_iter().next() {
            out.refused
                .push(format!("unit {}: {first}", trust::shown(&rec.unit)));
            continue;
        }
        journal.commit_bytes(&rec.unit, &bytes).map_err(local)?;
        out.records.push(rec);
    }
    out.report.units = out.records.len();
    out.report.seconds = started.elapsed().as_secs_f64();
    Ok(out)
}

/// Pushes what the local cache has of artifact `key`: objects first, then the unit records
/// the remote lacks, then (for a finished artifact) `rejects.jsonl`, the manifest and the
/// run record. Skips everything when the remote already has the manifest, unless `force`
/// (which also re-uploads objects that are present: the repair for a damaged remote).
pub fn push_artifact(
    remote: &Remote,
    cache: &Cache,
    key: &str,
    stage: &str,
    force: bool,
    progress: &Progress,
) -> Result<PushReport, RemoteError> {
    let started = Instant::now();
    let mut report = PushReport::default();
    let manifest_path = cache.manifest_path(key);
    let manifest = if manifest_path.exists() {
        Some(Manifest::load_checked(&manifest_path, key).map_err(local)?)
    } else {
        None
    };
    let refused: BTreeSet<String> = remote.refused_objects().into_iter().collect();
    if manifest.is_some() && !force && refused.is_empty() && has_artifact(remote, key)? {
        report.already = true;
        return Ok(report);
    }
    let units = Journal::new(cache, key).records();
    let on_remote = if force {
        BTreeSet::new()
    } else {
        remote_units(remote, key)?
    };
    // Objects of units already on the remote are there too (records go after objects).
    let covered: BTreeSet<String> = units
        .iter()
        .filter(|(u, _)| on_remote.contains(&u.unit))
        .flat_map(|(u, _)| u.objects().map(str::to_string))
        .filter(|h| !refused.contains(h))
        .collect();
    let mut objects: BTreeSet<String> = units
        .iter()
        .filter(|(u, _)| !on_remote.contains(&u.unit))
        .flat_map(|(u, _)| u.objects().map(str::to_string))
        .collect();
    if let Some(m) = &manifest {
        objects.extend(manifest_objects(m).into_iter().map(|o| o.0));
    }
    objects.extend(refused.iter().filter(|h| cache.has_object(h)).cloned());
    let objects: Vec<String> = objects
        .into_iter()
        .filter(|h| !covered.contains(h))
        .collect();
    let total: u64 = objects
        .iter()
        .map(|h| {
            std::fs::symlink_metadata(cache.object_path(h))
                .map(|m| m.len())
                .unwrap_or(0)
        })
        .fold(0u64, u64::saturating_add);
    let bar = progress.bytes_bar(total, &format!("push {stage} {}", short(key)));
    let counts = remote.push_objects(cache, &objects, force, &bar);
    bar.finish_and_clear();
    let counts = counts?;
    report.objects_uploaded = counts.uploaded;
    report.objects_present = counts.present;
    report.bytes = counts.bytes;
    report.resumed = counts.resumed;
    report.refreshed = counts.refreshed;
    let records: Vec<(String, Vec<u8>)> = units
        .into_iter()
        .filter(|(u, _)| !on_remote.contains(&u.unit))
        .map(|(u, bytes)| (unit_rel(key, &u.unit), bytes))
        .collect();
    report.units = records.len();
    remote.put_many(records)?;
    if manifest.is_some() {
        let rejects = crate::artifact::read_capped(&cache.artifact_dir(key).join("rejects.jsonl"))
            .unwrap_or_default();
        remote.put_small(&rejects_rel(key), rejects)?;
        let bytes = crate::artifact::read_capped(&manifest_path).map_err(local)?;
        remote.put_small(&manifest_rel(key), bytes)?;
        report.manifest = true;
        let run = cache.runs_dir(stage).join(format!("{key}.json"));
        if let Ok(rec) = crate::artifact::read_capped(&run) {
            if trust::parse_run_record(&rec, stage, key).is_ok() {
                remote.put_small(&run_rel(stage, key), rec)?;
            }
        }
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// `cache verify --remote`.
#[derive(Debug, Default)]
pub struct RemoteVerifyReport {
    pub objects: usize,
    pub bytes: u64,
    /// (object, what uses it, what is wrong)
    pub corrupt: Vec<(String, String, String)>,
    /// (record path on the remote, missing object)
    pub missing: Vec<(String, String)>,
    /// Records that do not parse, with why.
    pub bad_records: Vec<String>,
}

impl RemoteVerifyReport {
    pub fn ok(&self) -> bool {
        self.corrupt.is_empty() && self.missing.is_empty() && self.bad_records.is_empty()
    }
}

/// The records of one artifact on the remote.
struct RemoteArtifact {
    manifest: Option<Manifest>,
    units: Vec<UnitRecord>,
    /// Every file under `artifacts/<key>/`, with its time.
    files: Vec<(String, SystemTime)>,
}

/// Reads every artifact's records (manifest + unit records) from the remote.
fn read_artifacts(
    remote: &Remote,
    only: Option<&BTreeSet<String>>,
    bad: &mut Vec<String>,
) -> Result<BTreeMap<String, RemoteArtifact>, RemoteError> {
    let mut arts: BTreeMap<String, RemoteArtifact> = BTreeMap::new();
    for l in remote.list("artifacts")? {
        let mut parts = l.rel.splitn(3, '/');
        let (_, Some(key), Some(rest)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        if !is_hash(key) {
            // Not ours (or a trap): reported, never read or deleted.
            let why = format!("artifacts/{}: not a content key", trust::shown(key));
            if !bad.contains(&why) {
                bad.push(why);
            }
            continue;
        }
        let a = arts
            .entry(key.to_string())
            .or_insert_with(|| RemoteArtifact {
                manifest: None,
                units: Vec::new(),
                files: Vec::new(),
            });
        a.files.push((rest.to_string(), l.modified));
    }
    let mut rels = Vec::new();
    for (key, a) in &arts {
        if only.is_some_and(|o| !o.contains(key)) {
            continue;
        }
        for (rest, _) in &a.files {
            if rest == "manifest.json" || (rest.starts_with("units/") && rest.ends_with(".json")) {
                rels.push((key.clone(), rest.clone()));
            }
        }
    }
    let paths: Vec<String> = rels
        .iter()
        .map(|(k, r)| format!("artifacts/{k}/{r}"))
        .collect();
    let bodies = remote.get_many(&paths)?;
    for (((key, rest), path), body) in rels.iter().zip(&paths).zip(bodies) {
        let Some(bytes) = body else { continue };
        let Some(a) = arts.get_mut(key) else { continue };
        if rest == "manifest.json" {
            match check_manifest(remote, key, &bytes) {
                Ok(m) => a.manifest = Some(m),
                Err(e) => bad.push(e.to_string()),
            }
        } else {
            let id = rest
                .trim_start_matches("units/")
                .trim_end_matches(".json")
                .to_string();
            match check_unit(remote, path, &id, &bytes) {
                Ok(u) => a.units.push(u),
                Err(e) => bad.push(e.to_string()),
            }
        }
    }
    Ok(arts)
}

fn list_objects(remote: &Remote) -> Result<Vec<(String, u64, SystemTime)>, RemoteError> {
    Ok(remote
        .list("objects")?
        .into_iter()
        .filter_map(|l| {
            let name = l.rel.rsplit('/').next()?.to_string();
            is_hash(&name).then_some((name, l.size, l.modified))
        })
        .collect())
}

/// Re-hashes every object on the remote and checks that every record's objects exist.
pub fn verify(remote: &Remote, progress: &Progress) -> Result<RemoteVerifyReport, RemoteError> {
    let mut report = RemoteVerifyReport::default();
    let objects = list_objects(remote)?;
    let arts = read_artifacts(remote, None, &mut report.bad_records)?;
    let mut users: BTreeMap<String, String> = BTreeMap::new();
    for (key, a) in &arts {
        let stage = a.manifest.as_ref().map(|m| m.stage.as_str()).unwrap_or("?");
        for u in &a.units {
            for h in u.objects() {
                users.insert(
                    h.to_string(),
                    format!("stage {stage}, artifact {}, unit {}", short(key), u.unit),
                );
            }
        }
        if let Some(m) = &a.manifest {
            for (h, _) in manifest_objects(m) {
                users
                    .entry(h)
                    .or_insert_with(|| format!("stage {stage}, artifact {}", short(key)));
            }
        }
    }
    let list: Vec<(String, u64)> = objects.iter().map(|(h, s, _)| (h.clone(), *s)).collect();
    report.objects = list.len();
    report.bytes = list.iter().map(|o| o.1).sum();
    let bar = progress.bytes_bar(report.bytes, "verify remote");
    let checked = remote.check_objects(&list, &bar)?;
    bar.finish_and_clear();
    for (h, r) in checked {
        if let Err(e) = r {
            let user = users
                .get(&h)
                .cloned()
                .unwrap_or_else(|| "unreferenced".into());
            report.corrupt.push((h, user, e.to_string()));
        }
    }
    report.corrupt.sort();
    let present: BTreeSet<&str> = objects.iter().map(|(h, _, _)| h.as_str()).collect();
    for (key, a) in &arts {
        if let Some(m) = &a.manifest {
            for (h, _) in manifest_objects(m) {
                if !present.contains(h.as_str()) {
                    report.missing.push((manifest_rel(key), h));
                }
            }
        }
        for u in &a.units {
            for h in u.objects() {
                if !present.contains(h) {
                    report.missing.push((unit_rel(key, &u.unit), h.to_string()));
                }
            }
        }
    }
    Ok(report)
}

/// `cache gc --remote`.
#[derive(Debug, Default)]
pub struct RemoteGcReport {
    pub artifacts_removed: usize,
    pub artifacts_kept: usize,
    pub objects_removed: usize,
    pub bytes_freed: u64,
    pub objects_kept: usize,
    /// Unreferenced objects kept because they are younger than the grace period.
    pub objects_young: usize,
    /// Artifacts removed (with `dry_run`: that would be): key, stage (or "?"), age of the
    /// newest file.
    pub removed: Vec<(String, String, Duration)>,
}

/// Keeps the artifacts named in `keep` (the current config's keys) and those with a run
/// record or any file newer than `keep_days`; removes the rest, records first, then every
/// object nothing kept references and that is older than `grace` (a push in flight uploads
/// objects before their records, and machines share no lock).
pub fn gc(
    remote: &Remote,
    keep: &BTreeSet<String>,
    keep_days: f64,
    grace: Duration,
    dry_run: bool,
) -> Result<RemoteGcReport, RemoteError> {
    let now = SystemTime::now();
    let recent_window = Duration::from_secs_f64((keep_days.max(0.0)) * 86_400.0).max(grace);
    let is_recent = |t: SystemTime| {
        now.duration_since(t)
            .map(|a| a < recent_window)
            .unwrap_or(true)
    };
    let mut recent: BTreeSet<String> = BTreeSet::new();
    for l in remote.list("runs")? {
        if let Some(key) = l
            .rel
            .rsplit('/')
            .next()
            .and_then(|n| n.strip_suffix(".json"))
        {
            if is_recent(l.modified) {
                recent.insert(key.to_string());
            }
        }
    }
    let mut bad = Vec::new();
    let arts = read_artifacts(remote, None, &mut bad)?;
    let mut report = RemoteGcReport::default();
    let mut live: BTreeSet<String> = BTreeSet::new();
    // Manifests go first: from then on no reader takes those artifacts as complete.
    let mut doomed_manifests: Vec<String> = Vec::new();
    let mut doomed: Vec<String> = Vec::new();
    for (key, a) in &arts {
        let kept = keep.contains(key)
            || recent.contains(key)
            || a.files.iter().any(|(_, t)| is_recent(*t));
        if kept {
            report.artifacts_kept += 1;
            for u in &a.units {
                live.extend(u.objects().map(str::to_string));
            }
            if let Some(m) = &a.manifest {
                live.extend(manifest_objects(m).into_iter().map(|o| o.0));
            }
        } else {
            report.artifacts_removed += 1;
            let newest = a.files.iter().map(|(_, t)| *t).max().unwrap_or(now);
            report.removed.push((
                key.clone(),
                a.manifest
                    .as_ref()
                    .map(|m| m.stage.clone())
                    .unwrap_or_else(|| "?".into()),
                now.duration_since(newest).unwrap_or_default(),
            ));
            for (f, _) in &a.files {
                let rel = format!("artifacts/{key}/{f}");
                if f == "manifest.json" {
                    doomed_manifests.push(rel);
                } else {
                    doomed.push(rel);
                }
            }
        }
    }
    if !dry_run {
        remote.delete_many(&doomed_manifests)?;
        remote.delete_many(&doomed)?;
    }
    let mut unreferenced = Vec::new();
    for (h, size, modified) in list_objects(remote)? {
        if live.contains(&h) {
            report.objects_kept += 1;
        } else if now
            .duration_since(modified)
            .map(|a| a < grace)
            .unwrap_or(true)
        {
            report.objects_young += 1;
        } else {
            report.objects_removed += 1;
            report.bytes_freed += size;
            unreferenced.push(object_key(&h));
        }
    }
    if !dry_run {
        remote.delete_many(&unreferenced)?;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_paths_are_built_from_checked_names() {
        assert_eq!(
            unit_rel(&"a".repeat(64), "train-00003"),
            format!("artifacts/{}/units/train-00003.json", "a".repeat(64))
        );
        assert!(!is_name("a/b"));
    }
}
