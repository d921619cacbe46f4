//! Users' own scans: LAS/LAZ files (crate `las`, LAZ through its `laz` feature) listed in a
//! `labels.csv` beside them.
//!
//! Georeferenced coordinates (UTM easting ~5e5, northing ~5e6) have only ~0.5 m of
//! resolution in f32, so coordinates are made relative to the first point in f64 before
//! the cast; `tokenize` re-centres anyway, so nothing downstream depends on the origin.

use super::geometry::Point;
use std::path::{Path, PathBuf};

/// Points decoded per batch: bounds the decode buffer (and what a lying header can make us
/// allocate) while keeping the per-batch overhead negligible.
const BATCH_POINTS: u64 = 1 << 20;
/// At most this many bytes of raw point records are read at once.
const BATCH_BYTES: u64 = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum LasError {
    #[error("{}: no such file; check the `file` column of labels.csv (paths are relative to the csv's folder)", path.display())]
    NotFound { path: PathBuf },
    #[error("{}: {source}; check the path and its permissions", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{}: cannot read as LAS/LAZ ({reason}); the file is truncated, corrupt or not a \
         LAS/LAZ file — re-export it",
        path.display()
    )]
    Read { path: PathBuf, reason: String },
    #[error(
        "{}:{line}: {reason}; labels.csv needs a header `file,label[,split]` and one row per \
         scan (split is train or test)",
        path.display()
    )]
    Csv {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("{}: cannot write LAS/LAZ: {reason}", path.display())]
    Write { path: PathBuf, reason: String },
}

/// Reads x, y, z of every point as f32, relative to the file's first point (see the
/// module doc for why).
pub fn read_las_cloud(path: &Path) -> Result<Vec<Point>, LasError> {
    if !path.is_file() {
        return Err(LasError::NotFound {
            path: path.to_path_buf(),
        });
    }
    let read_err = |e: las::Error| LasError::Read {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let mut reader = las::Reader::from_path(path).map_err(read_err)?;
    let total = reader.header().number_of_points();
    // Trust the header's count only up to one batch: a corrupt header must not make us
    // reserve terabytes; the vector grows as real points arrive.
    let mut out: Vec<Point> = Vec::with_capacity(total.min(BATCH_POINTS) as usize);
    let mut batch = las::PointDataBuilder::new()
        .for_header(reader.header())
        .build();
    let mut origin: Option<[f64; 3]> = None;
    let mut done = 0u64;
    // The reader allocates a batch's raw records up front, and the header sets both the
    // count and the record size: cap a batch at BATCH_BYTES (found by `make fuzz`: a
    // 227-byte header asked for a 30 GB buffer).
    let record = u64::from(reader.header().point_format().len()).max(1);
    let batch_points = BATCH_POINTS.min(BATCH_BYTES / record).max(1);
    while done < total {
        let got = reader
            .fill_points(batch_points.min(total - done), &mut batch)
            .map_err(read_err)?;
        if got == 0 {
            return Err(LasError::Read {
                path: path.to_path_buf(),
                reason: format!(
                    "the header announces {total} points but only {done} could be read"
                ),
            });
        }
        done += got;
        let o = *origin.get_or_insert_with(|| {
            let mut first = [0f64; 3];
            if let (Some(x), Some(y), Some(z)) =
                (batch.x().next(), batch.y().next(), batch.z().next())
            {
                first = [x, y, z];
            }
            first
        });
        out.extend(
            batch
                .x()
                .zip(batch.y())
                .zip(batch.z())
                .map(|((x, y), z)| [(x - o[0]) as f32, (y - o[1]) as f32, (z - o[2]) as f32]),
        );
    }
    Ok(out)
}

/// One row of labels.csv.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LasEntry {
    pub path: PathBuf,
    /// A class name or an integer, as written; the stage maps names to ids.
    pub label: String,
    pub test: bool,
}

/// labels.csv: header line `file,label` optionally `,split` (train|test, default train);
/// file is relative to the csv's directory; label is a class name or integer. Returns
/// rows in file order. Errors name the line.
///
/// Columns are found by header name, so their order is free. Fields may be double-quoted
/// (with `""` for a quote) so file names with commas work. Blank lines are skipped.
pub fn read_labels_csv(csv: &Path) -> Result<Vec<LasEntry>, LasError> {
    let text = std::fs::read_to_string(csv).map_err(|source| LasError::Io {
        path: csv.to_path_buf(),
        source,
    })?;
    let base = csv.parent().unwrap_or(Path::new(""));
    let err = |line: usize, reason: String| LasError::Csv {
        path: csv.to_path_buf(),
        line,
        reason,
    };

    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim_end_matches('\r')))
        .filter(|(_, l)| !l.trim().is_empty());
    let (hline, header) = lines
        .next()
        .ok_or_else(|| err(1, "the file is empty".to_string()))?;
    let header = split_csv_line(header).map_err(|r| err(hline, r))?;
    let col = |name: &str| {
        header.iter().position(|h| {
            h.trim()
                .trim_start_matches('\u{feff}')
                .eq_ignore_ascii_case(name)
        })
    };
    let (Some(file_col), Some(label_col)) = (col("file"), col("label")) else {
        return Err(err(
            hline,
            format!(
                "header is `{}`, it lacks a `file` or a `label` column",
                header.join(",")
            ),
        ));
    };
    let split_col = col("split");

    let mut out = Vec::new();
    for (line, raw) in lines {
        let fields = split_csv_line(raw).map_err(|r| err(line, r))?;
        let get = |c: usize| fields.get(c).map(|s| s.trim()).unwrap_or("");
        let file = get(file_col);
        if file.is_empty() {
            return Err(err(line, "the `file` value is missing".to_string()));
        }
        let label = get(label_col);
        if label.is_empty() {
            return Err(err(line, format!("`{file}` has no `label` value")));
        }
        let test = match split_col.map(get).unwrap_or("") {
            "" => false,
            s if s.eq_ignore_ascii_case("train") => false,
            s if s.eq_ignore_ascii_case("test") => true,
            other => {
                return Err(err(
                    line,
                    format!("split `{other}` for `{file}` is neither train nor test"),
                ))
            }
        };
        out.push(LasEntry {
            path: base.join(file),
            label: label.to_string(),
            test,
        });
    }
    Ok(out)
}

/// Splits one CSV line on commas, honouring double quotes.
fn split_csv_line(line: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            (true, '"') => quoted = false,
            (true, c) => cur.push(c),
            (false, '"') if cur.trim().is_empty() => {
                cur.clear();
                quoted = true;
            }
            (false, ',') => fields.push(std::mem::take(&mut cur)),
            (false, c) => cur.push(c),
        }
    }
    if quoted {
        return Err("a quoted field is not closed".to_string());
    }
    fields.push(cur);
    Ok(fields)
}

/// For tests: writes `points` as LAS (or LAZ when the extension is `.laz`), point format
/// 0, with an offset at the minimum and a scale fine enough for the data's extent.
pub fn write_las_cloud(path: &Path, points: &[Point]) -> Result<(), LasError> {
    let werr = |e: las::Error| LasError::Write {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    // las' Writer panics in Drop when closing fails, and a non-finite coordinate makes the
    // header bounds unrepresentable, so refuse those before a writer exists.
    if let Some(i) = points.iter().position(|p| !p.iter().all(|v| v.is_finite())) {
        return Err(LasError::Write {
            path: path.to_path_buf(),
            reason: format!("point {i} has a non-finite coordinate"),
        });
    }
    let mut lo = [f64::INFINITY; 3];
    let mut hi = [f64::NEG_INFINITY; 3];
    for p in points {
        for k in 0..3 {
            lo[k] = lo[k].min(f64::from(p[k]));
            hi[k] = hi[k].max(f64::from(p[k]));
        }
    }
    let axis = |k: usize| {
        if points.is_empty() {
            return las::Transform {
                scale: 1e-6,
                offset: 0.0,
            };
        }
        // i32 holds ±2.1e9 steps; 2e9 over the extent keeps every point representable.
        las::Transform {
            scale: ((hi[k] - lo[k]) / 2e9).max(1e-7),
            offset: lo[k],
        }
    };
    let mut builder = las::Builder::from((1, 2));
    builder.transforms = las::Vector {
        x: axis(0),
        y: axis(1),
        z: axis(2),
    };
    builder.generating_software = "lm4ve".to_string();
    let header = builder.into_header().map_err(werr)?;
    let mut writer = las::Writer::from_path(path, header).map_err(werr)?;
    for p in points {
        writer
            .write_point(las::Point {
                x: f64::from(p[0]),
                y: f64::from(p[1]),
                z: f64::from(p[2]),
                ..Default::default()
            })
            .map_err(werr)?;
    }
    writer.close().map_err(werr)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cloud() -> Vec<Point> {
        (0..500)
            .map(|i| {
                let t = i as f32 * 0.01;
                [t.sin() * 3.0, t.cos() - 2.0, t * 0.5]
            })
            .collect()
    }

    fn assert_close_relative(got: &[Point], want: &[Point]) {
        assert_eq!(got.len(), want.len());
        // Output is relative to the first point.
        for (g, w) in got.iter().zip(want) {
            for k in 0..3 {
                let rel = w[k] - want[0][k];
                assert!((g[k] - rel).abs() < 1e-5, "{g:?} vs {w:?}");
            }
        }
    }

    #[test]
    fn a_header_with_a_huge_record_length_is_an_error_not_an_abort() {
        // Found by `make fuzz` (fuzz/regressions/las/): point format 0 with 29 kB of extra
        // bytes per record made one batch a 30 GB allocation.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("huge.las");
        std::fs::write(
            &p,
            include_bytes!("../../../fuzz/regressions/las/huge-record-length.las"),
        )
        .unwrap();
        assert!(read_las_cloud(&p).is_err());
    }

    #[test]
    fn las_and_laz_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let pts = cloud();
        for name in ["a.las", "a.laz"] {
            let p = dir.path().join(name);
            write_las_cloud(&p, &pts).unwrap();
            assert_close_relative(&read_las_cloud(&p).unwrap(), &pts);
        }
        // LAZ really is compressed.
        let las_len = std::fs::metadata(dir.path().join("a.las")).unwrap().len();
        let laz_len = std::fs::metadata(dir.path().join("a.laz")).unwrap().len();
        assert!(laz_len < las_len, "{laz_len} >= {las_len}");
    }

    #[test]
    fn georeferenced_coordinates_keep_precision() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("utm.las");
        let mut builder = las::Builder::from((1, 2));
        let t = |offset| las::Transform {
            scale: 0.001,
            offset,
        };
        builder.transforms = las::Vector {
            x: t(500_000.0),
            y: t(5_000_000.0),
            z: t(0.0),
        };
        let mut w = las::Writer::from_path(&p, builder.into_header().unwrap()).unwrap();
        for (x, y) in [(512_345.001, 5_412_345.002), (512_345.004, 5_412_345.010)] {
            w.write_point(las::Point {
                x,
                y,
                z: 100.0,
                ..Default::default()
            })
            .unwrap();
        }
        w.close().unwrap();
        let got = read_las_cloud(&p).unwrap();
        assert!((got[1][0] - 0.003).abs() < 1e-6, "{got:?}");
        assert!((got[1][1] - 0.008).abs() < 1e-6, "{got:?}");
    }

    #[test]
    fn empty_las_reads_as_empty() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("e.las");
        write_las_cloud(&p, &[]).unwrap();
        assert!(read_las_cloud(&p).unwrap().is_empty());
    }

    #[test]
    fn truncated_and_missing_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let pts = cloud();
        for name in ["t.las", "t.laz"] {
            let p = dir.path().join(name);
            write_las_cloud(&p, &pts).unwrap();
            let bytes = std::fs::read(&p).unwrap();
            std::fs::write(&p, &bytes[..bytes.len() * 2 / 3]).unwrap();
            let e = read_las_cloud(&p).unwrap_err();
            assert!(e.to_string().contains(name), "{e}");
            std::fs::write(&p, &bytes[..50]).unwrap();
            assert!(read_las_cloud(&p).is_err());
        }
        let e = read_las_cloud(&dir.path().join("none.las")).unwrap_err();
        assert!(matches!(e, LasError::NotFound { .. }));
        let junk = dir.path().join("junk.las");
        std::fs::write(&junk, vec![7u8; 4096]).unwrap();
        assert!(matches!(read_las_cloud(&junk), Err(LasError::Read { .. })));
    }

    #[test]
    fn labels_csv() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("labels.csv");
        std::fs::write(
            &csv,
            "file,label,split\r\nscans/a.laz,tree,train\n\nb.las,3,TEST\n\"c,1.las\",pole,\n",
        )
        .unwrap();
        let rows = read_labels_csv(&csv).unwrap();
        assert_eq!(
            rows,
            vec![
                LasEntry {
                    path: dir.path().join("scans/a.laz"),
                    label: "tree".into(),
                    test: false
                },
                LasEntry {
                    path: dir.path().join("b.las"),
                    label: "3".into(),
                    test: true
                },
                LasEntry {
                    path: dir.path().join("c,1.las"),
                    label: "pole".into(),
                    test: false
                },
            ]
        );

        std::fs::write(&csv, "label,file\nx,a.las\n").unwrap();
        assert_eq!(
            read_labels_csv(&csv).unwrap()[0].path,
            dir.path().join("a.las")
        );

        std::fs::write(&csv, "file,label\na.las,tree\nb.las\n").unwrap();
        let e = read_labels_csv(&csv).unwrap_err();
        assert!(matches!(e, LasError::Csv { line: 3, .. }), "{e}");
        assert!(e.to_string().contains("labels.csv:3:"), "{e}");

        std::fs::write(&csv, "file,label,split\na.las,tree,val\n").unwrap();
        assert!(matches!(
            read_labels_csv(&csv),
            Err(LasError::Csv { line: 2, .. })
        ));

        std::fs::write(&csv, "path,class\na.las,tree\n").unwrap();
        assert!(matches!(
            read_labels_csv(&csv),
            Err(LasError::Csv { line: 1, .. })
        ));
    }
}
