//! Point-cloud token shards in memory, a deterministic global shuffle per epoch, and batches
//! as tensors: with the kept raw points, Point-BERT's per-step resampling and test-time
//! voting (`crate::pointcloud::resample`); without, the cached tokens with the train-time
//! augmentation of PAPER.md §3 (per-axis scale [2/3, 3/2] of centers and neighbourhoods,
//! translation [-0.2, 0.2] of centers).

use crate::pointcloud::geometry::{PcTokens, Point};
use crate::pointcloud::resample::{pool_view, train_view, vote_pool, ViewSpec};
use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use lm4ve_pipeline::shard::ShardReader;
use lm4ve_pipeline::Upstream;
use rand::seq::SliceRandom;
use rand::{Rng, RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

pub struct PcSet {
    pub groups: usize,
    pub group_size: usize,
    pub centers: Vec<f32>,
    pub neighborhoods: Vec<f32>,
    pub labels: Vec<i64>,
    /// Raw points per cloud kept by `pc.tokens` (`keep_points`; 0 = none).
    pub kept: usize,
    /// [N · kept · 3].
    pub points: Vec<f32>,
    /// The data stage's `num_points` (what a view holds).
    pub num_points: usize,
    /// How training batches are made (set by the trainer).
    pub views: PcViews,
    /// Test-time votes per cloud (0 or 1: the cached tokens, as the reference's `test`).
    pub votes: usize,
    /// Seeds the voting views.
    pub vote_seed: u64,
}

/// How the training batches are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PcViews {
    /// The cached tokens, scaled and shifted (the tokens' groups never change).
    Cached,
    /// A fresh view of the kept points every step (Point-BERT's fine-tuning).
    Resampled,
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
        let pi = schema.iter().position(|f| f.name == "points");
        let kept = match pi.map(|i| schema[i].shape.as_slice()) {
            None => 0,
            Some([p, 3]) => *p,
            Some(s) => anyhow::bail!("points have shape {s:?}, expected [P, 3]"),
        };
        let num_points = up
            .manifest
            .meta
            .get("num_points")
            .and_then(|v| v.as_u64())
            .map_or(kept, |v| v as usize);
        let mut set = PcSet {
            groups,
            group_size,
            centers: Vec::new(),
            neighborhoods: Vec::new(),
            labels: Vec::new(),
            kept,
            points: Vec::new(),
            num_points,
            views: PcViews::Cached,
            votes: 0,
            vote_seed: 0,
        };
        for path in up.manifest.shard_paths(&up.manifest_path, Some(split)) {
            let mut r = ShardReader::open(&path)?;
            for i in 0..r.len() {
                let s = r.read(i)?;
                set.centers.extend(s.f32s(ci));
                set.neighborhoods.extend(s.f32s(ni));
                set.labels.push(s.i64s(li)[0]);
                if let Some(pi) = pi {
                    set.points.extend(s.f32s(pi));
                }
            }
        }
        Ok(set)
    }

    /// What a view of this set is made of (the reference's pool for its `num_points`).
    pub fn view_spec(&self) -> ViewSpec {
        ViewSpec {
            pool: ViewSpec::reference_pool(self.num_points, self.kept),
            num_points: self.num_points.min(self.kept),
            num_groups: self.groups,
            group_size: self.group_size,
        }
    }

    fn cloud(&self, i: usize) -> Vec<Point> {
        self.points[i * self.kept * 3..(i + 1) * self.kept * 3]
            .chunks_exact(3)
            .map(|p| [p[0], p[1], p[2]])
            .collect()
    }

    /// A training batch of fresh views (see `crate::pointcloud::resample`): each cloud's
    /// generator is seeded by the step's generator and the cloud's index, so its view is the
    /// same whichever thread makes it.
    pub fn resampled_batch(
        &self,
        idx: &[usize],
        step_rng: &mut ChaCha8Rng,
        device: &Device,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        anyhow::ensure!(
            self.kept > 0,
            "resample = true needs the clouds' raw points: set `keep_points` (e.g. 2048) in the pc.tokens stage, or resample = false"
        );
        let mut base = [0u8; 32];
        step_rng.fill_bytes(&mut base);
        let spec = self.view_spec();
        let views: Vec<PcTokens> = idx
            .par_iter()
            .map(|&i| train_view(&self.cloud(i), &spec, &mut sample_rng(&base, i as u64)))
            .collect();
        self.views_batch(idx, &views, 1, device)
    }

    /// Test-time voting (the reference's `test_vote`): `votes` views of each cloud's FPS pool,
    /// sample-major ([B · votes] rows), from generators seeded by `seed` and the cloud.
    pub fn vote_batch(
        &self,
        idx: &[usize],
        votes: usize,
        seed: u64,
        device: &Device,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        anyhow::ensure!(
            self.kept > 0,
            "voting needs the clouds' raw points: set `keep_points` (e.g. 2048) in the pc.tokens stage"
        );
        let spec = self.view_spec();
        let base = *blake3::hash(format!("vote:{seed}").as_bytes()).as_bytes();
        let views: Vec<PcTokens> = idx
            .par_iter()
            .flat_map_iter(|&i| {
                let pool = vote_pool(&self.cloud(i), &spec);
                let mut rng = sample_rng(&base, i as u64);
                (0..votes)
                    .map(|_| pool_view(&pool, &spec, &mut rng))
                    .collect::<Vec<_>>()
            })
            .collect();
        self.views_batch(idx, &views, votes, device)
    }

    fn views_batch(
        &self,
        idx: &[usize],
        views: &[PcTokens],
        per_sample: usize,
        device: &Device,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let (g, k) = (self.groups, self.group_size);
        let rows = views.len();
        let c: Vec<f32> = views
            .iter()
            .flat_map(|v| v.centers.iter().copied())
            .collect();
        let n: Vec<f32> = views
            .iter()
            .flat_map(|v| v.neighborhoods.iter().copied())
            .collect();
        let mut l = Vec::with_capacity(idx.len());
        for &i in idx {
            l.push(u32::try_from(self.labels[i]).context("negative or huge label")?);
        }
        debug_assert_eq!(rows, idx.len() * per_sample);
        Ok((
            Tensor::from_vec(c, (rows, g, 3), device)?,
            Tensor::from_vec(n, (rows, g, k, 3), device)?,
            Tensor::from_vec(l, idx.len(), device)?,
        ))
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
        self.batch_rows(idx, 0..idx.len(), aug, device)
    }

    /// `batch` for the samples at positions `rows` of `idx` only (a data-parallel rank's
    /// share); the augmentation of every sample of `idx` is drawn, so a sample's draw does
    /// not depend on which rank makes it.
    pub fn batch_rows(
        &self,
        idx: &[usize],
        rows: std::ops::Range<usize>,
        aug: Option<&mut ChaCha8Rng>,
        device: &Device,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let (g, k) = (self.groups, self.group_size);
        let mut c = Vec::with_capacity(rows.len() * g * 3);
        let mut n = Vec::with_capacity(rows.len() * g * k * 3);
        let mut l = Vec::with_capacity(rows.len());
        let mut aug = aug;
        for (row, &i) in idx.iter().enumerate() {
            let cs = &self.centers[i * g * 3..(i + 1) * g * 3];
            let ns = &self.neighborhoods[i * g * k * 3..(i + 1) * g * k * 3];
            let (scale, shift) = match aug.as_deref_mut() {
                Some(r) => (
                    [0; 3].map(|_| r.random_range(2.0f32 / 3.0..1.5)),
                    [0; 3].map(|_| r.random_range(-0.2f32..0.2)),
                ),
                None => ([1.0; 3], [0.0; 3]),
            };
            if !rows.contains(&row) {
                continue;
            }
            c.extend(
                cs.iter()
                    .enumerate()
                    .map(|(j, v)| v * scale[j % 3] + shift[j % 3]),
            );
            n.extend(ns.iter().enumerate().map(|(j, v)| v * scale[j % 3]));
            l.push(u32::try_from(self.labels[i]).context("negative or huge label")?);
        }
        let b = rows.len();
        Ok((
            Tensor::from_vec(c, (b, g, 3), device)?,
            Tensor::from_vec(n, (b, g, k, 3), device)?,
            Tensor::from_vec(l, b, device)?,
        ))
    }
}

/// The generator of one cloud's view: a keyed hash of (the step's or the vote's base seed,
/// the cloud's index).
fn sample_rng(base: &[u8; 32], sample: u64) -> ChaCha8Rng {
    ChaCha8Rng::from_seed(*blake3::keyed_hash(base, &sample.to_le_bytes()).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A set of `n` random clouds of 300 points each, 64-point views of 8 groups of 4.
    fn set(n: usize) -> PcSet {
        let mut r = ChaCha8Rng::seed_from_u64(11);
        let kept = 300;
        PcSet {
            groups: 8,
            group_size: 4,
            centers: vec![0.0; n * 8 * 3],
            neighborhoods: vec![0.0; n * 8 * 4 * 3],
            labels: (0..n as i64).map(|i| i % 3).collect(),
            kept,
            points: (0..n * kept * 3)
                .map(|_| r.random_range(-1.0f32..1.0))
                .collect(),
            num_points: 64,
            views: PcViews::Resampled,
            votes: 0,
            vote_seed: 0,
        }
    }

    fn centers(s: &PcSet, idx: &[usize], step: u64) -> Vec<f32> {
        let mut rng = crate::train::models::layers::step_rng(0, "augment", step);
        let (c, n, l) = s.resampled_batch(idx, &mut rng, &Device::Cpu).unwrap();
        assert_eq!(c.dims(), &[idx.len(), 8, 3]);
        assert_eq!(n.dims(), &[idx.len(), 8, 4, 3]);
        assert_eq!(l.dims(), &[idx.len()]);
        c.flatten_all().unwrap().to_vec1().unwrap()
    }

    #[test]
    fn groups_change_every_step_and_repeat_for_the_same_step() {
        let s = set(6);
        let idx = [0, 1, 2, 3, 4, 5];
        let a = centers(&s, &idx, 0);
        assert_eq!(a, centers(&s, &idx, 0), "same seed and step: same views");
        let b = centers(&s, &idx, 1);
        for (i, (x, y)) in a.chunks(24).zip(b.chunks(24)).enumerate() {
            assert_ne!(x, y, "cloud {i} kept its groups from one step to the next");
        }
    }

    /// A data-parallel rank makes its rows of the global batch exactly as one process makes
    /// them, for both cached (augmented) and resampled views.
    #[test]
    fn a_ranks_rows_are_the_global_batchs_rows() {
        let mut s = set(6);
        s.centers = (0..6 * 8 * 3).map(|i| i as f32 * 0.01).collect();
        let idx = [4, 1, 5, 0, 2, 3];
        let rng = || crate::train::models::layers::step_rng(0, "augment", 7);
        let whole = centers(&s, &idx, 7);
        let parts = [centers(&s, &idx[..3], 7), centers(&s, &idx[3..], 7)].concat();
        assert_eq!(whole, parts, "resampled views");
        s.views = PcViews::Cached;
        let rows = |r: std::ops::Range<usize>| -> Vec<f32> {
            let (c, _, l) = s
                .batch_rows(&idx, r.clone(), Some(&mut rng()), &Device::Cpu)
                .unwrap();
            assert_eq!(l.dims(), &[r.len()]);
            c.flatten_all().unwrap().to_vec1().unwrap()
        };
        assert_eq!(
            rows(0..6),
            [rows(0..3), rows(3..6)].concat(),
            "cached views"
        );
        assert_ne!(rows(0..3), rows(3..6));
    }

    #[test]
    fn views_do_not_depend_on_threads() {
        let s = set(16);
        let idx: Vec<usize> = (0..16).collect();
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let four = rayon::ThreadPoolBuilder::new()
            .num_threads(4)
            .build()
            .unwrap();
        let a = one.install(|| centers(&s, &idx, 5));
        let b = four.install(|| centers(&s, &idx, 5));
        assert_eq!(a, b);
    }

    #[test]
    fn votes_are_sample_major_and_seeded() {
        let s = set(3);
        let (c, _, l) = s.vote_batch(&[2, 0], 5, 9, &Device::Cpu).unwrap();
        assert_eq!(c.dims(), &[10, 8, 3]);
        assert_eq!(l.to_vec1::<u32>().unwrap(), vec![2, 0]);
        let (c2, _, _) = s.vote_batch(&[2, 0], 5, 9, &Device::Cpu).unwrap();
        let (c3, _, _) = s.vote_batch(&[2, 0], 5, 10, &Device::Cpu).unwrap();
        let v = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(v(&c), v(&c2));
        assert_ne!(v(&c), v(&c3));
        // Cloud 2's votes are the same whichever batch it is in.
        let (alone, _, _) = s.vote_batch(&[2], 5, 9, &Device::Cpu).unwrap();
        assert_eq!(v(&alone), v(&c)[..5 * 24].to_vec());
    }

    #[test]
    fn without_kept_points_resampling_says_what_to_set() {
        let mut s = set(2);
        s.kept = 0;
        s.points.clear();
        let e = s
            .resampled_batch(&[0], &mut ChaCha8Rng::seed_from_u64(0), &Device::Cpu)
            .unwrap_err();
        assert!(e.to_string().contains("keep_points"), "{e}");
    }
}
