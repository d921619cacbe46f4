//! Per-key lock files, so two processes on one cache never build the same artifact at once
//! (the second waits, then finds the artifact done). OS file locks vanish with the process,
//! so a kill -9 never leaves a stale lock behind.

use anyhow::{Context, Result};
use std::fs::{File, OpenOptions, TryLockError};
use std::path::Path;

pub struct FileLock {
    _file: File,
}

/// Takes the exclusive lock `dir/name.lock`, calling `on_wait` once if another process holds it.
pub fn acquire(dir: &Path, name: &str, on_wait: impl FnOnce()) -> Result<FileLock> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!("{name}.lock"));
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening lock {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            on_wait();
            file.lock()
                .with_context(|| format!("waiting for lock {}", path.display()))?;
        }
        Err(TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("locking {}", path.display()));
        }
    }
    Ok(FileLock { _file: file })
}
