//! A listed group's directories, opened once: its files are stat'ed by their base name in
//! their own directory, and looked up in the stat cache under that directory's index.
//!
//! Why: at 200,000 files in a few class folders, stat'ing `class/file` from the root walked
//! the class folder again for every file, and the cache lookup built the file's absolute
//! path, split it and binary-searched its directory per file. Here each distinct directory
//! of the list is opened and found in the cache once; a file costs one component's walk and
//! one hash probe. What each file resolves to is unchanged: a name the shortcut cannot take
//! (no base name, a directory that does not open, one past [`MAX_OPEN_DIRS`]) is stat'ed
//! from the root as before.

use super::files::{stat_at, FileType, Stat};
use crate::file_list::FileList;
use crate::stat_file::{split_path, DirIndex, Row, Table};
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// At most this many directories are held open (each is a file descriptor, and the
/// process's limit is often 1,024); files of any further directory are stat'ed from the root.
pub(super) const MAX_OPEN_DIRS: usize = 256;

pub(super) struct ListedDirs {
    root: File,
    /// Per file of the list: its directory's place in `dirs`.
    file_dir: Vec<u32>,
    dirs: Vec<ListedDir>,
}

struct ListedDir {
    /// The directory, opened (`None`: its files are stat'ed from the root).
    fd: Option<File>,
    /// The stat cache's entry for it, if the cache knows it.
    cached: Option<DirIndex>,
}

/// `rel` cut at its last `/`: (the directory part, `""` for none; the base name).
fn cut(rel: &str) -> (&str, &str) {
    match rel.rfind('/') {
        Some(c) => (&rel[..c], &rel[c + 1..]),
        None => ("", rel),
    }
}

impl ListedDirs {
    /// `None` when `root` itself cannot be opened (the caller stats whole paths).
    pub(super) fn open(root: &Path, names: &FileList, table: &Table) -> Option<Self> {
        let root_fd = File::open(root).ok()?;
        let mut index: HashMap<&str, u32> = HashMap::new();
        let mut dirs = Vec::new();
        let mut file_dir = Vec::with_capacity(names.len());
        for rel in names.iter() {
            let (dir, _) = cut(rel);
            let d = *index.entry(dir).or_insert_with(|| {
                let fd = if dirs.len() >= MAX_OPEN_DIRS {
                    None
                } else if dir.is_empty() {
                    root_fd.try_clone().ok()
                } else {
                    std::fs::OpenOptions::new()
                        .read(true)
                        .custom_flags(libc::O_DIRECTORY)
                        .open(root.join(dir))
                        .ok()
                };
                // The cache's directory of every file here is that of this one's path as
                // the cache spells it, up to its last `/`: it depends on `dir` only.
                let abs = super::one_spelling(&root.join(rel));
                let cached =
                    split_path(abs.as_os_str().as_bytes()).and_then(|(d, _)| table.dir_index(d));
                dirs.push(ListedDir { fd, cached });
                (dirs.len() - 1) as u32
            });
            file_dir.push(d);
        }
        Some(ListedDirs {
            root: root_fd,
            file_dir,
            dirs,
        })
    }

    /// The stat of file `i` of the list, whose name is `rel` (`None` when it fails).
    pub(super) fn stat(&self, i: usize, rel: &str) -> Option<(Stat, FileType)> {
        let dir = self.dirs.get(*self.file_dir.get(i)? as usize)?;
        match (&dir.fd, cut(rel).1) {
            (Some(fd), base) if !base.is_empty() => stat_at(fd, base),
            _ => stat_at(&self.root, rel),
        }
    }

    /// The stat cache's row for file `i`, named `rel`.
    pub(super) fn cached(&self, i: usize, rel: &str, table: &Table) -> Option<Row> {
        let dir = self.dirs.get(*self.file_dir.get(i)? as usize)?;
        let base = cut(rel).1;
        if base.is_empty() {
            return None;
        }
        table.get_in(dir.cached?, base.as_bytes())
    }
}
