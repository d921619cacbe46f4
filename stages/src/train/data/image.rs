//! ImageNet-style images from `image.tokens` shards: the evaluation view as stored (`image`,
//! u8 [S, S, 3], DeiT's Resize + CenterCrop), and for training the stored JPEG (`jpeg`,
//! `jpeg_bytes`) decoded every step as PIL decodes it (libjpeg-turbo, `images::decode`) and
//! augmented in timm's order (bicubic random resized crop, flip, RandAugment, normalize,
//! random erasing; `train::ops::image_aug`), then Mixup / CutMix with soft targets. Values are
//! normalized with the ImageNet mean and std (timm's defaults).

use super::ShardSet;
use crate::train::ops::image_aug::{deit_train_view_file, hflip_u8};
use crate::train::ops::mixup::{apply_images, draw, soft_targets, MixSpec};
use crate::train::ops::video_aug::{TrainAugment, IMAGENET_MEAN, IMAGENET_STD};
use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use lm4ve_pipeline::Upstream;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

const WHAT: &str = "an image.tokens stage";

/// The largest stored training JPEG decoded (pixels): the data stage bounds the side by its
/// `max_side`, so this only stops a damaged header from asking for a huge buffer.
const MAX_TRAIN_PIXELS: u64 = 1 << 28;

pub struct ImageSet {
    shards: ShardSet,
    image: usize,
    jpeg: Option<(usize, usize)>,
    label: usize,
    /// The evaluation view's side S (the model's input).
    pub side: usize,
    pub classes: usize,
    /// Training augmentation (None: the stored evaluation view, flipped at random).
    pub augment: Option<TrainAugment>,
    pub mix: Option<MixSpec>,
    /// Horizontal flip probability (DeiT's `hflip` 0.5).
    pub hflip: f64,
}

impl ImageSet {
    pub fn len(&self) -> usize {
        self.shards.len()
    }

    pub fn is_empty(&self) -> bool {
        self.shards.is_empty()
    }

    pub fn load(up: &Upstream, split: &str) -> Result<Self> {
        let shards = ShardSet::open(up, split, WHAT)?;
        let image = shards.field("image", WHAT)?;
        let label = shards.field("label", WHAT)?;
        let shape = &shards.schema()[image].shape;
        anyhow::ensure!(
            shape.len() == 3 && shape[0] == shape[1] && shape[2] == 3,
            "field `image` has shape {shape:?}, not [S, S, 3]; `data` must name {WHAT}"
        );
        let side = shape[0];
        let jpeg = match (shards.field("jpeg", WHAT), shards.field("jpeg_bytes", WHAT)) {
            (Ok(a), Ok(b)) => Some((a, b)),
            _ => None,
        };
        let classes = up
            .manifest
            .meta
            .get("num_classes")
            .and_then(|v| v.as_u64())
            .unwrap_or(0) as usize;
        Ok(ImageSet {
            shards,
            image,
            jpeg,
            label,
            side,
            classes,
            augment: None,
            mix: None,
            hflip: 0.5,
        })
    }

    fn label_of(&self, s: &lm4ve_pipeline::shard::Sample, i: usize) -> Result<u32> {
        let l = s
            .i64s(self.label)
            .first()
            .copied()
            .with_context(|| format!("image {i} has no label"))?;
        u32::try_from(l).with_context(|| format!("image {i}: label {l} is not a class index"))
    }

    fn normalized(&self, rgb: &[u8]) -> Vec<f32> {
        rgb.iter()
            .enumerate()
            .map(|(j, &v)| (v as f32 / 255.0 - IMAGENET_MEAN[j % 3]) / IMAGENET_STD[j % 3])
            .collect()
    }

    /// One training image, normalized [S, S, 3], drawn from `rng` alone.
    fn train_image(&self, i: usize, rng: &mut ChaCha8Rng) -> Result<(Vec<f32>, u32)> {
        let s = self.shards.read(i)?;
        let label = self.label_of(&s, i)?;
        let side = self.side;
        let out = match (&self.augment, self.jpeg) {
            (Some(spec), Some((jpeg, len))) => {
                let n = s.i64s(len).first().copied().unwrap_or(0).max(0) as usize;
                let bytes = s.fields[jpeg]
                    .get(..n)
                    .with_context(|| format!("image {i}: jpeg_bytes {n} past its field"))?;
                let spec = TrainAugment {
                    crop: side,
                    ..spec.clone()
                };
                deit_train_view_file(bytes, MAX_TRAIN_PIXELS, &spec, self.hflip, rng)
                    .map_err(|e| anyhow::anyhow!("training image {i}: {e}"))?
            }
            // No augmentation: the stored evaluation view, flipped at random.
            _ => {
                let mut view = s.fields[self.image].to_vec();
                if rng.random::<f64>() < self.hflip {
                    hflip_u8(&mut view, side);
                }
                self.normalized(&view)
            }
        };
        Ok((out, label))
    }

    /// Training batch: images [B, S, S, 3] and labels [B], then Mixup / CutMix when set with
    /// the soft targets [B, C]. Only positions `rows` of `idx` are made (a data-parallel
    /// rank's share); every image's generator is drawn first, in batch order.
    pub fn train_batch(
        &self,
        idx: &[usize],
        rows: std::ops::Range<usize>,
        rng: &mut ChaCha8Rng,
        device: &Device,
    ) -> Result<(Tensor, Tensor, Option<Tensor>)> {
        let seeds: Vec<u64> = idx.iter().map(|_| rng.random()).collect();
        let parts = idx[rows.clone()]
            .par_iter()
            .zip(seeds[rows.clone()].to_vec())
            .map(|(&i, seed)| self.train_image(i, &mut ChaCha8Rng::seed_from_u64(seed)))
            .collect::<Result<Vec<_>>>()?;
        if rows.start > 0 {
            *rng = ChaCha8Rng::seed_from_u64(rng.random::<u64>() ^ rows.start as u64);
        }
        let (mut values, labels): (Vec<Vec<f32>>, Vec<u32>) = parts.into_iter().unzip();
        let b = labels.len();
        let soft = match self.mix.filter(|m| m.enabled()) {
            Some(spec) => {
                anyhow::ensure!(self.classes > 0, "the data stage does not say its classes");
                let mix = draw(&spec, self.side, self.side, rng);
                if let Some(m) = &mix {
                    apply_images(&mut values, m, self.side, self.side);
                }
                let lam = mix.map_or(1.0, |m| m.lam());
                let t = soft_targets(&labels, self.classes, lam, spec.smoothing);
                Some(Tensor::from_vec(t, (b, self.classes), device)?)
            }
            None => None,
        };
        let x = Tensor::from_vec(values.concat(), (b, self.side, self.side, 3), device)?;
        Ok((x, Tensor::from_vec(labels, b, device)?, soft))
    }

    /// Evaluation batch: the stored views [B, S, S, 3] and labels [B].
    pub fn eval_batch(&self, idx: &[usize], device: &Device) -> Result<(Tensor, Tensor)> {
        let parts = idx
            .par_iter()
            .map(|&i| {
                let s = self.shards.read(i)?;
                Ok((
                    self.normalized(&s.fields[self.image]),
                    self.label_of(&s, i)?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        let (values, labels): (Vec<Vec<f32>>, Vec<u32>) = parts.into_iter().unzip();
        let b = labels.len();
        let x = Tensor::from_vec(values.concat(), (b, self.side, self.side, 3), device)?;
        Ok((x, Tensor::from_vec(labels, b, device)?))
    }
}
