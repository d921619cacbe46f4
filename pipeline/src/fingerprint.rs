//! Input fingerprints: the blake3 of every raw input file, with a stat cache so an unchanged
//! tree of 200 GB is re-checked by `stat` alone (hashing it on every run is what makes
//! `dvc status` slow on big datasets). `--rehash` ignores the stat cache.

use crate::file_list::FileList;
use crate::stat_file::{split_path, Table};
use anyhow::{Context, Result};
use rayon::prelude::*;
use std::collections::HashMap;
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

mod files;
mod listed;
mod order;
mod prune;
mod spec;
pub use files::hash_file;
use files::{hash_file_raw, FileType, Stat};
use listed::ListedDirs;
pub use prune::StatPrune;
use spec::DigestLines;
pub use spec::{inputs_digest, InputFile, InputSpec};

/// A stage's hashed input files, in key order: sorted by (role, rel), files of equal (role,
/// rel) in declaration order. Compact: names stay in the declarations (a listed input's
/// [`FileList`] is shared, not copied) and a file costs its size, raw hash and position
/// (~56 bytes, where strings per file cost ~250 at 200,000 files).
#[derive(Clone)]
pub struct Inputs {
    groups: Vec<Group>,
    /// (group, file in the group) of every file, in key order.
    order: Vec<(u32, u32)>,
}

/// One input file as [`Inputs::iter`] shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputRef<'a> {
    pub role: &'a str,
    pub rel: &'a str,
    pub size: u64,
    pub blake3: &'a [u8; 32],
}

impl Inputs {
    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = InputRef<'_>> + '_ {
        self.order.iter().map(|&(g, i)| {
            let gr = &self.groups[g as usize];
            let (size, blake3) = match &gr.found[i as usize] {
                Found::File { size, blake3 } => (*size, blake3),
                // `order` lists files only (see `StatCache::fingerprint`).
                _ => (0, &ZERO),
            };
            InputRef {
                role: &gr.role,
                rel: gr.rel(i as usize),
                size,
                blake3,
            }
        })
    }

    /// The digest the key takes: [`inputs_digest`] of [`Inputs::to_files`], without them.
    pub fn digest(&self) -> String {
        let mut d = DigestLines::new();
        for f in self.iter() {
            let hex = blake3::Hash::from_bytes(*f.blake3).to_hex();
            d.line(f.role, f.rel, hex.as_str());
        }
        d.finish()
    }

    /// The files as run records store them (hex hashes).
    pub fn to_files(&self) -> Vec<InputFile> {
        self.iter()
            .map(|f| InputFile {
                role: f.role.to_string(),
                rel: f.rel.to_string(),
                size: f.size,
                blake3: blake3::Hash::from_bytes(*f.blake3).to_hex().to_string(),
            })
            .collect()
    }
}

impl std::fmt::Debug for Inputs {
    // A summary: the whole list of a 200,000-file input would be megabytes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Inputs({} files)", self.len())
    }
}

const ZERO: [u8; 32] = [0; 32];

/// The files of one declaration (or of a directory found in one), with what was found.
#[derive(Clone)]
struct Group {
    role: Arc<str>,
    names: Names,
    /// Per file, in `names` order.
    found: Vec<Found>,
}

#[derive(Clone)]
enum Names {
    /// One file (already stat'ed when its declaration was).
    One {
        abs: PathBuf,
        rel: String,
        stat: Stat,
    },
    /// Files below a directory (absolute), by relative name.
    Listed { root: PathBuf, names: Arc<FileList> },
}

#[derive(Debug, Clone, Copy)]
enum Found {
    File {
        size: u64,
        blake3: [u8; 32],
    },
    /// A directory where a file was listed: its files form a group of their own.
    Dir,
    /// Missing, unreadable, or not a regular file: the error is reproduced in order.
    Failed,
}

impl Group {
    fn len(&self) -> usize {
        match &self.names {
            Names::One { .. } => 1,
            Names::Listed { names, .. } => names.len(),
        }
    }

    fn rel(&self, i: usize) -> &str {
        match &self.names {
            Names::One { rel, .. } => rel,
            Names::Listed { names, .. } => names.get(i).unwrap_or_default(),
        }
    }

    fn abs(&self, i: usize) -> PathBuf {
        match &self.names {
            Names::One { abs, .. } => abs.clone(),
            Names::Listed { root, names } => {
                one_spelling(&root.join(names.get(i).unwrap_or_default()))
            }
        }
    }
}

/// path → (stat, blake3), persisted in the cache directory as `stat-cache.bin`
/// ([`crate::stat_file`]): the file as it was read ([`Table`], looked up in place), and the
/// entries this run hashed.
pub struct StatCache {
    file: PathBuf,
    table: Table,
    fresh: HashMap<OsString, (Stat, [u8; 32])>,
    dirty: bool,
}

/// A stat cache being read ([`StatCache::load_in_background`]).
pub struct StatCacheLoad(Option<std::thread::JoinHandle<StatCache>>);

impl StatCacheLoad {
    /// The cache at `file`: the one read in the background the first time (the same file,
    /// perhaps named through a link), read now after that (a save since must be seen).
    pub fn take(&mut self, file: &Path) -> StatCache {
        match self.0.take().and_then(|h| h.join().ok()) {
            Some(mut c) => {
                c.file = file.to_path_buf();
                c
            }
            None => StatCache::load(file),
        }
    }
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
        let table = match bytes.map(Table::parse) {
            None => Table::empty(),
            Some(Ok(t)) => t,
            Some(Err(e)) => {
                tracing::warn!(
                    "{}: {e}; ignored: inputs are re-hashed and it is rewritten",
                    file.display()
                );
                dirty = true;
                Table::empty()
            }
        };
        StatCache {
            file: file.to_path_buf(),
            table,
            fresh: HashMap::new(),
            dirty,
        }
    }

    /// Starts [`StatCache::load`] on a thread of its own: a pipeline starts it before
    /// building its stages, so reading and indexing the file (~0.15 s at 400,000 rows)
    /// overlaps reading the datasets' file lists.
    pub fn load_in_background(file: PathBuf) -> StatCacheLoad {
        let handle = std::thread::Builder::new()
            .name("stat-cache".into())
            .spawn(move || StatCache::load(&file))
            .ok();
        StatCacheLoad(handle)
    }

    /// How many files the cache knows.
    #[cfg(test)]
    fn known(&self) -> usize {
        self.table.len() + self.fresh.len()
    }

    /// Writes the cache back if anything changed (atomically: a reader never sees half a file).
    pub fn save(&mut self) -> Result<()> {
        if !self.dirty {
            return Ok(());
        }
        // This run's entries first: of two rows for one path, `encode` keeps the first.
        let fresh = self.fresh.iter().filter_map(|(p, (st, h))| {
            let (d, n) = split_path(p.as_bytes())?;
            Some((d, n, st.row(*h)?))
        });
        let bytes = crate::stat_file::encode(fresh.chain(self.table.rows()));
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

    /// What the cache holds for `abs`: this run's entry, else the file's row.
    fn lookup(&self, abs: &Path) -> Option<(Stat, [u8; 32])> {
        match self.fresh.get(abs.as_os_str()) {
            Some(e) => Some(*e),
            None => {
                let (d, n) = split_path(abs.as_os_str().as_bytes())?;
                let r = self.table.get(d, n)?;
                Some((Stat::of_row(&r), r.blake3))
            }
        }
    }

    /// Hashes every file of `specs` (re-using cached hashes whose stat is unchanged unless
    /// `rehash`). Files come back in key order ([`Inputs`]). A missing input is an error.
    pub fn fingerprint(&mut self, specs: &[InputSpec], rehash: bool) -> Result<Inputs> {
        enum Kind {
            File(Stat),
            Dir,
            Other,
        }
        let cwd = std::env::current_dir().context("reading the current directory")?;
        // Absolute and spelled one way: two spellings kept two rows per file in the stat
        // cache (twice its size, read every run).
        let absolute = |p: &Path| -> PathBuf {
            if p.is_absolute() {
                one_spelling(p)
            } else {
                one_spelling(&cwd.join(p))
            }
        };
        // One stat per declaration, in parallel (an input may be 200,000 single files).
        let kinds: Vec<Result<Kind>> = specs
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
        let mut roles: Vec<Arc<str>> = Vec::new();
        let mut groups = Vec::with_capacity(specs.len());
        for (spec, kind) in specs.iter().zip(kinds) {
            let role = intern(&mut roles, &spec.role);
            let root = absolute(&spec.path);
            let names = match (kind?, &spec.files) {
                (Kind::Dir, Some(names)) => Names::Listed {
                    root,
                    names: names.clone(),
                },
                (_, Some(_)) => anyhow::bail!(
                    "input `{}` at {} is not a directory, and its files are listed relative to it; point it at the dataset's directory",
                    spec.role,
                    spec.path.display()
                ),
                (Kind::File(stat), None) => {
                    let rel = spec.rel.clone().unwrap_or_else(|| {
                        root.file_name()
                            .map(|n| n.to_string_lossy().into_owned())
                            .unwrap_or_default()
                    });
                    Names::One {
                        abs: root,
                        rel,
                        stat,
                    }
                }
                (Kind::Dir, None) => {
                    walk(&role, &root, &mut groups)?;
                    continue;
                }
                // A FIFO or a device would block or never end when hashed.
                (Kind::Other, None) => anyhow::bail!(
                    "input `{}` at {} is not a regular file or a directory (a FIFO, socket or device); point it at the data file",
                    spec.role,
                    spec.path.display()
                ),
            };
            groups.push(Group {
                role,
                names,
                found: Vec::new(),
            });
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as i128)
            .unwrap_or(0);
        // Groups may grow while this runs: a listed name that is a directory adds its files.
        let mut g = 0;
        while g < groups.len() {
            self.resolve(&mut groups[g], now, rehash)?;
            let dirs: Vec<PathBuf> = groups[g]
                .found
                .iter()
                .enumerate()
                .filter(|(_, f)| matches!(f, Found::Dir))
                .map(|(i, _)| groups[g].abs(i))
                .collect();
            let role = groups[g].role.clone();
            for d in dirs {
                walk(&role, &d, &mut groups)?;
            }
            g += 1;
        }
        let order = order::key_order(&groups)?;
        Ok(Inputs { groups, order })
    }

    /// Fills `group.found`: each file's stat, then its cached hash or a new one, in
    /// parallel (on a 200k-file dataset the stats are the whole cost of a no-op run, and
    /// they overlap well). A file that fails is reported in list order, deterministically.
    fn resolve(&mut self, group: &mut Group, now: i128, rehash: bool) -> Result<()> {
        let hashed: Mutex<Vec<(PathBuf, Stat, [u8; 32])>> = Mutex::new(Vec::new());
        let this = &*self;
        let gr = &*group;
        // A listed group's files are stat'ed relative to their directory, opened once: the
        // kernel then walks each name's own components only, not the root's again for
        // every file (that walk was a third of a no-op's system time at 200k files).
        let dirs = match &gr.names {
            Names::Listed { root, names } => ListedDirs::open(root, names, &this.table),
            Names::One { .. } => None,
        };
        // This run's own entries are keyed by whole paths; without any (a no-op run), a
        // listed file is looked up by its directory's index and its base name.
        let by_dir = this.fresh.is_empty();
        let found: Vec<Found> = (0..gr.len())
            .into_par_iter()
            .map(|i| {
                let stat = match (&gr.names, &dirs) {
                    (Names::One { stat, .. }, _) => *stat,
                    (Names::Listed { .. }, Some(d)) => match d.stat(i, gr.rel(i)) {
                        Some((st, FileType::File)) => st,
                        Some((_, FileType::Dir)) => return Found::Dir,
                        _ => return Found::Failed,
                    },
                    (Names::Listed { .. }, None) => match std::fs::metadata(gr.abs(i)) {
                        Ok(md) if md.is_file() => Stat::of(&md),
                        Ok(md) if md.is_dir() => return Found::Dir,
                        _ => return Found::Failed,
                    },
                };
                if !rehash {
                    let known = match &dirs {
                        Some(d) if by_dir => d
                            .cached(i, gr.rel(i), &this.table)
                            .map(|r| (Stat::of_row(&r), r.blake3)),
                        _ => this.lookup(&gr.abs(i)),
                    };
                    // Trusted when the stat is unchanged and was not taken within the racy
                    // window of the file's last change.
                    if let Some((st, h)) = known {
                        if st == stat && now - st.mtime_ns > RACY_WINDOW_NS {
                            return Found::File {
                                size: stat.size,
                                blake3: h,
                            };
                        }
                    }
                }
                let abs = gr.abs(i);
                match hash_file_raw(&abs) {
                    Ok(h) => {
                        let h = *h.as_bytes();
                        if let Ok(mut v) = hashed.lock() {
                            v.push((abs, stat, h));
                        }
                        Found::File {
                            size: stat.size,
                            blake3: h,
                        }
                    }
                    Err(_) => Found::Failed,
                }
            })
            .collect();
        if let Some(i) = found.iter().position(|f| matches!(f, Found::Failed)) {
            return Err(failure(gr, i));
        }
        let hashed = hashed.into_inner().unwrap_or_default();
        self.dirty |= !hashed.is_empty();
        for (abs, stat, h) in hashed {
            self.fresh.insert(abs.into_os_string(), (stat, h));
        }
        group.found = found;
        Ok(())
    }
}

/// `path` spelled one way: `.` components and doubled or trailing `/` dropped (`..` kept:
/// without resolving links, `a/b/..` need not be `a`). The stat cache knows a file by this
/// path, so `./data` and `data` in two configs share its rows.
pub(super) fn one_spelling(path: &Path) -> PathBuf {
    path.components().collect()
}

/// The role's shared string: one per role, not one per file.
fn intern(roles: &mut Vec<Arc<str>>, role: &str) -> Arc<str> {
    if let Some(r) = roles.iter().find(|r| ***r == *role) {
        return r.clone();
    }
    roles.push(Arc::from(role));
    roles[roles.len() - 1].clone()
}

/// Why file `i` of `group` failed, found again in order (the parallel pass keeps no error
/// per file): the same messages as a declaration of that file alone.
fn failure(group: &Group, i: usize) -> anyhow::Error {
    let abs = group.abs(i);
    let role = &group.role;
    match std::fs::metadata(&abs) {
        Err(e) => anyhow::anyhow!(
            "input `{role}` at {}: {e}; fix the path in the config or the file list that names it (paths are relative to the config file)",
            abs.display()
        ),
        Ok(md) if !md.is_file() && !md.is_dir() => anyhow::anyhow!(
            "input `{role}` at {} is not a regular file or a directory (a FIFO, socket or device); point it at the data file",
            abs.display()
        ),
        Ok(_) => match hash_file_raw(&abs) {
            Err(e) => e.context(format!("input `{role}`")),
            Ok(_) => anyhow::anyhow!(
                "input `{role}` at {} changed while it was read; run again",
                abs.display()
            ),
        },
    }
}

/// Every file below the directory `root` (absolute) as a group of `role`, sorted by name,
/// keyed by its path relative to `root`. The walk lists them; their stats (the slow part on
/// a big tree, and on NFS) are taken in parallel by `resolve`. A name that is not UTF-8
/// gets a group of its own (its key name is lossy, so it cannot be found again from it).
fn walk(role: &Arc<str>, root: &Path, groups: &mut Vec<Group>) -> Result<()> {
    let mut names = FileList::new();
    let mut odd = Vec::new();
    for entry in walkdir::WalkDir::new(root)
        .follow_links(true)
        .sort_by_file_name()
    {
        let entry = entry.with_context(|| format!("walking input {}", root.display()))?;
        if !entry.file_type().is_file() {
            continue;
        }
        let abs = entry.into_path();
        let rel = abs.strip_prefix(root).unwrap_or(&abs);
        match rel.to_str() {
            Some(r) if root.join(r) == abs => {
                names.push(r);
            }
            _ => odd.push(abs),
        }
    }
    names.shrink_to_fit();
    groups.push(Group {
        role: role.clone(),
        names: Names::Listed {
            root: root.to_path_buf(),
            names: Arc::new(names),
        },
        found: Vec::new(),
    });
    for abs in odd {
        let stat = std::fs::metadata(&abs)
            .map(|md| Stat::of(&md))
            .with_context(|| format!("stat {}", abs.display()))?;
        let rel = abs
            .strip_prefix(root)
            .unwrap_or(&abs)
            .to_string_lossy()
            .into_owned();
        groups.push(Group {
            role: role.clone(),
            names: Names::One { abs, rel, stat },
            found: Vec::new(),
        });
    }
    Ok(())
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
        let f1 = c.fingerprint(&specs, false).unwrap().to_files();
        assert_eq!(f1.len(), 2);
        assert_eq!(f1[1].rel, "sub/b");
        c.save().unwrap();
        let mut c = StatCache::load(&sc);
        assert_eq!(c.known(), 2);
        std::fs::write(data.join("a"), b"changed").unwrap();
        let f2 = c.fingerprint(&specs, false).unwrap().to_files();
        assert_ne!(f1[0].blake3, f2[0].blake3);
        assert_eq!(f1[1].blake3, f2[1].blake3);
    }

    fn two_files(dir: &Path) -> (Vec<InputSpec>, PathBuf) {
        let data = dir.join("data");
        write_old(&data.join("a"), "1");
        write_old(&data.join("sub/b"), "2");
        (vec![InputSpec::new("d", data)], dir.join("stat-cache.bin"))
    }

    /// [`two_files`] hashed once into a new stat cache, saved: the specs, the cache file and
    /// the files' hashes.
    fn two_files_saved(dir: &Path) -> (Vec<InputSpec>, PathBuf, Vec<InputFile>) {
        let (specs, sc) = two_files(dir);
        let mut c = StatCache::load(&sc);
        let files = c.fingerprint(&specs, false).unwrap().to_files();
        c.save().unwrap();
        (specs, sc, files)
    }

    #[test]
    fn the_saved_file_round_trips_every_entry_and_is_deterministic() {
        let dir = tempfile::tempdir().unwrap();
        let (specs, sc, f1) = two_files_saved(dir.path());
        let first = std::fs::read(&sc).unwrap();
        let back = StatCache::load(&sc);
        assert_eq!(back.known(), 2);
        assert!(!back.dirty);
        // Every file is now answered from the cache (dirty stays false) with the same hashes.
        let mut back = back;
        assert_eq!(back.fingerprint(&specs, false).unwrap().to_files(), f1);
        assert!(!back.dirty);
        // Saving the same entries again writes the same bytes.
        back.dirty = true;
        back.save().unwrap();
        assert_eq!(std::fs::read(&sc).unwrap(), first);
    }

    #[test]
    fn a_damaged_or_truncated_stat_cache_is_ignored_and_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let (specs, sc, want) = two_files_saved(dir.path());
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
            assert_eq!(c.known(), 0);
            // Hashing again gives the same answer, and the file is whole after the save.
            assert_eq!(c.fingerprint(&specs, false).unwrap().to_files(), want);
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
        assert_eq!(c.known(), 0);
        let f = c.fingerprint(&specs, false).unwrap().to_files();
        assert_eq!(f[0].blake3, blake3::hash(b"1").to_hex().to_string());
        c.save().unwrap();
        assert!(!tsv.exists() && sc.exists());
    }

    /// 40 files in 4 directories (old enough to be trusted), a declaration per file as the
    /// stages made them before lists, and the same files as one listed input.
    fn many_files(dir: &Path) -> (Vec<InputSpec>, Vec<InputSpec>) {
        let root = dir.join("objects");
        let mut names = Vec::new();
        for i in 0..40 {
            // Not in name order, and one name twice: both count.
            let rel = format!("c{}/{:02}.bin", i % 4, 39 - i);
            write_old(&root.join(&rel), &i.to_string());
            names.push(rel);
        }
        names.push(names[7].clone());
        let split = dir.join("split.txt");
        write_old(&split, "list");
        let mut one_by_one = vec![InputSpec::new("split", split.clone())];
        one_by_one.extend(
            names
                .iter()
                .map(|n| InputSpec::file_as("objects", root.join(n), n.clone())),
        );
        let list: FileList = names.iter().map(String::as_str).collect();
        let listed = vec![
            InputSpec::new("split", split),
            InputSpec::listed("objects", root, Arc::new(list)),
        ];
        (one_by_one, listed)
    }

    #[test]
    fn a_listed_input_keys_like_one_declaration_per_file() {
        let dir = tempfile::tempdir().unwrap();
        let (one_by_one, listed) = many_files(dir.path());
        let sc = dir.path().join("stat-cache.bin");
        let mut c = StatCache::load(&sc);
        let a = c.fingerprint(&one_by_one, false).unwrap();
        let b = c.fingerprint(&listed, false).unwrap();
        assert_eq!(a.len(), 42);
        assert_eq!(a.to_files(), b.to_files());
        assert_eq!(a.digest(), b.digest());
        assert_eq!(b.digest(), inputs_digest(&b.to_files()));
        let files = b.to_files();
        assert!(files
            .windows(2)
            .all(|w| (&w[0].role, &w[0].rel) <= (&w[1].role, &w[1].rel)));
        // From the saved stat cache (nothing hashed): the same inputs.
        c.save().unwrap();
        let mut c = StatCache::load(&sc);
        assert_eq!(c.known(), 41);
        assert_eq!(c.fingerprint(&listed, false).unwrap().to_files(), files);
        assert!(!c.dirty);
        // A changed file is seen through the list.
        std::fs::write(dir.path().join("objects/c1/38.bin"), b"new").unwrap();
        let changed = c.fingerprint(&listed, false).unwrap();
        assert_ne!(changed.digest(), b.digest());
        assert_eq!(
            changed.digest(),
            c.fingerprint(&one_by_one, false).unwrap().digest()
        );
    }

    /// Writes `body` at `path` (directories made), a minute old: trusted at once (see
    /// RACY_WINDOW_NS).
    pub(super) fn write_old(path: &Path, body: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, body).unwrap();
        std::fs::File::options()
            .append(true)
            .open(path)
            .unwrap()
            .set_modified(SystemTime::now() - std::time::Duration::from_secs(60))
            .unwrap();
    }

    /// `names` below `root` as one listed input (in `list` order), and the files of one
    /// declaration each as a new stat cache at `sc` hashes them (saved, and returned with
    /// the cache: its entries of this run are keyed by whole paths).
    fn listed_and_each(
        root: &Path,
        list: &[&str],
        names: &[&str],
        sc: &Path,
    ) -> ([InputSpec; 1], Vec<InputFile>, StatCache) {
        let listed = [InputSpec::listed(
            "objects",
            root.to_path_buf(),
            Arc::new(list.iter().copied().collect()),
        )];
        let each: Vec<InputSpec> = names
            .iter()
            .map(|n| InputSpec::file_as("objects", root.join(n), n.to_string()))
            .collect();
        let mut c = StatCache::load(sc);
        let want = c.fingerprint(&each, false).unwrap().to_files();
        c.save().unwrap();
        (listed, want, c)
    }

    /// Names a directory shortcut cannot take as they are (no directory part, `..`, a
    /// doubled `/`, a directory with a trailing `/`) resolve as a declaration per file does,
    /// and the no-op run after a save (looked up by directory) hashes nothing.
    #[test]
    fn odd_listed_names_key_like_one_declaration_each_and_are_cached() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("objects");
        for (f, body) in [
            ("top.bin", "t"),
            ("c0/a.bin", "a"),
            ("c1/b.bin", "b"),
            ("c0/sub/s.bin", "s"),
        ] {
            write_old(&root.join(f), body);
        }
        let names = [
            "c1/b.bin",
            "top.bin",
            "c0/../c1/b.bin",
            "c0//a.bin",
            "c0/sub/",
        ];
        let sc = dir.path().join("sc");
        let (listed, want, mut c) = listed_and_each(&root, &names, &names, &sc);
        let rels: Vec<&str> = want.iter().map(|f| f.rel.as_str()).collect();
        assert_eq!(
            rels,
            [
                "c0/../c1/b.bin",
                "c0//a.bin",
                "c1/b.bin",
                "s.bin",
                "top.bin"
            ]
        );
        assert_eq!(c.fingerprint(&listed, false).unwrap().to_files(), want);
        let mut c = StatCache::load(&sc);
        assert_eq!(c.fingerprint(&listed, false).unwrap().to_files(), want);
        assert!(c.fresh.is_empty() && !c.dirty, "a no-op hashed again");
        // A change is still seen when looked up by directory.
        std::fs::write(root.join("c0/a.bin"), "changed").unwrap();
        let mut c = StatCache::load(&sc);
        let got = c.fingerprint(&listed, false).unwrap().to_files();
        assert_ne!(got, want);
        assert_eq!(got[1].blake3, blake3::hash(b"changed").to_hex().to_string());
    }

    /// More directories than are held open: the rest are stat'ed from the root, same keys.
    #[test]
    fn a_list_over_more_directories_than_are_held_open_keys_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("objects");
        let names: Vec<String> = (0..listed::MAX_OPEN_DIRS + 20)
            .map(|i| format!("d{i:04}/f.bin"))
            .collect();
        for (i, n) in names.iter().enumerate() {
            write_old(&root.join(n), &i.to_string());
        }
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let list: Vec<&str> = names.iter().rev().copied().collect();
        let sc = dir.path().join("sc");
        let (listed, want, _) = listed_and_each(&root, &list, &names, &sc);
        let mut c = StatCache::load(&sc);
        assert_eq!(c.fingerprint(&listed, false).unwrap().to_files(), want);
        assert!(c.fresh.is_empty(), "a no-op hashed again");
        let last = names[names.len() - 1];
        std::fs::remove_file(root.join(last)).unwrap();
        let msg = format!("{:#}", c.fingerprint(&listed, false).unwrap_err());
        assert!(msg.contains(last), "{msg}");
    }

    /// `data`, `./data/` and `data/./` name the same files: one row each in the stat cache,
    /// and a run under another spelling hashes nothing again.
    #[test]
    fn spellings_of_one_path_share_the_stat_cache() {
        let dir = tempfile::tempdir().unwrap();
        let (specs, sc, want) = two_files_saved(dir.path());
        let data = &specs[0].path;
        // (`..` stays: without resolving links, `a/b/..` need not be `a`.)
        for other in [data.join("."), dir.path().join("./data/")] {
            let mut c = StatCache::load(&sc);
            let got = c.fingerprint(&[InputSpec::new("d", other.clone())], false);
            assert_eq!(got.unwrap().to_files(), want, "{}", other.display());
            assert!(c.fresh.is_empty(), "{} hashed again", other.display());
            c.save().unwrap();
            assert_eq!(StatCache::load(&sc).known(), 2, "{}", other.display());
        }
    }

    #[test]
    fn a_missing_listed_file_is_named_and_the_first_in_list_order() {
        let dir = tempfile::tempdir().unwrap();
        let (_, listed) = many_files(dir.path());
        for n in ["objects/c2/05.bin", "objects/c1/02.bin"] {
            std::fs::remove_file(dir.path().join(n)).unwrap();
        }
        for _ in 0..3 {
            let mut c = StatCache::load(&dir.path().join("sc"));
            let msg = format!("{:#}", c.fingerprint(&listed, false).unwrap_err());
            assert!(
                msg.contains("`objects`") && msg.contains("c2/05.bin"),
                "{msg}"
            );
        }
        // A list needs its directory.
        let bad = [InputSpec::listed(
            "objects",
            dir.path().join("split.txt"),
            Arc::new(FileList::new()),
        )];
        let mut c = StatCache::load(&dir.path().join("sc"));
        let msg = c.fingerprint(&bad, false).unwrap_err().to_string();
        assert!(msg.contains("not a directory"), "{msg}");
    }

    #[test]
    fn files_below_keys_like_one_declaration_per_file() {
        let dir = tempfile::tempdir().unwrap();
        let (one_by_one, _) = many_files(dir.path());
        let root = dir.path().join("objects");
        let elsewhere = dir.path().join("split.txt");
        let mut files: Vec<(PathBuf, String)> = one_by_one[1..]
            .iter()
            .map(|s| (s.path.clone(), s.rel.clone().unwrap()))
            .collect();
        // A file not at root.join(rel) is declared on its own.
        files.push((elsewhere.clone(), "c0/zz.bin".into()));
        let specs = InputSpec::files_below("objects", &root, files.clone());
        assert_eq!(specs.len(), 2);
        assert_eq!(specs[1].path, elsewhere);
        let each: Vec<InputSpec> = files
            .into_iter()
            .map(|(p, r)| InputSpec::file_as("objects", p, r))
            .collect();
        let mut c = StatCache::load(&dir.path().join("sc"));
        assert_eq!(
            c.fingerprint(&specs, false).unwrap().to_files(),
            c.fingerprint(&each, false).unwrap().to_files()
        );
        assert!(InputSpec::files_below("x", &root, []).is_empty());
    }

    #[test]
    fn a_listed_directory_counts_its_files_as_a_declaration_of_it_did() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("d/e")).unwrap();
        std::fs::write(root.join("d/e/x"), b"x").unwrap();
        std::fs::write(root.join("f"), b"f").unwrap();
        let names: FileList = ["f", "d"].into_iter().collect();
        let mut c = StatCache::load(&dir.path().join("sc"));
        let listed = c
            .fingerprint(
                &[InputSpec::listed("r", root.clone(), Arc::new(names))],
                false,
            )
            .unwrap();
        let each = c
            .fingerprint(
                &[
                    InputSpec::file_as("r", root.join("f"), "f".into()),
                    InputSpec::file_as("r", root.join("d"), "d".into()),
                ],
                false,
            )
            .unwrap();
        assert_eq!(listed.to_files(), each.to_files());
        let rels: Vec<String> = listed.to_files().into_iter().map(|f| f.rel).collect();
        assert_eq!(rels, ["e/x", "f"]);
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
