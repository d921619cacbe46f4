//! Point-BERT's fine-tuning views of a cloud, drawn anew at every step (LM4VisualEncoding
//! `pointcloud_classification`: `ScanObjectNN*.__getitem__`, `runner_BERT_finetune.py`
//! `run_net` / `test_vote`, `Point_BERT.py` `Group`):
//!
//! 1. the dataset shuffles the cloud's points (`np.random.shuffle` of the 2048 indices), so
//!    the FPS that follows starts at a random point;
//! 2. FPS to a pool of `point_all` points (1200 for `npoints` 1024, 2400 for 2048, 4800 for
//!    4096, 8192 for 8192; fewer if the cloud has fewer);
//! 3. a random `npoints` of the pool, without replacement, in random order
//!    (`np.random.choice(point_all, npoints, False)`);
//! 4. `PointcloudScaleAndTranslate`: every point times a per-axis scale in [2/3, 3/2], plus a
//!    per-axis shift in [-0.2, 0.2];
//! 5. the model's `Group`: FPS `num_group` centers from index 0 of that random order, the
//!    `group_size` nearest points of each, relative to it.
//!
//! Test-time voting (`test_vote`) does 2-5 on the unshuffled cloud: the pool is the FPS of the
//! cloud as stored, each vote draws 3-4 again.
//!
//! One difference, on purpose: the reference draws step 3's index set once per batch (the same
//! columns of every cloud's FPS order); here every cloud draws its own, from a generator seeded
//! by (seed, step, sample), so a cloud's view does not depend on which batch it lands in and
//! clouds resample in parallel. Each cloud's view has the same distribution as the reference's.

use super::geometry::{farthest_point_sample, group, PcTokens, Point};
use rand::seq::SliceRandom;
use rand::{Rng, RngExt};

/// Per-axis scale range and shift bound of `PointcloudScaleAndTranslate` (its defaults).
pub const SCALE_LOW: f32 = 2.0 / 3.0;
pub const SCALE_HIGH: f32 = 3.0 / 2.0;
pub const SHIFT: f32 = 0.2;

/// What one view is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ViewSpec {
    /// FPS pool size (`point_all`), at most the kept points per cloud.
    pub pool: usize,
    /// Points the model sees (`npoints`).
    pub num_points: usize,
    pub num_groups: usize,
    pub group_size: usize,
}

impl ViewSpec {
    /// The reference's pool for `num_points` (its table: 1024 → 1200, 2048 → 2400,
    /// 4096 → 4800, 8192 → 8192; the reference rejects other sizes, here they get the same
    /// 1200/1024 ratio), capped by the points a cloud has.
    pub fn reference_pool(num_points: usize, cloud_points: usize) -> usize {
        let pool = match num_points {
            1024 => 1200,
            2048 => 2400,
            4096 => 4800,
            8192 => 8192,
            n => (n * 1200).div_ceil(1024),
        };
        pool.min(cloud_points).max(num_points.min(cloud_points))
    }
}

/// The per-axis scale and shift of one augmentation draw.
pub fn draw_scale_shift(rng: &mut impl Rng) -> ([f32; 3], [f32; 3]) {
    let scale = [0; 3].map(|_| rng.random_range(SCALE_LOW..SCALE_HIGH));
    let shift = [0; 3].map(|_| rng.random_range(-SHIFT..SHIFT));
    (scale, shift)
}

/// One training view (steps 1-5) of a kept cloud.
pub fn train_view(cloud: &[Point], spec: &ViewSpec, rng: &mut impl Rng) -> PcTokens {
    let mut shuffled = cloud.to_vec();
    shuffled.shuffle(rng);
    let pool: Vec<Point> = farthest_point_sample(&shuffled, spec.pool.min(shuffled.len()))
        .into_iter()
        .map(|i| shuffled[i])
        .collect();
    pool_view(&pool, spec, rng)
}

/// The FPS pool of an unshuffled cloud, for voting (`test_vote`'s `fps_idx_raw`).
pub fn vote_pool(cloud: &[Point], spec: &ViewSpec) -> Vec<Point> {
    farthest_point_sample(cloud, spec.pool.min(cloud.len()))
        .into_iter()
        .map(|i| cloud[i])
        .collect()
}

/// Steps 3-5 on a pool: a random `num_points` of it, scaled and shifted, grouped.
pub fn pool_view(pool: &[Point], spec: &ViewSpec, rng: &mut impl Rng) -> PcTokens {
    let n = spec.num_points.min(pool.len());
    let chosen = rand::seq::index::sample(rng, pool.len(), n);
    let (scale, shift) = draw_scale_shift(rng);
    let points: Vec<Point> = chosen
        .iter()
        .map(|i| {
            let p = pool[i];
            [
                p[0] * scale[0] + shift[0],
                p[1] * scale[1] + shift[1],
                p[2] * scale[2] + shift[2],
            ]
        })
        .collect();
    group(&points, spec.num_groups, spec.group_size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn cloud(n: usize) -> Vec<Point> {
        let mut r = ChaCha8Rng::seed_from_u64(7);
        (0..n)
            .map(|_| [0; 3].map(|_| r.random_range(-1.0f32..1.0)))
            .collect()
    }

    fn spec() -> ViewSpec {
        ViewSpec {
            pool: 300,
            num_points: 256,
            num_groups: 16,
            group_size: 8,
        }
    }

    #[test]
    fn reference_pool_sizes() {
        assert_eq!(ViewSpec::reference_pool(1024, 2048), 1200);
        assert_eq!(ViewSpec::reference_pool(2048, 2048), 2048);
        assert_eq!(ViewSpec::reference_pool(4096, 10_000), 4800);
        assert_eq!(ViewSpec::reference_pool(8192, 10_000), 8192);
        assert_eq!(ViewSpec::reference_pool(512, 2048), 600);
        assert_eq!(ViewSpec::reference_pool(1024, 1100), 1100);
    }

    #[test]
    fn same_generator_same_view_other_generator_other_view() {
        let c = cloud(512);
        let a = train_view(&c, &spec(), &mut ChaCha8Rng::seed_from_u64(1));
        let b = train_view(&c, &spec(), &mut ChaCha8Rng::seed_from_u64(1));
        let d = train_view(&c, &spec(), &mut ChaCha8Rng::seed_from_u64(2));
        assert_eq!(a, b);
        assert_ne!(a.centers, d.centers);
        assert_eq!(a.centers.len(), 16 * 3);
        assert_eq!(a.neighborhoods.len(), 16 * 8 * 3);
    }

    #[test]
    fn views_are_scaled_and_shifted_clouds_of_the_right_points() {
        let c = cloud(512);
        let v = train_view(&c, &spec(), &mut ChaCha8Rng::seed_from_u64(3));
        // Every neighbourhood's nearest point is its center itself (distance 0).
        for g in 0..16 {
            let first = &v.neighborhoods[g * 8 * 3..g * 8 * 3 + 3];
            assert_eq!(first, &[0.0, 0.0, 0.0]);
        }
        // Centers lie within the scaled and shifted bounds of the cloud.
        for x in &v.centers {
            assert!(x.abs() <= 1.0 * SCALE_HIGH + SHIFT + 1e-6);
        }
    }

    #[test]
    fn voting_pool_is_the_fps_of_the_cloud_as_stored() {
        let c = cloud(512);
        let pool = vote_pool(&c, &spec());
        assert_eq!(pool.len(), 300);
        assert_eq!(
            pool[0], c[0],
            "FPS starts at index 0 of the unshuffled cloud"
        );
    }
}
