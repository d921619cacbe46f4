//! `ssv2.tokens` shards as a training set. Clips are read from the shards on demand (a real
//! SSv2 artifact is hundreds of GB; only labels and the sample index live in memory), the
//! u8 tubelets are normalized with ImageNet mean/std as VideoMAE does, and each training
//! sample takes one of its cached temporal views at random (seeded per step). Evaluation
//! uses every deterministic view and averages the class probabilities (the reference's
//! multi-view test). No flips: SSv2 labels depend on left and right (PAPER.md §4).

use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use lm4ve_pipeline::shard::ShardReader;
use lm4ve_pipeline::Upstream;
use rand::RngExt;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use std::sync::Mutex;

/// ImageNet statistics (VideoMAE's normalization), per RGB channel, for values in [0, 1].
const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
const STD: [f32; 3] = [0.229, 0.224, 0.225];

pub struct VideoSet {
    /// Deterministic views per clip (evaluation averages over these).
    pub views: usize,
    /// All cached views (deterministic + random); training draws from these.
    pub total_views: usize,
    pub tokens: usize,
    pub token_dim: usize,
    pub labels: Vec<i64>,
    field: usize,
    readers: Vec<Mutex<ShardReader>>,
    /// (reader, sample index in its shard) per clip.
    index: Vec<(usize, usize)>,
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
        let schema = up.manifest.schema.as_ref().context(
            "upstream artifact has no shard schema; `data` must name an ssv2.tokens stage",
        )?;
        let field = |name: &str| {
            schema.iter().position(|f| f.name == name).with_context(|| {
                format!(
                    "upstream shards lack field `{name}`; `data` must name an ssv2.tokens stage"
                )
            })
        };
        let (ti, li) = (field("tubelets")?, field("label")?);
        let (total_views, tokens, token_dim) = match schema[ti].shape.as_slice() {
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
        let mut set = VideoSet {
            views,
            total_views,
            tokens,
            token_dim,
            labels: Vec::new(),
            field: ti,
            readers: Vec::new(),
            index: Vec::new(),
        };
        for path in up.manifest.shard_paths(&up.manifest_path, Some(split)) {
            let mut r = ShardReader::open(&path)?;
            let ri = set.readers.len();
            for i in 0..r.len() {
                // Reading the label decodes the sample once; the tubelets are dropped again.
                let s = r.read(i)?;
                set.labels.push(s.i64s(li)[0]);
                set.index.push((ri, i));
            }
            set.readers.push(Mutex::new(r));
        }
        Ok(set)
    }

    /// The u8 tubelets of clip `i`, all views: [total_views · tokens · token_dim].
    fn raw(&self, i: usize) -> Result<Vec<u8>> {
        let (ri, si) = self.index[i];
        let mut r = self.readers[ri]
            .lock()
            .map_err(|_| anyhow::anyhow!("shard reader lock poisoned"))?;
        let mut s = r.read(si)?;
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
