//! Which frames of a clip become the `num_frames` (T) frames of a sample: the rule of the
//! loader the paper's video numbers came from, LM4VisualEncoding's
//! `video_understanding/ssv2.py` (`SSVideoClsDataset.loadvideo_decord`), reproduced to the index
//! so that a model trained on lm4ve shards sees the frames the reference loader shows it.
//! (VideoMAE's later `_get_seq_frames` uses `(N - 1) / T` segments and lands about one index
//! off; it is not the rule here.)
//!
//! Over the N decoded frames, in the decoder's output (= presentation) order; timestamps
//! play no part, so variable frame rate clips need nothing special:
//! - deterministic (test) view `v` of `V`: `tick = N / T` (f64), frame i =
//!   `int(tick · v / V + tick · i)` — with V = 2 the reference's two test views
//!   `int(tick · i)` and `int(tick / 2 + tick · i)` (its `chunk_nb` 0 and 1: the sorted union
//!   taken every other index), with V = 1 the first of them;
//! - random (training) view: `avg = N // T`; frame i = `avg · i + randint(0, avg)` (high
//!   exclusive, as `np.random.randint`) when `avg > 0`, else frame 0 for every i (the
//!   reference's `np.zeros` for clips shorter than T). Our generator is seeded from
//!   (seed, video id, view) only, so the cached frames do not depend on thread count or unit
//!   boundaries.
//!
//! N = 0 is not a clip (the caller rejects it).

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The frame indices of deterministic view `view` (0-based) of `views`.
pub fn test_view_indices(n: usize, t: usize, view: usize, views: usize) -> Vec<usize> {
    if t == 0 {
        return Vec::new();
    }
    let tick = n as f64 / t as f64;
    let max = n.saturating_sub(1);
    // Evaluated as the reference does for V = 2 (`tick / 2.0 + tick * x`): the view's offset
    // first, then the segment's start, then int() (truncation: both are non-negative).
    let offset = tick * view as f64 / views.max(1) as f64;
    (0..t)
        .map(|i| ((offset + tick * i as f64) as usize).min(max))
        .collect()
}

/// The frame indices of one random (training) view, drawn from `rng`.
pub fn random_view_indices(n: usize, t: usize, rng: &mut ChaCha8Rng) -> Vec<usize> {
    let avg = n.checked_div(t).unwrap_or(0);
    if avg == 0 {
        return vec![0; t];
    }
    (0..t).map(|i| avg * i + rng.random_range(0..avg)).collect()
}

/// The generator of random view `view` of the clip `video_id`: a function of the three
/// numbers only (blake3 of their little-endian bytes seeds ChaCha8).
pub fn view_rng(seed: u64, video_id: i64, view: usize) -> ChaCha8Rng {
    let mut h = blake3::Hasher::new();
    h.update(b"lm4ve ssv2 random view\0");
    h.update(&seed.to_le_bytes());
    h.update(&video_id.to_le_bytes());
    h.update(&(view as u64).to_le_bytes());
    ChaCha8Rng::from_seed(*h.finalize().as_bytes())
}

/// All views of one clip, deterministic ones first: `views` test views, then
/// `random_views` training views.
pub fn clip_indices(
    n: usize,
    t: usize,
    views: usize,
    random_views: usize,
    seed: u64,
    video_id: i64,
) -> Vec<Vec<usize>> {
    let mut out: Vec<Vec<usize>> = (0..views)
        .map(|v| test_view_indices(n, t, v, views))
        .collect();
    for r in 0..random_views {
        let mut rng = view_rng(seed, video_id, r);
        out.push(random_view_indices(n, t, &mut rng));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_views_by_hand() {
        // N = 48, T = 8: tick = 6; view 0: 6i; view 1: int(3 + 6i).
        assert_eq!(
            test_view_indices(48, 8, 0, 2),
            vec![0, 6, 12, 18, 24, 30, 36, 42]
        );
        assert_eq!(
            test_view_indices(48, 8, 1, 2),
            vec![3, 9, 15, 21, 27, 33, 39, 45]
        );
        // N = 37, T = 8: tick = 4.625; 4.625i = 0, 4.625, 9.25, 13.875, 18.5, 23.125, 27.75,
        // 32.375; + 2.3125 = 2.3125, 6.9375, 11.5625, 16.1875, 20.8125, 25.4375, 30.0625, 34.6875.
        assert_eq!(
            test_view_indices(37, 8, 0, 2),
            vec![0, 4, 9, 13, 18, 23, 27, 32]
        );
        assert_eq!(
            test_view_indices(37, 8, 1, 2),
            vec![2, 6, 11, 16, 20, 25, 30, 34]
        );
        // One view is the first of the two.
        assert_eq!(
            test_view_indices(37, 8, 0, 1),
            test_view_indices(37, 8, 0, 2)
        );
    }

    /// The reference's test indices as it computes them: the sorted union of both views'
    /// indices, then every other element from 0 (view 0) or 1 (view 1).
    #[test]
    fn test_views_are_the_sorted_union_taken_every_other() {
        for n in [1usize, 5, 16, 17, 37, 48, 61, 200] {
            for t in [4usize, 8, 16] {
                let tick = n as f64 / t as f64;
                let mut all: Vec<usize> = (0..t)
                    .map(|x| (tick / 2.0 + tick * x as f64) as usize)
                    .chain((0..t).map(|x| (tick * x as f64) as usize))
                    .collect();
                all.sort();
                for v in 0..2 {
                    let want: Vec<usize> = all.iter().skip(v).step_by(2).copied().collect();
                    assert_eq!(test_view_indices(n, t, v, 2), want, "n={n} t={t} v={v}");
                }
            }
        }
    }

    #[test]
    fn short_clips_take_frame_zero_in_training_and_spread_in_test() {
        let mut rng = view_rng(0, 1, 0);
        assert_eq!(random_view_indices(5, 16, &mut rng), vec![0; 16]);
        assert_eq!(random_view_indices(1, 4, &mut rng), vec![0; 4]);
        // N = 5, T = 16: tick = 0.3125: int(0.3125 i).
        assert_eq!(
            test_view_indices(5, 16, 0, 1),
            vec![0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4]
        );
        assert_eq!(test_view_indices(1, 16, 0, 1), vec![0; 16]);
    }

    #[test]
    fn random_views_stay_in_their_segment_and_depend_only_on_seed_id_view() {
        for n in [16usize, 17, 36, 48, 200] {
            for id in [1i64, 77, 220847] {
                let a = clip_indices(n, 16, 1, 3, 5, id);
                assert_eq!(a, clip_indices(n, 16, 1, 3, 5, id));
                let avg = n / 16;
                for view in &a[1..] {
                    for (i, &f) in view.iter().enumerate() {
                        assert!(f >= avg * i && f < avg * (i + 1), "n={n} i={i} f={f}");
                    }
                }
            }
        }
        let x = clip_indices(200, 16, 0, 2, 0, 9);
        assert_ne!(x[0], x[1], "two random views differ");
        assert_ne!(
            clip_indices(200, 16, 0, 1, 0, 9),
            clip_indices(200, 16, 0, 1, 1, 9)
        );
        assert_ne!(
            clip_indices(200, 16, 0, 1, 0, 9),
            clip_indices(200, 16, 0, 1, 0, 10)
        );
    }
}
