//! Verified reads: an object of the cache is used only after its bytes were hashed (streamed
//! blake3, 1 MiB at a time) and found equal to its name.
//!
//! Who checks: the engine, before a stage runs, checks every object of every upstream
//! artifact it hands the stage (shards, `block.safetensors`, `model.safetensors`), and every
//! object of the units it resumes from (checkpoints); [`crate::shard::ShardReader::open`]
//! checks a shard opened from `objects/`; [`crate::StageCtx::unit_file`] checks the file it
//! returns. An object is hashed once per process (the memo is keyed by device and inode,
//! with size, mtime and ctime: the same file reached by another path, `artifacts/<key>/../../
//! objects/…`, is not hashed twice, and a file rewritten in place is hashed again).
//!
//! A mismatch is [`ObjectError::Damaged`]: the object is moved out of `objects/` to
//! `tmp/damaged-<hash>` (kept for inspection, removed by `cache gc` after an hour), so the
//! artifact that names it is no longer complete: `pipeline status` shows it stale
//! ("object … damaged") and a plain `pipeline run` recomputes the units that wrote it.

use crate::cas::Cache;
use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use std::sync::Mutex;

#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    #[error("object {object} is damaged: its bytes do not hash to its name ({path}); it was moved to {moved_to}")]
    Damaged {
        object: String,
        path: String,
        moved_to: String,
    },
    #[error("object {object} is missing ({path})")]
    Missing { object: String, path: String },
    #[error("object {object}: cannot read {path}: {source}")]
    Io {
        object: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// (device, inode) of a file hashed and found good.
type FileId = (u64, u64);
/// (size, mtime in ns, ctime in ns) it had then.
type Stamp = (u64, i128, i128);

fn memo() -> &'static Mutex<HashMap<FileId, Stamp>> {
    static MEMO: std::sync::OnceLock<Mutex<HashMap<FileId, Stamp>>> = std::sync::OnceLock::new();
    MEMO.get_or_init(|| Mutex::new(HashMap::new()))
}

fn stamp(meta: &std::fs::Metadata) -> (FileId, Stamp) {
    use std::os::unix::fs::MetadataExt;
    (
        (meta.dev(), meta.ino()),
        (
            meta.len(),
            meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128,
            meta.ctime() as i128 * 1_000_000_000 + meta.ctime_nsec() as i128,
        ),
    )
}

/// Records that `path` holds good bytes (this process just wrote or hashed them).
pub fn remember(path: &Path) {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        let (id, st) = stamp(&meta);
        if let Ok(mut m) = memo().lock() {
            m.insert(id, st);
        }
    }
}

/// Streams the file through blake3: its hash and size.
pub fn hash_file(path: &Path) -> std::io::Result<(String, u64)> {
    let mut f = std::fs::File::open(path)?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    Ok((hasher.finalize().to_hex().to_string(), total))
}

/// Checks object `blake3` of `cache` (module docs); a damaged one is moved aside.
pub fn check_object(cache: &Cache, blake3: &str) -> Result<(), ObjectError> {
    check_at(&cache.object_path(blake3), blake3, &cache.tmp_dir())
}

/// Checks a file that lies at `objects/ab/<hash>` of some cache (a path a manifest gave);
/// `Ok(false)` when the path is not an object path (nothing to check against).
pub fn check_object_path(path: &Path) -> Result<bool, ObjectError> {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return Ok(false);
    };
    if !crate::trust::is_hash(name) {
        return Ok(false);
    }
    let mut up = path.ancestors().skip(1);
    let (Some(fan), Some(objects), Some(root)) = (up.next(), up.next(), up.next()) else {
        return Ok(false);
    };
    let fan_ok = fan.file_name().and_then(|n| n.to_str()) == Some(&name[..2]);
    let objects_ok = objects.file_name().and_then(|n| n.to_str()) == Some("objects");
    if !fan_ok || !objects_ok {
        return Ok(false);
    }
    check_at(path, name, &root.join("tmp"))?;
    Ok(true)
}

fn check_at(path: &Path, blake3: &str, tmp: &Path) -> Result<(), ObjectError> {
    let shown = path.display().to_string();
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_file() => m,
        Ok(_) => {
            return Err(ObjectError::Missing {
                object: blake3.into(),
                path: format!("{shown} is not a regular file"),
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ObjectError::Missing {
                object: blake3.into(),
                path: shown,
            })
        }
        Err(source) => {
            return Err(ObjectError::Io {
                object: blake3.into(),
                path: shown,
                source,
            })
        }
    };
    let (id, st) = stamp(&meta);
    if memo()
        .lock()
        .map(|m| m.get(&id) == Some(&st))
        .unwrap_or(false)
    {
        return Ok(());
    }
    let (hash, _) = hash_file(path).map_err(|source| ObjectError::Io {
        object: blake3.into(),
        path: shown.clone(),
        source,
    })?;
    if hash == blake3 {
        if let Ok(mut m) = memo().lock() {
            m.insert(id, st);
        }
        return Ok(());
    }
    Err(ObjectError::Damaged {
        object: blake3.into(),
        path: shown,
        moved_to: quarantine(path, blake3, tmp),
    })
}

/// Moves a damaged object out of `objects/` (so nothing names a present-but-wrong object);
/// says where it went.
fn quarantine(path: &Path, blake3: &str, tmp: &Path) -> String {
    let to = tmp.join(format!("damaged-{blake3}"));
    let tmp_ok = std::fs::symlink_metadata(tmp).is_ok_and(|m| m.is_dir());
    if tmp_ok && std::fs::rename(path, &to).is_ok() {
        return to.display().to_string();
    }
    match std::fs::remove_file(path) {
        Ok(()) => "nowhere (deleted)".into(),
        Err(e) => format!("nowhere (cannot move or delete it: {e}; delete it by hand)"),
    }
}

/// Whether a damaged copy of `blake3` was moved aside in this cache (for `status`).
pub fn was_damaged(cache: &Cache, blake3: &str) -> bool {
    crate::trust::is_hash(blake3) && cache.tmp_dir().join(format!("damaged-{blake3}")).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flipped_bit_is_caught_and_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let c = Cache::open(dir.path()).unwrap();
        let o = c.put(b"some shard bytes").unwrap();
        check_object(&c, &o.blake3).unwrap();
        let p = c.object_path(&o.blake3);
        std::fs::write(&p, b"some shard bytez").unwrap();
        let e = check_object(&c, &o.blake3).unwrap_err();
        assert!(matches!(e, ObjectError::Damaged { .. }), "{e}");
        assert!(!p.exists());
        assert!(was_damaged(&c, &o.blake3));
        let e = check_object(&c, &o.blake3).unwrap_err();
        assert!(matches!(e, ObjectError::Missing { .. }), "{e}");
        // The good bytes come back under the same name.
        c.put(b"some shard bytes").unwrap();
        check_object(&c, &o.blake3).unwrap();
        assert!(check_object_path(&p).unwrap());
        assert!(!check_object_path(dir.path()).unwrap());
    }
}
