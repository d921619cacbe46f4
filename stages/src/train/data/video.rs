//! `ssv2.tokens` shards as a training set. Clips are read from the shards on demand (a real
//! SSv2 artifact is hundreds of GB; only the sample index lives in memory), the
//! u8 tubelets are normalized with ImageNet mean/std as VideoMAE does, and each training
//! sample takes one of its cached temporal views at random (seeded per step). Evaluation
//! uses every deterministic view and averages the class probabilities (the reference's
//! multi-view test). No flips: SSv2 labels depend on left and right (PAPER.md §4).

use super::video_frames::FramesSource;
use super::ShardSet;
use crate::train::ops::mixup::{apply, draw, soft_targets, MixSpec, TubeletGeometry};
use crate::train::ops::video_aug::TrainAugment;
use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use lm4ve_pipeline::Upstream;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

/// ImageNet statistics (VideoMAE's normalization), per RGB channel, for values in [0, 1].
const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
const STD: [f32; 3] = [0.229, 0.224, 0.225];

const WHAT: &str = "an ssv2.tokens stage";

pub struct VideoSet {
    /// Classes of the data stage (`meta.num_classes`), for soft targets.
    pub classes: usize,
    /// The tubelet layout (from the data stage's meta), for CutMix boxes.
    pub geometry: Option<TubeletGeometry>,
    /// Mixup / CutMix of training batches (set by the trainer).
    pub mix: Option<MixSpec>,
    /// Views per clip in evaluation (averaged): the cached deterministic views, or for
    /// the `frames` layout `test_temporal × test_spatial`.
    pub views: usize,
    /// All cached views (deterministic + random); training draws from these.
    pub total_views: usize,
    pub tokens: usize,
    pub token_dim: usize,
    /// `frames` layout: the training augmentation and the copies per clip (repeated
    /// augmentation; a batch of B clips gives B · repeats rows).
    /// `None`: no augmentation, the test path's centre crop.
    pub augment: Option<TrainAugment>,
    pub repeats: usize,
    test_views: (usize, usize),
    field: usize,
    label_field: usize,
    frames: Option<Box<FramesSource>>,
    shards: ShardSet,
}

impl VideoSet {
    pub fn len(&self) -> usize {
        self.shards.len()
    }
    pub fn is_empty(&self) -> bool {
        self.shards.is_empty()
    }

    /// Opens every shard of `split` in an `ssv2.tokens` artifact. Nothing is decoded here:
    /// a label is read with its clip, when a batch asks for it.
    pub fn load(up: &Upstream, split: &str) -> Result<Self> {
        let shards = ShardSet::open(up, split, WHAT)?;
        if shards.field("jpeg", WHAT).is_ok() {
            return Self::load_frames(up, shards);
        }
        let (ti, li) = (
            shards.field("tubelets", WHAT)?,
            shards.field("label", WHAT)?,
        );
        let (total_views, tokens, token_dim) = match shards.schema()[ti].shape.as_slice() {
            [v, n, d] if *v > 0 && d % 3 == 0 => (*v, *n, *d),
            s => anyhow::bail!("tubelets have shape {s:?}, expected [views, tokens, t·p·p·3]"),
        };
        let views = up
            .manifest
            .meta
            .get("views")
            .and_then(|v| v.as_u64())
            .map(|v| v as usize)
            .unwrap_or(total_views)
            .clamp(1, total_views);
        // Reading a label decodes its sample once; the tubelets are dropped again.
        let meta_usize = |k: &str| {
            up.manifest
                .meta
                .get(k)
                .and_then(|v| v.as_u64())
                .map(|v| v as usize)
        };
        let geometry = match (
            meta_usize("tubelet_frames"),
            meta_usize("patch"),
            meta_usize("crop"),
        ) {
            (Some(t), Some(p), Some(c)) if p > 0 && c >= p => Some(TubeletGeometry {
                tubelet_frames: t,
                patch: p,
                crop: c,
            }),
            _ => None,
        };
        Ok(VideoSet {
            classes: meta_usize("num_classes").unwrap_or(0),
            geometry,
            mix: None,
            views,
            total_views,
            tokens,
            token_dim,
            augment: None,
            repeats: 1,
            test_views: (views, 1),
            field: ti,
            label_field: li,
            frames: None,
            shards,
        })
    }

    /// The `frames` layout (`video_frames`): one test view (the first temporal one, centre
    /// crop) until [`VideoSet::set_test_views`] says more.
    fn load_frames(up: &Upstream, shards: ShardSet) -> Result<Self> {
        let meta = &up.manifest.meta;
        let src = FramesSource::open(&shards, meta)?;
        let (tokens, token_dim) = src.token_shape();
        let label_field = shards.field("label", WHAT)?;
        Ok(VideoSet {
            classes: meta
                .get("num_classes")
                .and_then(|v| v.as_u64())
                .unwrap_or(0) as usize,
            geometry: Some(TubeletGeometry {
                tubelet_frames: src.tubelet_frames,
                patch: src.patch,
                crop: src.crop,
            }),
            mix: None,
            views: 1,
            total_views: 1,
            tokens,
            token_dim,
            augment: Some(TrainAugment {
                crop: src.crop,
                ..TrainAugment::default()
            }),
            repeats: 1,
            test_views: (1, 1),
            field: 0,
            label_field,
            frames: Some(Box::new(src)),
            shards,
        })
    }

    /// Whether clips come uncropped (`frames` layout) and are augmented here.
    pub fn is_frames_layout(&self) -> bool {
        self.frames.is_some()
    }

    /// `frames` layout: the model's input side.
    pub fn frames_crop(&self) -> Option<usize> {
        self.frames.as_ref().map(|f| f.crop)
    }

    /// `frames` layout: the test views per clip, `temporal` clips × `spatial` crops (the
    /// reference's `--test_num_segment 2 --test_num_crop 3`). The tubelet layout keeps its
    /// cached views.
    pub fn set_test_views(&mut self, temporal: usize, spatial: usize) {
        if self.frames.is_some() {
            self.test_views = (temporal.max(1), spatial.max(1));
            self.views = self.test_views.0 * self.test_views.1;
        }
    }

    /// The u8 tubelets of clip `i`, all views ([total_views · tokens · token_dim]), and its
    /// label.
    fn read(&self, i: usize) -> Result<(Vec<u8>, u32)> {
        let mut s = self.shards.read(i)?;
        let label = s
            .i64s(self.label_field)
            .first()
            .copied()
            .context("a sample without a label")?;
        let label = u32::try_from(label).context("negative or huge label")?;
        Ok((std::mem::take(&mut s.fields[self.field]), label))
    }

    fn normalized(&self, raw: &[u8], view: usize) -> Vec<f32> {
        let n = self.tokens * self.token_dim;
        raw[view * n..(view + 1) * n]
            .iter()
            .enumerate()
            .map(|(j, &v)| (v as f32 / 255.0 - MEAN[j % 3]) / STD[j % 3])
            .collect()
    }

    /// Stacks per-clip (values, label) pairs into a [rows, tokens, token_dim] batch and
    /// labels [clips].
    fn stack(
        &self,
        parts: Vec<(Vec<f32>, u32)>,
        rows: usize,
        device: &Device,
    ) -> Result<(Tensor, Tensor)> {
        let (values, labels): (Vec<Vec<f32>>, Vec<u32>) = parts.into_iter().unzip();
        let n = labels.len();
        let x = Tensor::from_vec(values.concat(), (rows, self.tokens, self.token_dim), device)?;
        Ok((x, Tensor::from_vec(labels, n, device)?))
    }

    /// Training batch: tubelets [B, tokens, token_dim], one random view per clip, and labels;
    /// then Mixup / CutMix when set (all drawn from the step's generator), with the soft
    /// targets [B, C] of the mixed batch.
    ///
    /// Only the clips at positions `rows` of the batch `idx` are made (a data-parallel rank's
    /// share): every clip's draws are made first, so a clip's augmentation does not depend on
    /// which rank makes it; the batch-level Mixup / CutMix draw is the rank's own (as each
    /// process of the reference mixes its own batch).
    pub fn train_batch(
        &self,
        idx: &[usize],
        rows: std::ops::Range<usize>,
        rng: &mut ChaCha8Rng,
        device: &Device,
    ) -> Result<(Tensor, Tensor, Option<Tensor>)> {
        let parts = match &self.frames {
            Some(src) => {
                // One generator per clip, seeded from the step's in batch order, so the
                // augmentation does not depend on which thread decodes which clip.
                let seeds: Vec<u64> = idx.iter().map(|_| rng.random()).collect();
                let per_clip = idx[rows.clone()]
                    .par_iter()
                    .zip(seeds[rows.clone()].to_vec())
                    .map(|(&i, seed)| {
                        let stored = src.read(&self.shards, i)?;
                        let mut clip_rng = ChaCha8Rng::seed_from_u64(seed);
                        let samples = src
                            .train_samples(
                                &stored,
                                self.augment.as_ref(),
                                self.repeats,
                                &mut clip_rng,
                            )
                            .with_context(|| format!("training clip {i}"))?;
                        Ok(samples
                            .into_iter()
                            .map(|v| (v, stored.label))
                            .collect::<Vec<_>>())
                    })
                    .collect::<Result<Vec<_>>>()?;
                per_clip.into_iter().flatten().collect::<Vec<_>>()
            }
            None => {
                // Draw every view first so the choice does not depend on decode order.
                let views: Vec<usize> = idx
                    .iter()
                    .map(|_| rng.random_range(0..self.total_views))
                    .collect();
                idx[rows.clone()]
                    .par_iter()
                    .zip(views[rows.clone()].to_vec())
                    .map(|(&i, v)| {
                        let (raw, label) = self.read(i)?;
                        Ok((self.normalized(&raw, v), label))
                    })
                    .collect::<Result<Vec<_>>>()?
            }
        };
        if rows.start > 0 {
            // A rank above 0 draws its Mixup / CutMix from its own stream (rank 0 keeps the
            // step's, so a job of one is what it always was).
            *rng = ChaCha8Rng::seed_from_u64(rng.random::<u64>() ^ rows.start as u64);
        }
        let rows = parts.len();
        let Some(spec) = self.mix.filter(|m| m.enabled()) else {
            let (x, l) = self.stack(parts, rows, device)?;
            return Ok((x, l, None));
        };
        let geo = self.geometry.context(
            "mixup/cutmix need the data stage's tubelet layout (meta patch, crop, tubelet_frames)",
        )?;
        anyhow::ensure!(self.classes > 0, "the data stage does not say its classes");
        let (mut values, labels): (Vec<Vec<f32>>, Vec<u32>) = parts.into_iter().unzip();
        let mix = draw(&spec, geo.crop, geo.crop, rng);
        if let Some(m) = &mix {
            apply(&mut values, m, &geo, self.token_dim);
        }
        let lam = mix.map_or(1.0, |m| m.lam());
        let soft = soft_targets(&labels, self.classes, lam, spec.smoothing);
        let b = rows;
        let (x, l) = self.stack(values.into_iter().zip(labels).collect(), b, device)?;
        Ok((
            x,
            l,
            Some(Tensor::from_vec(soft, (b, self.classes), device)?),
        ))
    }

    /// Evaluation batch: tubelets [B · views, tokens, token_dim] (clip-major), and labels [B].
    pub fn eval_batch(&self, idx: &[usize], device: &Device) -> Result<(Tensor, Tensor)> {
        if let Some(src) = &self.frames {
            let (temporal, spatial) = self.test_views;
            let parts = idx
                .par_iter()
                .map(|&i| {
                    let stored = src.read(&self.shards, i)?;
                    let views = src
                        .test_samples(&stored, temporal, spatial)
                        .with_context(|| format!("test clip {i}"))?;
                    Ok((views.concat(), stored.label))
                })
                .collect::<Result<Vec<_>>>()?;
            return self.stack(parts, idx.len() * self.views, device);
        }
        let parts = idx
            .par_iter()
            .map(|&i| {
                let (raw, label) = self.read(i)?;
                let values = (0..self.views)
                    .flat_map(|v| self.normalized(&raw, v))
                    .collect::<Vec<f32>>();
                Ok((values, label))
            })
            .collect::<Result<Vec<_>>>()?;
        self.stack(parts, idx.len() * self.views, device)
    }
}
