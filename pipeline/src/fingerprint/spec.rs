//! What a stage declares as its raw inputs ([`InputSpec`]), and a hashed input file as run
//! records keep it ([`InputFile`]) with the digest the key takes over them.

use crate::file_list::FileList;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A raw input a stage declares: a file, a directory (every file below it counts), or a
/// directory and a list of files below it ([`InputSpec::listed`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputSpec {
    /// What the stage calls this input (`train`, `labels`, ...); part of the key.
    pub role: String,
    pub path: PathBuf,
    /// For a single file: the name it enters the key under (default: its file name).
    /// Lets a stage list many files of one dataset by their dataset-relative paths.
    pub rel: Option<String>,
    /// With a list: `path` is a directory and the input is exactly these files, file `n` at
    /// `path.join(n)` entering the key as `n` — the same key as one [`InputSpec::file_as`]
    /// per file, without a declaration (and its strings) per file.
    pub files: Option<Arc<FileList>>,
}

impl InputSpec {
    pub fn new(role: &str, path: PathBuf) -> Self {
        InputSpec {
            role: role.to_string(),
            path,
            rel: None,
            files: None,
        }
    }

    /// One file of a dataset, keyed by its path relative to the dataset root.
    pub fn file_as(role: &str, path: PathBuf, rel: String) -> Self {
        InputSpec {
            role: role.to_string(),
            path,
            rel: Some(rel),
            files: None,
        }
    }

    /// The files `names` below the directory `root` (a dataset's split list), each at
    /// `root.join(name)` and keyed by `name`. Shared: `Stage::inputs` clones the `Arc`.
    pub fn listed(role: &str, root: PathBuf, names: Arc<FileList>) -> Self {
        InputSpec {
            role: role.to_string(),
            path: root,
            rel: None,
            files: Some(names),
        }
    }

    /// Many files of one dataset, each keyed by `rel`, declared as cheaply as they can be:
    /// those at `root.join(rel)` (normally all) as one listed input, any other as a file of
    /// its own. The key is the one a [`InputSpec::file_as`] per file gives.
    pub fn files_below(
        role: &str,
        root: &Path,
        files: impl IntoIterator<Item = (PathBuf, String)>,
    ) -> Vec<InputSpec> {
        let mut names = FileList::new();
        let mut own = Vec::new();
        for (path, rel) in files {
            if root.join(&rel) == path {
                names.push(&rel);
            } else {
                own.push(InputSpec::file_as(role, path, rel));
            }
        }
        if !names.is_empty() {
            names.shrink_to_fit();
            own.insert(
                0,
                InputSpec::listed(role, root.to_path_buf(), Arc::new(names)),
            );
        }
        own
    }
}

/// One hashed input file, as run records store it.
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
        digest_line(&mut h, &f.role, &f.rel, &f.blake3);
    }
    h.finalize().to_hex().to_string()
}

/// One file's part of the inputs digest (the key's `inputs`): never change it, keys move.
pub(super) fn digest_line(h: &mut blake3::Hasher, role: &str, rel: &str, hex: &str) {
    h.update(role.as_bytes());
    h.update(b"\t");
    h.update(rel.as_bytes());
    h.update(b"\t");
    h.update(hex.as_bytes());
    h.update(b"\n");
}
