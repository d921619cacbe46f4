//! The stat cache's file, `cache/stat-cache.bin`: a compact binary table, looked up in place
//! ([`Table`]) rather than expanded into a map of paths.
//!
//! It replaced a TSV of full paths and decimal nanoseconds (about 370 bytes an entry, 74 MB
//! and most of a no-op run's time at 200,000 files). Here a directory is written once and
//! each file names it by index, numbers are fixed-width little-endian and the hash is raw:
//! about 80 bytes an entry, decoded without parsing text.
//!
//! ```text
//! magic     8 bytes   "LM4VSTC" then the format version (1)
//! dirs      u32       then per directory: u32 length, its bytes (an absolute path)
//! entries   u64       then per file, sorted by (directory, name):
//!             u32 directory index, u16 name length, the name's bytes,
//!             u64 size, i64 mtime ns, i64 ctime ns, u64 inode, 32 bytes blake3
//! check     32 bytes  blake3 of everything before it
//! ```
//!
//! The trailing hash makes a truncated or damaged file a clean "ignore it" (the cache is
//! rebuilt by hashing) rather than wrong hashes; lengths and counts are checked against
//! the bytes left before anything is allocated, so a hostile file cannot ask for memory.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

const MAGIC: &[u8; 8] = b"LM4VSTC\x01";
/// Fixed bytes of an entry besides its name: dir, name length, size, mtime, ctime, ino, hash.
const ENTRY_FIXED: usize = 4 + 2 + 8 + 8 + 8 + 8 + 32;

/// One file's row: what `stat` said when it was hashed, and the hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Row {
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub ino: u64,
    pub blake3: [u8; 32],
}

/// Splits an absolute path's bytes into (directory, file name) at its last `/`, as the
/// file stores it; `None` for a path without a `/` or ending in one.
pub fn split_path(path: &[u8]) -> Option<(&[u8], &[u8])> {
    let cut = path.iter().rposition(|&c| c == b'/')?;
    let (dir, name) = (&path[..cut], &path[cut + 1..]);
    (!name.is_empty()).then_some((dir, name))
}

/// The file's bytes for `rows` (directory, file name, row). Deterministic: rows are sorted
/// by (directory, name) and directories numbered in that order; of rows with the same
/// directory and name the first given is kept. A name that is empty or over 65,535 bytes is
/// left out (that file is hashed again next time).
pub fn encode<'a>(rows: impl IntoIterator<Item = (&'a [u8], &'a [u8], Row)>) -> Vec<u8> {
    let mut split: Vec<(&[u8], &[u8], Row)> = rows
        .into_iter()
        .filter(|(d, n, _)| {
            !n.is_empty() && n.len() <= u16::MAX as usize && d.len() <= u32::MAX as usize
        })
        .collect();
    // Stable: the first of equal paths stays first, and `dedup_by` keeps it.
    split.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    split.dedup_by(|later, first| (later.0, later.1) == (first.0, first.1));
    let mut dirs: Vec<&[u8]> = Vec::new();
    for (d, _, _) in &split {
        if dirs.last() != Some(d) {
            dirs.push(d);
        }
    }
    let names: usize = split.iter().map(|s| s.1.len()).sum();
    let dir_bytes: usize = dirs.iter().map(|d| 4 + d.len()).sum();
    let mut out =
        Vec::with_capacity(8 + 4 + dir_bytes + 8 + split.len() * ENTRY_FIXED + names + 32);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(dirs.len() as u32).to_le_bytes());
    for d in &dirs {
        out.extend_from_slice(&(d.len() as u32).to_le_bytes());
        out.extend_from_slice(d);
    }
    out.extend_from_slice(&(split.len() as u64).to_le_bytes());
    let mut di = 0u32;
    for (d, name, r) in &split {
        while dirs[di as usize] != *d {
            di += 1;
        }
        out.extend_from_slice(&di.to_le_bytes());
        out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        out.extend_from_slice(name);
        out.extend_from_slice(&r.size.to_le_bytes());
        out.extend_from_slice(&r.mtime_ns.to_le_bytes());
        out.extend_from_slice(&r.ctime_ns.to_le_bytes());
        out.extend_from_slice(&r.ino.to_le_bytes());
        out.extend_from_slice(&r.blake3);
    }
    let check = blake3::hash(&out);
    out.extend_from_slice(check.as_bytes());
    out
}

/// [`encode`] for rows keyed by whole paths (absolute path → row).
pub fn encode_paths<'a>(rows: impl IntoIterator<Item = (&'a OsStr, &'a Row)>) -> Vec<u8> {
    encode(rows.into_iter().filter_map(|(p, r)| {
        let (d, n) = split_path(p.as_bytes())?;
        Some((d, n, *r))
    }))
}

/// Why a stat-cache file was not used (the caller warns and re-hashes).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("not a stat cache of this format (no LM4VSTC header, or another version)")]
    Magic,
    #[error("its checksum does not match (truncated or damaged)")]
    Checksum,
    #[error("its {0} is cut short or inconsistent")]
    Malformed(&'static str),
}

/// The rows of a file written by [`encode`], in file order, as whole paths.
pub fn decode(bytes: &[u8]) -> Result<Vec<(OsString, Row)>, DecodeError> {
    let t = Table::parse(bytes.to_vec())?;
    Ok(t.rows()
        .map(|(d, n, r)| {
            let mut p = Vec::with_capacity(d.len() + 1 + n.len());
            p.extend_from_slice(d);
            p.push(b'/');
            p.extend_from_slice(n);
            (OsString::from_vec(p), r)
        })
        .collect())
}

/// A stat-cache file kept in memory as it is stored, looked up in place: its bytes, one
/// offset per entry, one span per directory and a hash index (no path string per file: at
/// 200,000 files a map of paths was ~40 MB, this is the file's ~17 MB plus ~3 MB). A lookup
/// is a binary search over the (few, sorted) directories, then one probe of the index:
/// binary searches over the entries touched ~15 cache lines of a 17 MB table per file.
pub struct Table {
    bytes: Vec<u8>,
    /// Per directory, in the file's (sorted) order.
    dirs: Vec<DirSpan>,
    /// Where each entry starts in `bytes`, in file order.
    entries: Vec<u32>,
    /// Open addressing over (directory index, name): the entry's offset + 1 (the entry
    /// itself, not its index: one memory access less a lookup), 0 for empty; a power
    /// of two at least twice the entries. Seeded per process (a crafted file cannot make
    /// its probes long for every run).
    slots: Vec<u32>,
    seed: std::collections::hash_map::RandomState,
}

/// A directory of one [`Table`] ([`Table::dir_index`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirIndex(u32);

struct DirSpan {
    at: u32,
    len: u32,
    /// Its entries: `entries[first..end]`.
    first: u32,
    end: u32,
}

impl Table {
    /// An empty table.
    pub fn empty() -> Self {
        Table {
            bytes: Vec::new(),
            dirs: Vec::new(),
            entries: Vec::new(),
            slots: vec![0],
            seed: Default::default(),
        }
    }

    /// Checks and indexes a file written by [`encode`]. The checksum is checked first; then
    /// every length and count against the bytes left (before anything is allocated, so a
    /// hostile file cannot ask for memory), and that directories and entries are strictly
    /// in order (the lookups rely on it).
    pub fn parse(bytes: Vec<u8>) -> Result<Self, DecodeError> {
        if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
            return Err(DecodeError::Magic);
        }
        let Some(body_len) = bytes.len().checked_sub(32).filter(|&n| n >= MAGIC.len()) else {
            return Err(DecodeError::Checksum);
        };
        if u32::try_from(bytes.len()).is_err() {
            return Err(DecodeError::Malformed("size"));
        }
        let (body, check) = bytes.split_at(body_len);
        if blake3::hash(body).as_bytes() != check {
            return Err(DecodeError::Checksum);
        }
        let mut r = Reader {
            b: body,
            at: MAGIC.len(),
        };
        let ndirs = r.u32("directory count")? as usize;
        // Each directory takes at least its 4-byte length: a count the bytes cannot hold is
        // a lie, refused before any allocation.
        if ndirs > r.left() / 4 {
            return Err(DecodeError::Malformed("directory count"));
        }
        let mut dirs: Vec<DirSpan> = Vec::with_capacity(ndirs);
        let mut prev: Option<&[u8]> = None;
        for _ in 0..ndirs {
            let n = r.u32("directory")? as usize;
            let at = r.at;
            let d = r.take(n, "directory")?;
            if prev.is_some_and(|p| p >= d) {
                return Err(DecodeError::Malformed("directory order"));
            }
            prev = Some(d);
            dirs.push(DirSpan {
                at: at as u32,
                len: n as u32,
                first: 0,
                end: 0,
            });
        }
        let n = r.u64("entry count")?;
        if n > (r.left() / ENTRY_FIXED) as u64 {
            return Err(DecodeError::Malformed("entry count"));
        }
        let mut entries = Vec::with_capacity(n as usize);
        let mut last: Option<(usize, &[u8])> = None;
        for i in 0..n as u32 {
            let start = r.at;
            let d = r.u32("entry")? as usize;
            if d >= dirs.len() {
                return Err(DecodeError::Malformed("directory index"));
            }
            let nl = r.u16("entry")? as usize;
            let name = r.take(nl, "entry")?;
            r.take(ENTRY_FIXED - 6, "entry")?;
            if name.is_empty() || last.is_some_and(|l| l >= (d, name)) {
                return Err(DecodeError::Malformed("entry order"));
            }
            if last.is_none_or(|l| l.0 != d) {
                dirs[d].first = i;
            }
            dirs[d].end = i + 1;
            last = Some((d, name));
            entries.push(start as u32);
        }
        if r.left() != 0 {
            return Err(DecodeError::Malformed("end"));
        }
        let mut t = Table {
            bytes,
            dirs,
            entries,
            slots: Vec::new(),
            seed: Default::default(),
        };
        t.index();
        Ok(t)
    }

    /// Fills `slots` (entries are unique by `parse`'s order check: no duplicate keys).
    fn index(&mut self) {
        let n = (self.entries.len() * 2).next_power_of_two().max(1);
        let mut slots = vec![0u32; n];
        let mask = n - 1;
        for &at in &self.entries {
            let mut i = self.slot_of(self.dir_at(at), self.name_at(at)) & mask;
            while slots[i] != 0 {
                i = (i + 1) & mask;
            }
            // `at` + 1 fits: `parse` keeps the file under 4 GiB.
            slots[i] = at + 1;
        }
        self.slots = slots;
    }

    fn slot_of(&self, dir: u32, name: &[u8]) -> usize {
        use std::hash::BuildHasher;
        self.seed.hash_one((dir, name)) as usize
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The row of the file `name` in directory `dir`.
    pub fn get(&self, dir: &[u8], name: &[u8]) -> Option<Row> {
        self.get_in(self.dir_index(dir)?, name)
    }

    /// Which of the table's directories `dir` is: found once, then [`Table::get_in`] for
    /// each of its files.
    pub fn dir_index(&self, dir: &[u8]) -> Option<DirIndex> {
        self.dirs
            .binary_search_by(|s| self.dir_bytes(s).cmp(dir))
            .ok()
            .map(|d| DirIndex(d as u32))
    }

    /// The row of the file `name` in the directory `d`.
    pub fn get_in(&self, DirIndex(d): DirIndex, name: &[u8]) -> Option<Row> {
        let mask = self.slots.len() - 1;
        let mut i = self.slot_of(d, name) & mask;
        loop {
            let at = self.slots[i].checked_sub(1)?;
            if self.dir_at(at) == d && self.name_at(at) == name {
                return Some(self.row_at(at));
            }
            i = (i + 1) & mask;
        }
    }

    /// Every row as (directory, name, row), in file order.
    pub fn rows(&self) -> impl Iterator<Item = (&[u8], &[u8], Row)> + '_ {
        self.dirs.iter().flat_map(move |s| {
            let dir = self.dir_bytes(s);
            self.entries[s.first as usize..s.end as usize]
                .iter()
                .map(move |&at| (dir, self.name_at(at), self.row_at(at)))
        })
    }

    fn dir_bytes(&self, s: &DirSpan) -> &[u8] {
        &self.bytes[s.at as usize..(s.at + s.len) as usize]
    }

    // Entries were bounds-checked by `parse`: these index within them.
    fn dir_at(&self, at: u32) -> u32 {
        let a = at as usize;
        u32::from_le_bytes([
            self.bytes[a],
            self.bytes[a + 1],
            self.bytes[a + 2],
            self.bytes[a + 3],
        ])
    }

    fn name_at(&self, at: u32) -> &[u8] {
        let at = at as usize + 4;
        let nl = u16::from_le_bytes([self.bytes[at], self.bytes[at + 1]]) as usize;
        &self.bytes[at + 2..at + 2 + nl]
    }

    fn row_at(&self, at: u32) -> Row {
        let name = self.name_at(at).len();
        let f = &self.bytes[at as usize + 6 + name..];
        let u = |i: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&f[i * 8..i * 8 + 8]);
            u64::from_le_bytes(a)
        };
        let mut blake3 = [0u8; 32];
        blake3.copy_from_slice(&f[32..64]);
        Row {
            size: u(0),
            mtime_ns: u(1) as i64,
            ctime_ns: u(2) as i64,
            ino: u(3),
            blake3,
        }
    }
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn left(&self) -> usize {
        self.b.len() - self.at
    }
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if n > self.left() {
            return Err(DecodeError::Malformed(what));
        }
        let s = &self.b[self.at..self.at + n];
        self.at += n;
        Ok(s)
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        let s = self.take(2, what)?;
        Ok(u16::from_le_bytes([s[0], s[1]]))
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        let s = self.take(4, what)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        let s = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        Ok(u64::from_le_bytes(a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(i: u8) -> Row {
        Row {
            size: 1000 + i as u64,
            mtime_ns: 1_700_000_000_000_000_000 + i as i64,
            ctime_ns: -5,
            ino: u64::MAX - i as u64,
            blake3: [i; 32],
        }
    }

    fn sample() -> Vec<(OsString, Row)> {
        vec![
            (OsString::from("/data/b/x.bin"), row(1)),
            (OsString::from("/data/a/z.bin"), row(2)),
            (OsString::from("/data/a/y.bin"), row(3)),
            // Not UTF-8: a file name is bytes.
            (OsString::from_vec(b"/data/\xff\xfe/n".to_vec()), row(4)),
        ]
    }

    #[test]
    fn round_trip_is_exact_sorted_and_deterministic() {
        let rows = sample();
        let bytes = encode_paths(rows.iter().map(|(p, r)| (p.as_os_str(), r)));
        let back = decode(&bytes).unwrap();
        let mut want = rows.clone();
        want.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(back, want);
        // Same rows in another order: the same bytes.
        let again = encode_paths(rows.iter().rev().map(|(p, r)| (p.as_os_str(), r)));
        assert_eq!(bytes, again);
        // Directories are written once: 3 of them for 4 rows.
        assert_eq!(u32::from_le_bytes(bytes[8..12].try_into().unwrap()), 3);
    }

    #[test]
    fn an_empty_table_round_trips() {
        let bytes = encode(std::iter::empty());
        assert_eq!(decode(&bytes).unwrap(), vec![]);
    }

    #[test]
    fn every_truncation_and_every_flipped_byte_is_refused_not_a_panic() {
        let rows = sample();
        let bytes = encode_paths(rows.iter().map(|(p, r)| (p.as_os_str(), r)));
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x41;
            assert!(decode(&b).is_err(), "flip at {i}");
        }
    }

    #[test]
    fn a_lying_count_with_a_valid_checksum_asks_for_no_memory() {
        // A hostile file may carry a correct checksum over lies.
        let mut body = MAGIC.to_vec();
        body.extend_from_slice(&u32::MAX.to_le_bytes());
        let mut b = body.clone();
        b.extend_from_slice(blake3::hash(&body).as_bytes());
        assert_eq!(decode(&b), Err(DecodeError::Malformed("directory count")));
        let mut body = MAGIC.to_vec();
        body.extend_from_slice(&0u32.to_le_bytes());
        body.extend_from_slice(&u64::MAX.to_le_bytes());
        let mut b = body.clone();
        b.extend_from_slice(blake3::hash(&body).as_bytes());
        assert_eq!(decode(&b), Err(DecodeError::Malformed("entry count")));
    }

    #[test]
    fn the_table_finds_every_row_in_place_and_nothing_else() {
        let rows = sample();
        let t = Table::parse(encode_paths(rows.iter().map(|(p, r)| (p.as_os_str(), r)))).unwrap();
        assert_eq!(t.len(), 4);
        for (p, r) in &rows {
            let (d, n) = split_path(p.as_bytes()).unwrap();
            assert_eq!(t.get(d, n), Some(*r), "{p:?}");
        }
        assert_eq!(t.get(b"/data/a", b"x.bin"), None);
        assert_eq!(t.get(b"/data/c", b"x.bin"), None);
        assert_eq!(t.get(b"/data", b"a"), None);
        assert!(Table::empty().get(b"/data/a", b"z.bin").is_none());
    }

    #[test]
    fn of_equal_paths_the_first_row_is_kept() {
        let p = OsString::from("/d/f");
        let bytes = encode_paths([(p.as_os_str(), &row(1)), (p.as_os_str(), &row(2))]);
        assert_eq!(decode(&bytes).unwrap(), vec![(p, row(1))]);
    }

    #[test]
    fn rows_out_of_order_with_a_valid_checksum_are_refused() {
        // Lookups are binary searches: a file whose order lies is not used.
        let mut body = MAGIC.to_vec();
        body.extend_from_slice(&1u32.to_le_bytes());
        body.extend_from_slice(&2u32.to_le_bytes());
        body.extend_from_slice(b"/d");
        body.extend_from_slice(&2u64.to_le_bytes());
        for name in [b"b", b"a"] {
            body.extend_from_slice(&0u32.to_le_bytes());
            body.extend_from_slice(&1u16.to_le_bytes());
            body.extend_from_slice(name);
            body.extend_from_slice(&[0u8; ENTRY_FIXED - 6]);
        }
        let mut b = body.clone();
        b.extend_from_slice(blake3::hash(&body).as_bytes());
        assert_eq!(
            Table::parse(b).err(),
            Some(DecodeError::Malformed("entry order"))
        );
    }

    #[test]
    fn the_old_tsv_is_not_this_format() {
        let tsv = b"ab12\t5\t1\t1\t7\t/data/a\n";
        assert_eq!(decode(tsv), Err(DecodeError::Magic));
    }
}
