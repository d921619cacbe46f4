//! Mixup and CutMix of a training batch with soft targets, as VideoMAE's fine-tuning uses them
//! (timm's `Mixup` in `batch` mode: `--mixup 0.8 --cutmix 1.0 --mixup_prob 1.0
//! --mixup_switch_prob 0.5 --smoothing 0.1`, loss `SoftTargetCrossEntropy`):
//! - per batch, CutMix with probability `switch_prob` (when both are on), else Mixup;
//!   `lam ~ Beta(alpha, alpha)` of the chosen one;
//! - Mixup: `x_i ← lam · x_i + (1 − lam) · x_{B−1−i}` (the batch mixed with its reverse);
//! - CutMix: a box of side `int(H·sqrt(1 − lam))` × `int(W·sqrt(1 − lam))` centred at a
//!   uniform pixel, clipped to the image, pasted from `x_{B−1−i}` into `x_i` in every frame;
//!   `lam` is then corrected to the area actually kept (timm's `correct_lam`);
//! - targets: `lam · smooth(y_i) + (1 − lam) · smooth(y_{B−1−i})`, where `smooth` puts
//!   `1 − s + s/C` on the class and `s/C` elsewhere.
//!
//! Inputs here are the video tubelet rows of `ssv2.tokens` (token `(ti, row, col)` holds
//! `frame[ti·t + dt][row·p + dy][col·p + dx][ch]`, see `crate::ssv2::tubelets`), so a CutMix
//! box is a set of (row·p + dy, col·p + dx) pixels in every token.

use rand::{Rng, RngExt};
use rand_distr::{Beta, Distribution};

/// The mixing configuration (`mixup`, `cutmix`, `mixup_switch_prob`, `label_smoothing`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MixSpec {
    pub mixup_alpha: f64,
    pub cutmix_alpha: f64,
    pub switch_prob: f64,
    pub smoothing: f64,
}

impl MixSpec {
    pub fn enabled(&self) -> bool {
        self.mixup_alpha > 0.0 || self.cutmix_alpha > 0.0
    }
}

/// What one batch gets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mix {
    Mixup {
        lam: f64,
    },
    /// Pixel rows `y0..y1` and columns `x0..x1` come from the partner; `lam` is the area kept.
    Cutmix {
        lam: f64,
        y0: usize,
        y1: usize,
        x0: usize,
        x1: usize,
    },
}

impl Mix {
    pub fn lam(&self) -> f64 {
        match *self {
            Mix::Mixup { lam } | Mix::Cutmix { lam, .. } => lam,
        }
    }
}

fn beta(alpha: f64, rng: &mut impl Rng) -> f64 {
    // alpha > 0 is checked by the caller's config validation; a bad value mixes nothing.
    Beta::new(alpha, alpha).map_or(1.0, |b| b.sample(rng))
}

/// Draws the batch's mix for images of `h` × `w` pixels (timm `_params_per_batch` with
/// `mix_prob = 1`, then `cutmix_bbox_and_lam`).
pub fn draw(spec: &MixSpec, h: usize, w: usize, rng: &mut impl Rng) -> Option<Mix> {
    let (cutmix, lam) = match (spec.mixup_alpha > 0.0, spec.cutmix_alpha > 0.0) {
        (true, true) => {
            let cut = rng.random::<f64>() < spec.switch_prob;
            let a = if cut {
                spec.cutmix_alpha
            } else {
                spec.mixup_alpha
            };
            (cut, beta(a, rng))
        }
        (true, false) => (false, beta(spec.mixup_alpha, rng)),
        (false, true) => (true, beta(spec.cutmix_alpha, rng)),
        (false, false) => return None,
    };
    if !cutmix {
        return Some(Mix::Mixup { lam });
    }
    let ratio = (1.0 - lam).max(0.0).sqrt();
    let (ch, cw) = ((h as f64 * ratio) as usize, (w as f64 * ratio) as usize);
    let cy = rng.random_range(0..h.max(1));
    let cx = rng.random_range(0..w.max(1));
    let clip = |c: usize, half: usize, lo: bool, n: usize| {
        if lo {
            c.saturating_sub(half)
        } else {
            (c + half).min(n)
        }
    };
    let (y0, y1) = (clip(cy, ch / 2, true, h), clip(cy, ch / 2, false, h));
    let (x0, x1) = (clip(cx, cw / 2, true, w), clip(cx, cw / 2, false, w));
    let area = ((y1 - y0) * (x1 - x0)) as f64;
    let lam = 1.0 - area / (h * w).max(1) as f64;
    Some(Mix::Cutmix {
        lam,
        y0,
        y1,
        x0,
        x1,
    })
}

/// The soft targets [B · C] of labels mixed with their reverse.
pub fn soft_targets(labels: &[u32], classes: usize, lam: f64, smoothing: f64) -> Vec<f32> {
    let off = smoothing / classes.max(1) as f64;
    let on = 1.0 - smoothing + off;
    let b = labels.len();
    let mut out = vec![0f32; b * classes];
    for i in 0..b {
        for (label, weight) in [(labels[i], lam), (labels[b - 1 - i], 1.0 - lam)] {
            let row = &mut out[i * classes..(i + 1) * classes];
            for (c, v) in row.iter_mut().enumerate() {
                let t = if c == label as usize { on } else { off };
                *v += (weight * t) as f32;
            }
        }
    }
    out
}

/// The layout of a video sample's tubelet rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TubeletGeometry {
    /// Tubelet frames t, patch p, crop C (pixels per side).
    pub tubelet_frames: usize,
    pub patch: usize,
    pub crop: usize,
}

impl TubeletGeometry {
    /// Whether element `j` of token `k`'s row is a pixel inside rows `y0..y1`, columns
    /// `x0..x1`.
    fn inside(&self, k: usize, j: usize, (y0, y1, x0, x1): (usize, usize, usize, usize)) -> bool {
        let p = self.patch;
        let g = self.crop / p.max(1);
        let s = k % (g * g).max(1);
        let (row, col) = (s / g.max(1), s % g.max(1));
        let dx = (j / 3) % p;
        let dy = (j / (3 * p)) % p;
        let (y, x) = (row * p + dy, col * p + dx);
        (y0..y1).contains(&y) && (x0..x1).contains(&x)
    }
}

/// `s ← lam · s + (1 − lam) · partner`.
fn blend(s: &mut [f32], partner: &[f32], lam: f64) {
    let (l, r) = (lam as f32, (1.0 - lam) as f32);
    for (v, o) in s.iter_mut().zip(partner) {
        *v = l * *v + r * o;
    }
}

/// Mixes a batch of samples in place (each `tokens · dim` floats, sample-major).
pub fn apply(samples: &mut [Vec<f32>], mix: &Mix, geo: &TubeletGeometry, dim: usize) {
    let b = samples.len();
    let orig: Vec<Vec<f32>> = samples.to_vec();
    for (i, s) in samples.iter_mut().enumerate() {
        let partner = &orig[b - 1 - i];
        match *mix {
            Mix::Mixup { lam } => blend(s, partner, lam),
            Mix::Cutmix { y0, y1, x0, x1, .. } => {
                for (e, (v, o)) in s.iter_mut().zip(partner).enumerate() {
                    if geo.inside(e / dim, e % dim, (y0, y1, x0, x1)) {
                        *v = *o;
                    }
                }
            }
        }
    }
}

/// Mixes a batch of images in place (each `h · w · 3` floats, channels last): the same rule
/// as [`apply`], with the CutMix box in pixel coordinates.
pub fn apply_images(samples: &mut [Vec<f32>], mix: &Mix, h: usize, w: usize) {
    let b = samples.len();
    let orig: Vec<Vec<f32>> = samples.to_vec();
    for (i, s) in samples.iter_mut().enumerate() {
        let partner = &orig[b - 1 - i];
        match *mix {
            Mix::Mixup { lam } => blend(s, partner, lam),
            Mix::Cutmix { y0, y1, x0, x1, .. } => {
                for y in y0..y1.min(h) {
                    let (a, z) = ((y * w + x0) * 3, (y * w + x1.min(w)) * 3);
                    if z <= s.len() && z <= partner.len() && a < z {
                        s[a..z].copy_from_slice(&partner[a..z]);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn soft_targets_mix_both_labels_with_smoothing() {
        // 3 classes, s = 0.3: on = 0.8, off = 0.1; lam 0.25.
        let t = soft_targets(&[0, 2], 3, 0.25, 0.3);
        let want = [
            0.25 * 0.8 + 0.75 * 0.1,
            0.1,
            0.25 * 0.1 + 0.75 * 0.8,
            0.25 * 0.1 + 0.75 * 0.8,
            0.1,
            0.25 * 0.8 + 0.75 * 0.1,
        ];
        for (a, b) in t.iter().zip(want) {
            assert!((*a as f64 - b).abs() < 1e-6, "{t:?}");
        }
        for row in t.chunks(3) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        }
    }

    #[test]
    fn mixup_mixes_each_sample_with_its_reverse() {
        let mut s = vec![vec![1.0f32; 4], vec![3.0; 4]];
        let geo = TubeletGeometry {
            tubelet_frames: 1,
            patch: 1,
            crop: 2,
        };
        apply(&mut s, &Mix::Mixup { lam: 0.25 }, &geo, 3);
        assert_eq!(s[0], vec![0.25 + 0.75 * 3.0; 4]);
        assert_eq!(s[1], vec![0.75 + 0.25 * 3.0; 4]);
    }

    #[test]
    fn cutmix_pastes_the_box_in_every_frame_and_lam_is_the_kept_area() {
        // T = 2 frames, t = 1, p = 2, C = 4: 2 × 2 × 2 tokens of 2·2·3 = 12 values.
        let geo = TubeletGeometry {
            tubelet_frames: 1,
            patch: 2,
            crop: 4,
        };
        let (tokens, dim) = (8, 12);
        // Sample 1 holds each element's pixel (y, x) as y·10 + x; sample 0 is zeros.
        let mut pix = vec![0f32; tokens * dim];
        for k in 0..tokens {
            for j in 0..dim {
                let s = k % 4;
                let (row, col) = (s / 2, s % 2);
                let (dx, dy) = ((j / 3) % 2, (j / 6) % 2);
                pix[k * dim + j] = ((row * 2 + dy) * 10 + col * 2 + dx) as f32;
            }
        }
        let mut s = vec![vec![-1.0f32; tokens * dim], pix.clone()];
        let mix = Mix::Cutmix {
            lam: 0.75,
            y0: 1,
            y1: 3,
            x0: 0,
            x1: 2,
        };
        apply(&mut s, &mix, &geo, dim);
        // Sample 0 got exactly the pixels y in 1..3, x in 0..2 of sample 1, in both frames.
        let mut pasted = 0;
        for (e, v) in s[0].iter().enumerate() {
            if *v >= 0.0 {
                let (y, x) = ((*v as usize) / 10, (*v as usize) % 10);
                assert!((1..3).contains(&y) && (0..2).contains(&x), "{v}");
                assert_eq!(*v, pix[e]);
                pasted += 1;
            }
        }
        assert_eq!(pasted, 2 * 2 * 2 * 3, "4 pixels × 3 channels × 2 frames");
        // The draw's lam is the area kept.
        let spec = MixSpec {
            mixup_alpha: 0.0,
            cutmix_alpha: 1.0,
            switch_prob: 0.5,
            smoothing: 0.1,
        };
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        for _ in 0..50 {
            match draw(&spec, 224, 224, &mut rng) {
                Some(Mix::Cutmix {
                    lam,
                    y0,
                    y1,
                    x0,
                    x1,
                }) => {
                    assert!(y1 <= 224 && x1 <= 224 && y0 <= y1 && x0 <= x1);
                    let kept = 1.0 - ((y1 - y0) * (x1 - x0)) as f64 / (224.0 * 224.0);
                    assert!((lam - kept).abs() < 1e-12);
                }
                other => panic!("cutmix only: {other:?}"),
            }
        }
    }

    #[test]
    fn both_on_switches_between_them_and_lam_follows_beta() {
        let spec = MixSpec {
            mixup_alpha: 0.8,
            cutmix_alpha: 1.0,
            switch_prob: 0.5,
            smoothing: 0.1,
        };
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let (mut cut, mut sum_mix, mut n_mix) = (0, 0.0, 0);
        for _ in 0..4000 {
            match draw(&spec, 64, 64, &mut rng).unwrap() {
                Mix::Cutmix { .. } => cut += 1,
                Mix::Mixup { lam } => {
                    assert!((0.0..=1.0).contains(&lam));
                    sum_mix += lam;
                    n_mix += 1;
                }
            }
        }
        assert!((1800..2200).contains(&cut), "{cut} of 4000 were cutmix");
        // Beta(a, a) has mean 1/2.
        assert!((sum_mix / n_mix as f64 - 0.5).abs() < 0.03);
    }
}
