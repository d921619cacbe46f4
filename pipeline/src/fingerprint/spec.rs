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
    let mut d = DigestLines::new();
    for f in files {
        d.line(&f.role, &f.rel, &f.blake3);
    }
    d.finish()
}

/// The inputs digest (the key's `inputs`) written a line per file: `role \t rel \t hex \n`.
/// Never change the line, keys move.
///
/// Lines are gathered into blocks before blake3 sees them: fed a few bytes at a time (five
/// updates a file) it compressed one 64-byte block per call, ~80 ms at 200,000 files; whole
/// blocks take its SIMD path. blake3 of a byte stream does not depend on how it is cut, so
/// the digest is the one a line-by-line update gives.
pub(super) struct DigestLines {
    hasher: blake3::Hasher,
    block: Vec<u8>,
}

/// Bytes gathered before each update: many blake3 chunks (1 KiB each), still in L2.
const DIGEST_BLOCK: usize = 64 << 10;

impl DigestLines {
    pub(super) fn new() -> Self {
        DigestLines {
            hasher: blake3::Hasher::new(),
            block: Vec::with_capacity(DIGEST_BLOCK + 1024),
        }
    }

    pub(super) fn line(&mut self, role: &str, rel: &str, hex: &str) {
        for part in [
            role.as_bytes(),
            b"\t",
            rel.as_bytes(),
            b"\t",
            hex.as_bytes(),
            b"\n",
        ] {
            self.block.extend_from_slice(part);
        }
        if self.block.len() >= DIGEST_BLOCK {
            self.hasher.update(&self.block);
            self.block.clear();
        }
    }

    pub(super) fn finish(mut self) -> String {
        self.hasher.update(&self.block);
        self.hasher.finalize().to_hex().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Gathered into blocks, the lines give the digest of feeding them part by part.
    #[test]
    fn digest_lines_equal_line_by_line_hashing_across_blocks() {
        for n in [0u32, 1, 700, 5000] {
            let files: Vec<InputFile> = (0..n)
                .map(|i| InputFile {
                    role: if i % 3 == 0 { "split" } else { "objects" }.into(),
                    rel: format!("class{}/{i:07}.bin", i % 15),
                    size: i as u64,
                    blake3: blake3::hash(&i.to_le_bytes()).to_hex().to_string(),
                })
                .collect();
            let mut h = blake3::Hasher::new();
            for f in &files {
                for part in [&f.role, "\t", &f.rel, "\t", &f.blake3, "\n"] {
                    h.update(part.as_bytes());
                }
            }
            assert_eq!(inputs_digest(&files), h.finalize().to_hex().to_string());
        }
    }
}
