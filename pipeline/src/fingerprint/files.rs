//! One input file as the fingerprint sees it: its stat (what the stat cache compares) and
//! its content hash (blake3).

use crate::stat_file::Row;
use anyhow::{Context, Result};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Stat {
    pub(super) size: u64,
    pub(super) mtime_ns: i128,
    pub(super) ctime_ns: i128,
    pub(super) ino: u64,
}

/// A stat time as nanoseconds since the epoch.
fn ns(secs: i64, nsec: i64) -> i128 {
    secs as i128 * 1_000_000_000 + nsec as i128
}

impl Stat {
    pub(super) fn of(md: &std::fs::Metadata) -> Self {
        Stat {
            size: md.size(),
            mtime_ns: ns(md.mtime(), md.mtime_nsec()),
            ctime_ns: ns(md.ctime(), md.ctime_nsec()),
            ino: md.ino(),
        }
    }

    /// The stat a stat-cache row recorded.
    pub(super) fn of_row(r: &Row) -> Self {
        Stat {
            size: r.size,
            mtime_ns: r.mtime_ns as i128,
            ctime_ns: r.ctime_ns as i128,
            ino: r.ino,
        }
    }

    /// The stat-cache row for this stat and hash; `None` for times outside i64 nanoseconds
    /// (before 1678, after 2262): such a file is hashed again each time.
    pub(super) fn row(&self, blake3: [u8; 32]) -> Option<Row> {
        Some(Row {
            size: self.size,
            mtime_ns: i64::try_from(self.mtime_ns).ok()?,
            ctime_ns: i64::try_from(self.ctime_ns).ok()?,
            ino: self.ino,
            blake3,
        })
    }
}

pub(super) enum FileType {
    File,
    Dir,
    Other,
}

/// `stat` of `name` relative to the open directory `dir`, following links as
/// `std::fs::metadata` does (an absolute `name` is itself, as `Path::join` makes it). `None`
/// when it fails; the caller reports the error with the whole path.
pub(super) fn stat_at(dir: &std::fs::File, name: &str) -> Option<(Stat, FileType)> {
    use std::os::fd::AsRawFd;
    // The name NUL-terminated on the stack when it is short (a file name nearly always
    // is): no allocation per file. A NUL inside the name fails, as `CString::new` does.
    let mut short = [0u8; 256];
    let long;
    let c: &std::ffi::CStr = if name.len() < short.len() {
        short[..name.len()].copy_from_slice(name.as_bytes());
        std::ffi::CStr::from_bytes_with_nul(&short[..=name.len()]).ok()?
    } else {
        long = std::ffi::CString::new(name).ok()?;
        &long
    };
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `c` is a NUL-terminated string and `st` a writable `stat` that fstatat fills
    // completely when it returns 0; `dir` is an open descriptor for the call's duration.
    let rc = unsafe { libc::fstatat(dir.as_raw_fd(), c.as_ptr(), st.as_mut_ptr(), 0) };
    if rc != 0 {
        return None;
    }
    // SAFETY: fstatat returned 0, so it initialised `st`.
    let st = unsafe { st.assume_init() };
    let kind = match st.st_mode & libc::S_IFMT {
        libc::S_IFREG => FileType::File,
        libc::S_IFDIR => FileType::Dir,
        _ => FileType::Other,
    };
    let stat = Stat {
        size: st.st_size as u64,
        mtime_ns: ns(st.st_mtime, st.st_mtime_nsec),
        ctime_ns: ns(st.st_ctime, st.st_ctime_nsec),
        ino: st.st_ino,
    };
    Some((stat, kind))
}

/// blake3 of a file (hex); memory-mapped and multi-threaded for large files.
pub fn hash_file(path: &Path) -> Result<String> {
    hash_file_raw(path).map(|h| h.to_hex().to_string())
}

pub(super) fn hash_file_raw(path: &Path) -> Result<blake3::Hash> {
    let mut h = blake3::Hasher::new();
    let len = std::fs::metadata(path)
        .with_context(|| format!("stat {}", path.display()))?
        .len();
    if len > 1 << 20 {
        h.update_mmap_rayon(path)
            .with_context(|| format!("hashing {}", path.display()))?;
    } else {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        h.update(&bytes);
    }
    Ok(h.finalize())
}
