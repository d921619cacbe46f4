//! The stat cache's file, `cache/stat-cache.bin`: a compact binary table read in one pass.
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

/// The file's bytes for `rows` (absolute path → row). Deterministic: rows are sorted by
/// (directory, name) and directories numbered in that order. A path without a parent or a
/// file name, or a name over 65,535 bytes, is left out (it is hashed again next time).
pub fn encode<'a>(rows: impl IntoIterator<Item = (&'a OsStr, &'a Row)>) -> Vec<u8> {
    let mut split: Vec<(&[u8], &[u8], &Row)> = rows
        .into_iter()
        .filter_map(|(p, r)| {
            let b = p.as_bytes();
            let cut = b.iter().rposition(|&c| c == b'/')?;
            let (dir, name) = (&b[..cut], &b[cut + 1..]);
            (!name.is_empty() && name.len() <= u16::MAX as usize && dir.len() <= u32::MAX as usize)
                .then_some((dir, name, r))
        })
        .collect();
    split.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
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

/// The rows of a file written by [`encode`], in file order.
pub fn decode(bytes: &[u8]) -> Result<Vec<(OsString, Row)>, DecodeError> {
    let mut rows = Vec::new();
    decode_each(bytes, |n, p, r| {
        rows.reserve(n.saturating_sub(rows.len()));
        rows.push((p, r))
    })?;
    Ok(rows)
}

/// [`decode`] handing each row to `row` as it is read, with the number of rows in the file
/// (to reserve room once). The checksum is checked first, so on a damaged file no row is
/// handed over; a file whose checksum holds but whose structure lies fails part-way (drop
/// the rows then).
pub fn decode_each(
    bytes: &[u8],
    mut row: impl FnMut(usize, OsString, Row),
) -> Result<(), DecodeError> {
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return Err(DecodeError::Magic);
    }
    let Some(body_len) = bytes.len().checked_sub(32).filter(|&n| n >= MAGIC.len()) else {
        return Err(DecodeError::Checksum);
    };
    let (body, check) = bytes.split_at(body_len);
    if blake3::hash(body).as_bytes() != check {
        return Err(DecodeError::Checksum);
    }
    let mut r = Reader {
        b: body,
        at: MAGIC.len(),
    };
    let ndirs = r.u32("directory count")? as usize;
    // Each directory takes at least its 4-byte length: a count the bytes cannot hold is a
    // lie, refused before any allocation.
    if ndirs > r.left() / 4 {
        return Err(DecodeError::Malformed("directory count"));
    }
    let mut dirs = Vec::with_capacity(ndirs);
    for _ in 0..ndirs {
        let n = r.u32("directory")? as usize;
        dirs.push(r.take(n, "directory")?);
    }
    let n = r.u64("entry count")?;
    if n > (r.left() / ENTRY_FIXED) as u64 {
        return Err(DecodeError::Malformed("entry count"));
    }
    for _ in 0..n {
        let d = r.u32("entry")? as usize;
        let dir = *dirs
            .get(d)
            .ok_or(DecodeError::Malformed("directory index"))?;
        let nl = r.u16("entry")? as usize;
        let name = r.take(nl, "entry")?;
        let mut path = Vec::with_capacity(dir.len() + 1 + name.len());
        path.extend_from_slice(dir);
        path.push(b'/');
        path.extend_from_slice(name);
        let rec = Row {
            size: r.u64("entry")?,
            mtime_ns: r.u64("entry")? as i64,
            ctime_ns: r.u64("entry")? as i64,
            ino: r.u64("entry")?,
            blake3: r
                .take(32, "entry")?
                .try_into()
                .map_err(|_| DecodeError::Malformed("entry"))?,
        };
        row(n as usize, OsString::from_vec(path), rec);
    }
    if r.left() != 0 {
        return Err(DecodeError::Malformed("end"));
    }
    Ok(())
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
        let bytes = encode(rows.iter().map(|(p, r)| (p.as_os_str(), r)));
        let back = decode(&bytes).unwrap();
        let mut want = rows.clone();
        want.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(back, want);
        // Same rows in another order: the same bytes.
        let again = encode(rows.iter().rev().map(|(p, r)| (p.as_os_str(), r)));
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
        let bytes = encode(rows.iter().map(|(p, r)| (p.as_os_str(), r)));
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
    fn the_old_tsv_is_not_this_format() {
        let tsv = b"ab12\t5\t1\t1\t7\t/data/a\n";
        assert_eq!(decode(tsv), Err(DecodeError::Magic));
    }
}
