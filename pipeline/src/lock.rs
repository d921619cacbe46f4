//! Per-key lock files, so two processes on one cache never build the same artifact at once
//! (the second waits, then finds the artifact done). OS file locks vanish with the process,
//! so a kill -9 never leaves a stale lock behind.

use anyhow::{Context, Result};
use std::fs::{File, OpenOptions, TryLockError};
use std::path::Path;

pub struct FileLock {
    _file: File,
}

/// The lock every run holds shared and `cache gc` takes exclusively, so gc never deletes
/// an object a run has stored but not yet named in a record.
pub const GC_LOCK: &str = "gc";

fn open_lock(dir: &Path, name: &str) -> Result<(std::path::PathBuf, File)> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!("{name}.lock"));
    use std::os::unix::fs::OpenOptionsExt;
    // A lock file planted as a symbolic link is refused (O_NOFOLLOW: ELOOP), never
    // followed to create or truncate a file elsewhere.
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .with_context(|| {
            format!(
                "opening lock {} (a symbolic link there is refused: remove it)",
                path.display()
            )
        })?;
    Ok((path, file))
}

/// The outcome of a `try_lock*` call: done, or (after `on_wait`) blocking in `block`.
fn take_or_wait(
    path: &Path,
    tried: std::result::Result<(), TryLockError>,
    on_wait: impl FnOnce(),
    block: impl FnOnce() -> std::io::Result<()>,
) -> Result<()> {
    match tried {
        Ok(()) => Ok(()),
        Err(TryLockError::WouldBlock) => {
            on_wait();
            block().with_context(|| format!("waiting for lock {}", path.display()))
        }
        Err(TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("locking {}", path.display()))
        }
    }
}

/// Takes `dir/name.lock` shared (many holders), calling `on_wait` once if an exclusive
/// holder makes it wait.
pub fn acquire_shared(dir: &Path, name: &str, on_wait: impl FnOnce()) -> Result<FileLock> {
    let (path, file) = open_lock(dir, name)?;
    take_or_wait(&path, file.try_lock_shared(), on_wait, || {
        file.lock_shared()
    })?;
    Ok(FileLock { _file: file })
}

/// Takes `dir/name.lock` exclusively if nobody holds it; `None` if someone does.
pub fn try_exclusive(dir: &Path, name: &str) -> Result<Option<FileLock>> {
    let (path, file) = open_lock(dir, name)?;
    match file.try_lock() {
        Ok(()) => Ok(Some(FileLock { _file: file })),
        Err(TryLockError::WouldBlock) => Ok(None),
        Err(TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("locking {}", path.display()))
        }
    }
}

/// Takes the exclusive lock `dir/name.lock`, calling `on_wait` once if another process holds it.
pub fn acquire(dir: &Path, name: &str, on_wait: impl FnOnce()) -> Result<FileLock> {
    let (path, file) = open_lock(dir, name)?;
    take_or_wait(&path, file.try_lock(), on_wait, || file.lock())?;
    Ok(FileLock { _file: file })
}
