//! The bicubic affine (RandAugment's rotate, shear and translate at the image recipe's
//! bicubic interpolation) with AVX2, four OUTPUT pixels at a time: one f64 lane per pixel,
//! one vector per channel. The scalar engine next door runs one pixel's three channels as
//! four lanes, which compile to 2 + 1 scalar operations; here every lane is useful.
//!
//! Each lane does the scalar engine's IEEE operations in its order (separate multiplies and
//! adds, never fused), so the bytes are the same. The d = 0 shortcuts of the scalar cubic
//! are not taken: with finite inputs `p1 + 0·(…)` is exactly `p1`, the same value.
//! Lanes outside the frame take the fill (computed on a stand-in neighbourhood, then
//! overwritten). A group of four that needs anything else (a neighbour clamped at an edge,
//! a row tail shorter than four) is handed, pixel by pixel, to the caller's scalar
//! `pixel(x, y)`.

use std::arch::x86_64::*;

/// Which of the scalar engine's three bicubic loops this is; the values are the same as the
/// general loop's, the shapes only skip work that is the identity.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Any matrix: 4 × 4 neighbours per pixel.
    General,
    /// `yin = y + ½` exactly (shear X, translate X): the row's horizontal step only.
    RowsOnly,
    /// `xin = x + ½` exactly (shear Y, translate Y): the column's vertical step only.
    ColumnsOnly,
}

/// The bicubic affine of `src` (`w × h` RGB) into `dst` with matrix `m`; `pixel(x, y)` is
/// the scalar engine's value of one output pixel, used where a group of four leaves the
/// fast path.
///
/// # Safety
/// The CPU must have AVX2.
#[target_feature(enable = "avx2")]
pub unsafe fn bicubic(
    src: &[u8],
    [w, h]: [usize; 2],
    m: [f64; 6],
    shape: Shape,
    fill: [u8; 3],
    dst: &mut [u8],
    pixel: impl Fn(usize, usize) -> [u8; 3],
) {
    let row = w * 3;
    let n = row * h;
    // Lane offsets are i32 below; a frame this large (never a training crop) stays scalar.
    if w == 0 || h == 0 || src.len() < n || dst.len() < n || n > i32::MAX as usize / 2 {
        for y in 0..h {
            for x in 0..w {
                let o = (y * w + x) * 3;
                if let Some(d) = dst.get_mut(o..o + 3) {
                    d.copy_from_slice(&pixel(x, y));
                }
            }
        }
        return;
    }
    let src = &src[..n];
    let (wf, hf) = (w as f64, h as f64);
    let (wmax, hmax) = (w as i32 - 1, h as i32 - 1);
    let half = _mm256_set1_pd(0.5);
    let lane = _mm256_set_pd(3.0, 2.0, 1.0, 0.0);
    for y in 0..h {
        let yc = _mm256_set1_pd(y as f64 + 0.5);
        let orow = &mut dst[y * row..(y + 1) * row];
        let mut x = 0;
        while x + 4 <= w {
            // x + l + ½ as the scalar computes it: (x + l) as f64 + 0.5, exact either way.
            let xc = _mm256_add_pd(_mm256_add_pd(_mm256_set1_pd(x as f64), lane), half);
            // The scalar's (m0·xc + m1·yc) + m2, and the same for yin.
            let xin = _mm256_add_pd(
                _mm256_add_pd(
                    _mm256_mul_pd(_mm256_set1_pd(m[0]), xc),
                    _mm256_mul_pd(_mm256_set1_pd(m[1]), yc),
                ),
                _mm256_set1_pd(m[2]),
            );
            let yin = _mm256_add_pd(
                _mm256_add_pd(
                    _mm256_mul_pd(_mm256_set1_pd(m[3]), xc),
                    _mm256_mul_pd(_mm256_set1_pd(m[4]), yc),
                ),
                _mm256_set1_pd(m[5]),
            );
            let out = match shape {
                Shape::General => general4(src, w, [wf, hf], [wmax, hmax], xin, yin),
                Shape::RowsOnly => rows4(src, w, y, wf, wmax, xin),
                Shape::ColumnsOnly => columns4(src, w, x, hf, hmax, yin),
            };
            let out = out.map(|(mut bytes, ok)| {
                for l in (0..4).filter(|l| ok >> l & 1 == 0) {
                    bytes[l * 3..l * 3 + 3].copy_from_slice(&fill);
                }
                bytes
            });
            match out {
                Some(bytes) => orow[x * 3..x * 3 + 12].copy_from_slice(&bytes[..12]),
                None => {
                    for k in x..x + 4 {
                        orow[k * 3..k * 3 + 3].copy_from_slice(&pixel(k, y));
                    }
                }
            }
            x += 4;
        }
        for k in x..w {
            orow[k * 3..k * 3 + 3].copy_from_slice(&pixel(k, y));
        }
    }
}

/// The lanes of `v` in `[0, limit)` as bits 0–3 (NaN is outside, as the scalar test is
/// written): the others take the fill.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn inside(v: __m256d, limit: f64) -> i32 {
    let ge = _mm256_cmp_pd::<_CMP_GE_OQ>(v, _mm256_setzero_pd());
    let lt = _mm256_cmp_pd::<_CMP_LT_OQ>(v, _mm256_set1_pd(limit));
    _mm256_movemask_pd(_mm256_and_pd(ge, lt))
}

/// The scalar's `xs = xin − ½`, `ix = floor(xs)`, `dx = xs − ix`: `floor_i` is the floor for
/// every finite value, and `ix as f64` is that floor exactly.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn split(v: __m256d) -> (__m128i, __m256d) {
    let s = _mm256_sub_pd(v, _mm256_set1_pd(0.5));
    let f = _mm256_floor_pd(s);
    (_mm256_cvttpd_epi32(f), _mm256_sub_pd(s, f))
}

/// The scalar `cubic` on every lane: `-a + b` is `b − a` exactly (IEEE subtraction is the
/// addition of the negation), the rest in the scalar's order.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn cubic(v1: __m256d, v2: __m256d, v3: __m256d, v4: __m256d, d: __m256d) -> __m256d {
    let p2 = _mm256_sub_pd(v3, v1);
    let two = _mm256_set1_pd(2.0);
    let p3 = _mm256_sub_pd(
        _mm256_add_pd(_mm256_mul_pd(two, _mm256_sub_pd(v1, v2)), v3),
        v4,
    );
    let p4 = _mm256_add_pd(_mm256_sub_pd(_mm256_sub_pd(v2, v1), v3), v4);
    let t = _mm256_add_pd(p3, _mm256_mul_pd(d, p4));
    let t = _mm256_add_pd(p2, _mm256_mul_pd(d, t));
    _mm256_add_pd(v2, _mm256_mul_pd(d, t))
}

/// Channel `c` of four packed pixels (one per 32-bit lane, R in the low byte) as f64 lanes.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn channel<const C: i32>(v: __m128i) -> __m256d {
    let b = _mm_and_si128(_mm_srli_epi32::<C>(v), _mm_set1_epi32(0xff));
    _mm256_cvtepi32_pd(b)
}

/// The 4 bytes at each of the four offsets, one per 32-bit lane (offset + 4 ≤ `src.len()`,
/// checked by the caller).
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn load4(src: &[u8], o: [usize; 4]) -> __m128i {
    let p = src.as_ptr();
    let r = |k: usize| (p.add(o[k]) as *const i32).read_unaligned();
    _mm_set_epi32(r(3), r(2), r(1), r(0))
}

/// Four neighbours `ix − 1 ..= ix + 2` of one source row for each lane, at byte offsets
/// `base` (the `ix − 1` pixel), as three channels × four neighbours, each 4 lanes of f64
/// after the horizontal cubic step at `dx`.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn hcubic(src: &[u8], base: [usize; 4], dx: __m256d) -> [__m256d; 3] {
    let v = [
        load4(src, off(base, 0)),
        load4(src, off(base, 3)),
        load4(src, off(base, 6)),
        load4(src, off(base, 9)),
    ];
    [
        cubic(
            channel::<0>(v[0]),
            channel::<0>(v[1]),
            channel::<0>(v[2]),
            channel::<0>(v[3]),
            dx,
        ),
        cubic(
            channel::<8>(v[0]),
            channel::<8>(v[1]),
            channel::<8>(v[2]),
            channel::<8>(v[3]),
            dx,
        ),
        cubic(
            channel::<16>(v[0]),
            channel::<16>(v[1]),
            channel::<16>(v[2]),
            channel::<16>(v[3]),
            dx,
        ),
    ]
}

/// The scalar `cubic_to_u8` (≤ 0 → 0, ≥ 255 → 255, else truncated) of the three channels,
/// packed as four RGB pixels in the first 12 bytes.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn pack(v: [__m256d; 3]) -> [u8; 16] {
    let (lo, hi) = (_mm256_setzero_pd(), _mm256_set1_pd(255.0));
    let q0 = _mm256_cvttpd_epi32(_mm256_min_pd(_mm256_max_pd(v[0], lo), hi));
    let q1 = _mm256_cvttpd_epi32(_mm256_min_pd(_mm256_max_pd(v[1], lo), hi));
    let q2 = _mm256_cvttpd_epi32(_mm256_min_pd(_mm256_max_pd(v[2], lo), hi));
    let rgb = _mm_or_si128(
        q0,
        _mm_or_si128(_mm_slli_epi32::<8>(q1), _mm_slli_epi32::<16>(q2)),
    );
    let packed = _mm_shuffle_epi8(
        rgb,
        _mm_setr_epi8(0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 14, -1, -1, -1, -1),
    );
    let mut out = [0u8; 16];
    _mm_storeu_si128(out.as_mut_ptr().cast(), packed);
    out
}

/// Four byte offsets moved by `k`.
#[inline(always)]
fn off(b: [usize; 4], k: usize) -> [usize; 4] {
    [b[0] + k, b[1] + k, b[2] + k, b[3] + k]
}

/// The lanes of a 4 × i32 vector.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn lanes(i: __m128i) -> [i32; 4] {
    let mut a = [0i32; 4];
    _mm_storeu_si128(a.as_mut_ptr().cast(), i);
    a
}

/// Byte offsets of the four lanes' neighbourhoods, `at(l)` for a lane inside the frame
/// (bit `l` of `ok`), offset 0 as a stand-in for the others (their values are replaced by
/// the fill); None where a lane inside needs a neighbour clamped (`ix` outside
/// `[1, imax − 2]` or `iy` outside `[1, jmax − 2]`), or where 4 bytes at `reach` past an
/// offset are not all readable.
#[inline(always)]
fn offsets(
    ok: i32,
    limits: [i32; 2],
    ix: [i32; 4],
    iy: [i32; 4],
    at: impl Fn(usize, usize) -> usize,
    reach: usize,
    len: usize,
) -> Option<[usize; 4]> {
    let mut base = [0usize; 4];
    for l in 0..4 {
        if ok >> l & 1 == 0 {
            continue;
        }
        let (x, y) = (ix[l], iy[l]);
        if x < 1 || x > limits[0] - 2 || y < 1 || y > limits[1] - 2 {
            return None;
        }
        base[l] = at(x as usize - 1, y as usize - 1);
    }
    if base.iter().any(|&b| b + reach + 4 > len) {
        return None;
    }
    Some(base)
}

/// The general shape: 4 rows × 4 columns of neighbours, the horizontal steps then the
/// vertical one (the scalar general loop, which skips the other rows when dy = 0: they are
/// multiplied by 0 here and the value is the same). The packed pixels and the mask of
/// lanes inside the frame.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn general4(
    src: &[u8],
    w: usize,
    [wf, hf]: [f64; 2],
    [wmax, hmax]: [i32; 2],
    xin: __m256d,
    yin: __m256d,
) -> Option<([u8; 16], i32)> {
    let ok = inside(xin, wf) & inside(yin, hf);
    if ok == 0 {
        return Some(([0; 16], 0));
    }
    let (ix, dx) = split(xin);
    let (iy, dy) = split(yin);
    let row = w * 3;
    let at = |x: usize, y: usize| y * row + x * 3;
    let base = offsets(
        ok,
        [wmax, hmax],
        lanes(ix),
        lanes(iy),
        at,
        3 * row + 9,
        src.len(),
    )?;
    let r0 = hcubic(src, base, dx);
    let r1 = hcubic(src, off(base, row), dx);
    let r2 = hcubic(src, off(base, 2 * row), dx);
    let r3 = hcubic(src, off(base, 3 * row), dx);
    let px = pack([
        cubic(r0[0], r1[0], r2[0], r3[0], dy),
        cubic(r0[1], r1[1], r2[1], r3[1], dy),
        cubic(r0[2], r1[2], r2[2], r3[2], dy),
    ]);
    Some((px, ok))
}

/// Shear X / translate X: row `y`'s horizontal step only.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn rows4(
    src: &[u8],
    w: usize,
    y: usize,
    wf: f64,
    wmax: i32,
    xin: __m256d,
) -> Option<([u8; 16], i32)> {
    let ok = inside(xin, wf);
    if ok == 0 {
        return Some(([0; 16], 0));
    }
    let (ix, dx) = split(xin);
    let row = w * 3;
    // The row is `y` itself (never clamped): iy stands in as 1, which passes the check.
    let at = |x: usize, _: usize| y * row + x * 3;
    let base = offsets(ok, [wmax, 3], lanes(ix), [1; 4], at, 9, src.len())?;
    Some((pack(hcubic(src, base, dx)), ok))
}

/// Shear Y / translate Y: column `x + lane`'s vertical step only.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn columns4(
    src: &[u8],
    w: usize,
    x: usize,
    hf: f64,
    hmax: i32,
    yin: __m256d,
) -> Option<([u8; 16], i32)> {
    let ok = inside(yin, hf);
    if ok == 0 {
        return Some(([0; 16], 0));
    }
    let (iy, dy) = split(yin);
    let row = w * 3;
    let at = |l: usize, y: usize| y * row + (x + l) * 3;
    // ix stands in as lane + 1 so that `at` gets the lane; the column is never clamped.
    let base = offsets(
        ok,
        [i32::MAX, hmax],
        [1, 2, 3, 4],
        lanes(iy),
        at,
        3 * row,
        src.len(),
    )?;
    let v = [
        load4(src, base),
        load4(src, off(base, row)),
        load4(src, off(base, 2 * row)),
        load4(src, off(base, 3 * row)),
    ];
    let px = pack([
        cubic(
            channel::<0>(v[0]),
            channel::<0>(v[1]),
            channel::<0>(v[2]),
            channel::<0>(v[3]),
            dy,
        ),
        cubic(
            channel::<8>(v[0]),
            channel::<8>(v[1]),
            channel::<8>(v[2]),
            channel::<8>(v[3]),
            dy,
        ),
        cubic(
            channel::<16>(v[0]),
            channel::<16>(v[1]),
            channel::<16>(v[2]),
            channel::<16>(v[3]),
            dy,
        ),
    ]);
    Some((px, ok))
}
