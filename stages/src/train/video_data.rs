//! `ssv2.tokens` shards as a training set. Clips are read from the shards on demand (a real
//! SSv2 artifact is hundreds of GB; only labels and the sample index live in memory), the
//! u8 tubelets are normalized with ImageNet mean/std as VideoMAE does, and each training
//! sample takes one of its cached temporal views at random (seeded per step). Evaluation
//! uses every deterministic view and averages the class probabilities (the reference's
//! multi-view test). No flips: SSv2 labels depend on left and right (PAPER.md §4).

use super::shard_set::ShardSet;
use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use lm4ve_pipeline::Upstream;
use rand::RngExt;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

/// ImageNet statistics (VideoMAE's normalization), per RGB channel, for values in [0, 1].
const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
const STD: [f32; 3] = [0.229, 0.224, 0.225];

const WHAT: &str = "an ssv2.tokens stage";

pub struct VideoSet {
    /// Deterministic views per clip (evaluation averages over these).
    pub views: usize,
    /// All cached views (deterministic + random); training draws from these.
    pub total_views: usize,
    pub tokens: usize,
    pub token_dim: usize,
    pub labels: Vec<i64>,
    field: usize,
    shards: ShardSet,
}

impl VideoSet {
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Opens every shard of `split` in an `ssv2.tokens` artifact and reads the labels.
    pub fn load(up: &Upstream, split: &str) -> Result<Self> {
        let shards = ShardSet::open(up, split, WHAT)?;
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
        let labels = (0..shards.len())
            .into_par_iter()
            .map(|i| Ok(shards.read(i)?.i64s(li)[0]))
            .collect::<Result<Vec<i64>>>()?;
        Ok(VideoSet {
            views,
            total_views,
            tokens,
            token_dim,
            labels,
            field: ti,
            shards,
        })
    }

    /// The u8 tubelets of clip `i`, all views: [total_views · tokens · token_dim].
    fn raw(&self, i: usize) -> Result<Vec<u8>> {
        let mut s = self.shards.read(i)?;
        Ok(std::mem::take(&mut s.fields[self.field]))
    }

    fn normalized(&self, raw: &[u8], view: usize) -> Vec<f32> {
        let n = self.tokens * self.token_dim;
        raw[view * n..(view + 1) * n]
            .iter()
            .enumerate()
            .map(|(j, &v)| (v as f32 / 255.0 - MEAN[j % 3]) / STD[j % 3])
            .collect()
    }

    fn labels_of(&self, idx: &[usize], device: &Device) -> Result<Tensor> {
        let l = idx
            .iter()
            .map(|&i| u32::try_from(self.labels[i]).context("negative or huge label"))
            .collect::<Result<Vec<u32>>>()?;
        Ok(Tensor::from_vec(l, idx.len(), device)?)
    }

    /// Training batch: tubelets [B, tokens, token_dim], one random view per clip, and labels.
    pub fn train_batch(
        &self,
        idx: &[usize],
        rng: &mut ChaCha8Rng,
        device: &Device,
    ) -> Result<(Tensor, Tensor)> {
        // Draw every view first so the choice does not depend on decode order.
        let views: Vec<usize> = idx
            .iter()
            .map(|_| rng.random_range(0..self.total_views))
            .collect();
        let parts = idx
            .par_iter()
            .zip(views)
            .map(|(&i, v)| Ok(self.normalized(&self.raw(i)?, v)))
            .collect::<Result<Vec<_>>>()?;
        let x = Tensor::from_vec(
            parts.concat(),
            (idx.len(), self.tokens, self.token_dim),
            device,
        )?;
        Ok((x, self.labels_of(idx, device)?))
    }

    /// Evaluation batch: tubelets [B · views, tokens, token_dim] (clip-major), and labels [B].
    pub fn eval_batch(&self, idx: &[usize], device: &Device) -> Result<(Tensor, Tensor)> {
        let parts = idx
            .par_iter()
            .map(|&i| {
                let raw = self.raw(i)?;
                Ok((0..self.views)
                    .flat_map(|v| self.normalized(&raw, v))
                    .collect::<Vec<f32>>())
            })
            .collect::<Result<Vec<_>>>()?;
        let x = Tensor::from_vec(
            parts.concat(),
            (idx.len() * self.views, self.tokens, self.token_dim),
            device,
        )?;
        Ok((x, self.labels_of(idx, device)?))
    }
}
