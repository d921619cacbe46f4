//! Which frames of a clip become the `num_frames` (T) frames of a sample: VideoMAE's
//! segment-based rule for SSv2 (`SSVideoClsDataset._get_seq_frames`), reproduced to the
//! index so that a model trained on lm4ve shards sees the frames the reference loader shows it.
//!
//! Over the N decoded frames, in the decoder's output (= presentation) order; timestamps
//! play no part, so variable frame rate clips need nothing special:
//! - `seg = max(0, (N - 1) / T)` (f64), `start_i = round(seg · i)` with numpy's rounding
//!   (half to even: `np.round(2.5) == 2`), `end_i = round(seg · (i + 1))`;
//! - deterministic (test) view `v` of `V`: `min(start_i + floor(seg / (V + 1) · (v + 1)), N - 1)`
//!   — with V = 1 the middle of each segment, with V = 2 the reference's two test views;
//! - random (training) view: `min(randint(start_i, end_i), N - 1)`, both ends inclusive as
//!   Python's `random.randint`; our generator is seeded from (seed, video id, view) only, so
//!   the cached frames do not depend on thread count or unit boundaries.
//!
//! Clips shorter than T frames need no special case: `seg < 1` makes neighbouring segments
//! share frames, which is exactly the reference's padding by repetition (N = 1 gives T
//! copies of frame 0). N = 0 is not a clip (the caller rejects it).

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// numpy's `np.round` for the non-negative values used here: nearest, ties to even.
fn np_round(x: f64) -> usize {
    x.round_ties_even() as usize
}

fn segment(n: usize, t: usize) -> f64 {
    if n == 0 || t == 0 {
        return 0.0;
    }
    ((n - 1) as f64 / t as f64).max(0.0)
}

/// The frame indices of deterministic view `view` (0-based) of `views`.
pub fn test_view_indices(n: usize, t: usize, view: usize, views: usize) -> Vec<usize> {
    let seg = segment(n, t);
    let max = n.saturating_sub(1);
    // Evaluated as the reference does: duration first, then times (v + 1), then int().
    let duration = seg / (views as f64 + 1.0);
    let offset = (duration * (view as f64 + 1.0)).floor() as usize;
    (0..t)
        .map(|i| (np_round(seg * i as f64) + offset).min(max))
        .collect()
}

/// The frame indices of one random (training) view, drawn from `rng`.
pub fn random_view_indices(n: usize, t: usize, rng: &mut ChaCha8Rng) -> Vec<usize> {
    let seg = segment(n, t);
    let max = n.saturating_sub(1);
    (0..t)
        .map(|i| {
            let start = np_round(seg * i as f64);
            let end = np_round(seg * (i + 1) as f64);
            rng.random_range(start..=end).min(max)
        })
        .collect()
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
    fn rounds_half_to_even_like_numpy() {
        assert_eq!(np_round(0.5), 0);
        assert_eq!(np_round(1.5), 2);
        assert_eq!(np_round(2.5), 2);
        assert_eq!(np_round(2.5000001), 3);
        assert_eq!(np_round(3.49), 3);
    }

    #[test]
    fn middle_of_each_segment_by_hand() {
        // N = 33, T = 16: seg = 32/16 = 2, duration = 1, offset 1: start_i = 2i.
        let want: Vec<usize> = (0..16).map(|i| 2 * i + 1).collect();
        assert_eq!(test_view_indices(33, 16, 0, 1), want);
        // N = 36, T = 16: seg = 35/16 = 2.1875; duration = 1.09375 → offset 1.
        // seg·i = 0, 2.1875, 4.375, 6.5625, 8.75, 10.9375, 13.125, 15.3125, 17.5, 19.6875,
        //         21.875, 24.0625, 26.25, 28.4375, 30.625, 32.8125
        // round →  0, 2, 4, 7, 9, 11, 13, 15, 18(17.5 → even 18), 20, 22, 24, 26, 28, 31, 33
        assert_eq!(
            test_view_indices(36, 16, 0, 1),
            vec![1, 3, 5, 8, 10, 12, 14, 16, 19, 21, 23, 25, 27, 29, 32, 34]
        );
        // N = 41, T = 16: seg = 2.5; seg·i = 2.5i: 0, 2.5→2, 5, 7.5→8, 10, 12.5→12, 15, 17.5→18,
        // 20, 22.5→22, 25, 27.5→28, 30, 32.5→32, 35, 37.5→38; offset floor(1.25) = 1.
        assert_eq!(
            test_view_indices(41, 16, 0, 1),
            vec![1, 3, 6, 9, 11, 13, 16, 19, 21, 23, 26, 29, 31, 33, 36, 39]
        );
    }

    #[test]
    fn two_test_views_by_hand() {
        // N = 48, T = 8: seg = 47/8 = 5.875, duration = 5.875/3 = 1.958..;
        // view 0 offset floor(1.958) = 1, view 1 offset floor(3.916) = 3.
        // start: 0, 5.875→6, 11.75→12, 17.625→18, 23.5→24 (even), 29.375→29, 35.25→35, 41.125→41
        assert_eq!(
            test_view_indices(48, 8, 0, 2),
            vec![1, 7, 13, 19, 25, 30, 36, 42]
        );
        assert_eq!(
            test_view_indices(48, 8, 1, 2),
            vec![3, 9, 15, 21, 27, 32, 38, 44]
        );
    }

    #[test]
    fn short_clips_repeat_frames_as_the_reference_pads() {
        // N = 5, T = 16: seg = 0.25, offset floor(0.125) = 0; round(0.25 i):
        // 0,0(0.25),0(0.5→0),1(0.75),1,1(1.25),2(1.5→2),2(1.75),2,2(2.25),2(2.5→2),3(2.75),3,3(3.25),4(3.5→4),4(3.75)
        assert_eq!(
            test_view_indices(5, 16, 0, 1),
            vec![0, 0, 0, 1, 1, 1, 2, 2, 2, 2, 2, 3, 3, 3, 4, 4]
        );
        assert_eq!(test_view_indices(1, 16, 0, 1), vec![0; 16]);
        assert_eq!(test_view_indices(1, 4, 1, 2), vec![0; 4]);
        let mut rng = view_rng(0, 1, 0);
        assert_eq!(random_view_indices(1, 4, &mut rng), vec![0; 4]);
    }

    #[test]
    fn random_views_stay_in_their_segment_and_depend_only_on_seed_id_view() {
        for n in [1usize, 2, 7, 16, 17, 36, 48, 200] {
            for id in [1i64, 77, 220847] {
                let a = clip_indices(n, 16, 1, 3, 5, id);
                let b = clip_indices(n, 16, 1, 3, 5, id);
                assert_eq!(a, b);
                let seg = segment(n, 16);
                for view in &a[1..] {
                    for (i, &f) in view.iter().enumerate() {
                        let lo = np_round(seg * i as f64).min(n - 1);
                        let hi = np_round(seg * (i + 1) as f64).min(n - 1);
                        assert!(f >= lo && f <= hi, "n={n} i={i} f={f} [{lo},{hi}]");
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
