//! The reference's random erasing (random_erasing.py `RandomErasing`, built in ssv2.py
//! `_aug_frame` as `RandomErasing(reprob, mode="pixel", max_count=recount,
//! num_splits=recount, device="cpu")`, with the class default `cube=True`).
//!
//! ssv2.py hands it the normalized clip permuted from `[C, T, H, W]` to `[T, C, H, W]`, so
//! the frames are the "batch". With `cube=True` the class makes ONE decision for the whole
//! batch (`_erase_cube`): one probability test, one box count, and each box is drawn once
//! and erased at the same place in every frame, each frame getting its own per-pixel N(0, 1)
//! values (mode "pixel"). With more than one split the first `T / num_splits` frames are
//! left clean (`batch_start`); at the reference default `recount=1` every frame is erased.

use rand::{Rng, RngExt};
use rand_distr::{Distribution, StandardNormal};

use super::resized_crop::{py_round, uniform, CropBox};

/// The erasing configuration (the class defaults beside the ssv2.py arguments).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EraseSpec {
    /// `probability` (`--reprob`, 0.25).
    pub probability: f64,
    /// `min_area`, `max_area`: the box area as a fraction of the frame (0.02, 1/3).
    pub min_area: f64,
    pub max_area: f64,
    /// `min_aspect`, and `max_aspect = 1 / min_aspect` (0.3).
    pub min_aspect: f64,
    pub max_aspect: f64,
    /// `min_count` 1, `max_count` (`--recount`, 1).
    pub min_count: usize,
    pub max_count: usize,
    /// `num_splits` (`--recount`).
    pub num_splits: usize,
}

/// Attempts per box in `_erase_cube` (100, against 10 in the per-image `_erase`).
pub const CUBE_ATTEMPTS: usize = 100;

impl EraseSpec {
    /// The spec ssv2.py builds from `--reprob` and `--recount`.
    pub fn ssv2(probability: f64, count: usize) -> Self {
        let min_aspect = 0.3;
        EraseSpec {
            probability,
            min_area: 0.02,
            max_area: 1.0 / 3.0,
            min_aspect,
            max_aspect: 1.0 / min_aspect,
            min_count: 1,
            // `max_count or min_count`: 0 means min_count.
            max_count: if count == 0 { 1 } else { count },
            num_splits: count,
        }
    }
}

/// The boxes of one clip of `h` × `w` frames: empty when the probability test fails; a box
/// may also be missing when none of its 100 attempts fits (`bw < w` and `bh < h`, strictly,
/// as the reference tests).
pub fn draw_erase_boxes(h: usize, w: usize, spec: &EraseSpec, rng: &mut impl Rng) -> Vec<CropBox> {
    if rng.random::<f64>() > spec.probability {
        return Vec::new();
    }
    let area = (h * w) as f64;
    let count = if spec.min_count >= spec.max_count {
        spec.min_count
    } else {
        rng.random_range(spec.min_count..=spec.max_count)
    };
    let log_aspect = (spec.min_aspect.ln(), spec.max_aspect.ln());
    let mut boxes = Vec::with_capacity(count);
    for _ in 0..count {
        for _ in 0..CUBE_ATTEMPTS {
            let target = uniform(rng, spec.min_area, spec.max_area) * area / count as f64;
            let aspect = uniform(rng, log_aspect.0, log_aspect.1).exp();
            let bh = py_round((target * aspect).sqrt());
            let bw = py_round((target / aspect).sqrt());
            if bw < w && bh < h {
                let y = rng.random_range(0..=h - bh);
                let x = rng.random_range(0..=w - bw);
                boxes.push(CropBox { y, x, h: bh, w: bw });
                break;
            }
        }
    }
    boxes
}

/// The first frame erased (`batch_size // num_splits` when `num_splits > 1`, else 0).
pub fn first_erased_frame(frames: usize, spec: &EraseSpec) -> usize {
    if spec.num_splits > 1 {
        frames / spec.num_splits
    } else {
        0
    }
}

/// Erases a normalized `[T, H, W, 3]` buffer in place as the reference does (see the module
/// note); returns the boxes used.
pub fn random_erase(
    data: &mut [f32],
    frames: usize,
    h: usize,
    w: usize,
    spec: &EraseSpec,
    rng: &mut impl Rng,
) -> Vec<CropBox> {
    let boxes = draw_erase_boxes(h, w, spec, rng);
    let frame_len = h * w * 3;
    if data.len() < frames * frame_len {
        return boxes;
    }
    for b in &boxes {
        for t in first_erased_frame(frames, spec)..frames {
            let f = &mut data[t * frame_len..(t + 1) * frame_len];
            for y in b.y..b.y + b.h {
                let s = (y * w + b.x) * 3;
                for v in &mut f[s..s + b.w * 3] {
                    *v = StandardNormal.sample(rng);
                }
            }
        }
    }
    boxes
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn erases_about_a_quarter_of_clips() {
        let spec = EraseSpec::ssv2(0.25, 1);
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let n = 20_000;
        let hits = (0..n)
            .filter(|_| !draw_erase_boxes(224, 224, &spec, &mut rng).is_empty())
            .count();
        let p = hits as f64 / n as f64;
        // 4 sigma of a binomial(20000, 0.25) is about 0.012.
        assert!((p - 0.25).abs() < 0.012, "{p}");
    }

    #[test]
    fn boxes_have_the_reference_area_and_aspect() {
        let spec = EraseSpec::ssv2(1.0, 1);
        let mut rng = ChaCha8Rng::seed_from_u64(12);
        for _ in 0..5000 {
            let bs = draw_erase_boxes(224, 224, &spec, &mut rng);
            assert_eq!(bs.len(), 1);
            let b = bs[0];
            assert!(b.y + b.h <= 224 && b.x + b.w <= 224 && b.h < 224 && b.w < 224);
            let area = (b.h * b.w) as f64 / (224.0 * 224.0);
            // Sides are rounded: allow a pixel on each.
            let slack = (b.h + b.w + 1) as f64 / (224.0 * 224.0);
            assert!(area >= 0.02 - slack && area <= 1.0 / 3.0 + slack, "{area}");
            if b.h.min(b.w) >= 10 {
                let r = b.h as f64 / b.w as f64;
                let rs = 1.0 + 1.0 / b.h.min(b.w) as f64;
                assert!(r >= 0.3 / rs && r <= rs / 0.3, "{r}");
            }
        }
    }

    #[test]
    fn only_the_box_changes_in_every_frame_with_fresh_noise() {
        let spec = EraseSpec::ssv2(1.0, 1);
        let (t, h, w) = (3, 32, 40);
        let mut data = vec![7.0f32; t * h * w * 3];
        let mut rng = ChaCha8Rng::seed_from_u64(13);
        let boxes = random_erase(&mut data, t, h, w, &spec, &mut rng);
        let b = boxes[0];
        assert!(b.h > 0 && b.w > 0);
        let inside = |y: usize, x: usize| y >= b.y && y < b.y + b.h && x >= b.x && x < b.x + b.w;
        for f in 0..t {
            for y in 0..h {
                for x in 0..w {
                    for c in 0..3 {
                        let v = data[((f * h + y) * w + x) * 3 + c];
                        if inside(y, x) {
                            assert_ne!(v, 7.0);
                        } else {
                            assert_eq!(v, 7.0);
                        }
                    }
                }
            }
        }
        // Same box, different values in each frame.
        let at = |f: usize| data[((f * h + b.y) * w + b.x) * 3];
        assert_ne!(at(0), at(1));
        // The values look standard normal.
        let vals: Vec<f64> = (0..t)
            .flat_map(|f| {
                let data = &data;
                (b.y..b.y + b.h).flat_map(move |y| {
                    (b.x * 3..(b.x + b.w) * 3).map(move |i| data[(f * h + y) * w * 3 + i] as f64)
                })
            })
            .collect();
        let mean = vals.iter().sum::<f64>() / vals.len() as f64;
        let var = vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / vals.len() as f64;
        assert!(mean.abs() < 0.15 && (var - 1.0).abs() < 0.2, "{mean} {var}");
    }

    #[test]
    fn splits_leave_the_first_frames_clean() {
        let spec = EraseSpec::ssv2(1.0, 2);
        assert_eq!(first_erased_frame(16, &spec), 8);
        assert_eq!(first_erased_frame(16, &EraseSpec::ssv2(1.0, 1)), 0);
        let mut data = vec![0.0f32; 4 * 20 * 20 * 3];
        let mut rng = ChaCha8Rng::seed_from_u64(14);
        random_erase(&mut data, 4, 20, 20, &spec, &mut rng);
        assert!(data[..2 * 1200].iter().all(|&v| v == 0.0));
        assert!(data[2 * 1200..].iter().any(|&v| v != 0.0));
    }

    #[test]
    fn tiny_frames_and_short_buffers_do_not_panic() {
        let spec = EraseSpec::ssv2(1.0, 1);
        let mut rng = ChaCha8Rng::seed_from_u64(15);
        for (h, w) in [(0, 0), (1, 1), (2, 1), (1, 5)] {
            let mut d = vec![0.0f32; 2 * h * w * 3];
            random_erase(&mut d, 2, h, w, &spec, &mut rng);
        }
        let mut short = vec![0.0f32; 10];
        random_erase(&mut short, 2, 8, 8, &spec, &mut rng);
        assert!(short.iter().all(|&v| v == 0.0));
    }
}
