//! Where the images of a split come from, in ImageFolder order: an ImageFolder tree, the
//! reference's `train.tar` / `val.tar`, or Hugging Face `imagenet-1k` parquet files.
//!
//! ImageFolder (torchvision `find_classes` / `make_dataset`): classes are the sorted names
//! of the split folder's subfolders; within a class, `sorted(os.walk(class_dir))` and each
//! folder's file names sorted, keeping names whose lower-cased form ends in one of
//! `IMG_EXTENSIONS`. The tar layout reads what LM4VisualEncoding's `ImageTarDataset` reads
//! (regular members `<top>/<class>/<file>`, exactly two slashes) and orders them as
//! ImageFolder would the same tree. Parquet rows (`image{bytes,path}`, `label`) are ordered
//! by (label, path). So the three layouts of one image set give the same samples in the
//! same order.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// torchvision's `IMG_EXTENSIONS`.
pub const IMG_EXTENSIONS: [&str; 9] = [
    ".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp",
];

pub fn has_image_extension(name: &str) -> bool {
    let lower = name.to_lowercase();
    IMG_EXTENSIONS.iter().any(|e| lower.ends_with(e))
}

/// Where one sample's bytes are.
#[derive(Debug, Clone)]
pub enum Loc {
    File(PathBuf),
    Tar {
        archive: Arc<PathBuf>,
        offset: u64,
        size: u64,
    },
    Parquet {
        file: Arc<PathBuf>,
        row_group: usize,
        row: usize,
    },
}

/// One sample: its label, where its bytes are, and its name for messages (the path inside
/// the split: `<class>/<file>`, the tar member, or the parquet `image.path`).
#[derive(Debug, Clone)]
pub struct Item {
    pub label: Result<i64, String>,
    pub class: String,
    pub name: String,
    pub loc: Loc,
}

/// A split as listed: items (label still by class name for folder/tar), class folders with
/// no image, and the files that enter the key.
#[derive(Debug, Default)]
pub struct Listing {
    pub items: Vec<Item>,
    pub classes: BTreeSet<String>,
    pub empty_classes: Vec<(String, String)>,
    /// (path, key-relative name)
    pub files: Vec<(PathBuf, String)>,
    /// Class names by label from the parquet metadata (Hugging Face `ClassLabel` names).
    pub label_names: Option<Vec<String>>,
}

fn name_of(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// torchvision ImageFolder over `dir` (`<dir>/<class>/**/<file>`).
pub fn list_folder(dir: &Path, split: &str) -> Result<Listing, String> {
    let rd = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut classes: Vec<(String, PathBuf)> = Vec::new();
    for e in rd {
        let e = e.map_err(|e| format!("{}: {e}", dir.display()))?;
        // `entry.is_dir()` in Python's scandir follows symlinks.
        if e.path().is_dir() {
            classes.push((e.file_name().to_string_lossy().into_owned(), e.path()));
        }
    }
    classes.sort();
    if classes.is_empty() {
        return Err(format!(
            "{} has no class folders (ImageFolder expects <split>/<class>/<image>)",
            dir.display()
        ));
    }
    let mut out = Listing::default();
    for (class, cdir) in classes {
        out.classes.insert(class.clone());
        // sorted(os.walk(cdir, followlinks=True)): every folder, sorted by its path string.
        let mut dirs = vec![cdir.clone()];
        let mut i = 0;
        while i < dirs.len() {
            if let Ok(rd) = std::fs::read_dir(&dirs[i]) {
                for e in rd.flatten() {
                    if e.path().is_dir() {
                        dirs.push(e.path());
                    }
                }
            }
            i += 1;
        }
        dirs.sort_by(|a, b| a.to_string_lossy().cmp(&b.to_string_lossy()));
        let before = out.items.len();
        for d in dirs {
            let mut files: Vec<PathBuf> = std::fs::read_dir(&d)
                .map(|rd| {
                    rd.flatten()
                        .map(|e| e.path())
                        .filter(|p| !p.is_dir())
                        .collect()
                })
                .unwrap_or_default();
            files.sort_by_key(|p| name_of(p));
            for p in files {
                let fname = name_of(&p);
                if !has_image_extension(&fname) {
                    continue;
                }
                let rel = p
                    .strip_prefix(dir)
                    .unwrap_or(&p)
                    .to_string_lossy()
                    .into_owned();
                out.files.push((p.clone(), format!("{split}/{rel}")));
                out.items.push(Item {
                    label: Ok(-1),
                    class: class.clone(),
                    name: rel,
                    loc: Loc::File(p),
                });
            }
        }
        if out.items.len() == before {
            out.empty_classes
                .push((cdir.display().to_string(), class.clone()));
        }
    }
    Ok(out)
}

/// The reference's tar layout: regular members `<top>/<class>/<file>`.
pub fn list_tar(path: &Path) -> Result<Listing, String> {
    let f = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut ar = tar::Archive::new(f);
    let archive = Arc::new(path.to_path_buf());
    let mut members: Vec<(String, String, u64, u64)> = Vec::new();
    let entries = ar
        .entries_with_seek()
        .map_err(|e| format!("{}: not a tar archive: {e}", path.display()))?;
    for e in entries {
        let e = e.map_err(|e| format!("{}: damaged tar archive: {e}", path.display()))?;
        if e.header().entry_type() != tar::EntryType::Regular
            && e.header().entry_type() != tar::EntryType::Continuous
        {
            continue;
        }
        let name = match e.path() {
            Ok(p) => p.to_string_lossy().into_owned(),
            Err(_) => continue,
        };
        if name.matches('/').count() != 2 {
            continue;
        }
        let mut parts = name.split('/');
        let (_, class, file) = (parts.next(), parts.next(), parts.next());
        let (Some(class), Some(file)) = (class, file) else {
            continue;
        };
        if class.is_empty() || !has_image_extension(file) {
            continue;
        }
        members.push((
            class.to_string(),
            name.clone(),
            e.raw_file_position(),
            e.size(),
        ));
    }
    // ImageFolder order of the same tree: by class, then file name.
    members.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    let mut out = Listing::default();
    for (class, name, offset, size) in members {
        out.classes.insert(class.clone());
        out.items.push(Item {
            label: Ok(-1),
            class,
            name,
            loc: Loc::Tar {
                archive: archive.clone(),
                offset,
                size,
            },
        });
    }
    if out.items.is_empty() {
        return Err(format!(
            "{} holds no image member `<split>/<class>/<file>` (the reference's tar layout)",
            path.display()
        ));
    }
    out.files.push((path.to_path_buf(), name_of(path)));
    Ok(out)
}

/// Hugging Face `imagenet-1k` parquet: `image` {bytes, path} and `label` per row; the
/// class names from the file's `huggingface` metadata (`label` ClassLabel names) when
/// present.
pub fn list_parquet(files: &[PathBuf]) -> Result<Listing, String> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::record::Field;
    let mut rows: Vec<(i64, String, Loc, Option<String>)> = Vec::new();
    let mut out = Listing::default();
    for path in files {
        let ctx = |e: parquet::errors::ParquetError| format!("{}: {e}", path.display());
        let f = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let reader = SerializedFileReader::new(f).map_err(ctx)?;
        let meta = reader.metadata();
        if out.label_names.is_none() {
            out.label_names = hf_label_names(meta.file_metadata().key_value_metadata());
        }
        let schema = meta.file_metadata().schema();
        let fields = schema.get_fields();
        let has = |n: &str| fields.iter().any(|f| f.name() == n);
        if !has("image") || !has("label") {
            return Err(format!(
                "{}: expected columns `image` {{bytes, path}} and `label` (Hugging Face \
                 imagenet-1k), found {}",
                path.display(),
                fields
                    .iter()
                    .map(|f| f.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        let proj = projection(schema, &["label", "image"], Some("path"))?;
        let file = Arc::new(path.clone());
        for rg in 0..meta.num_row_groups() {
            let group = reader.get_row_group(rg).map_err(ctx)?;
            let iter = group.get_row_iter(Some(proj.clone())).map_err(ctx)?;
            for (row, r) in iter.enumerate() {
                let r = r.map_err(ctx)?;
                let mut label = Err("no `label` value".to_string());
                let mut name = None;
                for (k, v) in r.get_column_iter() {
                    match (k.as_str(), v) {
                        ("label", Field::Long(x)) => label = Ok(*x),
                        ("label", Field::Int(x)) => label = Ok(*x as i64),
                        ("label", Field::Short(x)) => label = Ok(*x as i64),
                        ("image", Field::Group(g)) => {
                            for (k2, v2) in g.get_column_iter() {
                                if let ("path", Field::Str(s)) = (k2.as_str(), v2) {
                                    name = Some(s.clone());
                                }
                            }
                        }
                        _ => {}
                    }
                }
                let loc = Loc::Parquet {
                    file: file.clone(),
                    row_group: rg,
                    row,
                };
                let fallback = format!("{} row {}", name_of(path), rows.len());
                match label {
                    Ok(l) => rows.push((l, name.unwrap_or(fallback), loc, None)),
                    Err(e) => rows.push((i64::MAX, name.unwrap_or(fallback), loc, Some(e))),
                }
            }
        }
        out.files.push((path.clone(), name_of(path)));
    }
    // ImageFolder order: by label (= sorted class), then file name.
    rows.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    for (label, name, loc, err) in rows {
        let label = match err {
            Some(e) => Err(e),
            None if label < 0 => Err(format!(
                "label {label}: the row has no class (imagenet-1k's test split is unlabeled)"
            )),
            None => Ok(label),
        };
        out.items.push(Item {
            class: label.as_ref().map(|l| l.to_string()).unwrap_or_default(),
            label,
            name,
            loc,
        });
    }
    Ok(out)
}

/// The file schema cut to `columns` (and, inside `image`, to `bytes` or `path`).
fn projection(
    schema: &parquet::schema::types::Type,
    columns: &[&str],
    image_field: Option<&str>,
) -> Result<parquet::schema::types::Type, String> {
    use parquet::schema::types::Type;
    let mut keep = Vec::new();
    for f in schema.get_fields() {
        if !columns.contains(&f.name()) {
            continue;
        }
        if f.name() == "image" {
            let Some(inner) = image_field else {
                keep.push(f.clone());
                continue;
            };
            if !f.is_group() {
                return Err("column `image` is not a struct {bytes, path}".into());
            }
            let sub: Vec<_> = f
                .get_fields()
                .iter()
                .filter(|g| g.name() == inner)
                .cloned()
                .collect();
            if sub.is_empty() {
                return Err(format!("column `image` has no `{inner}` field"));
            }
            let info = f.get_basic_info();
            let mut b = Type::group_type_builder("image").with_fields(sub);
            if info.has_repetition() {
                b = b.with_repetition(info.repetition());
            }
            keep.push(Arc::new(b.build().map_err(|e| e.to_string())?));
        } else {
            keep.push(f.clone());
        }
    }
    Type::group_type_builder(schema.name())
        .with_fields(keep)
        .build()
        .map_err(|e| e.to_string())
}

fn hf_label_names(kv: Option<&Vec<parquet::file::metadata::KeyValue>>) -> Option<Vec<String>> {
    let v = kv?
        .iter()
        .find(|k| k.key == "huggingface")?
        .value
        .as_ref()?;
    let j: serde_json::Value = serde_json::from_str(v).ok()?;
    let names = j.pointer("/info/features/label/names")?.as_array()?;
    names
        .iter()
        .map(|n| n.as_str().map(str::to_string))
        .collect()
}

/// The bytes of image rows of one parquet row group: row → bytes.
pub fn read_parquet_rows(
    path: &Path,
    row_group: usize,
    rows: &BTreeSet<usize>,
) -> Result<BTreeMap<usize, Vec<u8>>, String> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::record::Field;
    let ctx = |e: parquet::errors::ParquetError| format!("{}: {e}", path.display());
    let f = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let reader = SerializedFileReader::new(f).map_err(ctx)?;
    let schema = reader.metadata().file_metadata().schema().clone();
    let proj = projection(&schema, &["image"], Some("bytes"))?;
    let group = reader.get_row_group(row_group).map_err(ctx)?;
    let last = rows.last().copied().unwrap_or(0);
    let mut out = BTreeMap::new();
    for (i, r) in group
        .get_row_iter(Some(proj))
        .map_err(ctx)?
        .enumerate()
        .take(last + 1)
    {
        if !rows.contains(&i) {
            continue;
        }
        let r = r.map_err(ctx)?;
        let mut bytes = Vec::new();
        for (k, v) in r.get_column_iter() {
            if let ("image", Field::Group(g)) = (k.as_str(), v) {
                for (k2, v2) in g.get_column_iter() {
                    if let ("bytes", Field::Bytes(b)) = (k2.as_str(), v2) {
                        bytes = b.data().to_vec();
                    }
                }
            }
        }
        out.insert(i, bytes);
    }
    Ok(out)
}

/// A tar member's bytes.
pub fn read_tar_member(archive: &Path, offset: u64, size: u64) -> Result<Vec<u8>, String> {
    use std::os::unix::fs::FileExt;
    let f = File::open(archive).map_err(|e| format!("{}: {e}", archive.display()))?;
    let mut buf = vec![0u8; size as usize];
    f.read_exact_at(&mut buf, offset)
        .map_err(|e| format!("{} at byte {offset}: {e}", archive.display()))?;
    Ok(buf)
}
