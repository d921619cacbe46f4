//! Stage `ssv2.tokens`: Something-Something-v2 clips → tubelet token shards (PAPER.md §4).
//!
//! Per annotation of the train / validation JSON: decode `<videos>/<id>.<ext>` (all frames,
//! one decoder thread), pick `num_frames` frames per view with the reference loader's segment rule
//! (`sampling`), resize the short side to `short_side` and center-crop `crop`² (swscale,
//! bilinear; `decode`), and store the views as tubelets (`tubelets`). Output per sample:
//! `tubelets` u8 [views + random_views, (T/t)(crop/p)², t·p²·3], `label` i64 [1],
//! `video_id` i64 [1] (SHARDS.md). One unit = `shard_samples` annotations of one split =
//! one shard; the clips of a unit are decoded in parallel (rayon), written in input order,
//! so the bytes do not depend on the thread count.
//!
//! Bad clips are rejects with their reason (missing file, empty, not a video, no video
//! stream, truncated or corrupt data, non-integer id, template not in labels.json); label
//! files that cannot be read are config errors (exit 2) naming the file.

use super::annotations::{read_annotations, read_labels, Annotation, Labels};
use super::decode::{decode, init, Cropper, Keep};
use super::frames::FramesLayout;
use super::sampling::clip_indices;
use super::tubelets::{pack_frame, view_shape};
use crate::shard_params::shard_param_problem;
use anyhow::{Context, Result};
use lm4ve_pipeline::shard::{encode_sample, Dtype, Field, Schema, ShardWriter};
use lm4ve_pipeline::{
    ConfigError, InputSpec, PipelineConfig, Stage, StageConfig, StageCtx, UnitOutput, UnitPlan,
    UnitRecord,
};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

/// Where the SSv2 release puts things, relative to the dataset root (the demo writes the same).
pub const VIDEO_DIR: &str = "20bn-something-something-v2";
pub const LABELS_DIR: &str = "labels";
pub const TRAIN_JSON: &str = "something-something-v2-train.json";
pub const VALIDATION_JSON: &str = "something-something-v2-validation.json";
pub const LABELS_JSON: &str = "labels.json";

pub const KIND: &str = "ssv2.tokens";
/// Bump when the bytes of the shards would change for the same inputs and params.
/// 2: frame indices by LM4VisualEncoding's `ssv2.py` (`N / T` ticks, `N // T` segments), not
/// VideoMAE's `(N - 1) / T` rule.
pub const VERSION: u32 = 2;
/// The two splits, named as in the release's file names.
pub const SPLITS: [&str; 2] = ["train", "validation"];
/// Decoded frames a clip may hold in memory before it is decoded a second time keeping only
/// the sampled frames (256 MB: ~1,600 frames of SSv2's 427×240).
const KEEP_BUDGET_BYTES: usize = 256 << 20;

/// `[stages.NAME.params]` of an `ssv2.tokens` stage.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Ssv2Params {
    /// The dataset root: `<root>/20bn-something-something-v2/`, `<root>/labels/`.
    #[serde(skip_serializing)]
    pub root: Option<PathBuf>,
    /// Overrides: the clip folder and the three label files.
    #[serde(skip_serializing)]
    pub videos: Option<PathBuf>,
    #[serde(skip_serializing)]
    pub train: Option<PathBuf>,
    #[serde(skip_serializing)]
    pub validation: Option<PathBuf>,
    #[serde(skip_serializing)]
    pub labels: Option<PathBuf>,
    /// Clip file extension (`<id>.<ext>`).
    pub ext: String,
    pub num_frames: usize,
    pub tubelet_frames: usize,
    pub patch: usize,
    pub short_side: usize,
    pub crop: usize,
    pub views: usize,
    pub random_views: usize,
    pub seed: u64,
    pub shard_samples: usize,
    /// 2, not zstd's default 3: on real 240p footage level 3 took ~28% of the stage's CPU;
    /// level 2 gives 15% less CPU a clip for 4% larger shards, level 1 no less CPU than 2
    /// for 11% larger ones (BENCHMARKS.md, ssv2_tokens, "zstd level").
    pub zstd_level: i32,
    /// What a sample stores: `tubelets` (center crops of `views + random_views` fixed
    /// views, ready for the patch embedding) or `frames` (every frame, uncropped, as JPEG:
    /// what the reference recipe's per-epoch temporal sampling and spatial augmentation
    /// need; `frames.rs`).
    pub layout: Layout,
    /// `frames` layout: short side of the stored frames, 0 = as decoded (the reference
    /// augments SSv2's 240-pixel-high frames as they are).
    pub frame_short_side: usize,
    /// `frames` layout: the JPEG quantizer (`ffmpeg -q:v`, 2 best … 31 smallest).
    pub jpeg_quantizer: u32,
    /// `frames` layout: frames kept per clip (longer clips are evenly subsampled).
    pub max_frames: usize,
    /// `frames` layout: room for one clip's JPEG files (a bigger clip is a reject).
    pub max_clip_bytes: usize,
}

/// The two sample layouts of `ssv2.tokens`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    Tubelets,
    Frames,
}

impl Default for Ssv2Params {
    fn default() -> Self {
        Ssv2Params {
            root: None,
            videos: None,
            train: None,
            validation: None,
            labels: None,
            ext: "webm".into(),
            num_frames: 16,
            tubelet_frames: 2,
            patch: 16,
            short_side: 224,
            crop: 224,
            views: 1,
            random_views: 0,
            seed: 0,
            shard_samples: 64,
            zstd_level: 2,
            layout: Layout::Tubelets,
            frame_short_side: 0,
            jpeg_quantizer: 3,
            max_frames: 128,
            max_clip_bytes: 4 << 20,
        }
    }
}

/// One annotation, resolved: its clip and label, or why it cannot be used.
#[derive(Debug, Clone)]
struct Entry {
    id: String,
    path: PathBuf,
    /// (video id, label) or (file to blame, reason).
    usable: std::result::Result<(i64, i64), (String, String)>,
}

pub struct Ssv2TokensStage {
    params: Ssv2Params,
    labels: Labels,
    /// Entries per split, in annotation order.
    splits: Vec<Vec<Entry>>,
    inputs: Vec<InputSpec>,
}

pub fn build(config: &PipelineConfig, sc: &StageConfig) -> Result<Box<dyn Stage>, ConfigError> {
    let params: Ssv2Params = config.typed_params(sc)?;
    let err = |key: &str, msg: String| config.param_error(&sc.name, Some(key), msg);
    let p = &params;
    if p.num_frames == 0 || p.tubelet_frames == 0 || !p.num_frames.is_multiple_of(p.tubelet_frames)
    {
        return Err(err(
            "num_frames",
            format!(
                "num_frames = {} must be a positive multiple of tubelet_frames = {}",
                p.num_frames, p.tubelet_frames
            ),
        ));
    }
    if p.patch == 0 || p.crop == 0 || !p.crop.is_multiple_of(p.patch) {
        return Err(err(
            "crop",
            format!(
                "crop = {} must be a positive multiple of patch = {}",
                p.crop, p.patch
            ),
        ));
    }
    if p.crop > p.short_side {
        return Err(err(
            "crop",
            format!(
                "crop = {} exceeds short_side = {}; the crop is taken from the resized frame",
                p.crop, p.short_side
            ),
        ));
    }
    if !(2..=31).contains(&p.jpeg_quantizer) {
        return Err(err(
            "jpeg_quantizer",
            format!("jpeg_quantizer = {} must be in 2..=31", p.jpeg_quantizer),
        ));
    }
    if p.max_frames == 0 || p.max_frames > 100_000 {
        return Err(err("max_frames", "max_frames must be in 1..=100000".into()));
    }
    if p.max_clip_bytes == 0 || p.max_clip_bytes > 256 << 20 {
        return Err(err(
            "max_clip_bytes",
            "max_clip_bytes must be in 1..=268435456 (256 MiB)".into(),
        ));
    }
    if p.frame_short_side > 16384 {
        return Err(err(
            "frame_short_side",
            "frame_short_side must be at most 16384".into(),
        ));
    }
    if p.short_side > 16384 {
        return Err(err("short_side", "short_side must be at most 16384".into()));
    }
    // Sizes multiply into every sample (allocated per worker thread): bounded first.
    for (key, v) in [
        ("num_frames", p.num_frames),
        ("views", p.views),
        ("random_views", p.random_views),
        ("shard_samples", p.shard_samples),
    ] {
        if v > 4096 {
            return Err(err(key, format!("{key} = {v} is over 4096; lower it")));
        }
    }
    if p.views + p.random_views == 0 {
        return Err(err(
            "views",
            "views + random_views must be at least 1 (a sample needs one view)".into(),
        ));
    }
    if let Some((key, msg)) = shard_param_problem(p.shard_samples, p.zstd_level) {
        return Err(err(key, msg));
    }
    if p.ext.is_empty() || p.ext.contains(['/', '\\']) {
        return Err(err(
            "ext",
            format!("ext = {:?} is not a file extension", p.ext),
        ));
    }
    // Paths: explicit keys win, else the release layout under `root`.
    let path_of = |key: &str, explicit: &Option<PathBuf>, rel: PathBuf| match (explicit, &p.root) {
        (Some(x), _) => Ok((config.resolve(x), key.to_string())),
        (None, Some(root)) => Ok((config.resolve(root).join(rel), "root".to_string())),
        (None, None) => Err(err(
            key,
            format!("needs `root` (the SSv2 folder) or `{key}`"),
        )),
    };
    let (videos, videos_key) = path_of("videos", &p.videos, PathBuf::from(VIDEO_DIR))?;
    let (labels_path, labels_key) = path_of(
        "labels",
        &p.labels,
        PathBuf::from(LABELS_DIR).join(LABELS_JSON),
    )?;
    let (train_path, train_key) = path_of(
        "train",
        &p.train,
        PathBuf::from(LABELS_DIR).join(TRAIN_JSON),
    )?;
    let (val_path, val_key) = path_of(
        "validation",
        &p.validation,
        PathBuf::from(LABELS_DIR).join(VALIDATION_JSON),
    )?;
    let labels = read_labels(&labels_path).map_err(|e| {
        if labels_path.exists() {
            err(&labels_key, e)
        } else {
            config.missing_input_error(&sc.name, Some(&labels_key), &labels_path, e)
        }
    })?;
    if !videos.is_dir() {
        return Err(config.missing_input_error(
            &sc.name,
            Some(&videos_key),
            &videos,
            format!(
                "the clip folder {} does not exist (expected <root>/{VIDEO_DIR}/<id>.{})",
                videos.display(),
                p.ext
            ),
        ));
    }
    let mut inputs = vec![
        InputSpec::new("labels", labels_path),
        InputSpec::new("train", train_path.clone()),
        InputSpec::new("validation", val_path.clone()),
    ];
    let mut splits = Vec::new();
    for (path, key) in [(&train_path, &train_key), (&val_path, &val_key)] {
        let anns = read_annotations(path, &labels).map_err(|e| err(key, e))?;
        let file = path.display().to_string();
        splits.push(resolve_entries(&anns, &videos, &p.ext, &file));
    }
    // Every clip that will be decoded enters the key by its content (stat-cached).
    let clips: BTreeSet<&PathBuf> = splits
        .iter()
        .flatten()
        .filter(|e| e.usable.is_ok())
        .map(|e| &e.path)
        .collect();
    // One listed declaration (a per-clip one cost ~150 bytes a clip on every run).
    inputs.extend(InputSpec::files_below(
        "videos",
        &videos,
        clips.into_iter().map(|path| {
            let rel = path.strip_prefix(&videos).unwrap_or(path);
            (path.clone(), rel.to_string_lossy().into_owned())
        }),
    ));
    Ok(Box::new(Ssv2TokensStage {
        params,
        labels,
        splits,
        inputs,
    }))
}

/// Pairs annotations with their clip files; ones that cannot be used carry the reason.
fn resolve_entries(
    anns: &[Annotation],
    videos: &std::path::Path,
    ext: &str,
    file: &str,
) -> Vec<Entry> {
    anns.par_iter()
        .enumerate()
        .map(|(i, a)| {
            let path = videos.join(format!("{}.{ext}", a.id));
            let usable = match (&a.video_id, &a.label) {
                (Err(e), _) | (_, Err(e)) => Err((file.to_string(), format!("entry {i}: {e}"))),
                (Ok(id), Ok(label)) => {
                    if path.is_file() {
                        Ok((*id, *label))
                    } else {
                        Err((
                            path.display().to_string(),
                            format!("clip file missing (annotation id {} in {file})", a.id),
                        ))
                    }
                }
            };
            Entry {
                id: a.id.clone(),
                path,
                usable,
            }
        })
        .collect()
}

impl Ssv2TokensStage {
    fn view_count(&self) -> usize {
        self.params.views + self.params.random_views
    }

    fn frames_layout(&self) -> Option<FramesLayout> {
        let p = &self.params;
        (p.layout == Layout::Frames).then_some(FramesLayout {
            short_side: p.frame_short_side,
            quantizer: p.jpeg_quantizer,
            max_frames: p.max_frames,
            max_clip_bytes: p.max_clip_bytes,
        })
    }

    fn schema_fields(&self) -> Schema {
        if let Some(frames) = self.frames_layout() {
            return frames.schema();
        }
        let p = &self.params;
        let (tokens, dim) = view_shape(p.num_frames, p.tubelet_frames, p.patch, p.crop);
        vec![
            Field::new("tubelets", Dtype::Uint8, &[self.view_count(), tokens, dim]),
            Field::new("label", Dtype::Int64, &[1]),
            Field::new("video_id", Dtype::Int64, &[1]),
        ]
    }

    fn unit_entries(&self, unit: &str) -> Result<(usize, &[Entry])> {
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
        Ok((si, &entries[start..end]))
    }

    /// One clip as a sample of the layout: the encoded sample, the number of frames
    /// decoded, and whether it was subsampled to `max_frames` (`frames` layout).
    fn process(
        &self,
        path: &std::path::Path,
        video_id: i64,
        label: i64,
    ) -> std::result::Result<(Vec<u8>, usize, bool), String> {
        let Some(frames) = self.frames_layout() else {
            return self
                .process_tubelets(path, video_id, label)
                .map(|(b, n)| (b, n, false));
        };
        let clip = frames.encode_clip(path)?;
        let (label, id) = (label.to_le_bytes(), video_id.to_le_bytes());
        let mut fields: Vec<&[u8]> = clip.fields.iter().map(Vec::as_slice).collect();
        fields.extend([&label[..], &id[..]]);
        let encoded = encode_sample(&self.schema_fields(), &fields, self.params.zstd_level)
            .map_err(|e| e.to_string())?;
        Ok((encoded, clip.decoded, clip.subsampled))
    }

    /// Decodes, samples, crops and packs one clip: the encoded sample and the number of
    /// frames decoded.
    fn process_tubelets(
        &self,
        path: &std::path::Path,
        video_id: i64,
        label: i64,
    ) -> std::result::Result<(Vec<u8>, usize), String> {
        let p = &self.params;
        let first = decode(
            path,
            Keep::All {
                budget_bytes: KEEP_BUDGET_BYTES,
            },
        )?;
        let n = first.count;
        let views = clip_indices(n, p.num_frames, p.views, p.random_views, p.seed, video_id);
        let wanted: BTreeSet<usize> = views.iter().flatten().copied().collect();
        let decoded = if first.complete {
            first
        } else {
            // A long clip: decode again, keeping only the sampled frames.
            let again = decode(path, Keep::Only(&wanted))?;
            if again.count != n {
                return Err(format!(
                    "decoded {n} frames, then {} on a second pass",
                    again.count
                ));
            }
            again
        };
        let mut cropper = Cropper::new(p.short_side as u32, p.crop as u32);
        let view_bytes = p.num_frames * p.crop * p.crop * 3;
        TUBELETS.with(|buf| {
            let mut tubelets = buf.borrow_mut();
            // Reused across clips on this thread: every byte is overwritten below.
            tubelets.resize(views.len() * view_bytes, 0);
            for i in wanted {
                let frame = decoded
                    .frames
                    .get(&i)
                    .ok_or_else(|| format!("internal: frame {i} of {n} not decoded"))?;
                let window = cropper
                    .scale(frame)
                    .map_err(|e| format!("frame {i}: {e}"))?;
                for (v, view) in views.iter().enumerate() {
                    let dst = &mut tubelets[v * view_bytes..(v + 1) * view_bytes];
                    for (k, _) in view.iter().enumerate().filter(|(_, &f)| f == i) {
                        pack_frame(dst, k, window, p.tubelet_frames, p.patch, p.crop);
                    }
                }
            }
            let encoded = encode_sample(
                &self.schema_fields(),
                &[&tubelets, &label.to_le_bytes(), &video_id.to_le_bytes()],
                p.zstd_level,
            )
            .map_err(|e| e.to_string())?;
            Ok((encoded, n))
        })
    }
}

thread_local! {
    /// One clip's tubelets (2.4 MB a view at the defaults), kept per worker thread so
    /// clips do not each fault in fresh pages.
    static TUBELETS: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// One clip's outcome: (label, encoded sample, frames decoded, subsampled), or (file, reason).
type ClipResult = std::result::Result<(i64, Vec<u8>, usize, bool), (String, String)>;

fn ffmpeg_versions() -> serde_json::Value {
    init();
    // SAFETY: version getters of the linked libraries, no arguments.
    let (avcodec, avformat, swscale) = unsafe {
        (
            ffmpeg_next::ffi::avcodec_version(),
            ffmpeg_next::ffi::avformat_version(),
            ffmpeg_next::ffi::swscale_version(),
        )
    };
    let v = |x: u32| format!("{}.{}.{}", x >> 16, (x >> 8) & 0xff, x & 0xff);
    serde_json::json!({ "avcodec": v(avcodec), "avformat": v(avformat), "swscale": v(swscale) })
}

impl Stage for Ssv2TokensStage {
    fn kind(&self) -> &str {
        KIND
    }
    fn version(&self) -> u32 {
        VERSION
    }
    fn key_params(&self) -> serde_json::Value {
        // The whole params struct (paths are keyed by their content, as inputs), the split
        // names, and the decoder and scaler versions, which decide the bytes as much as the
        // params do.
        crate::keyed::params_key(
            &self.params,
            [
                ("splits", serde_json::json!(SPLITS)),
                ("ffmpeg", serde_json::json!(ffmpeg_versions())),
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
        let (si, entries) = self.unit_entries(&unit.id)?;
        let results: Vec<ClipResult> = entries
            .par_iter()
            .map(|e| match &e.usable {
                Err(why) => Err(why.clone()),
                Ok((video_id, label)) => self
                    .process(&e.path, *video_id, *label)
                    .map(|(bytes, n, sub)| (*label, bytes, n, sub))
                    .map_err(|reason| (e.path.display().to_string(), reason)),
            })
            .collect();
        let mut writer = ShardWriter::new(self.schema_fields());
        let mut labels: BTreeMap<i64, u64> = BTreeMap::new();
        let mut frames_decoded = 0u64;
        let mut subsampled = 0u64;
        for (e, r) in entries.iter().zip(results) {
            match r {
                Ok((label, bytes, n, sub)) => {
                    *labels.entry(label).or_insert(0) += 1;
                    frames_decoded += n as u64;
                    subsampled += sub as u64;
                    writer.push_encoded(bytes);
                }
                Err((file, reason)) => out.reject(&file, &format!("id {}", e.id), &reason),
            }
        }
        let n = writer.len() as u64;
        if n > 0 {
            out.add_shard(SPLITS[si], n, &writer.finish())?;
        }
        out.set_meta(serde_json::json!({
            "labels": labels,
            "frames_decoded": frames_decoded,
            "frames_subsampled": subsampled,
        }));
        Ok(())
    }

    fn finish(&self, _ctx: &StageCtx, units: &[UnitRecord]) -> Result<serde_json::Value> {
        let mut counts: BTreeMap<&str, BTreeMap<i64, u64>> = BTreeMap::new();
        let mut frames_decoded = 0u64;
        let mut subsampled = 0u64;
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
            let count = |k: &str| u.meta.get(k).and_then(|v| v.as_u64()).unwrap_or(0);
            frames_decoded += count("frames_decoded");
            subsampled += count("frames_subsampled");
        }
        let p = &self.params;
        let (tokens, dim) = view_shape(p.num_frames, p.tubelet_frames, p.patch, p.crop);
        Ok(serde_json::json!({
            "num_classes": self.labels.classes.len(),
            "classes": self.labels.classes,
            "num_frames": p.num_frames,
            "tubelet_frames": p.tubelet_frames,
            "patch": p.patch,
            "short_side": p.short_side,
            "crop": p.crop,
            "views": p.views,
            "random_views": p.random_views,
            "seed": p.seed,
            "tokens_per_view": tokens,
            "token_dim": dim,
            "grid": [p.num_frames / p.tubelet_frames, p.crop / p.patch, p.crop / p.patch],
            "label_counts": counts,
            "frames_decoded": frames_decoded,
            "layout": p.layout,
            "frame_short_side": p.frame_short_side,
            "max_frames": p.max_frames,
            "frames_subsampled": subsampled,
        }))
    }
}

#[cfg(test)]
mod key_tests {
    /// Every param enters the key (derived from the struct, so none can be forgotten);
    /// paths do not (their files do, by content).
    #[test]
    fn every_param_changes_the_key() {
        crate::keyed::assert_every_field_keys::<super::Ssv2Params>(&[
            "root",
            "videos",
            "train",
            "validation",
            "labels",
        ]);
    }
}
