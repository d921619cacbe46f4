//! Point-cloud token shards in memory, a deterministic global shuffle per epoch, batches as
//! tensors, and the train-time augmentation of PAPER.md §3 (per-axis scale [2/3, 3/2] of
//! centers and neighbourhoods, translation [-0.2, 0.2] of centers).

use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use lm4ve_pipeline::shard::ShardReader;
use lm4ve_pipeline::Upstream;
use rand::seq::SliceRandom;
use rand::RngExt;
use rand_chacha::ChaCha8Rng;

pub struct PcSet {
    pub groups: usize,
    pub group_size: usize,
    pub centers: Vec<f32>,
    pub neighborhoods: Vec<f32>,
    pub labels: Vec<i64>,
}

impl PcSet {
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Reads every sample of `split` from a `pc.tokens` artifact.
    pub fn load(up: &Upstream, split: &str) -> Result<Self> {
        let schema =
            up.manifest.schema.as_ref().context(
                "upstream artifact has no shard schema; `data` must name a pc.tokens stage",
            )?;
        let field = |name: &str| {
            schema.iter().position(|f| f.name == name).with_context(|| {
                format!("upstream shards lack field `{name}`; `data` must name a pc.tokens stage")
            })
        };
        let (ci, ni, li) = (field("centers")?, field("neighborhoods")?, field("label")?);
        let shape = &schema[ni].shape;
        let (groups, group_size) = match shape.as_slice() {
            [g, k, 3] => (*g, *k),
            s => anyhow::bail!("neighborhoods have shape {s:?}, expected [G, K, 3]"),
        };
        let mut set = PcSet {
            groups,
            group_size,
            centers: Vec::new(),
            neighborhoods: Vec::new(),
            labels: Vec::new(),
        };
        for path in up.manifest.shard_paths(&up.manifest_path, Some(split)) {
            let mut r = ShardReader::open(&path)?;
            for i in 0..r.len() {
                let s = r.read(i)?;
                set.centers.extend(s.f32s(ci));
                set.neighborhoods.extend(s.f32s(ni));
                set.labels.push(s.i64s(li)[0]);
            }
        }
        Ok(set)
    }

    /// The sample order of one epoch: a permutation drawn from (seed, epoch) only.
    pub fn epoch_order(&self, rng: &mut ChaCha8Rng) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.len()).collect();
        order.shuffle(rng);
        order
    }

    /// (centers [B,G,3], neighborhoods [B,G,K,3], labels u32 [B]) for sample indices `idx`,
    /// augmented when `aug` is given.
    pub fn batch(
        &self,
        idx: &[usize],
        aug: Option<&mut ChaCha8Rng>,
        device: &Device,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let (g, k) = (self.groups, self.group_size);
        let mut c = Vec::with_capacity(idx.len() * g * 3);
        let mut n = Vec::with_capacity(idx.len() * g * k * 3);
        let mut l = Vec::with_capacity(idx.len());
        let mut aug = aug;
        for &i in idx {
            let cs = &self.centers[i * g * 3..(i + 1) * g * 3];
            let ns = &self.neighborhoods[i * g * k * 3..(i + 1) * g * k * 3];
            let (scale, shift) = match aug.as_deref_mut() {
                Some(r) => (
                    [0; 3].map(|_| r.random_range(2.0f32 / 3.0..1.5)),
                    [0; 3].map(|_| r.random_range(-0.2f32..0.2)),
                ),
                None => ([1.0; 3], [0.0; 3]),
            };
            c.extend(
                cs.iter()
                    .enumerate()
                    .map(|(j, v)| v * scale[j % 3] + shift[j % 3]),
            );
            n.extend(ns.iter().enumerate().map(|(j, v)| v * scale[j % 3]));
            l.push(u32::try_from(self.labels[i]).context("negative or huge label")?);
        }
        let b = idx.len();
        Ok((
            Tensor::from_vec(c, (b, g, 3), device)?,
            Tensor::from_vec(n, (b, g, k, 3), device)?,
            Tensor::from_vec(l, b, device)?,
        ))
    }
}
