//! Pillow's `Image.transform(AFFINE)` engine (libImaging/Geometry.c's generic transform with
//! its bilinear and bicubic filters), which RandAugment's rotate, shear and translate ops
//! (`pil_ops.rs`) drive: the same f64 operations in the same order, so a frame comes out as
//! Pillow gives it.

/// The resampling filter of the geometric operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Interp {
    Bilinear,
    Bicubic,
}

/// One bicubic step of Geometry.c's `BICUBIC` macro, with its coefficients and its Horner
/// order so the f64 result is the same: the value at `d` ∈ [0, 1) between `v2` and `v3`.
/// This is the a = −1 cubic convolution kernel (`p2 = v3 − v1`, not half that), which is what
/// `Image.transform` and `Image.rotate` use; `Image.resize` uses a = −0.5 instead.
#[inline]
fn cubic(v1: f64, v2: f64, v3: f64, v4: f64, d: f64) -> f64 {
    if d == 0.0 {
        // p1 + 0·(…) is exactly p1: skip the rest.
        return v2;
    }
    let p1 = v2;
    let p2 = -v1 + v3;
    let p3 = 2.0 * (v1 - v2) + v3 - v4;
    let p4 = -v1 + v2 - v3 + v4;
    p1 + d * (p2 + d * (p3 + d * p4))
}

/// `Image.transform(size, AFFINE, (a, b, c, d, e, f), resample, fillcolor)` of a frame onto
/// a frame of the same size: output pixel (x, y) samples the input at
/// `(a·(x+½) + b·(y+½) + c, d·(x+½) + e·(y+½) + f)`; points outside the input get `fill`.
/// Bilinear and bicubic filters as Geometry.c (edge-clamped neighbours, truncation to u8).
pub fn affine(
    src: &[u8],
    w: usize,
    h: usize,
    m: [f64; 6],
    interp: Interp,
    fill: [u8; 3],
) -> Vec<u8> {
    let mut out = vec![0u8; src.len()];
    affine_into(src, w, h, m, interp, fill, &mut out);
    out
}

/// Geometry.c's `FLOOR` for the sample coordinates, which are ≥ −0.5 once inside the frame.
#[inline(always)]
fn floor_i(v: f64) -> i64 {
    if v < 0.0 {
        v.floor() as i64
    } else {
        v as i64
    }
}

/// Geometry.c's bicubic result to u8: clipped, then truncated.
#[inline(always)]
fn cubic_to_u8(v: f64) -> u8 {
    if v <= 0.0 {
        0
    } else if v >= 255.0 {
        255
    } else {
        v as u8
    }
}

/// One pixel's channels as four f64 lanes (R, G, B, 0), so a cubic step is one vector
/// operation per term (the same IEEE operations per lane as [`cubic`], so the same values).
type Px = [f64; 4];

#[inline(always)]
fn px(r: &[u8], i: usize) -> Px {
    [r[i] as f64, r[i + 1] as f64, r[i + 2] as f64, 0.0]
}

/// [`cubic`] on every lane.
#[inline(always)]
fn cubic4(v1: Px, v2: Px, v3: Px, v4: Px, d: f64) -> Px {
    if d == 0.0 {
        return v2;
    }
    std::array::from_fn(|c| {
        let p1 = v2[c];
        let p2 = -v1[c] + v3[c];
        let p3 = 2.0 * (v1[c] - v2[c]) + v3[c] - v4[c];
        let p4 = -v1[c] + v2[c] - v3[c] + v4[c];
        p1 + d * (p2 + d * (p3 + d * p4))
    })
}

/// The horizontal bicubic step of one source row (`w` RGB pixels) at column `ix + dx`,
/// neighbours clamped to the row: exactly the pixel itself when `dx` is 0.
#[inline(always)]
fn hcubic(r: &[u8], w: usize, ix: i64, dx: f64) -> Px {
    if dx == 0.0 {
        return px(r, ix.clamp(0, w as i64 - 1) as usize * 3);
    }
    let [a, b, c, d] = if ix >= 1 && ix + 2 < w as i64 {
        let s = (ix - 1) as usize * 3;
        [px(r, s), px(r, s + 3), px(r, s + 6), px(r, s + 9)]
    } else {
        let last = w as i64 - 1;
        [-1, 0, 1, 2].map(|k| px(r, (ix + k).clamp(0, last) as usize * 3))
    };
    cubic4(a, b, c, d, dx)
}

/// [`hcubic`] on a row already widened to [`Px`] (one load per neighbour, no conversions):
/// the same values.
#[inline(always)]
fn hcubic_px(r: &[Px], ix: i64, dx: f64) -> Px {
    let last = r.len() as i64 - 1;
    if dx == 0.0 {
        return r[ix.clamp(0, last) as usize];
    }
    if ix >= 1 && ix + 2 <= last {
        let s = (ix - 1) as usize;
        return cubic4(r[s], r[s + 1], r[s + 2], r[s + 3], dx);
    }
    let [a, b, c, d] = [-1, 0, 1, 2].map(|k| r[(ix + k).clamp(0, last) as usize]);
    cubic4(a, b, c, d, dx)
}

/// [`affine`] into `dst` (same length as `src`). Where the CPU has AVX2, bicubic (the image
/// recipe's filter) runs four output pixels per vector (`affine_avx2`), bilinear as this
/// file's loop compiled for AVX2; the values do not change (no fused multiply-adds, the same
/// operations in the same order per output value). Other CPUs run the scalar loop.
pub fn affine_into(
    src: &[u8],
    w: usize,
    h: usize,
    m: [f64; 6],
    interp: Interp,
    fill: [u8; 3],
    dst: &mut [u8],
) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        if interp == Interp::Bicubic {
            bicubic_avx2(src, w, h, m, fill, dst);
        } else {
            // SAFETY: the CPU has AVX2 (checked just above).
            unsafe { affine_into_avx2(src, w, h, m, interp, fill, dst) };
        }
        return;
    }
    affine_into_scalar(src, w, h, m, interp, fill, dst)
}

/// The bicubic affine by `affine_avx2`, whose groups of four that touch an edge or the fill
/// come back to [`bicubic_pixel`]. Only called once AVX2 is detected.
#[cfg(target_arch = "x86_64")]
fn bicubic_avx2(src: &[u8], w: usize, h: usize, m: [f64; 6], fill: [u8; 3], dst: &mut [u8]) {
    use super::affine_avx2::{bicubic, Shape};
    if w == 0 || h == 0 || src.len() < w * h * 3 || dst.len() < w * h * 3 {
        return;
    }
    // The scalar loop's shortcuts, tested in the same order.
    let shape = if m[3] == 0.0 && m[4] == 1.0 && m[5] == 0.0 {
        Shape::RowsOnly
    } else if m[0] == 1.0 && m[1] == 0.0 && m[2] == 0.0 {
        Shape::ColumnsOnly
    } else {
        Shape::General
    };
    let pixel = |x: usize, y: usize| bicubic_pixel(src, w, h, m, fill, x, y);
    // SAFETY: the caller checked that the CPU has AVX2.
    unsafe { bicubic(src, [w, h], m, shape, fill, dst, pixel) }
}

/// One output pixel of the bicubic affine, as the general loop of
/// [`affine_into_scalar`] computes it (the shortcut loops give the same values), from the
/// u8 rows ([`hcubic`], the same values as the widened rows).
fn bicubic_pixel(
    src: &[u8],
    w: usize,
    h: usize,
    m: [f64; 6],
    fill: [u8; 3],
    x: usize,
    y: usize,
) -> [u8; 3] {
    let row = w * 3;
    let (xc, yc) = (x as f64 + 0.5, y as f64 + 0.5);
    let xin = m[0] * xc + m[1] * yc + m[2];
    let yin = m[3] * xc + m[4] * yc + m[5];
    if !(xin >= 0.0 && xin < w as f64 && yin >= 0.0 && yin < h as f64) {
        return fill;
    }
    let (xs, ys) = (xin - 0.5, yin - 0.5);
    let (ix, iy) = (floor_i(xs), floor_i(ys));
    let (dx, dy) = (xs - ix as f64, ys - iy as f64);
    let src_row = |y: i64| {
        let y = y.clamp(0, h as i64 - 1) as usize;
        &src[y * row..(y + 1) * row]
    };
    let v = if dy == 0.0 {
        hcubic(src_row(iy), w, ix, dx)
    } else {
        let r0 = hcubic(src_row(iy - 1), w, ix, dx);
        let r1 = hcubic(src_row(iy), w, ix, dx);
        let r2 = hcubic(src_row(iy + 1), w, ix, dx);
        let r3 = hcubic(src_row(iy + 2), w, ix, dx);
        cubic4(r0, r1, r2, r3, dy)
    };
    [cubic_to_u8(v[0]), cubic_to_u8(v[1]), cubic_to_u8(v[2])]
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn affine_into_avx2(
    src: &[u8],
    w: usize,
    h: usize,
    m: [f64; 6],
    interp: Interp,
    fill: [u8; 3],
    dst: &mut [u8],
) {
    affine_into_scalar(src, w, h, m, interp, fill, dst)
}

/// The engine without explicit vectors: what CPUs without AVX2 run, and the reference the
/// AVX2 kernel is tested against.
#[inline(always)]
pub(super) fn affine_into_scalar(
    src: &[u8],
    w: usize,
    h: usize,
    m: [f64; 6],
    interp: Interp,
    fill: [u8; 3],
    dst: &mut [u8],
) {
    if w == 0 || h == 0 || src.len() < w * h * 3 || dst.len() < w * h * 3 {
        return;
    }
    let row = w * 3;
    let (wf, hf) = (w as f64, h as f64);
    let (wmax, hmax) = (w as i64 - 1, h as i64 - 1);
    let src_row = |y: i64| {
        let y = y.clamp(0, hmax) as usize;
        &src[y * row..(y + 1) * row]
    };
    if interp == Interp::Bicubic {
        if m[3] == 0.0 && m[4] == 1.0 && m[5] == 0.0 {
            return bicubic_rows_only(src, w, h, m, fill, dst);
        }
        if m[0] == 1.0 && m[1] == 0.0 && m[2] == 0.0 {
            return bicubic_columns_only(src, w, h, m, fill, dst);
        }
    }
    // The general bicubic path reads 16 neighbours per output pixel: the source is widened
    // to f64 lanes once (each u8 converted once, not up to 16 times; the same values).
    let wide: Vec<Px> = if interp == Interp::Bicubic {
        src[..w * h * 3].chunks_exact(3).map(|p| px(p, 0)).collect()
    } else {
        Vec::new()
    };
    let wide_row = |y: i64| {
        let y = y.clamp(0, hmax) as usize;
        &wide[y * w..(y + 1) * w]
    };
    for (y, orow) in dst.chunks_exact_mut(row).take(h).enumerate() {
        let yc = y as f64 + 0.5;
        for (x, o) in orow.chunks_exact_mut(3).enumerate() {
            let xc = x as f64 + 0.5;
            let xin = m[0] * xc + m[1] * yc + m[2];
            let yin = m[3] * xc + m[4] * yc + m[5];
            // Written so that NaN fails the test and takes the fill.
            if !(xin >= 0.0 && xin < wf && yin >= 0.0 && yin < hf) {
                o.copy_from_slice(&fill);
                continue;
            }
            let (xs, ys) = (xin - 0.5, yin - 0.5);
            let (ix, iy) = (floor_i(xs), floor_i(ys));
            let (dx, dy) = (xs - ix as f64, ys - iy as f64);
            match interp {
                Interp::Bilinear => {
                    let (x0, x1) = (
                        ix.clamp(0, wmax) as usize * 3,
                        (ix + 1).clamp(0, wmax) as usize * 3,
                    );
                    let (r0, r1) = (src_row(iy), src_row(iy + 1));
                    for c in 0..3 {
                        let lerp = |r: &[u8]| {
                            let (a, b) = (r[x0 + c], r[x1 + c]);
                            a as f64 + (b as i32 - a as i32) as f64 * dx
                        };
                        let (v1, v2) = (lerp(r0), lerp(r1));
                        o[c] = (v1 + (v2 - v1) * dy) as u8;
                    }
                }
                Interp::Bicubic => {
                    let v = if dy == 0.0 {
                        hcubic_px(wide_row(iy), ix, dx)
                    } else {
                        // Four plain calls, not `array::map` (whose closure was not inlined:
                        // a fifth of the training loader's time went to this line).
                        let r0 = hcubic_px(wide_row(iy - 1), ix, dx);
                        let r1 = hcubic_px(wide_row(iy), ix, dx);
                        let r2 = hcubic_px(wide_row(iy + 1), ix, dx);
                        let r3 = hcubic_px(wide_row(iy + 2), ix, dx);
                        cubic4(r0, r1, r2, r3, dy)
                    };
                    for c in 0..3 {
                        o[c] = cubic_to_u8(v[c]);
                    }
                }
            }
        }
    }
}

/// The bicubic affine when every output pixel samples its own row exactly (`yin = y + ½`:
/// shear X, translate X): the vertical step is the identity (dy = 0), so only the row's
/// horizontal step is computed. Same values as the general path.
#[inline(always)]
fn bicubic_rows_only(src: &[u8], w: usize, h: usize, m: [f64; 6], fill: [u8; 3], dst: &mut [u8]) {
    let row = w * 3;
    let wf = w as f64;
    for (y, (orow, srow)) in dst
        .chunks_exact_mut(row)
        .zip(src.chunks_exact(row))
        .take(h)
        .enumerate()
    {
        let yc = y as f64 + 0.5;
        let my = m[1] * yc;
        for (x, o) in orow.chunks_exact_mut(3).enumerate() {
            let xin = m[0] * (x as f64 + 0.5) + my + m[2];
            if !(xin >= 0.0 && xin < wf) {
                o.copy_from_slice(&fill);
                continue;
            }
            let xs = xin - 0.5;
            let ix = floor_i(xs);
            let v = hcubic(srow, w, ix, xs - ix as f64);
            for c in 0..3 {
                o[c] = cubic_to_u8(v[c]);
            }
        }
    }
}

/// The bicubic affine when every output pixel samples its own column exactly
/// (`xin = x + ½`: shear Y, translate Y): the horizontal steps are the identity (dx = 0),
/// so only the column's vertical step is computed. Same values as the general path.
#[inline(always)]
fn bicubic_columns_only(
    src: &[u8],
    w: usize,
    h: usize,
    m: [f64; 6],
    fill: [u8; 3],
    dst: &mut [u8],
) {
    let row = w * 3;
    let hf = h as f64;
    let hmax = h as i64 - 1;
    for (y, orow) in dst.chunks_exact_mut(row).take(h).enumerate() {
        let yc = y as f64 + 0.5;
        let my = m[4] * yc;
        for (x, o) in orow.chunks_exact_mut(3).enumerate() {
            let yin = m[3] * (x as f64 + 0.5) + my + m[5];
            if !(yin >= 0.0 && yin < hf) {
                o.copy_from_slice(&fill);
                continue;
            }
            let ys = yin - 0.5;
            let iy = floor_i(ys);
            let dy = ys - iy as f64;
            let col = x * 3;
            if dy == 0.0 {
                let s = iy.clamp(0, hmax) as usize * row + col;
                o.copy_from_slice(&src[s..s + 3]);
                continue;
            }
            let rows = [iy - 1, iy, iy + 1, iy + 2].map(|k| k.clamp(0, hmax) as usize * row + col);
            for c in 0..3 {
                let p = rows.map(|r| src[r + c] as f64);
                o[c] = cubic_to_u8(cubic(p[0], p[1], p[2], p[3], dy));
            }
        }
    }
}
