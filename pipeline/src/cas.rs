//! The local cache directory: content-addressed objects plus the small files that name them.
//!
//! ```text
//! cache/
//!   objects/ab/<blake3>           immutable blobs (shards, checkpoints), named by their hash
//!   artifacts/<key>/units/*.json  journal: one record per finished work unit
//!   artifacts/<key>/manifest.json written last: the artifact is complete iff it exists
//!   artifacts/<key>/rejects.jsonl samples the stage skipped, with reasons
//!   runs/<stage>/<key>.json       run records (params, inputs, timings, host)
//!   runs/<stage>/latest           the key of the stage's last completed run
//!   locks/                        per-key lock files
//!   tmp/                          writes in progress (renamed into place when complete)
//!   stat-cache.bin                path/size/mtime → blake3 of raw inputs (stat_file.rs)
//! ```

use anyhow::{Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct Cache {
    root: PathBuf,
}

/// A blob stored in the cache.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ObjectRef {
    pub blake3: String,
    pub bytes: u64,
}

impl Cache {
    pub fn open(root: &Path) -> Result<Self> {
        for sub in ["objects", "artifacts", "runs", "locks", "tmp"] {
            // A cache folder planted as a link would send writes (temp files, locks) or
            // deletions (gc) outside the cache: refused, never followed.
            let p = root.join(sub);
            if std::fs::symlink_metadata(&p).is_ok_and(|m| !m.is_dir()) {
                anyhow::bail!(
                    "{} is not a directory (a symbolic link?); lm4ve does not follow links inside a cache: remove it (it is recreated empty) or pass another --cache DIR",
                    p.display()
                );
            }
            std::fs::create_dir_all(root.join(sub)).with_context(|| {
                format!(
                    "cannot create the cache directory {}; pass a writable --cache DIR",
                    root.join(sub).display()
                )
            })?;
        }
        // An absolute root keeps paths printed to users (and `pipeline show`) unambiguous.
        let root = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
        Ok(Cache { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn objects_dir(&self) -> PathBuf {
        self.root.join("objects")
    }
    /// Where object `blake3` lives. A name that is not a blake3 hash (from a damaged or
    /// hostile record: `../secret.txt`) maps to a path with a NUL byte, which every file
    /// system call refuses, so it can never name a file in or out of the cache.
    pub fn object_path(&self, blake3: &str) -> PathBuf {
        if !crate::trust::is_hash(blake3) {
            return self.root.join("objects").join("\0not-an-object-name");
        }
        self.root.join("objects").join(&blake3[..2]).join(blake3)
    }

    /// Whether object `blake3` is in the cache as a regular file (a symbolic link planted
    /// in `objects/` is not an object: it is neither read nor pushed).
    pub fn has_object(&self, blake3: &str) -> bool {
        std::fs::symlink_metadata(self.object_path(blake3)).is_ok_and(|m| m.is_file())
    }

    /// Refuses a path below the cache root that goes through a symbolic link.
    pub fn check_inside(&self, path: &Path) -> Result<()> {
        crate::links::check_path(&self.root, path)
            .with_context(|| format!("refusing to use {}", path.display()))
    }
    pub fn artifact_dir(&self, key: &str) -> PathBuf {
        self.root.join("artifacts").join(key)
    }
    pub fn manifest_path(&self, key: &str) -> PathBuf {
        self.artifact_dir(key).join("manifest.json")
    }
    pub fn units_dir(&self, key: &str) -> PathBuf {
        self.artifact_dir(key).join("units")
    }
    pub fn runs_dir(&self, stage: &str) -> PathBuf {
        self.root.join("runs").join(stage)
    }
    pub fn locks_dir(&self) -> PathBuf {
        self.root.join("locks")
    }
    pub fn stat_cache_path(&self) -> PathBuf {
        Self::stat_cache_path_in(&self.root)
    }
    /// [`Cache::stat_cache_path`] of a cache at `root`, before it is opened.
    pub fn stat_cache_path_in(root: &Path) -> PathBuf {
        root.join("stat-cache.bin")
    }
    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// A new, uniquely named file in `tmp/` (for a download in progress).
    pub fn new_tmp_file(&self) -> Result<(PathBuf, std::fs::File)> {
        tempfile_in(&self.tmp_dir())
    }

    /// Moves a finished, already verified and fsynced temp file into `objects/` under its
    /// hash (a concurrent writer of the same hash renames identical bytes: harmless).
    pub fn adopt_object(&self, tmp: &Path, blake3: &str) -> Result<()> {
        let path = self.object_path(blake3);
        if let Err(e) = self.check_inside(&path) {
            let _ = std::fs::remove_file(tmp);
            return Err(e);
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        std::fs::rename(tmp, &path).with_context(|| {
            let _ = std::fs::remove_file(tmp);
            format!("renaming into {}", path.display())
        })?;
        if let Some(dir) = path.parent() {
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }

    /// Stores `bytes` as an object. When an object of that hash exists (same hash, same
    /// bytes, so a concurrent writer is harmless) its mtime is refreshed instead: `cache gc`
    /// beside a running stage spares unreferenced objects by age, so an object a run is
    /// about to name must look young even if an earlier run wrote it long ago.
    pub fn put(&self, bytes: &[u8]) -> Result<ObjectRef> {
        let blake3 = blake3::hash(bytes).to_hex().to_string();
        let path = self.object_path(&blake3);
        self.check_inside(&path)?;
        let present = self.has_object(&blake3) && touch(&path).is_ok();
        if !present {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            write_atomic_in(&self.root.join("tmp"), &path, bytes)?;
        }
        // These bytes hash to the name (just computed): no need to hash them again on read.
        if !present {
            crate::verified::remember(&path);
        }
        Ok(ObjectRef {
            blake3,
            bytes: bytes.len() as u64,
        })
    }

    /// Writes a small file of the cache atomically (temp file, fsync, rename).
    pub fn write_file(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        self.check_inside(path)?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        write_atomic_in(&self.root.join("tmp"), path, bytes)
    }
}

/// Sets a file's mtime to now (see [`Cache::put`]).
pub fn touch(path: &Path) -> std::io::Result<()> {
    std::fs::File::options()
        .append(true)
        .open(path)?
        .set_modified(std::time::SystemTime::now())
}

/// Writes `bytes` to `path` so that readers see the old file or the whole new one, never a
/// part: write a temp file beside it, fsync, rename over, fsync the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    write_atomic_in(dir, path, bytes)
}

fn write_atomic_in(tmp_dir: &Path, path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(tmp_dir, path, bytes.len(), |f| f.write_all(bytes))
}

/// [`write_atomic_in`] with the write itself as a closure, so a test can make it fail the
/// way a full disk does (ENOSPC after part of the bytes) and see that nothing is left over.
fn write_atomic_with(
    tmp_dir: &Path,
    path: &Path,
    len: usize,
    write: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> Result<()> {
    let mut tmp = tempfile_in(tmp_dir)?;
    if let Err(e) = write(&mut tmp.1).and_then(|_| tmp.1.sync_all()) {
        // A full disk (ENOSPC) must not leave the partial temp file behind.
        drop(tmp.1);
        let _ = std::fs::remove_file(&tmp.0);
        return Err(e).with_context(|| {
            format!(
                "writing {} ({len} bytes) into {}",
                path.display(),
                tmp_dir.display()
            )
        });
    }
    drop(tmp.1);
    std::fs::rename(&tmp.0, path).with_context(|| {
        let _ = std::fs::remove_file(&tmp.0);
        format!("renaming into {}", path.display())
    })?;
    if let Some(dir) = path.parent() {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// A uniquely named new file in `dir` (pid + counter + time: unique across processes).
fn tempfile_in(dir: &Path) -> Result<(PathBuf, std::fs::File)> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    for _ in 0..16 {
        let name = format!(
            ".tmp-{}-{}-{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let path = dir.join(name);
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(f) => return Ok((path, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(e).with_context(|| format!("creating a temp file in {}", dir.display()))
            }
        }
    }
    anyhow::bail!("could not create a temp file in {}", dir.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_is_content_addressed_and_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let c = Cache::open(dir.path()).unwrap();
        let a = c.put(b"hello").unwrap();
        let b = c.put(b"hello").unwrap();
        assert_eq!(a, b);
        assert_eq!(std::fs::read(c.object_path(&a.blake3)).unwrap(), b"hello");
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0
        );
    }

    /// Issue 27: a full disk used to leave the partial `.tmp-*` file in `tmp/` (the old
    /// code returned on the write error before removing it). The write here fails as ENOSPC
    /// does: after part of the bytes reached the file.
    #[test]
    fn a_write_failing_with_enospc_leaves_no_temp_file_and_no_target() {
        let dir = tempfile::tempdir().unwrap();
        let c = Cache::open(dir.path()).unwrap();
        let target = c.root().join("runs/s/key.json");
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        let e = write_atomic_with(&c.tmp_dir(), &target, 4096, |f| {
            f.write_all(&[7u8; 1000])?;
            Err(std::io::Error::from_raw_os_error(28)) // ENOSPC on Linux
        })
        .unwrap_err();
        let msg = format!("{e:#}");
        assert!(
            msg.contains("No space left") && msg.contains("key.json"),
            "{msg}"
        );
        let left: Vec<_> = std::fs::read_dir(c.tmp_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(left.is_empty(), "left behind in tmp/: {left:?}");
        assert!(!target.exists());
    }

    #[test]
    fn put_of_an_existing_object_refreshes_its_mtime() {
        let dir = tempfile::tempdir().unwrap();
        let c = Cache::open(dir.path()).unwrap();
        let a = c.put(b"old object").unwrap();
        let p = c.object_path(&a.blake3);
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
        std::fs::File::options()
            .append(true)
            .open(&p)
            .unwrap()
            .set_modified(old)
            .unwrap();
        c.put(b"old object").unwrap();
        let age = std::fs::metadata(&p)
            .unwrap()
            .modified()
            .unwrap()
            .elapsed()
            .unwrap();
        assert!(age.as_secs() < 60, "{age:?}");
    }

    #[test]
    fn names_that_are_not_hashes_never_reach_the_file_system() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("secret.txt"), "s").unwrap();
        let c = Cache::open(&dir.path().join("cache")).unwrap();
        for bad in ["../../secret.txt", "../secret.txt", "", "ab"] {
            assert!(!c.object_path(bad).exists(), "{bad}");
            assert!(!c.has_object(bad));
            assert!(std::fs::read(c.object_path(bad)).is_err());
        }
    }
}
