//! The reference's training crop (video_transforms.py `_get_param_spatial_crop` and
//! `random_resized_crop`, reached from ssv2.py `spatial_sampling` with `spatial_idx=-1`,
//! `scale=[0.08, 1.0]`, `aspect_ratio=[0.75, 1.3333]`, no flip for SSv2): one box per clip,
//! the same for every frame, drawn Inception-style, then every frame's box resized to
//! `out` × `out` with bilinear interpolation (half-pixel centres, no antialiasing).

use rand::{Rng, RngExt};
use rayon::prelude::*;

use super::clip::{normalize_value, Clip};
use super::resize::{bilinear_plan, resize_rows_f32};

/// Rows `y..y+h`, columns `x..x+w` of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CropBox {
    pub y: usize,
    pub x: usize,
    pub h: usize,
    pub w: usize,
}

/// The number of attempts of the reference before it falls back (its `num_repeat=10`).
pub const ATTEMPTS: usize = 10;

/// Python's `int(round(v))` (round half to even); non-finite or negative values give 0.
pub(crate) fn py_round(v: f64) -> usize {
    if v.is_finite() && v > 0.0 {
        v.round_ties_even() as usize
    } else {
        0
    }
}

/// `random.uniform(a, b)`.
pub(crate) fn uniform(rng: &mut impl Rng, a: f64, b: f64) -> f64 {
    a + (b - a) * rng.random::<f64>()
}

/// Up to `attempts` draws of a box of area `U(scale) · h · w` and aspect ratio (w/h)
/// log-uniform in `ratio`; the first that fits (`0 < bw ≤ w`, `0 < bh ≤ h`) is placed
/// uniformly. `None` when none fits.
pub fn try_draw_box(
    h: usize,
    w: usize,
    scale: [f64; 2],
    ratio: [f64; 2],
    attempts: usize,
    rng: &mut impl Rng,
) -> Option<CropBox> {
    let area = (h * w) as f64;
    let log_ratio = (ratio[0].ln(), ratio[1].ln());
    for _ in 0..attempts {
        let target = uniform(rng, scale[0], scale[1]) * area;
        let aspect = uniform(rng, log_ratio.0, log_ratio.1).exp();
        let bw = py_round((target * aspect).sqrt());
        let bh = py_round((target / aspect).sqrt());
        if bw > 0 && bw <= w && bh > 0 && bh <= h {
            let y = rng.random_range(0..=h - bh);
            let x = rng.random_range(0..=w - bw);
            return Some(CropBox { y, x, h: bh, w: bw });
        }
    }
    None
}

/// The reference's fallback: the centred box of the whole frame, narrowed to the nearest
/// bound of `ratio` when the frame's own aspect ratio lies outside it.
pub fn fallback_box(h: usize, w: usize, ratio: [f64; 2]) -> CropBox {
    let in_ratio = w as f64 / h as f64;
    let (lo, hi) = (ratio[0].min(ratio[1]), ratio[0].max(ratio[1]));
    let (bh, bw) = if in_ratio < lo {
        (py_round(w as f64 / lo).min(h), w)
    } else if in_ratio > hi {
        (h, py_round(h as f64 * hi).min(w))
    } else {
        (h, w)
    };
    CropBox {
        y: (h - bh) / 2,
        x: (w - bw) / 2,
        h: bh,
        w: bw,
    }
}

/// The box for a clip of `h` × `w` frames: [`try_draw_box`] with the reference's 10
/// attempts, else [`fallback_box`].
pub fn draw_box(
    h: usize,
    w: usize,
    scale: [f64; 2],
    ratio: [f64; 2],
    rng: &mut impl Rng,
) -> CropBox {
    try_draw_box(h, w, scale, ratio, ATTEMPTS, rng).unwrap_or_else(|| fallback_box(h, w, ratio))
}

/// `b` cut to a frame of `h` × `w`.
fn clamp_box(b: CropBox, h: usize, w: usize) -> CropBox {
    let y = b.y.min(h);
    let x = b.x.min(w);
    CropBox {
        y,
        x,
        h: b.h.min(h - y),
        w: b.w.min(w - x),
    }
}

/// Crops box `b` of every frame of a normalized `[T, H, W, 3]` buffer and resizes it to
/// `out` × `out` (torch `interpolate(bilinear, align_corners=False)` on the `[C, T, h, w]`
/// crop). Returns `[T, out, out, 3]`. An empty box (or frame) gives zeros.
pub fn resized_crop_f32(
    data: &[f32],
    frames: usize,
    h: usize,
    w: usize,
    b: CropBox,
    out: usize,
) -> Vec<f32> {
    let b = clamp_box(b, h, w);
    let mut dst = vec![0f32; frames * out * out * 3];
    let frame_len = h * w * 3;
    if b.h == 0 || b.w == 0 || out == 0 || data.len() < frames * frame_len {
        return dst;
    }
    let (ys, xs) = (bilinear_plan(b.h, out), bilinear_plan(b.w, out));
    dst.par_chunks_mut(out * out * 3)
        .zip(data.par_chunks(frame_len))
        .for_each(|(d, f)| {
            let row = |y: usize| {
                let s = ((b.y + y) * w + b.x) * 3;
                &f[s..s + b.w * 3]
            };
            resize_rows_f32(row, &ys, &xs, d);
        });
    dst
}

/// The same as normalizing the whole u8 clip with `mean`/`std` and then calling
/// [`resized_crop_f32`], bit for bit, but normalizing only the pixels inside the box.
pub fn resized_crop_normalized(
    clip: &Clip,
    b: CropBox,
    out: usize,
    mean: [f32; 3],
    std: [f32; 3],
) -> Vec<f32> {
    let clip = clip.conformed();
    let (h, w) = (clip.height, clip.width);
    let b = clamp_box(b, h, w);
    let mut dst = vec![0f32; clip.frames * out * out * 3];
    if b.h == 0 || b.w == 0 || out == 0 {
        return dst;
    }
    let (ys, xs) = (bilinear_plan(b.h, out), bilinear_plan(b.w, out));
    dst.par_chunks_mut(out * out * 3)
        .zip(clip.data.par_chunks(clip.frame_len()))
        .for_each(|(d, f)| {
            let mut window = Vec::with_capacity(b.h * b.w * 3);
            for y in b.y..b.y + b.h {
                let s = (y * w + b.x) * 3;
                for (i, &v) in f[s..s + b.w * 3].iter().enumerate() {
                    window.push(normalize_value(v, mean[i % 3], std[i % 3]));
                }
            }
            let row_len = b.w * 3;
            resize_rows_f32(|y| &window[y * row_len..(y + 1) * row_len], &ys, &xs, d);
        });
    dst
}

#[cfg(test)]
mod tests {
    use super::super::clip::{normalize, IMAGENET_MEAN, IMAGENET_STD};
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    const SCALE: [f64; 2] = [0.08, 1.0];
    const RATIO: [f64; 2] = [0.75, 1.3333];

    #[test]
    fn drawn_boxes_fit_and_respect_area_and_ratio() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for &(h, w) in &[(240, 427), (427, 240), (224, 224), (17, 31), (3, 3)] {
            for _ in 0..2000 {
                let Some(b) = try_draw_box(h, w, SCALE, RATIO, ATTEMPTS, &mut rng) else {
                    continue;
                };
                assert!(
                    b.h > 0 && b.w > 0 && b.y + b.h <= h && b.x + b.w <= w,
                    "{b:?}"
                );
                if h >= 100 {
                    // Rounding the sides moves area and ratio by at most a pixel each.
                    let area = (b.h * b.w) as f64 / (h * w) as f64;
                    let slack = (b.h + b.w + 1) as f64 / (h * w) as f64;
                    assert!(
                        area >= SCALE[0] - slack && area <= SCALE[1] + slack,
                        "{area}"
                    );
                    let r = b.w as f64 / b.h as f64;
                    let rs = 1.0 / b.h.min(b.w) as f64;
                    assert!(
                        r >= RATIO[0] * (1.0 - rs) && r <= RATIO[1] * (1.0 + rs),
                        "{r}"
                    );
                }
            }
        }
    }

    #[test]
    fn positions_cover_the_frame() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let (mut max_y, mut max_x) = (0, 0);
        for _ in 0..3000 {
            let b = draw_box(240, 427, SCALE, RATIO, &mut rng);
            max_y = max_y.max(b.y + b.h);
            max_x = max_x.max(b.x + b.w);
        }
        assert_eq!((max_y, max_x), (240, 427));
    }

    #[test]
    fn falls_back_to_a_centred_box_when_no_attempt_fits() {
        // A 1 x 40 strip: every attempt is taller than a row or wider than it is allowed.
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        assert_eq!(
            try_draw_box(1, 40, [0.9, 1.0], RATIO, ATTEMPTS, &mut rng),
            None
        );
        // Wider than 1.3333: full height, width round(1 · 1.3333) = 1, centred.
        let b = draw_box(1, 40, [0.9, 1.0], RATIO, &mut rng);
        assert_eq!(
            b,
            CropBox {
                y: 0,
                x: 19,
                h: 1,
                w: 1
            }
        );
        // Taller than 0.75: full width, height round(40 / 0.75) = 53 → clipped to 100's box.
        assert_eq!(
            fallback_box(100, 40, RATIO),
            CropBox {
                y: 23,
                x: 0,
                h: 53,
                w: 40
            }
        );
        // Inside the bounds: the whole frame.
        assert_eq!(
            fallback_box(30, 32, RATIO),
            CropBox {
                y: 0,
                x: 0,
                h: 30,
                w: 32
            }
        );
        // Degenerate frames and ratios do not panic.
        let _ = draw_box(0, 0, SCALE, RATIO, &mut rng);
        let _ = draw_box(5, 5, SCALE, [0.0, -1.0], &mut rng);
        let _ = draw_box(5, 5, [f64::NAN, 2.0], RATIO, &mut rng);
    }

    #[test]
    fn py_round_is_half_to_even() {
        assert_eq!(
            [py_round(0.5), py_round(1.5), py_round(2.5), py_round(2.6)],
            [0, 2, 2, 3]
        );
    }

    #[test]
    fn whole_frame_at_the_same_size_is_the_identity() {
        let data: Vec<f32> = (0..2 * 6 * 6 * 3).map(|i| i as f32 * 0.37 - 3.0).collect();
        let b = CropBox {
            y: 0,
            x: 0,
            h: 6,
            w: 6,
        };
        assert_eq!(resized_crop_f32(&data, 2, 6, 6, b, 6), data);
    }

    #[test]
    fn constant_input_stays_constant() {
        let data = vec![0.75f32; 3 * 20 * 30 * 3];
        let b = CropBox {
            y: 3,
            x: 4,
            h: 11,
            w: 17,
        };
        for out in [1, 7, 32] {
            let r = resized_crop_f32(&data, 3, 20, 30, b, out);
            assert_eq!(r.len(), 3 * out * out * 3);
            assert!(r.iter().all(|&v| v == 0.75));
        }
    }

    #[test]
    fn fused_normalization_equals_normalize_then_crop() {
        let data: Vec<u8> = (0..3 * 20 * 30 * 3).map(|i| (i * 13 % 256) as u8).collect();
        let clip = Clip::new(3, 20, 30, data).unwrap();
        let b = CropBox {
            y: 2,
            x: 5,
            h: 13,
            w: 9,
        };
        let full = normalize(&clip, IMAGENET_MEAN, IMAGENET_STD);
        let a = resized_crop_f32(&full, 3, 20, 30, b, 16);
        let f = resized_crop_normalized(&clip, b, 16, IMAGENET_MEAN, IMAGENET_STD);
        assert_eq!(a, f);
    }

    #[test]
    fn a_box_past_the_edge_is_clipped_and_empty_boxes_give_zeros() {
        let data = vec![1.0f32; 4 * 4 * 3];
        let r = resized_crop_f32(
            &data,
            1,
            4,
            4,
            CropBox {
                y: 2,
                x: 2,
                h: 9,
                w: 9,
            },
            3,
        );
        assert!(r.iter().all(|&v| v == 1.0));
        let r = resized_crop_f32(
            &data,
            1,
            4,
            4,
            CropBox {
                y: 9,
                x: 0,
                h: 2,
                w: 2,
            },
            3,
        );
        assert_eq!(r, vec![0.0; 27]);
    }
}
