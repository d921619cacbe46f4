//! ScanObjectNN raw objects: `object_dataset/<category>/<file>.bin` and the split list
//! (`split_new.txt`) that assigns each file to train or test.
//!
//! A `.bin` is little-endian float32 throughout: one value holding the point count, then
//! 11 values per point (x, y, z, normal xyz, rgb, instance and semantic labels). Only x, y,
//! z are used; the rest is skipped without being decoded.

use super::geometry::Point;
use std::io::Write;
use std::path::{Path, PathBuf};

/// float32 values per point record in a `.bin`.
const FLOATS_PER_POINT: usize = 11;
const RECORD_BYTES: usize = FLOATS_PER_POINT * 4;

/// The 15 ScanObjectNN classes; a category's position is its class id.
pub const SCANOBJECTNN_CLASSES: [&str; 15] = [
    "bag", "bin", "box", "cabinet", "chair", "desk", "display", "door", "shelf", "table", "bed",
    "pillow", "sink", "sofa", "toilet",
];

#[derive(Debug, thiserror::Error)]
pub enum BinError {
    #[error("{}: {source}; check the path and its permissions", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{}: {len} bytes, too short to hold the 4-byte point count; the file is empty or \
         truncated — re-download it",
        path.display()
    )]
    TooShort { path: PathBuf, len: u64 },
    #[error(
        "{}: the leading point count reads as {count}, not a whole non-negative number; \
         this is not a ScanObjectNN .bin (float32 count + 11 float32 per point)",
        path.display()
    )]
    BadCount { path: PathBuf, count: f32 },
    #[error(
        "{}: the header says {count} points ({expected} bytes) but the file has {actual} \
         bytes; it is truncated or not a ScanObjectNN .bin — re-download it",
        path.display()
    )]
    SizeMismatch {
        path: PathBuf,
        count: u64,
        expected: u64,
        actual: u64,
    },
    #[error(
        "{}:{line}: {reason}; expected `file<TAB>category[<TAB>t]` (t = test)",
        path.display()
    )]
    SplitLine {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error(
        "{}:{line}: unknown category `{category}`; ScanObjectNN categories are {}",
        path.display(),
        SCANOBJECTNN_CLASSES.join(", ")
    )]
    UnknownCategory {
        path: PathBuf,
        line: usize,
        category: String,
    },
}

/// Reads the x, y, z of every point of a ScanObjectNN `.bin`. A count of 0 gives an empty
/// cloud (the caller decides whether that is a reject).
pub fn read_bin_cloud(path: &Path) -> Result<Vec<Point>, BinError> {
    let bytes = std::fs::read(path).map_err(|source| BinError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let actual = bytes.len() as u64;
    let (head, body) = match bytes.split_first_chunk::<4>() {
        Some(x) => x,
        None => {
            return Err(BinError::TooShort {
                path: path.to_path_buf(),
                len: actual,
            })
        }
    };
    let count = f32::from_le_bytes(*head);
    // The count is stored as a float; anything but a whole number in range means the file
    // is something else (or its first bytes are damaged).
    if !(count.is_finite() && count >= 0.0 && count.fract() == 0.0 && count < 1e15) {
        return Err(BinError::BadCount {
            path: path.to_path_buf(),
            count,
        });
    }
    let n = count as u64;
    let expected = 4 + n * RECORD_BYTES as u64;
    if expected != actual {
        return Err(BinError::SizeMismatch {
            path: path.to_path_buf(),
            count: n,
            expected,
            actual,
        });
    }
    Ok(body
        .chunks_exact(RECORD_BYTES)
        .map(|r| {
            [
                f32::from_le_bytes([r[0], r[1], r[2], r[3]]),
                f32::from_le_bytes([r[4], r[5], r[6], r[7]]),
                f32::from_le_bytes([r[8], r[9], r[10], r[11]]),
            ]
        })
        .collect())
}

/// For tests/benchmarks: writes a `.bin` with the given x, y, z and zeros for the other
/// eight values of each point.
pub fn write_bin_cloud(path: &Path, points: &[Point]) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(4 + points.len() * RECORD_BYTES);
    buf.extend_from_slice(&(points.len() as f32).to_le_bytes());
    for p in points {
        for v in p {
            buf.extend_from_slice(&v.to_le_bytes());
        }
        buf.extend_from_slice(&[0u8; (FLOATS_PER_POINT - 3) * 4]);
    }
    let mut f = std::fs::File::create(path)?;
    f.write_all(&buf)?;
    f.flush()
}

/// One object of the split list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinEntry {
    pub path: PathBuf,
    pub label: i64,
    pub test: bool,
}

/// split_new.txt: tab (or whitespace) separated lines `file<TAB>category<TAB>flag` where
/// flag "t" = test, anything else = train; file lives at root/category/file. Categories
/// map to the 15 ScanObjectNN class ids ([`SCANOBJECTNN_CLASSES`]). Unknown category ->
/// error naming line number and the category. Blank lines skipped.
///
/// A line with only `file category` counts as train. Category names match without regard
/// to ASCII case, but the path keeps the spelling of the line (the directory's name).
pub fn read_split_list(root: &Path, split_file: &Path) -> Result<Vec<BinEntry>, BinError> {
    let mut out = Vec::new();
    for_each_split_entry(root, split_file, |path, label, test| {
        out.push(BinEntry {
            path: path.to_path_buf(),
            label,
            test,
        })
    })?;
    Ok(out)
}

/// [`read_split_list`] without a `BinEntry` per line: `each(path, label, test)` in line
/// order, the path in one buffer reused for every line (at 200,000 lines, two path
/// allocations and a field vector per line were most of building the stage).
pub fn for_each_split_entry(
    root: &Path,
    split_file: &Path,
    mut each: impl FnMut(&Path, i64, bool),
) -> Result<(), BinError> {
    let text = std::fs::read_to_string(split_file).map_err(|source| BinError::Io {
        path: split_file.to_path_buf(),
        source,
    })?;
    let mut path = PathBuf::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let mut fields = raw.split_whitespace();
        let (file, category, flag) = match [fields.next(), fields.next(), fields.next()] {
            [None, ..] => continue,
            [Some(f), Some(c), t] => (f, c, t.unwrap_or("")),
            [Some(_), None, _] => {
                return Err(BinError::SplitLine {
                    path: split_file.to_path_buf(),
                    line,
                    reason: "1 fields (file names with spaces are not supported)".into(),
                })
            }
        };
        let extra = fields.count();
        if extra > 0 {
            return Err(BinError::SplitLine {
                path: split_file.to_path_buf(),
                line,
                reason: format!(
                    "{} fields (file names with spaces are not supported)",
                    3 + extra
                ),
            });
        }
        let label = SCANOBJECTNN_CLASSES
            .iter()
            .position(|c| c.eq_ignore_ascii_case(category))
            .ok_or_else(|| BinError::UnknownCategory {
                path: split_file.to_path_buf(),
                line,
                category: category.to_string(),
            })?;
        // `push` is `join` in place: root, then the category, then the file.
        path.clear();
        path.push(root);
        path.push(category);
        path.push(file);
        each(&path, label as i64, flag == "t");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_empty() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.bin");
        let pts: Vec<Point> = (0..100)
            .map(|i| [i as f32, -(i as f32) * 0.5, 1e-3 * i as f32])
            .collect();
        write_bin_cloud(&p, &pts).unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 4 + 100 * 44);
        assert_eq!(read_bin_cloud(&p).unwrap(), pts);

        write_bin_cloud(&p, &[]).unwrap();
        assert!(read_bin_cloud(&p).unwrap().is_empty());
    }

    #[test]
    fn truncated_and_bad_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.bin");
        let pts: Vec<Point> = (0..10).map(|i| [i as f32; 3]).collect();
        write_bin_cloud(&p, &pts).unwrap();
        let bytes = std::fs::read(&p).unwrap();

        std::fs::write(&p, &bytes[..bytes.len() - 7]).unwrap();
        let e = read_bin_cloud(&p).unwrap_err();
        assert!(matches!(e, BinError::SizeMismatch { count: 10, .. }), "{e}");
        assert!(e.to_string().contains("a.bin"));

        std::fs::write(&p, &bytes[..2]).unwrap();
        assert!(matches!(
            read_bin_cloud(&p),
            Err(BinError::TooShort { len: 2, .. })
        ));

        std::fs::write(&p, (-3.5f32).to_le_bytes()).unwrap();
        assert!(matches!(read_bin_cloud(&p), Err(BinError::BadCount { .. })));

        std::fs::write(&p, f32::NAN.to_le_bytes()).unwrap();
        assert!(matches!(read_bin_cloud(&p), Err(BinError::BadCount { .. })));

        assert!(matches!(
            read_bin_cloud(&dir.path().join("missing.bin")),
            Err(BinError::Io { .. })
        ));
    }

    #[test]
    fn split_list_parsing() {
        let dir = tempfile::tempdir().unwrap();
        let split = dir.path().join("split_new.txt");
        std::fs::write(
            &split,
            "005_00020.bin\tbag\tt\n\n  \nscene1_00.bin\ttoilet\t\nx.bin  Chair   n\r\ny.bin table\n",
        )
        .unwrap();
        let root = Path::new("/data/object_dataset");
        let e = read_split_list(root, &split).unwrap();
        assert_eq!(
            e,
            vec![
                BinEntry {
                    path: root.join("bag/005_00020.bin"),
                    label: 0,
                    test: true
                },
                BinEntry {
                    path: root.join("toilet/scene1_00.bin"),
                    label: 14,
                    test: false
                },
                BinEntry {
                    path: root.join("Chair/x.bin"),
                    label: 4,
                    test: false
                },
                BinEntry {
                    path: root.join("table/y.bin"),
                    label: 9,
                    test: false
                },
            ]
        );

        std::fs::write(&split, "a.bin\tbag\tt\nb.bin\tlamp\tt\n").unwrap();
        let err = read_split_list(root, &split).unwrap_err();
        assert!(
            matches!(&err, BinError::UnknownCategory { line: 2, category, .. } if category == "lamp"),
            "{err}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains(":2:") && msg.contains("lamp") && msg.contains("toilet"),
            "{msg}"
        );

        std::fs::write(&split, "lonely\n").unwrap();
        assert!(matches!(
            read_split_list(root, &split),
            Err(BinError::SplitLine { line: 1, .. })
        ));
        std::fs::write(&split, "a.bin bag t\nmy file.bin bag t x\n").unwrap();
        let err = read_split_list(root, &split).unwrap_err();
        assert!(
            matches!(&err, BinError::SplitLine { line: 2, reason, .. } if reason.starts_with("5 fields")),
            "{err}"
        );
    }

    /// The reused path buffer gives what `root.join(category).join(file)` gives, for names
    /// with separators too (an absolute file name replaces the root, as `join` does).
    #[test]
    fn split_entries_are_joined_as_join_does() {
        let dir = tempfile::tempdir().unwrap();
        let split = dir.path().join("split_new.txt");
        std::fs::write(&split, "a.bin bag t\nsub/b.bin bed\n/abs/c.bin bin t\n").unwrap();
        let root = Path::new("/data/object_dataset/");
        let mut got = Vec::new();
        for_each_split_entry(root, &split, |p, label, test| {
            got.push((p.to_path_buf(), label, test))
        })
        .unwrap();
        let want: Vec<_> = [
            ("bag", "a.bin", true),
            ("bed", "sub/b.bin", false),
            ("bin", "/abs/c.bin", true),
        ]
        .iter()
        .map(|(c, f, t)| {
            let label = SCANOBJECTNN_CLASSES.iter().position(|x| x == c).unwrap() as i64;
            (root.join(c).join(f), label, *t)
        })
        .collect();
        assert_eq!(got, want);
        assert_eq!(got[2].0, Path::new("/abs/c.bin"));
    }
}
