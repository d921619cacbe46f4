//! Helpers for the fuzz targets: most readers take a path, so the input is written to a
//! per-process scratch file first.

use std::path::PathBuf;

/// A scratch directory for this fuzzing process (removed by nobody: it lives in the
/// system temp dir and holds one small file per target).
pub fn scratch() -> PathBuf {
    // Memory-backed when the machine has it: most targets write one file per execution.
    let base = Some(PathBuf::from("/dev/shm"))
        .filter(|p| p.is_dir())
        .unwrap_or_else(std::env::temp_dir);
    let d = base.join(format!("lm4ve-fuzz-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&d);
    d
}

/// Writes `data` to `<scratch>/<name>` and returns the path.
pub fn file(name: &str, data: &[u8]) -> PathBuf {
    let p = scratch().join(name);
    std::fs::write(&p, data).expect("writing the fuzz input to the scratch dir");
    p
}

/// A key that the records are checked against (64 hex, like a real one).
pub const KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
