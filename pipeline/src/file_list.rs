//! A list of file names relative to one directory, packed: what a dataset's split list
//! declares as a stage's input ([`crate::InputSpec::listed`]).
//!
//! Why packed: at 200,000 objects a `PathBuf` or `String` per file (24 bytes plus a heap
//! block each, held by the stage, cloned by `Stage::inputs`, copied again by the
//! fingerprint) was most of a no-op run's memory. Here the names share one string and a
//! name costs its bytes and one offset; the list is shared by `Arc`, never copied.

use std::fmt;

/// Names in the order they were pushed; duplicates are kept (each is an input).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct FileList {
    text: String,
    /// End of name `i` in `text` (its start is the previous end).
    ends: Vec<usize>,
}

impl FileList {
    pub fn new() -> Self {
        Self::default()
    }

    /// Room for `names` names of `bytes` bytes in all.
    pub fn with_capacity(names: usize, bytes: usize) -> Self {
        FileList {
            text: String::with_capacity(bytes),
            ends: Vec::with_capacity(names),
        }
    }

    /// Appends a name (a path relative to the list's directory); returns its index.
    pub fn push(&mut self, name: &str) -> usize {
        self.text.push_str(name);
        self.ends.push(self.text.len());
        self.ends.len() - 1
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Name `i`, or `None` past the end.
    pub fn get(&self, i: usize) -> Option<&str> {
        let end = *self.ends.get(i)?;
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        self.text.get(start..end)
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        (0..self.len()).map(|i| self.get(i).unwrap_or_default())
    }

    /// Frees the room reserved beyond what the names use.
    pub fn shrink_to_fit(&mut self) {
        self.text.shrink_to_fit();
        self.ends.shrink_to_fit();
    }
}

impl fmt::Debug for FileList {
    // Not the names: a debug print of a 200,000-file input would be megabytes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FileList({} names", self.len())?;
        if let Some(first) = self.get(0) {
            write!(f, ", first {first:?}")?;
        }
        write!(f, ")")
    }
}

impl<'a> FromIterator<&'a str> for FileList {
    fn from_iter<I: IntoIterator<Item = &'a str>>(iter: I) -> Self {
        let mut l = FileList::new();
        for n in iter {
            l.push(n);
        }
        l
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_back_in_order_with_duplicates_and_empty_ones() {
        let l: FileList = ["bag/a.bin", "", "bag/a.bin", "ü/b"].into_iter().collect();
        assert_eq!(l.len(), 4);
        assert_eq!(
            l.iter().collect::<Vec<_>>(),
            ["bag/a.bin", "", "bag/a.bin", "ü/b"]
        );
        assert_eq!(l.get(3), Some("ü/b"));
        assert_eq!(l.get(4), None);
        assert!(FileList::new().is_empty());
        assert_eq!(format!("{l:?}"), "FileList(4 names, first \"bag/a.bin\")");
    }
}
