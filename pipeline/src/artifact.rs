//! What a stage leaves in the cache: per-unit journal records while it runs, then one
//! manifest naming every output object. The manifest is written last and is deterministic
//! (no times, no hosts), so an interrupted-and-resumed run yields the same manifest bytes.

use crate::cas::Cache;
use crate::shard::Schema;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A sample the stage skipped, and why (one line of `rejects.jsonl`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reject {
    /// The input file the sample came from.
    pub file: String,
    /// The sample within the file (index, id or row).
    pub sample: String,
    /// What is wrong and how to fix it.
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardOut {
    pub split: String,
    pub samples: u64,
    pub blake3: String,
    pub bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileOut {
    pub name: String,
    pub blake3: String,
    pub bytes: u64,
}

/// The journal entry of one finished work unit (`artifacts/<key>/units/<id>.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnitRecord {
    pub unit: String,
    pub shards: Vec<ShardOut>,
    pub files: Vec<FileOut>,
    pub rejects: Vec<Reject>,
    /// Stage-specific facts about the unit (e.g. a training unit's loss).
    #[serde(default)]
    pub meta: serde_json::Value,
}

impl UnitRecord {
    pub fn objects(&self) -> impl Iterator<Item = &str> {
        self.shards
            .iter()
            .map(|s| s.blake3.as_str())
            .chain(self.files.iter().map(|f| f.blake3.as_str()))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestShard {
    pub split: String,
    pub samples: u64,
    pub bytes: u64,
    pub blake3: String,
    /// Relative to the manifest's directory.
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestFile {
    pub name: String,
    pub bytes: u64,
    pub blake3: String,
    pub path: String,
}

/// `artifacts/<key>/manifest.json`: a finished artifact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub stage: String,
    pub kind: String,
    pub key: String,
    pub schema: Option<Schema>,
    pub samples: u64,
    pub splits: BTreeMap<String, u64>,
    pub rejects: u64,
    pub shards: Vec<ManifestShard>,
    pub files: Vec<ManifestFile>,
    pub meta: serde_json::Value,
}

pub const MANIFEST_FORMAT: &str = "lm4ve-manifest/1";

/// Where an object lies relative to a manifest (`artifacts/<key>/manifest.json` →
/// `objects/xx/<hash>`): the path a manifest records for its shards and files.
pub(crate) fn object_path_from_manifest(blake3: &str) -> String {
    format!("../../objects/{}/{blake3}", &blake3[..2.min(blake3.len())])
}

impl Manifest {
    /// Assembles the manifest from unit records in plan order.
    pub fn assemble(
        stage: &str,
        kind: &str,
        key: &str,
        schema: Option<Schema>,
        units: &[UnitRecord],
        meta: serde_json::Value,
    ) -> Self {
        let mut shards = Vec::new();
        let mut files = Vec::new();
        let mut splits = BTreeMap::new();
        let mut rejects = 0;
        for u in units {
            rejects += u.rejects.len() as u64;
            for s in &u.shards {
                *splits.entry(s.split.clone()).or_insert(0) += s.samples;
                shards.push(ManifestShard {
                    split: s.split.clone(),
                    samples: s.samples,
                    bytes: s.bytes,
                    blake3: s.blake3.clone(),
                    path: object_path_from_manifest(&s.blake3),
                });
            }
            for f in &u.files {
                files.push(ManifestFile {
                    name: f.name.clone(),
                    bytes: f.bytes,
                    blake3: f.blake3.clone(),
                    path: object_path_from_manifest(&f.blake3),
                });
            }
        }
        Manifest {
            format: MANIFEST_FORMAT.into(),
            stage: stage.into(),
            kind: kind.into(),
            key: key.into(),
            schema,
            samples: splits.values().sum(),
            splits,
            rejects,
            shards,
            files,
            meta,
        }
    }

    /// A local manifest, checked by [`crate::trust::parse_manifest`] against the key it is
    /// stored under (a cache directory is untrusted input too: issue 16).
    pub fn load_checked(path: &Path, key: &str) -> Result<Self> {
        let bytes = read_capped(path)?;
        crate::trust::parse_manifest(&bytes, key).with_context(|| {
            format!(
                "{} is not a valid manifest; run `lm4ve cache verify`",
                path.display()
            )
        })
    }

    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "{} is not a valid manifest; run `lm4ve cache verify`",
                path.display()
            )
        })
    }

    /// Absolute paths of the shards of one split (or all), in manifest order.
    pub fn shard_paths(&self, manifest_path: &Path, split: Option<&str>) -> Vec<PathBuf> {
        let dir = manifest_path.parent().unwrap_or(Path::new("."));
        self.shards
            .iter()
            .filter(|s| split.is_none_or(|sp| s.split == sp))
            .map(|s| dir.join(&s.path))
            .collect()
    }

    pub fn file_path(&self, manifest_path: &Path, name: &str) -> Option<PathBuf> {
        let dir = manifest_path.parent().unwrap_or(Path::new("."));
        self.files
            .iter()
            .find(|f| f.name == name)
            .map(|f| dir.join(&f.path))
    }
}

/// Reads a small cache file (a record), refusing a symbolic link or one over
/// [`crate::trust::MAX_RECORD_BYTES`].
pub(crate) fn read_capped(path: &Path) -> Result<Vec<u8>> {
    use std::io::Read;
    let meta =
        std::fs::symlink_metadata(path).with_context(|| format!("reading {}", path.display()))?;
    anyhow::ensure!(
        meta.is_file(),
        "{} is not a regular file (a link?)",
        path.display()
    );
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| {
            f.take(crate::trust::MAX_RECORD_BYTES + 1)
                .read_to_end(&mut bytes)
        })
        .with_context(|| format!("reading {}", path.display()))?;
    anyhow::ensure!(
        bytes.len() as u64 <= crate::trust::MAX_RECORD_BYTES,
        "{} is over {} bytes: not a record",
        path.display(),
        crate::trust::MAX_RECORD_BYTES
    );
    Ok(bytes)
}

/// The journal of one artifact: which units are finished.
pub struct Journal<'a> {
    cache: &'a Cache,
    dir: PathBuf,
}

impl<'a> Journal<'a> {
    pub fn new(cache: &'a Cache, key: &str) -> Self {
        Journal {
            cache,
            dir: cache.units_dir(key),
        }
    }

    /// The journal of a `--force` rebuild: `tmp/force-<key>/units/`, beside the old
    /// artifact, which stays whole (and in use) until [`swap_in_staged`] replaces it.
    pub fn staging(cache: &'a Cache, key: &str) -> Self {
        Journal {
            cache,
            dir: staging_dir(cache, key).join("units"),
        }
    }

    /// The staging journal for a forced run, else the artifact's own.
    pub fn for_run(cache: &'a Cache, key: &str, forced: bool) -> Self {
        if forced {
            Self::staging(cache, key)
        } else {
            Self::new(cache, key)
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn unit_path(&self, unit: &str) -> PathBuf {
        self.dir.join(format!("{unit}.json"))
    }

    /// Drops a unit's record (its objects were found damaged or missing): it is computed
    /// again.
    pub fn forget(&self, unit: &str) {
        let _ = std::fs::remove_file(self.unit_path(unit));
    }

    /// A unit counts as done when its record exists, passes [`crate::trust::parse_unit`]
    /// and every object it names is present. A record that fails the check is a warning
    /// and the unit is computed again.
    pub fn get(&self, unit: &str) -> Option<UnitRecord> {
        let path = self.unit_path(unit);
        let bytes = read_capped(&path).ok()?;
        self.checked(unit, &path, &bytes)
    }

    fn checked(&self, unit: &str, path: &Path, bytes: &[u8]) -> Option<UnitRecord> {
        match crate::trust::parse_unit(bytes, unit) {
            Ok(rec) => {
                let complete = rec.objects().all(|o| self.cache.has_object(o));
                complete.then_some(rec)
            }
            Err(e) => {
                tracing::warn!(
                    "ignoring the unit record {}: {e}; that unit is computed again",
                    path.display()
                );
                None
            }
        }
    }

    /// Commits a finished unit (its objects are already stored).
    pub fn commit(&self, rec: &UnitRecord) -> Result<()> {
        let bytes = serde_json::to_vec(rec)?;
        self.cache.write_file(&self.unit_path(&rec.unit), &bytes)
    }

    /// Every finished unit of the artifact (records whose objects are all present), with
    /// the record's bytes as stored, in unit-id order.
    pub fn records(&self) -> Vec<(UnitRecord, Vec<u8>)> {
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut out: Vec<(UnitRecord, Vec<u8>)> = rd
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let unit = name.strip_suffix(".json")?;
                if e.file_type().ok()?.is_symlink() {
                    tracing::warn!("ignoring {}: a symbolic link", e.path().display());
                    return None;
                }
                let bytes = read_capped(&e.path()).ok()?;
                let rec = self.checked(unit, &e.path(), &bytes)?;
                Some((rec, bytes))
            })
            .collect();
        out.sort_by(|a, b| a.0.unit.cmp(&b.0.unit));
        out
    }

    /// Stores a unit record received from elsewhere, byte for byte (its objects are stored).
    pub fn commit_bytes(&self, unit: &str, bytes: &[u8]) -> Result<()> {
        self.cache.write_file(&self.unit_path(unit), bytes)
    }

    pub fn count(&self) -> usize {
        std::fs::read_dir(&self.dir)
            .map(|d| d.filter_map(|e| e.ok()).count())
            .unwrap_or(0)
    }

    pub fn clear(&self) -> Result<()> {
        let dir = &self.dir;
        self.cache.check_inside(dir)?;
        if dir.exists() {
            std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        Ok(())
    }
}

/// Where a `--force` rebuild of `key` stages its new artifact (units, rejects, manifest).
pub fn staging_dir(cache: &Cache, key: &str) -> PathBuf {
    cache.tmp_dir().join(format!("force-{key}"))
}

/// Replaces the artifact `key` by the one staged in [`staging_dir`] (complete: units,
/// rejects and manifest), atomically where the file system can exchange two directories
/// (`renameat2(RENAME_EXCHANGE)`: Linux ext4, xfs, btrfs, tmpfs), else by two renames (a
/// crash between them leaves the old artifact in `tmp/force-<key>.old`, and the next run
/// recomputes). The old artifact is removed afterwards.
pub fn swap_in_staged(cache: &Cache, key: &str) -> Result<()> {
    let staged = staging_dir(cache, key);
    let live = cache.artifact_dir(key);
    cache.check_inside(&staged)?;
    cache.check_inside(&live)?;
    if let Some(dir) = live.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    if std::fs::symlink_metadata(&live).is_err() {
        std::fs::rename(&staged, &live)
            .with_context(|| format!("renaming {} to {}", staged.display(), live.display()))?;
        sync_dir(live.parent());
        return Ok(());
    }
    if exchange(&staged, &live).is_ok() {
        sync_dir(live.parent());
        sync_dir(staged.parent());
        // `staged` now holds the old artifact.
        let _ = std::fs::remove_dir_all(&staged);
        return Ok(());
    }
    let old = cache.tmp_dir().join(format!("force-{key}.old"));
    if old.exists() {
        let _ = std::fs::remove_dir_all(&old);
    }
    std::fs::rename(&live, &old)
        .with_context(|| format!("renaming {} to {}", live.display(), old.display()))?;
    std::fs::rename(&staged, &live)
        .with_context(|| format!("renaming {} to {}", staged.display(), live.display()))?;
    sync_dir(live.parent());
    let _ = std::fs::remove_dir_all(&old);
    Ok(())
}

fn sync_dir(dir: Option<&Path>) {
    if let Some(d) = dir.and_then(|d| std::fs::File::open(d).ok()) {
        let _ = d.sync_all();
    }
}

/// Atomically exchanges two paths (Linux `renameat2` with `RENAME_EXCHANGE`).
#[cfg(target_os = "linux")]
fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let ca = std::ffi::CString::new(a.as_os_str().as_bytes())?;
    let cb = std::ffi::CString::new(b.as_os_str().as_bytes())?;
    // SAFETY: two valid NUL-terminated paths; renameat2 reads them and nothing else.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn exchange(_a: &Path, _b: &Path) -> std::io::Result<()> {
    Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
}
