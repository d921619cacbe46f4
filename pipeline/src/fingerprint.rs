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

/// path → (stat, blake3), persisted as a small TSV in the cache directory. Keyed by the
/// path's bytes: hashing an `OsString` is a byte hash, hashing a `PathBuf` walks components
/// (measurable on 200k-file inputs).
pub struct StatCache {
    file: PathBuf,
    entries: HashMap<OsString, (Stat, String)>,
    dirty: bool,
}

/// A file modified within this window of being hashed might change again within the same
/// mtime tick and look unchanged ("racy git"); such entries are not trusted next time.
const RACY_WINDOW_NS: i128 = 2_000_000_000;

impl StatCache {
    pub fn load(file: &Path) -> Self {
        let mut entries = HashMap::new();
        // A stat cache planted as a link (to someone's table of hashes) is not read: it
        // would decide the keys. Only a regular file of a bounded size is.
        let regular =
            std::fs::symlink_metadata(file).is_ok_and(|m| m.is_file() && m.len() <= 1 << 30);
        if std::fs::symlink_metadata(file).is_ok() && !regular {
            tracing::warn!(
                "{} is not a regular file (a link?); not read: inputs are re-hashed (remove it)",
                file.display()
            );
        }
        let text = if regular {
            std::fs::read_to_string(file).ok()
        } else {
            None
        };
        if let Some(text) = text {
            for line in text.lines() {
                let mut it = line.splitn(6, '\t');
                let (Some(h), Some(s), Some(m), Some(c), Some(i), Some(p)) = (
                    it.next(),
                    it.next(),
                    it.next(),
                    it.next(),
                    it.next(),
                    it.next(),
                ) else {
                    continue; // a damaged line only costs a re-hash
                };
                let (Ok(size), Ok(mtime_ns), Ok(ctime_ns), Ok(ino)) =
                    (s.parse(), m.parse(), c.parse(), i.parse())
                else {
                    continue;
                };
                entries.insert(
                    OsString::from(p),
                    (
                        Stat {
                            size,
                            mtime_ns,
                            ctime_ns,
                            ino,
                        },
                        h.to_string(),
                    ),
                );
            }
        }
        StatCache {
            file: file.to_path_buf(),
            entries,
            dirty: false,
        }
    }

    /// Writes the cache back if anything changed (atomically: a reader never sees half a file).
    pub fn save(&mut self) -> Result<()> {
        if !self.dirty {
            return Ok(());
        }
        let mut rows: Vec<_> = self.entries.iter().collect();
        rows.sort_by(|a, b| a.0.cmp(b.0));
        let rows = rows.into_iter().map(|(p, v)| (Path::new(p), v));
        let mut out = String::with_capacity(rows.len() * 120);
        for (p, (st, h)) in rows {
            let Some(p) = p.to_str() else { continue };
            if p.contains('\n') || p.contains('\t') {
                continue;
            }
            out.push_str(&format!(
                "{h}\t{}\t{}\t{}\t{}\t{p}\n",
                st.size, st.mtime_ns, st.ctime_ns, st.ino
            ));
        }
        crate::cas::write_atomic(&self.file, out.as_bytes())?;
        self.dirty = false;
        Ok(())
    }

    /// Hashes every file of `specs` (re-using cached hashes whose stat is unchanged unless
    /// `rehash`). Files come back sorted by (role, rel). A missing input is an error.
    pub fn fingerprint(&mut self, specs: &[InputSpec], rehash: bool) -> Result<Vec<InputFile>> {
        struct Todo {
            role: String,
            rel: String,
            abs: PathBuf,
            stat: Stat,
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
        let stats: Vec<Result<std::fs::Metadata>> = specs
            .par_iter()
            .map(|spec| {
                std::fs::metadata(&spec.path).map_err(|e| {
                    anyhow::anyhow!(
                        "input `{}` at {}: {e}; fix the path in the config (paths are relative to the config file)",
                        spec.role,
                        spec.path.display()
                    )
                })
            })
            .collect();
        let mut todo = Vec::new();
        for (spec, md) in specs.iter().zip(stats) {
            let md = md?;
            let root = absolute(&spec.path);
            if !md.is_file() && !md.is_dir() {
                // A FIFO or a device would block or never end when hashed.
                anyhow::bail!(
                    "input `{}` at {} is not a regular file or a directory (a FIFO, socket or device); point it at the data file",
                    spec.role,
                    spec.path.display()
                );
            }
            if md.is_file() {
                let rel = spec.rel.clone().unwrap_or_else(|| {
                    root.file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default()
                });
                todo.push(Todo {
                    role: spec.role.clone(),
                    rel,
                    abs: root,
                    stat: Stat::of(&md),
                });
                continue;
            }
            for entry in walkdir::WalkDir::new(&root)
                .follow_links(true)
                .sort_by_file_name()
            {
                let entry = entry.with_context(|| format!("walking input {}", root.display()))?;
                if !entry.file_type().is_file() {
                    continue;
                }
                let md = entry
                    .metadata()
                    .with_context(|| format!("stat {}", entry.path().display()))?;
                let rel = entry
                    .path()
                    .strip_prefix(&root)
                    .unwrap_or(entry.path())
                    .to_string_lossy()
                    .into_owned();
                todo.push(Todo {
                    role: spec.role.clone(),
                    rel,
                    abs: entry.into_path(),
                    stat: Stat::of(&md),
                });
            }
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as i128)
            .unwrap_or(0);
        let cached: Vec<Option<String>> = todo
            .iter()
            .map(|t| {
                if rehash {
                    return None;
                }
                match self.entries.get(t.abs.as_os_str()) {
                    Some((st, h)) if *st == t.stat && now - st.mtime_ns > RACY_WINDOW_NS => {
                        Some(h.clone())
                    }
                    _ => None,
                }
            })
            .collect();
        let hashed: Vec<Result<Option<String>>> = todo
            .par_iter()
            .zip(cached.par_iter())
            .map(|(t, c)| match c {
                Some(_) => Ok(None),
                None => hash_file(&t.abs).map(Some),
            })
            .collect();
        let mut files = Vec::with_capacity(todo.len());
        for ((t, c), h) in todo.into_iter().zip(cached).zip(hashed) {
            let hash = match (c, h?) {
                (Some(c), _) => c,
                (None, Some(h)) => {
                    self.entries
                        .insert(t.abs.as_os_str().to_owned(), (t.stat, h.clone()));
                    self.dirty = true;
                    h
                }
                (None, None) => unreachable!("a file is either cached or hashed"),
            };
            files.push(InputFile {
                role: t.role,
                rel: t.rel,
                size: t.stat.size,
                blake3: hash,
            });
        }
        files.sort_by(|a, b| (&a.role, &a.rel).cmp(&(&b.role, &b.rel)));
        Ok(files)
    }
}

/// blake3 of a file; memory-mapped and multi-threaded for large files.
pub fn hash_file(path: &Path) -> Result<String> {
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
    Ok(h.finalize().to_hex().to_string())
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
        let sc = dir.path().join("sc.tsv");
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
