//! The image operations of RandAugment on one RGB u8 frame (`[H, W, 3]`), computed the way
//! Pillow computes them (ImageOps, ImageEnhance, `Image.transform(AFFINE)` and
//! `Image.rotate`), so that a frame comes out as Pillow would give it. The notes name the
//! Pillow routine each one follows (libImaging/Geometry.c, Blend.c, Filter.c, Convert.c,
//! PIL/ImageOps.py, PIL/ImageEnhance.py).

pub use super::affine::{affine, affine_into, Interp};

/// Applies a 256-entry table to every byte.
fn apply_lut(f: &mut [u8], lut: &[u8; 256]) {
    for v in f.iter_mut() {
        *v = lut[*v as usize];
    }
}

/// Applies one table per channel.
fn apply_luts(f: &mut [u8], luts: &[[u8; 256]; 3]) {
    for px in f.chunks_exact_mut(3) {
        for c in 0..3 {
            px[c] = luts[c][px[c] as usize];
        }
    }
}

fn histograms(f: &[u8]) -> [[u64; 256]; 3] {
    let mut h = [[0u64; 256]; 3];
    for px in f.chunks_exact(3) {
        for c in 0..3 {
            h[c][px[c] as usize] += 1;
        }
    }
    h
}

/// `255 − v` (ImageOps.invert).
pub fn invert(f: &mut [u8]) {
    for v in f.iter_mut() {
        *v = 255 - *v;
    }
}

/// Keeps the `bits` high bits (ImageOps.posterize); 8 or more leaves the frame as is, 0 makes
/// it black.
pub fn posterize(f: &mut [u8], bits: u32) {
    if bits >= 8 {
        return;
    }
    let mask = !((1u32 << (8 - bits)) - 1) as u8;
    for v in f.iter_mut() {
        *v &= mask;
    }
}

/// `v < threshold ? v : 255 − v` (ImageOps.solarize); a threshold of 256 changes nothing.
pub fn solarize(f: &mut [u8], threshold: i32) {
    let mut lut = [0u8; 256];
    for (i, l) in lut.iter_mut().enumerate() {
        *l = if (i as i32) < threshold {
            i as u8
        } else {
            255 - i as u8
        };
    }
    apply_lut(f, &lut);
}

/// `v < threshold ? min(255, v + add) : v` (the reference's `solarize_add`).
pub fn solarize_add(f: &mut [u8], add: i32, threshold: i32) {
    let mut lut = [0u8; 256];
    for (i, l) in lut.iter_mut().enumerate() {
        let i = i as i32;
        *l = if i < threshold {
            (i + add).clamp(0, 255) as u8
        } else {
            i as u8
        };
    }
    apply_lut(f, &lut);
}

/// Stretches each channel so its lowest value maps to 0 and its highest to 255, truncating
/// (ImageOps.autocontrast with no cutoff). A channel of one value is left as is.
pub fn autocontrast(f: &mut [u8]) {
    let h = histograms(f);
    let mut luts = [[0u8; 256]; 3];
    for c in 0..3 {
        let lo = h[c].iter().position(|&n| n > 0);
        let hi = h[c].iter().rposition(|&n| n > 0);
        match (lo, hi) {
            (Some(lo), Some(hi)) if hi > lo => {
                let scale = 255.0 / (hi - lo) as f64;
                let offset = -(lo as f64) * scale;
                for (ix, l) in luts[c].iter_mut().enumerate() {
                    *l = ((ix as f64 * scale + offset) as i64).clamp(0, 255) as u8;
                }
            }
            _ => {
                for (ix, l) in luts[c].iter_mut().enumerate() {
                    *l = ix as u8;
                }
            }
        }
    }
    apply_luts(f, &luts);
}

/// Histogram equalization per channel (ImageOps.equalize): with `step` = (pixels − count of
/// the highest value) div 255, value `i` maps to `(step div 2 + Σ_{j<i} h[j]) div step`; a
/// channel with one value or a zero step is left as is.
pub fn equalize(f: &mut [u8]) {
    let h = histograms(f);
    let mut luts = [[0u8; 256]; 3];
    for c in 0..3 {
        let nonzero: Vec<u64> = h[c].iter().copied().filter(|&n| n > 0).collect();
        let step = match nonzero.last() {
            Some(&last) if nonzero.len() > 1 => (nonzero.iter().sum::<u64>() - last) / 255,
            _ => 0,
        };
        if step == 0 {
            for (ix, l) in luts[c].iter_mut().enumerate() {
                *l = ix as u8;
            }
            continue;
        }
        let mut n = step / 2;
        for (i, l) in luts[c].iter_mut().enumerate() {
            // Pillow clips the table to a byte when it builds it.
            *l = (n / step).min(255) as u8;
            n += h[c][i];
        }
    }
    apply_luts(f, &luts);
}

/// Pillow's RGB → L conversion (ITU-R 601-2 in 16-bit fixed point, rounded).
#[inline]
pub fn luma(r: u8, g: u8, b: u8) -> u8 {
    ((r as u32 * 19595 + g as u32 * 38470 + b as u32 * 7471 + 0x8000) >> 16) as u8
}

/// `Image.blend(degenerate, image, alpha)` byte by byte (Blend.c: f32 arithmetic, truncated,
/// clipped only when extrapolating).
#[inline]
fn blend_value(d: u8, v: u8, alpha: f32) -> u8 {
    let t = d as f32 + alpha * ((v as i32 - d as i32) as f32);
    if (0.0..=1.0).contains(&alpha) {
        t as u8
    } else if t <= 0.0 {
        0
    } else if t >= 255.0 {
        255
    } else {
        t as u8
    }
}

/// Blends the frame with a degenerate version of it given per byte by `degen(i)`.
fn blend_with(f: &mut [u8], alpha: f32, degen: impl Fn(usize, &[u8]) -> u8) {
    if alpha == 1.0 {
        return;
    }
    for (p, px) in f.chunks_exact_mut(3).enumerate() {
        let d: [u8; 3] = std::array::from_fn(|c| degen(p * 3 + c, px));
        for c in 0..3 {
            px[c] = if alpha == 0.0 {
                d[c]
            } else {
                blend_value(d[c], px[c], alpha)
            };
        }
    }
}

/// ImageEnhance.Color: blend with the frame's grey (L) version.
pub fn color(f: &mut [u8], factor: f64) {
    blend_with(f, factor as f32, |_, px| luma(px[0], px[1], px[2]));
}

/// ImageEnhance.Contrast: blend with a flat grey at the rounded mean of the L version.
pub fn contrast(f: &mut [u8], factor: f64) {
    let n = f.len() / 3;
    let sum: u64 = f
        .chunks_exact(3)
        .map(|p| luma(p[0], p[1], p[2]) as u64)
        .sum();
    let mean = if n == 0 {
        0
    } else {
        (sum as f64 / n as f64 + 0.5) as u8
    };
    blend_with(f, factor as f32, |_, _| mean);
}

/// ImageEnhance.Brightness: blend with black.
pub fn brightness(f: &mut [u8], factor: f64) {
    blend_with(f, factor as f32, |_, _| 0);
}

/// Pillow's SMOOTH filter (3×3 kernel 1 1 1 / 1 5 1 / 1 1 1 over 13, rounded), with the
/// border rows and columns copied unfiltered; frames under 3×3 are copied whole.
pub fn smooth(f: &[u8], w: usize, h: usize) -> Vec<u8> {
    let mut out = f.to_vec();
    if w < 3 || h < 3 {
        return out;
    }
    let k: [f32; 9] = [1.0, 1.0, 1.0, 1.0, 5.0, 1.0, 1.0, 1.0, 1.0].map(|v: f32| v / 13.0);
    let row = w * 3;
    for y in 1..h - 1 {
        let up = &f[(y - 1) * row..y * row];
        let mid = &f[y * row..(y + 1) * row];
        let down = &f[(y + 1) * row..(y + 2) * row];
        let out_row = &mut out[y * row..(y + 1) * row];
        // Bytes 3..row−3 are the channels of the inner pixels; neighbours are ±3 bytes.
        for i in 3..row - 3 {
            let k3 = |r: &[u8], kk: &[f32]| {
                r[i - 3] as f32 * kk[0] + r[i] as f32 * kk[1] + r[i + 3] as f32 * kk[2]
            };
            // Same order of sums as Filter.c: offset, the next row, this row, the last.
            let mut ss = 0.5f32;
            ss += k3(down, &k[0..3]);
            ss += k3(mid, &k[3..6]);
            ss += k3(up, &k[6..9]);
            out_row[i] = ss.clamp(0.0, 255.0) as u8;
        }
    }
    out
}

/// ImageEnhance.Sharpness: blend with the SMOOTH-filtered frame.
pub fn sharpness(f: &mut [u8], w: usize, h: usize, factor: f64) {
    let d = smooth(f, w, h);
    let alpha = factor as f32;
    if alpha == 1.0 {
        return;
    }
    for (v, &dv) in f.iter_mut().zip(&d) {
        *v = if alpha == 0.0 {
            dv
        } else {
            blend_value(dv, *v, alpha)
        };
    }
}

/// Python's `round(v, 15)`, which Pillow applies to the rotation's cosine and sine (here
/// through a scaled f64 round, which can differ from Python's correctly rounded decimal
/// result in the last bit).
fn round15(v: f64) -> f64 {
    (v * 1e15).round() / 1e15
}

/// The inverse affine matrix of `Image.rotate(degrees)` (counter-clockwise, about the frame
/// centre (w/2, h/2), same size).
pub fn rotate_matrix(w: usize, h: usize, degrees: f64) -> [f64; 6] {
    let a = -(degrees.rem_euclid(360.0)).to_radians();
    let (cx, cy) = (w as f64 / 2.0, h as f64 / 2.0);
    let (c, s) = (round15(a.cos()), round15(a.sin()));
    let mut m = [c, s, 0.0, -s, c, 0.0];
    m[2] = m[0] * -cx + m[1] * -cy + m[2] + cx;
    m[5] = m[3] * -cx + m[4] * -cy + m[5] + cy;
    m
}

/// `Image.rotate(degrees, resample, fillcolor=fill)`; Pillow's exact shortcuts (0°, 180°,
/// and 90°/270° of a square frame) are what the affine gives at pixel centres as well, so
/// only 0° is special-cased.
pub fn rotate(
    src: &[u8],
    w: usize,
    h: usize,
    degrees: f64,
    interp: Interp,
    fill: [u8; 3],
) -> Vec<u8> {
    if degrees.rem_euclid(360.0) == 0.0 {
        return src.to_vec();
    }
    affine(src, w, h, rotate_matrix(w, h, degrees), interp, fill)
}

/// The reference's `shear_x`: matrix (1, factor, 0, 0, 1, 0).
pub fn shear_x(
    src: &[u8],
    w: usize,
    h: usize,
    factor: f64,
    interp: Interp,
    fill: [u8; 3],
) -> Vec<u8> {
    affine(src, w, h, [1.0, factor, 0.0, 0.0, 1.0, 0.0], interp, fill)
}

/// The reference's `shear_y`: matrix (1, 0, 0, factor, 1, 0).
pub fn shear_y(
    src: &[u8],
    w: usize,
    h: usize,
    factor: f64,
    interp: Interp,
    fill: [u8; 3],
) -> Vec<u8> {
    affine(src, w, h, [1.0, 0.0, 0.0, factor, 1.0, 0.0], interp, fill)
}

/// The reference's `translate_x_rel`: samples `pct · W` pixels to the right, i.e. moves the
/// content left by that much (matrix (1, 0, pct·W, 0, 1, 0)).
pub fn translate_x_rel(
    src: &[u8],
    w: usize,
    h: usize,
    pct: f64,
    interp: Interp,
    fill: [u8; 3],
) -> Vec<u8> {
    affine(
        src,
        w,
        h,
        [1.0, 0.0, pct * w as f64, 0.0, 1.0, 0.0],
        interp,
        fill,
    )
}

/// The reference's `translate_y_rel`: matrix (1, 0, 0, 0, 1, pct·H).
pub fn translate_y_rel(
    src: &[u8],
    w: usize,
    h: usize,
    pct: f64,
    interp: Interp,
    fill: [u8; 3],
) -> Vec<u8> {
    affine(
        src,
        w,
        h,
        [1.0, 0.0, 0.0, 0.0, 1.0, pct * h as f64],
        interp,
        fill,
    )
}
