//! `cache gc`'s pass over the stat cache. A run saves the rows it read plus the ones it
//! hashed, so rows of files that no config names any more (deleted, renamed, a dataset
//! moved) stayed forever: read on every run, never used. Pruning by "no config names it"
//! would drop an unmounted dataset's rows (the next run would re-hash a 200 GB tree), so
//! the rule is the file system's: a row goes when its directory is there, holds something,
//! and its file is not. Rows under a missing directory stay (a disk that is not mounted
//! now), and so do rows under an empty one (the mount point of an unmounted disk).

use super::StatCache;
use crate::stat_file::{encode, Row};
use anyhow::Result;
use rayon::prelude::*;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// What the prune found (and, unless a dry run, did).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatPrune {
    /// Rows of files gone from a directory that is still there: dropped.
    pub dropped: usize,
    /// Rows kept (their file is there, or their directory is missing or empty: maybe an
    /// unmounted disk).
    pub kept: usize,
}

/// Whether `dir` is a directory with at least one entry now (following links, as the
/// inputs are read). An empty one may be the mount point of a disk that is not mounted.
fn is_live_dir(dir: &[u8]) -> bool {
    std::fs::read_dir(Path::new(OsStr::from_bytes(dir)))
        .is_ok_and(|mut entries| entries.next().is_some())
}

/// Whether the file `name` in `dir` is gone (any answer but "not found" keeps its row: a
/// permission error says nothing about the file).
fn is_gone(dir: &[u8], name: &[u8]) -> bool {
    let path = Path::new(OsStr::from_bytes(dir)).join(OsStr::from_bytes(name));
    matches!(std::fs::metadata(path), Err(e) if e.kind() == std::io::ErrorKind::NotFound)
}

impl StatCache {
    /// Drops the rows of `file` (a stat cache) whose file is gone from a directory that is
    /// still there and not empty, and writes the rest back atomically (not with `dry_run`: then it only
    /// counts). One `stat` a row, in parallel. A run saving at the same time may put rows
    /// back or lose a few of its own; either only costs hashing those files again.
    pub fn prune_deleted(file: &Path, dry_run: bool) -> Result<StatPrune> {
        let cache = StatCache::load(file);
        let rows: Vec<(&[u8], &[u8], Row)> = cache.table.rows().collect();
        if rows.is_empty() {
            return Ok(StatPrune::default());
        }
        let mut dirs: Vec<&[u8]> = rows.iter().map(|(d, _, _)| *d).collect();
        dirs.dedup();
        let present: HashMap<&[u8], bool> = dirs.par_iter().map(|d| (*d, is_live_dir(d))).collect();
        let gone: Vec<bool> = rows
            .par_iter()
            .map(|(d, n, _)| present.get(d).copied().unwrap_or(false) && is_gone(d, n))
            .collect();
        let dropped = gone.iter().filter(|g| **g).count();
        let report = StatPrune {
            dropped,
            kept: rows.len() - dropped,
        };
        if dropped > 0 && !dry_run {
            let kept = rows
                .iter()
                .zip(&gone)
                .filter(|(_, g)| !**g)
                .map(|(r, _)| *r);
            crate::cas::write_atomic(file, &encode(kept))?;
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fingerprint::tests::write_old;
    use crate::fingerprint::InputSpec;

    fn saved(sc: &Path, specs: &[InputSpec]) {
        let mut c = StatCache::load(sc);
        c.fingerprint(specs, false).unwrap();
        c.save().unwrap();
    }

    #[test]
    fn rows_of_deleted_files_go_and_rows_under_a_missing_directory_stay() {
        let dir = tempfile::tempdir().unwrap();
        let (here, away) = (dir.path().join("here"), dir.path().join("away"));
        for d in [&here, &away] {
            write_old(&d.join("a"), "1");
            write_old(&d.join("b"), "2");
        }
        let sc = dir.path().join("stat-cache.bin");
        let specs = [
            InputSpec::new("here", here.clone()),
            InputSpec::new("away", away.clone()),
        ];
        saved(&sc, &specs);
        assert_eq!(StatCache::load(&sc).known(), 4);
        // A file deleted from a dataset that is there; a dataset whose disk is "unmounted".
        std::fs::remove_file(here.join("b")).unwrap();
        let moved = dir.path().join("moved-away");
        std::fs::rename(&away, &moved).unwrap();
        // And an "unmounted" disk whose mount point is still there, empty.
        let mount = dir.path().join("mnt");
        write_old(&mount.join("c"), "3");
        saved(&sc, &[InputSpec::new("mnt", mount.join("c"))]);
        std::fs::rename(mount.join("c"), dir.path().join("c-away")).unwrap();
        let before = std::fs::read(&sc).unwrap();
        let counted = StatCache::prune_deleted(&sc, true).unwrap();
        assert_eq!(
            counted,
            StatPrune {
                dropped: 1,
                kept: 4
            }
        );
        assert_eq!(
            std::fs::read(&sc).unwrap(),
            before,
            "a dry run writes nothing"
        );
        assert_eq!(StatCache::prune_deleted(&sc, false).unwrap(), counted);
        assert_eq!(StatCache::load(&sc).known(), 4);
        // The "unmounted" rows still answer when the disk is back: nothing is re-hashed.
        std::fs::rename(&moved, &away).unwrap();
        let mut c = StatCache::load(&sc);
        c.fingerprint(&[InputSpec::new("away", away)], false)
            .unwrap();
        assert!(!c.dirty, "the kept rows were used as they are");
        // Pruning again finds nothing to drop and leaves the file as it is.
        let after = std::fs::read(&sc).unwrap();
        assert_eq!(StatCache::prune_deleted(&sc, false).unwrap().dropped, 0);
        assert_eq!(std::fs::read(&sc).unwrap(), after);
    }

    #[test]
    fn a_missing_or_empty_stat_cache_is_nothing_to_prune() {
        let dir = tempfile::tempdir().unwrap();
        let sc = dir.path().join("stat-cache.bin");
        assert_eq!(
            StatCache::prune_deleted(&sc, false).unwrap(),
            StatPrune::default()
        );
        assert!(!sc.exists(), "no file is made");
    }
}
