//! Building a `pc.tokens` stage from its config: the params checked, the dataset's files
//! listed (one listed input per dataset, keyed as one declaration per file was) and the
//! samples of each split with their labels.

use super::*;
use crate::shard_params::shard_param_problem;

/// The files of a split list as one listed input below `root` (each keyed by its path
/// relative to `root`, as a declaration per file was) and the (name index, label) of the
/// train and test samples. Names are UTF-8 (read from a text file), so `root.join(name)` is
/// the file's path again; a file outside `root` keeps its whole path as its name.
type Listed = (Arc<FileList>, [Vec<(u32, i64)>; 2]);
fn listed(
    root: &Path,
    files: impl Iterator<Item = (PathBuf, i64, bool)>,
) -> Result<Listed, String> {
    let mut l = ListedBuilder::default();
    for (path, label, test) in files {
        l.push(root, &path, label, test)?;
    }
    Ok(l.finish())
}

/// [`listed`] a file at a time.
#[derive(Default)]
struct ListedBuilder {
    names: FileList,
    splits: [Vec<(u32, i64)>; 2],
}

impl ListedBuilder {
    fn push(&mut self, root: &Path, path: &Path, label: i64, test: bool) -> Result<(), String> {
        let rel = rel_to(root, path);
        let i = u32::try_from(self.names.push(&rel))
            .map_err(|_| "over 4 billion files; split the dataset".to_string())?;
        self.splits[usize::from(test)].push((i, label));
        Ok(())
    }

    fn finish(mut self) -> Listed {
        self.names.shrink_to_fit();
        for s in &mut self.splits {
            s.shrink_to_fit();
        }
        (Arc::new(self.names), self.splits)
    }
}

/// `path` relative to `root` as `path.strip_prefix(root)` gives it (the whole path when it
/// is not below `root`), lossy. The common case, a byte prefix then a plain rest, skips the
/// component walk: at 200,000 files that walk was most of building the stage.
fn rel_to<'a>(root: &Path, path: &'a Path) -> std::borrow::Cow<'a, str> {
    use std::os::unix::ffi::OsStrExt;
    let (r, p) = (root.as_os_str().as_bytes(), path.as_os_str().as_bytes());
    let plain = |rest: &[u8]| {
        !rest.is_empty()
            && !rest.starts_with(b"/")
            && !rest.starts_with(b"./")
            && rest != b"."
            && !rest.ends_with(b"/")
            && !rest.ends_with(b"/.")
    };
    if !r.is_empty() && !r.ends_with(b"/") && p.len() > r.len() + 1 && p.starts_with(r) {
        let rest = &p[r.len() + 1..];
        if p[r.len()] == b'/' && plain(rest) {
            if let Ok(s) = std::str::from_utf8(rest) {
                return s.into();
            }
        }
    }
    path.strip_prefix(root).unwrap_or(path).to_string_lossy()
}

pub fn build(config: &PipelineConfig, sc: &StageConfig) -> Result<Box<dyn Stage>, ConfigError> {
    let mut params: PcParams = config.typed_params(sc)?;
    params.normalize = Some(params.normalize.unwrap_or(params.format != Format::H5));
    let err = |key: &str, msg: String| config.param_error(&sc.name, Some(key), msg);
    if params.num_points == 0 || params.num_groups == 0 || params.group_size == 0 {
        return Err(err(
            "num_points",
            "num_points, num_groups and group_size must be positive".into(),
        ));
    }
    if params.num_groups > params.num_points {
        return Err(err(
            "num_groups",
            format!(
                "num_groups = {} exceeds num_points = {}; centers are chosen among the sampled points",
                params.num_groups, params.num_points
            ),
        ));
    }
    if params.group_size > params.num_points {
        return Err(err(
            "group_size",
            format!(
                "group_size = {} exceeds num_points = {}",
                params.group_size, params.num_points
            ),
        ));
    }
    if params.keep_points != 0 && params.keep_points < params.num_points {
        return Err(err(
            "keep_points",
            format!(
                "keep_points = {} is below num_points = {}; resampling draws num_points from the kept points (0 keeps none)",
                params.keep_points, params.num_points
            ),
        ));
    }
    if let Some((key, msg)) = shard_param_problem(params.shard_samples, params.zstd_level) {
        return Err(err(key, msg));
    }
    // Sizes are allocated per sample (and per thread): bounded before anything is.
    for (key, v) in [
        ("num_points", params.num_points),
        ("keep_points", params.keep_points),
        ("shard_samples", params.shard_samples),
    ] {
        if v > MAX_POINTS {
            return Err(err(
                key,
                format!("{key} = {v} is over {MAX_POINTS}; point clouds of this size do not fit a sample"),
            ));
        }
    }
    let sample_bytes = params
        .num_groups
        .checked_mul(params.group_size)
        .and_then(|n| n.checked_add(params.num_groups))
        .and_then(|n| n.checked_add(params.keep_points))
        .and_then(|n| n.checked_mul(12));
    if sample_bytes.is_none_or(|b| b > lm4ve_pipeline::shard::MAX_STAGE_SAMPLE_BYTES) {
        return Err(err(
            "group_size",
            format!(
                "num_groups × group_size = {} × {} (and keep_points = {}) make a sample over {} MiB; lower them",
                params.num_groups,
                params.group_size,
                params.keep_points,
                lm4ve_pipeline::shard::MAX_STAGE_SAMPLE_BYTES >> 20
            ),
        ));
    }
    let mut splits = Vec::new();
    let mut inputs = Vec::new();
    let mut classes = None;
    match params.format {
        Format::H5 => {
            for (name, p) in [("train", &params.train), ("test", &params.test)] {
                if let Some(p) = p {
                    let path = config.resolve(p);
                    if !path.exists() {
                        // A dataset not downloaded yet blocks this stage only (and what reads it).
                        return Err(config.missing_input_error(
                            &sc.name,
                            Some(name),
                            &path,
                            format!(
                                "{} does not exist; download ScanObjectNN's h5_files and point `{name}` at it (paths are relative to the config file)",
                                path.display()
                            ),
                        ));
                    }
                    if !path.is_file() {
                        let what = if path.is_dir() {
                            "a directory"
                        } else {
                            "a FIFO, socket or device"
                        };
                        return Err(err(
                            name,
                            format!(
                                "{} is {what}, not an h5 file; point `{name}` at the .h5 file itself (e.g. main_split/training_objectdataset.h5)",
                                path.display()
                            ),
                        ));
                    }
                    inputs.push(InputSpec::new(name, path.clone()));
                    splits.push(Split {
                        name,
                        source: Source::H5 { path },
                    });
                }
            }
            if splits.is_empty() {
                return Err(err(
                    "format",
                    "format = \"h5\" needs `train` and/or `test` (paths to ScanObjectNN h5 files)"
                        .into(),
                ));
            }
        }
        Format::Bin => {
            let (Some(root), Some(split)) = (&params.root, &params.split) else {
                return Err(err(
                    "format",
                    "format = \"bin\" needs `root` (the object_dataset directory) and `split` (split_new.txt)".into(),
                ));
            };
            let (root, split) = (config.resolve(root), config.resolve(split));
            for (key, path) in [("root", &root), ("split", &split)] {
                if !path.exists() {
                    return Err(config.missing_input_error(
                        &sc.name,
                        Some(key),
                        path,
                        format!("{} does not exist", path.display()),
                    ));
                }
            }
            let mut files = ListedBuilder::default();
            let mut over = None;
            for_each_split_entry(&root, &split, |path, label, test| {
                if over.is_none() {
                    over = files.push(&root, path, label, test).err();
                }
            })
            .map_err(|e| err("split", format!("{e}")))?;
            if let Some(m) = over {
                return Err(err("split", m));
            }
            inputs.push(InputSpec::new("split", split));
            let (names, [train, test]) = files.finish();
            inputs.push(InputSpec::listed("objects", root.clone(), names.clone()));
            for (name, entries) in [("train", train), ("test", test)] {
                splits.push(Split {
                    name,
                    source: Source::Files {
                        root: root.clone(),
                        names: names.clone(),
                        entries,
                    },
                });
            }
        }
        Format::Las => {
            let Some(labels) = &params.labels else {
                return Err(err(
                    "format",
                    "format = \"las\" needs `labels` (a labels.csv with `file,label[,split]`)"
                        .into(),
                ));
            };
            let labels = config.resolve(labels);
            if !labels.exists() {
                return Err(config.missing_input_error(
                    &sc.name,
                    Some("labels"),
                    &labels,
                    format!("{} does not exist", labels.display()),
                ));
            }
            let rows = read_labels_csv(&labels).map_err(|e| err("labels", format!("{e}")))?;
            let base = labels.parent().unwrap_or(Path::new(".")).to_path_buf();
            inputs.push(InputSpec::new("labels", labels));
            let ids = label_ids(rows.iter().map(|r| r.label.as_str()));
            if ids.0.is_some() {
                classes = ids.0.clone();
            }
            let (names, [train, test]) = listed(
                &base,
                rows.into_iter()
                    .zip(ids.1)
                    .map(|(row, label)| (row.path, label, row.test)),
            )
            .map_err(|m| err("labels", m))?;
            inputs.push(InputSpec::listed("scans", base.clone(), names.clone()));
            for (name, entries) in [("train", train), ("test", test)] {
                splits.push(Split {
                    name,
                    source: Source::Files {
                        root: base.clone(),
                        names: names.clone(),
                        entries,
                    },
                });
            }
        }
    }
    Ok(Box::new(PcTokensStage {
        params,
        splits,
        inputs,
        classes,
        counts: OnceLock::new(),
    }))
}

/// Integer labels stay as they are; names become ids in sorted order (returned as classes).
fn label_ids<'a>(labels: impl Iterator<Item = &'a str> + Clone) -> (Option<Vec<String>>, Vec<i64>) {
    let ints: Option<Vec<i64>> = labels
        .clone()
        .map(|l| l.trim().parse::<i64>().ok().filter(|v| *v >= 0))
        .collect();
    if let Some(ints) = ints {
        return (None, ints);
    }
    let mut names: Vec<String> = labels.clone().map(|l| l.trim().to_string()).collect();
    names.sort();
    names.dedup();
    let ids = labels
        .map(|l| names.binary_search(&l.trim().to_string()).unwrap_or(0) as i64)
        .collect();
    (Some(names), ids)
}

#[cfg(test)]
mod rel_tests {
    use super::*;

    /// The shortcut gives `strip_prefix`'s name in every case: these names are the key.
    #[test]
    fn rel_to_is_strip_prefix_whatever_the_spelling() {
        let roots = [
            "/d/root",
            "./root",
            "root",
            "/d/root/",
            "/d/./root",
            "/",
            ".",
            "a//b",
        ];
        let rests = [
            "bag/x.bin",
            "x",
            "./x",
            "bag//x.bin",
            "bag/./x.bin",
            "../up.bin",
            "bag/x/",
            "bag/x/.",
            "/abs/x.bin",
            ".",
            "",
        ];
        for r in roots {
            for rest in rests {
                let root = Path::new(r);
                for path in [root.join(rest), PathBuf::from(format!("{r}/{rest}"))] {
                    let want = path.strip_prefix(root).unwrap_or(&path).to_string_lossy();
                    assert_eq!(rel_to(root, &path), want, "root {r:?}, path {path:?}");
                }
            }
        }
        // Outside the root: the whole path.
        let p = Path::new("/elsewhere/x.bin");
        assert_eq!(rel_to(Path::new("/d/root"), p), "/elsewhere/x.bin");
        assert_eq!(
            rel_to(Path::new("/d/ro"), Path::new("/d/root/x")),
            "/d/root/x"
        );
    }
}
