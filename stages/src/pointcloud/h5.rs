//! ScanObjectNN h5 files through libhdf5 (crate `hdf5-metno`): `data` [N,P,3] float,
//! `label` [N] (or [N,1]) integer, as written by h5py — contiguous or chunked+gzip.
//!
//! Reads are ranged hyperslabs so a shard of 256 clouds never pulls the whole 1-2 GB file
//! into memory. libhdf5 itself converts whatever float/int width the file uses to our f32 /
//! i64, so a float64 export or uint8 labels work unchanged.
//!
//! hdf5-metno silences libhdf5's own error-stack printing on first use (see its
//! `sync::LIBRARY_INIT`), so a bad file produces only our message, not a C stack dump.

use super::geometry::Point;
use hdf5::types::TypeDescriptor;
use hdf5_metno as hdf5;
use ndarray::{s, Array2, Array3, Ix1, Ix2, Ix3};
use std::path::{Path, PathBuf};

/// Errors reading or writing ScanObjectNN h5 files. Each message names the file and says
/// what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum H5Error {
    #[error(
        "{}: no such file; check the path in the stage's params (ScanObjectNN ships \
         main_split/training_objectdataset.h5 and main_split/test_objectdataset.h5)",
        path.display()
    )]
    NotFound { path: PathBuf },
    #[error(
        "{}: is {what}, not an HDF5 file; point the stage's `train`/`test` at the .h5 file \
         itself (e.g. main_split/training_objectdataset.h5)",
        path.display()
    )]
    NotAFile { path: PathBuf, what: &'static str },
    #[error(
        "{}: cannot be opened as HDF5 ({reason}); the file is truncated, still being \
         downloaded, or not an HDF5 file — re-download or re-export it",
        path.display()
    )]
    Open { path: PathBuf, reason: String },
    #[error(
        "{}: has no dataset `{name}`; a ScanObjectNN file holds `data` [N,P,3] float and \
         `label` [N] integer — point the stage at such a file",
        path.display()
    )]
    MissingDataset { path: PathBuf, name: &'static str },
    #[error(
        "{}: dataset `{name}` has shape {shape:?}, expected {expected}; re-export the file \
         in the ScanObjectNN layout",
        path.display()
    )]
    BadShape {
        path: PathBuf,
        name: &'static str,
        shape: Vec<usize>,
        expected: &'static str,
    },
    #[error(
        "{}: dataset `{name}` has element type {found}, expected {expected}; re-export the \
         file with numeric {expected} values",
        path.display()
    )]
    BadType {
        path: PathBuf,
        name: &'static str,
        found: String,
        expected: &'static str,
    },
    #[error(
        "{}: `label` has {labels} entries but `data` has {clouds} clouds; the file is \
         inconsistent — re-export it with one label per cloud",
        path.display()
    )]
    LabelCount {
        path: PathBuf,
        labels: usize,
        clouds: usize,
    },
    #[error(
        "{}: asked for clouds {start}..{end} but the file has {len}; this is a bug in the \
         caller's unit plan — re-run `pipeline run` (the plan is recomputed from the file)",
        path.display()
    )]
    Range {
        path: PathBuf,
        start: usize,
        end: usize,
        len: usize,
    },
    #[error(
        "{}: reading clouds {start}..{end} failed ({reason}); the file is probably \
         truncated or corrupt — re-download it",
        path.display()
    )]
    Read {
        path: PathBuf,
        start: usize,
        end: usize,
        reason: String,
    },
    #[error("{}: cannot write ScanObjectNN h5: {reason}", path.display())]
    Write { path: PathBuf, reason: String },
}

/// An open ScanObjectNN h5 file, checked for layout at open.
pub struct H5Clouds {
    path: PathBuf,
    // The dataset handles keep the file open; the File is held too so the intent is plain.
    _file: hdf5::File,
    data: hdf5::Dataset,
    label: hdf5::Dataset,
    len: usize,
    points: usize,
    /// `label` stored as [N,1] (some exports keep the column) rather than [N].
    label_2d: bool,
}

impl std::fmt::Debug for H5Clouds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H5Clouds")
            .field("path", &self.path)
            .field("len", &self.len)
            .field("points", &self.points)
            .finish()
    }
}

impl H5Clouds {
    /// Opens `path`, checks `data` is rank-3 [N,P,3] of any float type and `label` is
    /// rank-1 [N] (or [N,1]) of any integer type. Clear errors: missing file, not an HDF5
    /// file / truncated, missing dataset, wrong rank/shape, label count != N.
    pub fn open(path: &Path) -> Result<Self, H5Error> {
        let p = path.to_path_buf();
        // libhdf5's "unable to open file" says nothing about why; check existence first.
        match std::fs::metadata(path) {
            Err(_) => return Err(H5Error::NotFound { path: p }),
            Ok(m) if m.is_dir() => {
                return Err(H5Error::NotAFile {
                    path: p,
                    what: "a directory",
                })
            }
            Ok(m) if !m.is_file() => {
                return Err(H5Error::NotAFile {
                    path: p,
                    what: "a FIFO, socket or device",
                })
            }
            Ok(_) => {}
        }
        let file = hdf5::File::open(path).map_err(|e| H5Error::Open {
            path: p.clone(),
            reason: e.to_string(),
        })?;
        let data = open_dataset(&file, &p, "data")?;
        let label = open_dataset(&file, &p, "label")?;

        let dshape = data.shape();
        if dshape.len() != 3 || dshape[2] != 3 {
            return Err(H5Error::BadShape {
                path: p,
                name: "data",
                shape: dshape,
                expected: "[N, P, 3]",
            });
        }
        check_type(&data, &p, "data", "float", |t| {
            matches!(t, TypeDescriptor::Float(_))
        })?;
        let lshape = label.shape();
        let label_2d = match lshape.as_slice() {
            [_] => false,
            [_, 1] => true,
            _ => {
                return Err(H5Error::BadShape {
                    path: p,
                    name: "label",
                    shape: lshape,
                    expected: "[N] or [N, 1]",
                })
            }
        };
        check_type(&label, &p, "label", "integer", |t| {
            matches!(t, TypeDescriptor::Integer(_) | TypeDescriptor::Unsigned(_))
        })?;
        if lshape[0] != dshape[0] {
            return Err(H5Error::LabelCount {
                path: p,
                labels: lshape[0],
                clouds: dshape[0],
            });
        }
        Ok(Self {
            path: p,
            _file: file,
            data,
            label,
            len: dshape[0],
            points: dshape[1],
            label_2d,
        })
    }

    /// Number of clouds (N).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Points per cloud (P), the same for every cloud of an h5 file.
    pub fn points_per_cloud(&self) -> usize {
        self.points
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Clouds per read when a range is read piece by piece: a whole number of the file's
    /// chunks (a piece never splits a chunk, so each chunk is inflated once) and at least
    /// 16 clouds (few library calls per unit).
    pub fn piece_len(&self) -> usize {
        let per_chunk = self
            .data
            .chunk()
            .and_then(|c| c.first().copied())
            .unwrap_or(1)
            .max(1);
        per_chunk * 16usize.div_ceil(per_chunk)
    }

    /// Reads clouds [start, end) as (label, points) with a hyperslab read (do not read the
    /// whole file). Data converted to f32 and labels to i64 by HDF5 type conversion.
    pub fn read_range(&self, start: usize, end: usize) -> Result<Vec<(i64, Vec<Point>)>, H5Error> {
        if start > end || end > self.len {
            return Err(H5Error::Range {
                path: self.path.clone(),
                start,
                end,
                len: self.len,
            });
        }
        if start == end {
            return Ok(Vec::new());
        }
        let read_err = |e: hdf5::Error| H5Error::Read {
            path: self.path.clone(),
            start,
            end,
            reason: e.to_string(),
        };
        let data: Array3<f32> = self
            .data
            .read_slice::<f32, _, Ix3>(s![start..end, .., ..])
            .map_err(read_err)?;
        let labels: Vec<i64> = if self.label_2d {
            let a: Array2<i64> = self
                .label
                .read_slice::<i64, _, Ix2>(s![start..end, ..])
                .map_err(read_err)?;
            a.column(0).to_vec()
        } else {
            self.label
                .read_slice::<i64, _, Ix1>(s![start..end])
                .map_err(read_err)?
                .to_vec()
        };

        let per_cloud = self.points * 3;
        // read_slice returns a fresh standard-layout array, so as_slice() is Some; the
        // fallback copy only guards against a future change in hdf5-metno.
        let owned;
        let flat: &[f32] = match data.as_slice() {
            Some(s) => s,
            None => {
                owned = data.iter().copied().collect::<Vec<f32>>();
                &owned
            }
        };
        let mut out = Vec::with_capacity(end - start);
        for (i, label) in labels.into_iter().enumerate() {
            let cloud = flat
                .get(i * per_cloud..(i + 1) * per_cloud)
                .ok_or_else(|| H5Error::Read {
                    path: self.path.clone(),
                    start,
                    end,
                    reason: format!(
                        "libhdf5 returned {} values, expected {}",
                        flat.len(),
                        (end - start) * per_cloud
                    ),
                })?;
            let points: Vec<Point> = cloud.chunks_exact(3).map(|c| [c[0], c[1], c[2]]).collect();
            out.push((label, points));
        }
        Ok(out)
    }
}

fn open_dataset(
    file: &hdf5::File,
    path: &Path,
    name: &'static str,
) -> Result<hdf5::Dataset, H5Error> {
    if !file.link_exists(name) {
        return Err(H5Error::MissingDataset {
            path: path.to_path_buf(),
            name,
        });
    }
    // The link exists, so a failure here means damaged metadata, i.e. a broken file.
    file.dataset(name).map_err(|e| H5Error::Open {
        path: path.to_path_buf(),
        reason: format!("dataset `{name}`: {e}"),
    })
}

fn check_type(
    ds: &hdf5::Dataset,
    path: &Path,
    name: &'static str,
    expected: &'static str,
    ok: impl Fn(&TypeDescriptor) -> bool,
) -> Result<(), H5Error> {
    let found = ds
        .dtype()
        .and_then(|t| t.to_descriptor())
        .map_err(|e| H5Error::BadType {
            path: path.to_path_buf(),
            name,
            found: format!("<unsupported: {e}>"),
            expected,
        })?;
    if ok(&found) {
        Ok(())
    } else {
        Err(H5Error::BadType {
            path: path.to_path_buf(),
            name,
            found: found.to_string(),
            expected,
        })
    }
}

/// Clouds per chunk of `data`: 16 clouds of 2048 points is 384 KiB, big enough for gzip to
/// work well and small enough that a ranged read decompresses little it does not need.
const CLOUDS_PER_CHUNK: usize = 16;

/// Writes a ScanObjectNN-format file: `data` f32 [N,P,3], `label` i64 [N], `mask` i32
/// [N,P] (1 object / -1 background), chunked and gzip(4)-compressed (like h5py with
/// compression="gzip"). Used by the demo generator and tests.
///
/// Object modification times are not recorded, so the same input gives the same bytes.
pub fn write_scanobjectnn_h5(
    path: &Path,
    clouds: &[Vec<Point>],
    labels: &[i64],
    masks: &[Vec<i32>],
) -> Result<(), H5Error> {
    let werr = |reason: String| H5Error::Write {
        path: path.to_path_buf(),
        reason,
    };
    let n = clouds.len();
    if labels.len() != n || masks.len() != n {
        return Err(werr(format!(
            "{n} clouds, {} labels and {} masks; pass one label and one mask per cloud",
            labels.len(),
            masks.len()
        )));
    }
    let p = clouds.first().map_or(0, Vec::len);
    for (i, (c, m)) in clouds.iter().zip(masks).enumerate() {
        if c.len() != p || m.len() != p {
            return Err(werr(format!(
                "cloud {i} has {} points and {} mask values but cloud 0 has {p}; \
                 every cloud of an h5 file needs the same point count",
                c.len(),
                m.len()
            )));
        }
    }
    let flat: Vec<f32> = clouds.iter().flatten().flatten().copied().collect();
    let data = Array3::from_shape_vec((n, p, 3), flat).map_err(|e| werr(e.to_string()))?;
    let mask_flat: Vec<i32> = masks.iter().flatten().copied().collect();
    let mask = Array2::from_shape_vec((n, p), mask_flat).map_err(|e| werr(e.to_string()))?;

    let h5err = |what: &str, e: hdf5::Error| werr(format!("{what}: {e}"));
    let file = hdf5::File::with_options()
        .with_fcpl(|f| f.obj_track_times(false))
        .create(path)
        .map_err(|e| h5err("create", e))?;
    // Chunk dims must be >= 1 and fit a fixed-size dataset, so empty datasets stay
    // contiguous (there is nothing to compress anyway).
    let compress = n > 0 && p > 0;
    let cn = n.clamp(1, CLOUDS_PER_CHUNK);

    let b = file.new_dataset_builder().obj_track_times(false);
    let b = if compress {
        b.chunk((cn, p, 3)).deflate(4)
    } else {
        b
    };
    b.with_data(&data)
        .create("data")
        .map_err(|e| h5err("dataset `data`", e))?;

    let b = file.new_dataset_builder().obj_track_times(false);
    let b = if n > 0 { b.chunk(n).deflate(4) } else { b };
    b.with_data(labels)
        .create("label")
        .map_err(|e| h5err("dataset `label`", e))?;

    let b = file.new_dataset_builder().obj_track_times(false);
    let b = if compress {
        b.chunk((cn, p)).deflate(4)
    } else {
        b
    };
    b.with_data(&mask)
        .create("mask")
        .map_err(|e| h5err("dataset `mask`", e))?;

    file.close().map_err(|e| h5err("close", e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clouds(n: usize, p: usize) -> (Vec<Vec<Point>>, Vec<i64>, Vec<Vec<i32>>) {
        let c: Vec<Vec<Point>> = (0..n)
            .map(|i| {
                (0..p)
                    .map(|j| [i as f32, j as f32 * 0.5, -(j as f32) - 0.25])
                    .collect()
            })
            .collect();
        let l: Vec<i64> = (0..n as i64).map(|i| i % 15).collect();
        let m: Vec<Vec<i32>> = (0..n)
            .map(|_| (0..p).map(|j| if j % 5 == 0 { -1 } else { 1 }).collect())
            .collect();
        (c, l, m)
    }

    #[test]
    fn round_trip_ranges() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.h5");
        let (c, l, m) = clouds(37, 20);
        write_scanobjectnn_h5(&path, &c, &l, &m).unwrap();
        let h = H5Clouds::open(&path).unwrap();
        assert_eq!(h.len(), 37);
        assert_eq!(h.points_per_cloud(), 20);
        assert!(!h.is_empty());
        for (a, b) in [(0, 37), (3, 19), (16, 17), (36, 37), (5, 5)] {
            let got = h.read_range(a, b).unwrap();
            assert_eq!(got.len(), b - a);
            for (k, (label, pts)) in got.iter().enumerate() {
                assert_eq!(*label, l[a + k]);
                assert_eq!(pts, &c[a + k]);
            }
        }
        assert!(matches!(h.read_range(30, 38), Err(H5Error::Range { .. })));
        assert!(matches!(h.read_range(5, 4), Err(H5Error::Range { .. })));
    }

    #[test]
    fn empty_file_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.h5");
        write_scanobjectnn_h5(&path, &[], &[], &[]).unwrap();
        let h = H5Clouds::open(&path).unwrap();
        assert!(h.is_empty());
        assert!(h.read_range(0, 0).unwrap().is_empty());
    }

    #[test]
    fn missing_and_truncated_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.h5");
        let e = H5Clouds::open(&missing).unwrap_err();
        assert!(matches!(e, H5Error::NotFound { .. }));
        assert!(e.to_string().contains("nope.h5"));

        let path = dir.path().join("t.h5");
        let (c, l, m) = clouds(64, 256);
        write_scanobjectnn_h5(&path, &c, &l, &m).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let cut = dir.path().join("cut.h5");
        std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
        // Either open or the read must fail; neither may panic.
        match H5Clouds::open(&cut) {
            Err(e) => assert!(e.to_string().contains("cut.h5"), "{e}"),
            Ok(h) => assert!(h.read_range(0, h.len()).is_err()),
        }

        let junk = dir.path().join("junk.h5");
        std::fs::write(&junk, b"this is not hdf5 at all").unwrap();
        let e = H5Clouds::open(&junk).unwrap_err();
        assert!(matches!(e, H5Error::Open { .. }), "{e}");
    }

    #[test]
    fn wrong_layouts_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        // data [N,P,2]
        let path = dir.path().join("two.h5");
        {
            let f = hdf5::File::create(&path).unwrap();
            let d = Array3::<f32>::zeros((4, 10, 2));
            f.new_dataset_builder()
                .with_data(&d)
                .create("data")
                .unwrap();
            f.new_dataset_builder()
                .with_data(&[0i64, 1, 2, 3])
                .create("label")
                .unwrap();
        }
        let e = H5Clouds::open(&path).unwrap_err();
        assert!(matches!(e, H5Error::BadShape { name: "data", .. }), "{e}");

        // missing label
        let path = dir.path().join("nolabel.h5");
        {
            let f = hdf5::File::create(&path).unwrap();
            let d = Array3::<f32>::zeros((4, 10, 3));
            f.new_dataset_builder()
                .with_data(&d)
                .create("data")
                .unwrap();
        }
        let e = H5Clouds::open(&path).unwrap_err();
        assert!(
            matches!(e, H5Error::MissingDataset { name: "label", .. }),
            "{e}"
        );

        // label count mismatch
        let path = dir.path().join("count.h5");
        {
            let f = hdf5::File::create(&path).unwrap();
            let d = Array3::<f32>::zeros((4, 10, 3));
            f.new_dataset_builder()
                .with_data(&d)
                .create("data")
                .unwrap();
            f.new_dataset_builder()
                .with_data(&[0i64, 1, 2])
                .create("label")
                .unwrap();
        }
        let e = H5Clouds::open(&path).unwrap_err();
        assert!(
            matches!(
                e,
                H5Error::LabelCount {
                    labels: 3,
                    clouds: 4,
                    ..
                }
            ),
            "{e}"
        );

        // integer data
        let path = dir.path().join("intdata.h5");
        {
            let f = hdf5::File::create(&path).unwrap();
            let d = Array3::<i32>::zeros((4, 10, 3));
            f.new_dataset_builder()
                .with_data(&d)
                .create("data")
                .unwrap();
            f.new_dataset_builder()
                .with_data(&[0i64, 1, 2, 3])
                .create("label")
                .unwrap();
        }
        let e = H5Clouds::open(&path).unwrap_err();
        assert!(matches!(e, H5Error::BadType { name: "data", .. }), "{e}");
    }

    #[test]
    fn f64_data_and_2d_u8_labels_convert() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f64.h5");
        let d = Array3::<f64>::from_shape_fn((5, 7, 3), |(i, j, k)| {
            i as f64 + j as f64 * 0.125 - k as f64 * 2.5
        });
        let l = Array2::<u8>::from_shape_fn((5, 1), |(i, _)| (i * 3) as u8);
        {
            let f = hdf5::File::create(&path).unwrap();
            // h5py-style chunked + gzip with a chunk that splits clouds.
            f.new_dataset_builder()
                .chunk((2, 7, 3))
                .deflate(4)
                .with_data(&d)
                .create("data")
                .unwrap();
            f.new_dataset_builder()
                .with_data(&l)
                .create("label")
                .unwrap();
        }
        let h = H5Clouds::open(&path).unwrap();
        let got = h.read_range(1, 4).unwrap();
        for (k, (label, pts)) in got.iter().enumerate() {
            let i = k + 1;
            assert_eq!(*label, (i * 3) as i64);
            for (j, p) in pts.iter().enumerate() {
                for (c, v) in p.iter().enumerate() {
                    assert_eq!(*v, d[[i, j, c]] as f32);
                }
            }
        }
    }

    #[test]
    fn writer_is_byte_deterministic() {
        let dir = tempfile::tempdir().unwrap();
        let (c, l, m) = clouds(20, 64);
        let a = dir.path().join("a.h5");
        let b = dir.path().join("b.h5");
        write_scanobjectnn_h5(&a, &c, &l, &m).unwrap();
        // Cross a second boundary so a recorded timestamp would show up.
        std::thread::sleep(std::time::Duration::from_millis(1100));
        write_scanobjectnn_h5(&b, &c, &l, &m).unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    }

    #[test]
    fn writer_rejects_ragged_input() {
        let dir = tempfile::tempdir().unwrap();
        let (mut c, l, m) = clouds(3, 8);
        c[1].pop();
        let e = write_scanobjectnn_h5(&dir.path().join("r.h5"), &c, &l, &m).unwrap_err();
        assert!(e.to_string().contains("cloud 1"), "{e}");
    }
}
