//! Input fingerprints: the blake3 of every raw input file, with a stat cache so an unchanged
//! tree of 200 GB is re-checked by `stat` alone (hashing it on every run is what makes
//! `dvc status` slow on big datasets). `--rehash` ignores the stat cache.

use anyhow::{Context, Result};
use rayon::prelude::*;
use std::collections::HashMap;
use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// A raw input a stage declares: a file or a directory (every file below it counts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputSpec {
    /// What the stage calls this input (`train`, `labels`, ...); part of the key.
    pub role: String,
    pub path: PathBuf,
    /// For a single file: the name it enters the key under (default: its file name).
    /// Lets a stage list many files of one dataset by their dataset-relative paths.
    pub rel: Option<String>,
}

impl InputSpec {
    pub fn new(role: &str, path: PathBuf) -> Self {
        InputSpec {
            role: role.to_string(),
            path,
            rel: None,
        }
    }

    /// One file of a dataset, keyed by its path relative to the dataset root.
    pub fn file_as(role: &str, path: PathBuf, rel: String) -> Self {
        InputSpec {
            role: role.to_string(),
            path,
            rel: Some(rel),
        }
    }
}

/// One hashed input file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InputFile {
    pub role: String,
    /// Path relative to the input's root (the file name for a single-file input).
    pub rel: String,
    pub size: u64,
    pub blake3: String,
}

/// Digest over a stage's input files, in the order given (callers keep it sorted).
pub fn inputs_digest(files: &[InputFile]) -> String {
    let mut h = blake3::Hasher::new();
    for f in files {
        h.update(f.role.as_bytes());
        h.update(b"\t");
        h.update(f.rel.as_bytes());
        h.update(b"\t");
        h.update(f.blake3.as_bytes());
        h.update(b"\n");
    }
    h.finalize().to_hex().to_string()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
    ino: u64,
}

impl Stat {
    fn of(md: &std::fs::Metadata) -> Self {
        Stat {
            size: md.size(),
            mtime_ns: md.mtime() as i128 * 1_000_000_000 + md.mtime_nsec() as i128,
            ctime_ns: md.ctime() as i128 * 1_000_000_000 + md.ctime_nsec() as i128,
            ino: md.ino(),
        }
    }
}

/// One input file to hash, as [`StatCache::fingerprint`] finds it.
struct Todo<'a> {
    role: &'a str,
    rel: String,
    abs: PathBuf,
    stat: Stat,
}

/// path → (stat, blake3), persisted in the cache directory as `stat-cache.bin`
/// ([`crate::stat_file`]). Keyed by the path's bytes: hashing an `OsString` is a byte hash,
/// hashing a `PathBuf` walks components (measurable on 200k-file inputs).
pub struct StatCache {
    file: PathBuf,
    entries: HashMap<OsString, (Stat, [u8; 32])>,
    dirty: bool,
}

/// A file modified within this window of being hashed might change again within the same
/// mtime tick and look unchanged ("racy git"); such entries are not trusted next time.
const RACY_WINDOW_NS: i128 = 2_000_000_000;

/// The stat cache's older form (a TSV of full paths, until issue 28): not read any more
/// (hashing once rebuilds it), removed when the new file is saved.
const LEGACY_TSV: &str = "stat-cache.tsv";

/// Bigger than any real stat cache (80 bytes an entry: 13 million files); a bigger file is
/// not read.
const MAX_BYTES: u64 = 1 << 30;

impl StatCache {
    /// Reads the stat cache at `file`. A missing file is an empty cache; one that cannot be
    /// used (a link, too big, damaged, truncated, another format) is a warning and an empty
    /// cache: it only costs hashing the inputs again, and the next save replaces it.
    pub fn load(file: &Path) -> Self {
        let mut entries = HashMap::new();
        let mut dirty = false;
        // A stat cache planted as a link (to someone's table of hashes) is not read: it
        // would decide the keys. Only a regular file of a bounded size is.
        let bytes = match std::fs::symlink_metadata(file) {
            Err(_) => None,
            Ok(m) if !m.is_file() => {
                tracing::warn!(
                    "{} is not a regular file (a link?); not read: inputs are re-hashed (remove it)",
                    file.display()
                );
                None
            }
            Ok(m) if m.len() > MAX_BYTES => {
                tracing::warn!(
                    "{} is {} bytes, over the {MAX_BYTES}-byte limit; not read: inputs are re-hashed and it is rewritten",
                    file.display(),
                    m.len()
                );
                dirty = true;
                None
            }
            Ok(_) => match std::fs::read(file) {
                Ok(b) => Some(b),
                Err(e) => {
                    tracing::warn!(
                        "cannot read {}: {e}; inputs are re-hashed and it is rewritten",
                        file.display()
                    );
                    dirty = true;
                    None
                }
            },
        };
        if let Some(bytes) = bytes {
            // Straight into the map (no list of rows beside it: memory at 200k files).
            let decoded = crate::stat_file::decode_each(&bytes, |n, p, r| {
                if entries.is_empty() {
                    entries.reserve(n);
                }
                let st = Stat {
                    size: r.size,
                    mtime_ns: r.mtime_ns as i128,
                    ctime_ns: r.ctime_ns as i128,
                    ino: r.ino,
                };
                entries.insert(p, (st, r.blake3));
            });
            match decoded {
                Ok(()) => {}
                Err(e) => {
                    // Rows before the damage are not trusted either.
                    entries.clear();
                    tracing::warn!(
                        "{}: {e}; ignored: inputs are re-hashed and it is rewritten",
                        file.display()
                    );
                    dirty = true;
                }
            }
        }
        StatCache {
            file: file.to_path_buf(),
            entries,
            dirty,
        }
    }

    /// Writes the cache back if anything changed (atomically: a reader never sees half a file).
    pub fn save(&mut self) -> Result<()> {
        if !self.dirty {
            return Ok(());
        }
        let rows: Vec<(&OsString, crate::stat_file::Row)> = self
            .entries
            .iter()
            .filter_map(|(p, (st, h))| {
                // Times outside i64 nanoseconds (before 1678, after 2262) are not kept: such
                // a file is hashed again each time.
                Some((
                    p,
                    crate::stat_file::Row {
                        size: st.size,
                        mtime_ns: i64::try_from(st.mtime_ns).ok()?,
                        ctime_ns: i64::try_from(st.ctime_ns).ok()?,
                        ino: st.ino,
                        blake3: *h,
                    },
                ))
            })
            .collect();
        let bytes = crate::stat_file::encode(rows.iter().map(|(p, r)| (p.as_os_str(), r)));
        crate::cas::write_atomic(&self.file, &bytes)?;
        self.dirty = false;
        if let Some(old) = self.file.parent().map(|d| d.join(LEGACY_TSV)) {
            if std::fs::symlink_metadata(&old).is_ok_and(|m| m.is_file())
                && std::fs::remove_file(&old).is_ok()
            {
                tracing::info!(
                    "removed {} (the stat cache is now {})",
                    old.display(),
                    self.file.display()
                );
            }
        }
        Ok(())
    }

    /// Hashes every file of `specs` (re-using cached hashes whose stat is unchanged unless
    /// `rehash`). Files come back sorted by (role, rel). A missing input is an error.
    pub fn fingerprint(&mut self, specs: &[InputSpec], rehash: bool) -> Result<Vec<InputFile>> {
        // Per file only what is needed (a 200,000-file input is held several times over
        // here: measured with heaptrack, `Metadata` and per-file role strings were most of a
        // no-op run's memory).
        enum Kind {
            File(Stat),
            Dir,
            Other,
        }
        let cwd = std::env::current_dir().context("reading the current directory")?;
        let absolute = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                cwd.join(p)
            }
        };
        // One stat per input, in parallel: on a 200k-file dataset the stats are the whole
        // cost of a no-op run, and they overlap well (metadata latency, not CPU).
        let stats: Vec<Result<Kind>> = specs
            .par_iter()
            .map(|spec| {
                let md = std::fs::metadata(&spec.path).map_err(|e| {
                    anyhow::anyhow!(
                        "input `{}` at {}: {e}; fix the path in the config (paths are relative to the config file)",
                        spec.role,
                        spec.path.display()
                    )
                })?;
                Ok(if md.is_file() {
                    Kind::File(Stat::of(&md))
                } else if md.is_dir() {
                    Kind::Dir
                } else {
                    Kind::Other
                })
            })
            .collect();
        let mut todo = Vec::with_capacity(specs.len());
        for (spec, kind) in specs.iter().zip(stats) {
            let root = absolute(&spec.path);
            let stat = match kind? {
                Kind::File(stat) => stat,
                Kind::Dir => {
                    self.walk(spec, &root, &mut todo)?;
                    continue;
                }
                // A FIFO or a device would block or never end when hashed.
                Kind::Other => anyhow::bail!(
                    "input `{}` at {} is not a regular file or a directory (a FIFO, socket or device); point it at the data file",
                    spec.role,
                    spec.path.display()
                ),
            };
            let rel = spec.rel.clone().unwrap_or_else(|| {
                root.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            });
            todo.push(Todo {
                role: &spec.role,
                rel,
                abs: root,
                stat,
            });
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as i128)
            .unwrap_or(0);
        // The hash of each file: from the stat cache when its stat is unchanged (and not
        // racy), else read and hashed (then `true`: a new entry). One pass, in parallel.
        let entries = &self.entries;
        let hashes: Vec<Result<([u8; 32], bool)>> = todo
            .par_iter()
            .map(|t| {
                if !rehash {
                    if let Some((st, h)) = entries.get(t.abs.as_os_str()) {
                        if *st == t.stat && now - st.mtime_ns > RACY_WINDOW_NS {
                            return Ok((*h, false));
                        }
                    }
                }
                hash_file_raw(&t.abs).map(|h| (*h.as_bytes(), true))
            })
            .collect();
        let mut files = Vec::with_capacity(todo.len());
        for (t, h) in todo.into_iter().zip(hashes) {
            let (hash, new) = h?;
            if new {
                self.entries.insert(t.abs.into_os_string(), (t.stat, hash));
                self.dirty = true;
            }
            files.push(InputFile {
                role: t.role.to_string(),
                rel: t.rel,
                size: t.stat.size,
                blake3: blake3::Hash::from_bytes(hash).to_hex().to_string(),
            });
        }
        files.sort_by(|a, b| (&a.role, &a.rel).cmp(&(&b.role, &b.rel)));
        Ok(files)
    }

    /// Every file below the directory input `spec` (at `root`, absolute), sorted by name.
    /// The walk lists them; their stats (the slow part on a big tree, and on NFS) are taken
    /// in parallel afterwards.
    fn walk<'a>(&self, spec: &'a InputSpec, root: &Path, todo: &mut Vec<Todo<'a>>) -> Result<()> {
        let mut found = Vec::new();
        for entry in walkdir::WalkDir::new(root)
            .follow_links(true)
            .sort_by_file_name()
        {
            let entry = entry.with_context(|| format!("walking input {}", root.display()))?;
            if entry.file_type().is_file() {
                found.push(entry.into_path());
            }
        }
        let stats: Vec<Result<Stat>> = found
            .par_iter()
            .map(|p| {
                std::fs::metadata(p)
                    .map(|md| Stat::of(&md))
                    .with_context(|| format!("stat {}", p.display()))
            })
            .collect();
        for (abs, stat) in found.into_iter().zip(stats) {
            let rel = abs
                .strip_prefix(root)
                .unwrap_or(&abs)
                .to_string_lossy()
                .into_owned();
            todo.push(Todo {
                role: &spec.role,
                rel,
                abs,
                stat: stat?,
            });
        }
        Ok(())
    }
}

/// blake3 of a file (hex); memory-mapped and multi-threaded for large files.
pub fn hash_file(path: &Path) -> Result<String> {
    hash_file_raw(path).map(|h| h.to_hex().to_string())
}

fn hash_file_raw(path: &Path) -> Result<blake3::Hash> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unchanged_files_are_not_rehashed_and_changes_are_seen() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(data.join("sub")).unwrap();
        std::fs::write(data.join("a"), b"1").unwrap();
        std::fs::write(data.join("sub/b"), b"2").unwrap();
        let specs = [InputSpec::new("d", data.clone())];
        let sc = dir.path().join("stat-cache.bin");
        let mut c = StatCache::load(&sc);
        let f1 = c.fingerprint(&specs, false).unwrap();
        assert_eq!(f1.len(), 2);
        assert_eq!(f1[1].rel, "sub/b");
        c.save().unwrap();
        let mut c = StatCache::load(&sc);
        assert_eq!(c.entries.len(), 2);
        std::fs::write(data.join("a"), b"changed").unwrap();
        let f2 = c.fingerprint(&specs, false).unwrap();
        assert_ne!(f1[0].blake3, f2[0].blake3);
        assert_eq!(f1[1].blake3, f2[1].blake3);
    }

    fn two_files(dir: &Path) -> (Vec<InputSpec>, PathBuf) {
        let data = dir.join("data");
        std::fs::create_dir_all(data.join("sub")).unwrap();
        std::fs::write(data.join("a"), b"1").unwrap();
        std::fs::write(data.join("sub/b"), b"2").unwrap();
        // Old enough to be trusted at once (see RACY_WINDOW_NS).
        let old = SystemTime::now() - std::time::Duration::from_secs(60);
        for f in ["a", "sub/b"] {
            std::fs::File::options()
                .append(true)
                .open(data.join(f))
                .unwrap()
                .set_modified(old)
                .unwrap();
        }
        (vec![InputSpec::new("d", data)], dir.join("stat-cache.bin"))
    }

    #[test]
    fn the_saved_file_round_trips_every_entry_and_is_deterministic() {
        let dir = tempfile::tempdir().unwrap();
        let (specs, sc) = two_files(dir.path());
        let mut c = StatCache::load(&sc);
        let f1 = c.fingerprint(&specs, false).unwrap();
        c.save().unwrap();
        let first = std::fs::read(&sc).unwrap();
        let back = StatCache::load(&sc);
        assert_eq!(back.entries, c.entries);
        assert!(!back.dirty);
        // Every file is now answered from the cache (dirty stays false) with the same hashes.
        let mut back = back;
        assert_eq!(back.fingerprint(&specs, false).unwrap(), f1);
        assert!(!back.dirty);
        // Saving the same entries again writes the same bytes.
        back.dirty = true;
        back.save().unwrap();
        assert_eq!(std::fs::read(&sc).unwrap(), first);
    }

    #[test]
    fn a_damaged_or_truncated_stat_cache_is_ignored_and_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let (specs, sc) = two_files(dir.path());
        let mut c = StatCache::load(&sc);
        let want = c.fingerprint(&specs, false).unwrap();
        c.save().unwrap();
        let good = std::fs::read(&sc).unwrap();
        let mut flipped = good.clone();
        flipped[20] ^= 1;
        for bad in [
            &good[..good.len() / 2],
            &good[..3],
            &flipped[..],
            b"" as &[u8],
        ] {
            std::fs::write(&sc, bad).unwrap();
            let mut c = StatCache::load(&sc);
            assert!(c.entries.is_empty());
            // Hashing again gives the same answer, and the file is whole after the save.
            assert_eq!(c.fingerprint(&specs, false).unwrap(), want);
            c.save().unwrap();
            assert_eq!(std::fs::read(&sc).unwrap(), good);
        }
    }

    #[test]
    fn an_old_tsv_stat_cache_is_ignored_and_removed_on_save() {
        let dir = tempfile::tempdir().unwrap();
        let (specs, sc) = two_files(dir.path());
        let tsv = dir.path().join(LEGACY_TSV);
        let a = dir.path().join("data/a");
        // The old format's row for `a`, with a wrong hash: it must not be believed.
        std::fs::write(
            &tsv,
            format!("{}\t1\t0\t0\t0\t{}\n", "0".repeat(64), a.display()),
        )
        .unwrap();
        let mut c = StatCache::load(&sc);
        assert!(c.entries.is_empty());
        let f = c.fingerprint(&specs, false).unwrap();
        assert_eq!(f[0].blake3, blake3::hash(b"1").to_hex().to_string());
        c.save().unwrap();
        assert!(!tsv.exists() && sc.exists());
    }

    #[test]
    fn missing_input_names_role_and_path() {
        let mut c = StatCache::load(Path::new("/nonexistent/sc"));
        let e = c
            .fingerprint(
                &[InputSpec::new("train", PathBuf::from("/no/such.h5"))],
                false,
            )
            .unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("train") && msg.contains("/no/such.h5"),
            "{msg}"
        );
    }
}
