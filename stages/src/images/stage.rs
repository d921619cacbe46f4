//! Stage `image.tokens`: ImageNet as people have it on disk → shards of decoded evaluation
//! views plus the training image as one JPEG file (PAPER.md §6, issue 24).
//!
//! Layouts (`format`): `folder` (torchvision ImageFolder: `<root>/train/<wnid>/*.JPEG`,
//! `<root>/val/<wnid>/*.JPEG`), `tar` (the reference's `train.tar` / `val.tar`), `parquet`
//! (Hugging Face `imagenet-1k`: `image{bytes,path}` + `label`). Samples of a split are in
//! ImageFolder order (`source`); per sample (SHARDS.md): `image` u8 [S, S, 3], DeiT's eval
//! transform (`Resize(int(256/224·S))` bicubic as PIL, `CenterCrop(S)`); `jpeg` u8
//! [max_image_bytes] + `jpeg_bytes` i64 [1] + `size` i64 [2]: the training image, the
//! original file when it is a JPEG PIL opens as RGB or L with its longer side ≤ `max_side`,
//! else re-encoded (libjpeg-turbo, 4:2:0, `jpeg_quality`) after a PIL-bicubic resize to
//! `max_side`; `label` i64 [1]; `index` i64 [1] (position in the split's order, so a reject
//! does not shift the others). One unit = `shard_samples` consecutive samples of one split.
//!
//! Unreadable images are rejects naming the file, the sample, the reason and the fix; the
//! run goes on.

use super::decode::{decode, Rgb, PIL_MAX_IMAGE_PIXELS};
use super::resize::{eval_resize_size, eval_view, fit_longer_side, resize_bicubic};
use super::source::{
    list_folder, list_parquet, list_tar, read_parquet_rows, read_tar_member, Item, Listing, Loc,
};
use super::turbo::Encoder;
use crate::shard_params::shard_param_problem;
use anyhow::{Context, Result};
use lm4ve_pipeline::shard::{encode_sample, Dtype, Field, Schema, ShardWriter};
use lm4ve_pipeline::{
    ConfigError, InputSpec, PipelineConfig, Stage, StageConfig, StageCtx, UnitOutput, UnitPlan,
    UnitRecord,
};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub const KIND: &str = "image.tokens";
/// Bump when the bytes of the shards would change for the same inputs and params.
pub const VERSION: u32 = 1;
/// The splits, as the manifest names them.
pub const SPLITS: [&str; 2] = ["train", "val"];

/// The on-disk layouts of ImageNet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// ImageFolder trees `<root>/train`, `<root>/val`.
    Folder,
    /// The reference's `<root>/train.tar`, `<root>/val.tar`.
    Tar,
    /// Hugging Face parquet: `<root>/data/train-*.parquet`, `<root>/data/validation-*.parquet`.
    Parquet,
}

/// `[stages.NAME.params]` of an `image.tokens` stage.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImageParams {
    pub format: Format,
    /// The dataset root (the per-format defaults above).
    #[serde(skip_serializing)]
    pub root: Option<PathBuf>,
    /// The training split: a folder (folder), a tar file (tar), a parquet file or a folder
    /// of them (parquet). Overrides `root`'s default.
    #[serde(skip_serializing)]
    pub train: Option<PathBuf>,
    /// The validation split, as `train`.
    #[serde(skip_serializing)]
    pub val: Option<PathBuf>,
    /// S of the evaluation view [S, S, 3] (DeiT's `input_size`); more than 32.
    pub eval_size: usize,
    /// Longer side of the stored training JPEG; larger images are resized and re-encoded.
    pub max_side: usize,
    /// Quality of re-encoded training JPEGs (libjpeg's scale, 1–100).
    pub jpeg_quality: u8,
    /// Room for one training JPEG (a bigger one is a reject naming its bytes).
    pub max_image_bytes: usize,
    /// Images with more pixels are refused unread (PIL: 2 × Image.MAX_IMAGE_PIXELS).
    pub max_pixels: u64,
    pub shard_samples: usize,
    /// 1, not zstd's default 3: a sample is a training JPEG (no gain from any level) and a
    /// pixel view; on real photos level 1 takes 28% less of the stage's CPU than 3 for 3.5%
    /// larger shards (BENCHMARKS.md, image_tokens, "zstd level").
    pub zstd_level: i32,
}

impl Default for ImageParams {
    fn default() -> Self {
        ImageParams {
            format: Format::Folder,
            root: None,
            train: None,
            val: None,
            eval_size: 224,
            max_side: 512,
            jpeg_quality: 90,
            max_image_bytes: 1 << 20,
            max_pixels: 2 * PIL_MAX_IMAGE_PIXELS,
            shard_samples: 256,
            zstd_level: 1,
        }
    }
}

/// One sample of a split: its item and its index in the split's order.
#[derive(Debug, Clone)]
struct Entry {
    index: i64,
    item: Item,
}

pub struct ImageTokensStage {
    params: ImageParams,
    classes: Vec<String>,
    /// Entries per split of SPLITS (empty = split absent).
    splits: Vec<Vec<Entry>>,
    /// (folder, class) without an image, per split.
    empty_classes: Vec<Vec<(String, String)>>,
    inputs: Vec<InputSpec>,
}

fn parquet_files(path: &Path, prefix: Option<&str>) -> Result<Vec<PathBuf>, String> {
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let rd = std::fs::read_dir(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut files: Vec<PathBuf> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let n = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            n.ends_with(".parquet") && prefix.is_none_or(|pre| n.starts_with(pre))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(format!(
            "{} holds no {}*.parquet file",
            path.display(),
            prefix.unwrap_or("")
        ));
    }
    Ok(files)
}

pub fn build(config: &PipelineConfig, sc: &StageConfig) -> Result<Box<dyn Stage>, ConfigError> {
    let params: ImageParams = config.typed_params(sc)?;
    let err = |key: &str, msg: String| config.param_error(&sc.name, Some(key), msg);
    let p = &params;
    if p.eval_size <= 32 || p.eval_size > 4096 {
        return Err(err(
            "eval_size",
            format!(
                "eval_size = {} must be in 33..=4096 (DeiT's build_transform resizes and crops \
                 only for input_size > 32)",
                p.eval_size
            ),
        ));
    }
    if p.max_side == 0 || p.max_side > 16384 {
        return Err(err("max_side", "max_side must be in 1..=16384".into()));
    }
    if !(1..=100).contains(&p.jpeg_quality) {
        return Err(err(
            "jpeg_quality",
            "jpeg_quality must be in 1..=100".into(),
        ));
    }
    if p.max_image_bytes == 0 || p.max_image_bytes > 256 << 20 {
        return Err(err(
            "max_image_bytes",
            "max_image_bytes must be in 1..=268435456 (256 MiB)".into(),
        ));
    }
    if p.max_pixels == 0 {
        return Err(err("max_pixels", "max_pixels must be positive".into()));
    }
    if let Some((key, msg)) = shard_param_problem(p.shard_samples, p.zstd_level) {
        return Err(err(key, msg));
    }
    if let Some(root) = &p.root {
        let root = config.resolve(root);
        if !root.is_dir() {
            return Err(config.missing_input_error(
                &sc.name,
                Some("root"),
                &root,
                format!("the dataset root {} does not exist", root.display()),
            ));
        }
    }
    // Each split: the explicit key (must exist) or root's default (may be absent).
    let mut listings: Vec<Option<Listing>> = Vec::new();
    for (split, explicit) in SPLITS.iter().zip([&p.train, &p.val]) {
        let key = *split;
        let (path, required) = match (explicit, &p.root) {
            (Some(x), _) => (config.resolve(x), true),
            (None, Some(root)) => {
                let root = config.resolve(root);
                let path = match p.format {
                    Format::Folder => root.join(split),
                    Format::Tar => root.join(format!("{split}.tar")),
                    Format::Parquet => root.join("data"),
                };
                (path, false)
            }
            (None, None) => (PathBuf::new(), false),
        };
        if path.as_os_str().is_empty() || (!required && !path.exists()) {
            listings.push(None);
            continue;
        }
        if !path.exists() {
            return Err(config.missing_input_error(
                &sc.name,
                Some(key),
                &path,
                format!("{} does not exist", path.display()),
            ));
        }
        let listing = match p.format {
            Format::Folder => list_folder(&path, split),
            Format::Tar => list_tar(&path),
            Format::Parquet => {
                // HF names the validation split `validation-*.parquet` in `data/`.
                let prefix = (!required).then_some(if *split == "val" {
                    "validation-"
                } else {
                    "train-"
                });
                parquet_files(&path, prefix).and_then(|f| list_parquet(&f))
            }
        };
        match listing {
            Ok(l) => listings.push(Some(l)),
            Err(e) if !required && p.format == Format::Parquet && e.contains("no ") => {
                listings.push(None)
            }
            Err(e) => return Err(err(if required { key } else { "root" }, e)),
        }
    }
    if listings.iter().all(Option::is_none) {
        return Err(err(
            "root",
            format!(
                "no split found: give `root` (with {}) or `train` / `val`",
                match p.format {
                    Format::Folder => "train/ and/or val/ ImageFolder trees",
                    Format::Tar => "train.tar and/or val.tar",
                    Format::Parquet => "data/train-*.parquet and/or data/validation-*.parquet",
                }
            ),
        ));
    }
    // Classes: folder/tar by name (the union of the splits' class folders, sorted: the
    // reference's indices when both splits have the same classes, as ImageNet's do);
    // parquet by label, named from the Hugging Face metadata when it has them.
    let classes: Vec<String> = if p.format == Format::Parquet {
        let names = listings
            .iter()
            .flatten()
            .find_map(|l| l.label_names.clone());
        let max = listings
            .iter()
            .flatten()
            .flat_map(|l| l.items.iter().filter_map(|i| i.label.as_ref().ok()))
            .copied()
            .max()
            .unwrap_or(-1);
        match names {
            Some(n) if (n.len() as i64) > max => n,
            _ => (0..=max).map(|i| i.to_string()).collect(),
        }
    } else {
        let set: BTreeSet<&String> = listings.iter().flatten().flat_map(|l| &l.classes).collect();
        let per: Vec<&BTreeSet<String>> = listings.iter().flatten().map(|l| &l.classes).collect();
        if per.len() == 2 && per[0] != per[1] {
            tracing::warn!(
                "[stages.{}]: train has {} classes, val {}; labels index their sorted union ({})",
                sc.name,
                per[0].len(),
                per[1].len(),
                set.len()
            );
        }
        set.into_iter().cloned().collect()
    };
    let index_of: BTreeMap<&str, i64> = classes
        .iter()
        .enumerate()
        .map(|(i, c)| (c.as_str(), i as i64))
        .collect();
    let mut inputs = Vec::new();
    let mut splits = Vec::new();
    let mut empty = Vec::new();
    for (split, listing) in SPLITS.iter().zip(listings) {
        let Some(l) = listing else {
            splits.push(Vec::new());
            empty.push(Vec::new());
            continue;
        };
        for (c_dir, class) in &l.empty_classes {
            tracing::warn!(
                "[stages.{}]: class folder {c_dir} ({split}) has no image file; class `{class}` \
                 keeps its index with no {split} sample",
                sc.name
            );
        }
        for (path, rel) in &l.files {
            inputs.push(InputSpec::file_as(split, path.clone(), rel.clone()));
        }
        let entries = l
            .items
            .into_iter()
            .enumerate()
            .map(|(i, mut item)| {
                if p.format != Format::Parquet {
                    item.label = index_of
                        .get(item.class.as_str())
                        .copied()
                        .ok_or_else(|| format!("class `{}` not in the class list", item.class));
                } else if let Ok(l) = item.label {
                    if l as usize >= classes.len() {
                        item.label = Err(format!("label {l} out of range"));
                    }
                }
                Entry {
                    index: i as i64,
                    item,
                }
            })
            .collect();
        splits.push(entries);
        empty.push(l.empty_classes);
    }
    Ok(Box::new(ImageTokensStage {
        params,
        classes,
        splits,
        empty_classes: empty,
        inputs,
    }))
}

/// One image's outcome.
struct Done {
    encoded: Vec<u8>,
    label: i64,
    reencoded: bool,
    /// PSNR (dB) of the re-encoded JPEG vs the pixels it encodes (None: not re-encoded, or
    /// identical).
    psnr: Option<f64>,
    jpeg_bytes: usize,
    mode: &'static str,
}

thread_local! {
    static ENCODER: RefCell<Option<Encoder>> = const { RefCell::new(None) };
}

/// Peak signal-to-noise ratio of two equal-size u8 buffers, None when identical.
pub fn psnr(a: &[u8], b: &[u8]) -> Option<f64> {
    let se: f64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| {
            let d = x as f64 - y as f64;
            d * d
        })
        .sum();
    if se == 0.0 || a.is_empty() {
        return None;
    }
    Some(10.0 * (255.0f64 * 255.0 / (se / a.len() as f64)).log10())
}

impl ImageTokensStage {
    fn schema_fields(&self) -> Schema {
        let s = self.params.eval_size;
        vec![
            Field::new("image", Dtype::Uint8, &[s, s, 3]),
            Field::new("jpeg", Dtype::Uint8, &[self.params.max_image_bytes]),
            Field::new("jpeg_bytes", Dtype::Int64, &[1]),
            Field::new("size", Dtype::Int64, &[2]),
            Field::new("label", Dtype::Int64, &[1]),
            Field::new("index", Dtype::Int64, &[1]),
        ]
    }

    fn unit_entries(&self, unit: &str) -> Result<(usize, usize, &[Entry])> {
        let (split, index) = unit
            .rsplit_once('-')
            .and_then(|(s, i)| Some((s, i.parse::<usize>().ok()?)))
            .with_context(|| format!("malformed unit id `{unit}`"))?;
        let si = SPLITS
            .iter()
            .position(|s| *s == split)
            .with_context(|| format!("unit `{unit}` names no split"))?;
        let entries = &self.splits[si];
        let start = (index * self.params.shard_samples).min(entries.len());
        let end = (start + self.params.shard_samples).min(entries.len());
        Ok((si, index, &entries[start..end]))
    }

    /// Where a sample's bytes are, for messages.
    fn file_of(item: &Item) -> String {
        match &item.loc {
            Loc::File(p) => p.display().to_string(),
            Loc::Tar { archive, .. } => format!("{}:{}", archive.display(), item.name),
            Loc::Parquet {
                file,
                row_group,
                row,
            } => format!(
                "{} (row group {row_group}, row {row}, image.path {})",
                file.display(),
                item.name
            ),
        }
    }

    fn process(&self, bytes: &[u8], label: i64, index: i64) -> Result<Done, String> {
        let p = &self.params;
        let d = decode(bytes, p.max_pixels)?;
        let image = eval_view(&d.rgb, p.eval_size);
        let (w, h) = (d.rgb.width, d.rgb.height);
        let (tw, th) = fit_longer_side(w, h, p.max_side);
        let (jpeg, reencoded, psnr_db) = if d.jpeg_as_is && (tw, th) == (w, h) {
            (bytes.to_vec(), false, None)
        } else {
            let resized;
            let src: &Rgb = if (tw, th) == (w, h) {
                &d.rgb
            } else {
                resized = resize_bicubic(&d.rgb, tw, th);
                &resized
            };
            let jpeg = ENCODER.with(|cell| {
                let mut slot = cell.borrow_mut();
                if slot.is_none() {
                    *slot = Some(Encoder::new()?);
                }
                match slot.as_mut() {
                    Some(enc) => enc.encode_rgb(&src.data, tw, th, p.jpeg_quality),
                    None => Err("internal: no JPEG encoder".to_string()),
                }
            })?;
            let back = decode(&jpeg, u64::MAX)
                .map_err(|e| format!("internal: re-encoded JPEG does not decode: {e}"))?;
            (jpeg, true, psnr(&src.data, &back.rgb.data))
        };
        if jpeg.len() > p.max_image_bytes {
            return Err(format!(
                "the training JPEG needs {} bytes, more than max_image_bytes = {}; raise \
                 max_image_bytes (or lower max_side / jpeg_quality)",
                jpeg.len(),
                p.max_image_bytes
            ));
        }
        let jpeg_len = jpeg.len();
        let mut padded = jpeg;
        padded.resize(p.max_image_bytes, 0);
        let size = [th as i64, tw as i64];
        let size_bytes: Vec<u8> = size.iter().flat_map(|v| v.to_le_bytes()).collect();
        let encoded = encode_sample(
            &self.schema_fields(),
            &[
                &image,
                &padded,
                &(jpeg_len as i64).to_le_bytes(),
                &size_bytes,
                &label.to_le_bytes(),
                &index.to_le_bytes(),
            ],
            p.zstd_level,
        )
        .map_err(|e| e.to_string())?;
        Ok(Done {
            encoded,
            label,
            reencoded,
            psnr: psnr_db,
            jpeg_bytes: jpeg_len,
            mode: d.mode,
        })
    }
}

/// The fix to name with a reject reason.
fn fix_for(reason: &str) -> &'static str {
    if reason.contains("max_image_bytes") || reason.contains("max_pixels") {
        ""
    } else if reason.contains("empty file") || reason.contains("truncated") {
        "; fix: copy or download the file again (it is incomplete)"
    } else if reason.contains("not an image") || reason.contains("reads JPEG and PNG") {
        "; fix: remove the file from the class folder or convert it to JPEG/PNG"
    } else if reason.contains("corrupt") {
        "; fix: replace the file (PIL cannot decode it either)"
    } else {
        ""
    }
}

type ItemResult = std::result::Result<Done, (String, String)>;

impl Stage for ImageTokensStage {
    fn kind(&self) -> &str {
        KIND
    }
    fn version(&self) -> u32 {
        VERSION
    }
    fn key_params(&self) -> serde_json::Value {
        crate::keyed::params_key(
            &self.params,
            [
                ("splits", serde_json::json!(SPLITS)),
                ("classes", serde_json::json!(self.classes)),
            ],
        )
    }
    fn inputs(&self) -> Vec<InputSpec> {
        self.inputs.clone()
    }
    fn schema(&self) -> Option<Schema> {
        Some(self.schema_fields())
    }

    fn plan(&self, _ctx: &StageCtx) -> Result<Vec<UnitPlan>> {
        let mut units = Vec::new();
        for (name, entries) in SPLITS.iter().zip(&self.splits) {
            for (i, chunk) in entries.chunks(self.params.shard_samples).enumerate() {
                units.push(UnitPlan {
                    id: format!("{name}-{i:05}"),
                    work: chunk.len() as u64,
                });
            }
        }
        Ok(units)
    }

    fn run_unit(&self, _ctx: &StageCtx, unit: &UnitPlan, out: &mut UnitOutput) -> Result<()> {
        let (si, ui, entries) = self.unit_entries(&unit.id)?;
        // Parquet: each row group this unit needs is read once.
        let mut groups: BTreeMap<(Arc<PathBuf>, usize), BTreeSet<usize>> = BTreeMap::new();
        for e in entries {
            if let Loc::Parquet {
                file,
                row_group,
                row,
            } = &e.item.loc
            {
                groups
                    .entry((file.clone(), *row_group))
                    .or_default()
                    .insert(*row);
            }
        }
        let fetched: Vec<_> = groups
            .into_par_iter()
            .map(|((file, rg), rows)| {
                let r = read_parquet_rows(&file, rg, &rows);
                ((file, rg), r)
            })
            .collect();
        let parquet: BTreeMap<_, _> = fetched.into_iter().collect();
        let results: Vec<ItemResult> = entries
            .par_iter()
            .map(|e| {
                let blame = |reason: String| {
                    let fix = fix_for(&reason);
                    (Self::file_of(&e.item), format!("{reason}{fix}"))
                };
                let label = e.item.label.clone().map_err(blame)?;
                let bytes = match &e.item.loc {
                    Loc::File(path) => std::fs::read(path).map_err(|x| format!("cannot read: {x}")),
                    Loc::Tar {
                        archive,
                        offset,
                        size,
                    } => read_tar_member(archive, *offset, *size),
                    Loc::Parquet {
                        file,
                        row_group,
                        row,
                    } => match parquet.get(&(file.clone(), *row_group)) {
                        Some(Ok(rows)) => rows
                            .get(row)
                            .cloned()
                            .ok_or_else(|| format!("row {row} missing from its row group")),
                        Some(Err(x)) => Err(x.clone()),
                        None => Err("internal: row group not read".into()),
                    },
                }
                .map_err(blame)?;
                self.process(&bytes, label, e.index).map_err(blame)
            })
            .collect();
        let mut writer = ShardWriter::new(self.schema_fields());
        let mut labels: BTreeMap<i64, u64> = BTreeMap::new();
        let mut modes: BTreeMap<&str, u64> = BTreeMap::new();
        let (mut reencoded, mut original, mut jpeg_bytes) = (0u64, 0u64, 0u64);
        let (mut psnr_sum, mut psnr_n) = (0f64, 0u64);
        if ui == 0 {
            for (dir, class) in &self.empty_classes[si] {
                out.reject(
                    dir,
                    &format!("class {class}"),
                    "empty class folder: no file with an image extension (torchvision's \
                     ImageFolder raises here); the class keeps its index; fix: add its images \
                     or remove the folder",
                );
            }
        }
        for (e, r) in entries.iter().zip(results) {
            match r {
                Ok(d) => {
                    *labels.entry(d.label).or_insert(0) += 1;
                    *modes.entry(d.mode).or_insert(0) += 1;
                    if d.reencoded {
                        reencoded += 1;
                    } else {
                        original += 1;
                    }
                    if let Some(x) = d.psnr {
                        psnr_sum += x;
                        psnr_n += 1;
                    }
                    jpeg_bytes += d.jpeg_bytes as u64;
                    writer.push_encoded(d.encoded);
                }
                Err((file, reason)) => out.reject(
                    &file,
                    &format!("index {} ({})", e.index, e.item.name),
                    &reason,
                ),
            }
        }
        let n = writer.len() as u64;
        if n > 0 {
            out.add_shard(SPLITS[si], n, &writer.finish())?;
        }
        out.set_meta(serde_json::json!({
            "labels": labels,
            "modes": modes,
            "reencoded": reencoded,
            "original": original,
            "jpeg_bytes": jpeg_bytes,
            "psnr_sum": psnr_sum,
            "psnr_n": psnr_n,
        }));
        Ok(())
    }

    fn finish(&self, _ctx: &StageCtx, units: &[UnitRecord]) -> Result<serde_json::Value> {
        let mut counts: BTreeMap<&str, BTreeMap<i64, u64>> = BTreeMap::new();
        let mut modes: BTreeMap<String, u64> = BTreeMap::new();
        let (mut reencoded, mut original, mut jpeg_bytes, mut psnr_n) = (0u64, 0u64, 0u64, 0u64);
        let mut psnr_sum = 0f64;
        for (si, s) in SPLITS.iter().enumerate() {
            if !self.splits[si].is_empty() {
                counts.entry(s).or_default();
            }
        }
        for u in units {
            let split = SPLITS
                .iter()
                .find(|s| u.unit.rsplit_once('-').is_some_and(|(x, _)| x == **s))
                .copied()
                .unwrap_or("unknown");
            let c = counts.entry(split).or_default();
            if let Some(map) = u.meta.get("labels").and_then(|v| v.as_object()) {
                for (k, v) in map {
                    if let (Ok(k), Some(v)) = (k.parse::<i64>(), v.as_u64()) {
                        *c.entry(k).or_insert(0) += v;
                    }
                }
            }
            if let Some(map) = u.meta.get("modes").and_then(|v| v.as_object()) {
                for (k, v) in map {
                    *modes.entry(k.clone()).or_insert(0) += v.as_u64().unwrap_or(0);
                }
            }
            let count = |k: &str| u.meta.get(k).and_then(|v| v.as_u64()).unwrap_or(0);
            reencoded += count("reencoded");
            original += count("original");
            jpeg_bytes += count("jpeg_bytes");
            psnr_n += count("psnr_n");
            psnr_sum += u
                .meta
                .get("psnr_sum")
                .and_then(|v| v.as_f64())
                .unwrap_or(0.0);
        }
        let p = &self.params;
        let stored = reencoded + original;
        let empty: BTreeMap<&str, Vec<&String>> = SPLITS
            .iter()
            .zip(&self.empty_classes)
            .map(|(s, e)| (*s, e.iter().map(|(_, c)| c).collect()))
            .collect();
        Ok(serde_json::json!({
            "num_classes": self.classes.len(),
            "classes": self.classes,
            "label_counts": counts,
            "format": p.format,
            "eval_size": p.eval_size,
            "eval_resize": eval_resize_size(p.eval_size),
            "max_side": p.max_side,
            "jpeg_quality": p.jpeg_quality,
            "max_image_bytes": p.max_image_bytes,
            "images_original": original,
            "images_reencoded": reencoded,
            "jpeg_bytes_mean": if stored > 0 { jpeg_bytes as f64 / stored as f64 } else { 0.0 },
            "reencoded_psnr_db_mean": if psnr_n > 0 { psnr_sum / psnr_n as f64 } else { 0.0 },
            "modes": modes,
            "empty_classes": empty,
        }))
    }
}

#[cfg(test)]
mod key_tests {
    use super::ImageParams;
    use crate::keyed::params_key;

    /// Every param enters the key, paths do not (their files do, by content).
    #[test]
    fn every_param_changes_the_key() {
        let base = serde_json::to_value(ImageParams::default()).unwrap();
        let obj = base.as_object().unwrap();
        for path in ["root", "train", "val"] {
            assert!(!obj.contains_key(path), "path `{path}` is in the key");
        }
        let key = |p: &ImageParams| params_key(p, []);
        let base_key = key(&ImageParams::default());
        for (field, value) in obj {
            let changed = match value {
                serde_json::Value::Number(n) => serde_json::json!(n.as_f64().unwrap() as i64 + 1),
                serde_json::Value::String(s) if s == "folder" => serde_json::json!("tar"),
                other => panic!("no mutation for `{field}` = {other}"),
            };
            let mut m = base.clone();
            m[field] = changed;
            let p: ImageParams = serde_json::from_value(m).unwrap();
            assert_ne!(key(&p), base_key, "`{field}` does not change the key");
        }
    }
}
