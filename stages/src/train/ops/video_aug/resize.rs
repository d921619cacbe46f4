//! Separable bilinear resampling with half-pixel centres and no antialiasing: the source
//! coordinate of output index `i` is `(i + 0.5) · in/out − 0.5`, clamped below at 0, with
//! the upper neighbour clamped to the last index. This is what
//! `torch.nn.functional.interpolate(mode="bilinear", align_corners=False)` and
//! `cv2.resize(INTER_LINEAR)` compute (up to their arithmetic precision).

/// For one output index: the two source indices and the weight of the second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Tap {
    pub i0: usize,
    pub i1: usize,
    pub lam: f32,
}

/// The taps of every output index when resizing `len_in` samples to `len_out` (f32
/// arithmetic, as torch does for f32 tensors). `len_in` must be positive.
pub(crate) fn bilinear_plan(len_in: usize, len_out: usize) -> Vec<Tap> {
    let last = len_in.saturating_sub(1);
    let scale = len_in as f32 / len_out.max(1) as f32;
    (0..len_out)
        .map(|i| {
            let src = (scale * (i as f32 + 0.5) - 0.5).max(0.0);
            let i0 = (src.floor() as usize).min(last);
            let lam = (src - i0 as f32).clamp(0.0, 1.0);
            let i1 = if i0 < last { i0 + 1 } else { i0 };
            Tap { i0, i1, lam }
        })
        .collect()
}

/// One horizontal pass of an RGB row of f32 into `out` (`xs.len() · 3` values).
#[inline]
fn hpass(row: &[f32], xs: &[Tap], out: &mut [f32]) {
    for (o, t) in out.chunks_exact_mut(3).zip(xs) {
        let (a, b) = (&row[t.i0 * 3..t.i0 * 3 + 3], &row[t.i1 * 3..t.i1 * 3 + 3]);
        let w0 = 1.0 - t.lam;
        for c in 0..3 {
            o[c] = w0 * a[c] + t.lam * b[c];
        }
    }
}

/// Resizes an RGB f32 plane (rows of `src_w` pixels, taken from `row(y)`) with the given
/// vertical and horizontal taps into `dst` (`ys.len()` rows of `xs.len()` pixels).
pub(crate) fn resize_rows_f32<'a>(
    row: impl Fn(usize) -> &'a [f32],
    ys: &[Tap],
    xs: &[Tap],
    dst: &mut [f32],
) {
    let n = xs.len() * 3;
    let (mut r0, mut r1) = (vec![0f32; n], vec![0f32; n]);
    let mut cached: Option<(usize, usize)> = None;
    for (orow, t) in dst.chunks_exact_mut(n).zip(ys) {
        if cached != Some((t.i0, t.i1)) {
            hpass(row(t.i0), xs, &mut r0);
            hpass(row(t.i1), xs, &mut r1);
            cached = Some((t.i0, t.i1));
        }
        let w0 = 1.0 - t.lam;
        for ((o, a), b) in orow.iter_mut().zip(&r0).zip(&r1) {
            *o = w0 * a + t.lam * b;
        }
    }
}

/// Resizes an `[H, W, 3]` u8 plane of width `src_w` into `dst`, rounding to nearest.
pub(crate) fn resize_plane_u8(src: &[u8], src_w: usize, ys: &[Tap], xs: &[Tap], dst: &mut [u8]) {
    let row_len = src_w * 3;
    let rows: Vec<Vec<f32>> = src
        .chunks_exact(row_len)
        .map(|r| r.iter().map(|&v| v as f32).collect())
        .collect();
    let mut out = vec![0f32; dst.len()];
    resize_rows_f32(|y| &rows[y], ys, xs, &mut out);
    for (d, v) in dst.iter_mut().zip(out) {
        *d = v.round().clamp(0.0, 255.0) as u8;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_of_the_same_size_is_the_identity() {
        for t in bilinear_plan(5, 5).iter().enumerate() {
            assert_eq!(t.1.i0, t.0);
            assert_eq!(t.1.lam, 0.0);
        }
    }

    #[test]
    fn plan_downsampling_by_two_averages_pairs() {
        // src = 2(i + 0.5) − 0.5 = 2i + 0.5: halfway between 2i and 2i+1.
        let p = bilinear_plan(8, 4);
        for (i, t) in p.iter().enumerate() {
            assert_eq!((t.i0, t.i1, t.lam), (2 * i, 2 * i + 1, 0.5));
        }
    }

    #[test]
    fn plan_stays_in_bounds_for_odd_sizes() {
        for (a, b) in [(1, 7), (7, 1), (3, 224), (427, 224), (2, 3)] {
            for t in bilinear_plan(a, b) {
                assert!(t.i0 < a && t.i1 < a && (0.0..=1.0).contains(&t.lam));
            }
        }
    }
}
