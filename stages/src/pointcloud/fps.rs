//! Farthest point sampling over spatial buckets: the same picks as the plain scan in
//! `geometry.rs`, bit for bit, with most of the per-iteration work skipped.
//!
//! The plain scan updates every point's "distance to the chosen set" on every pick. Late in
//! a run those distances are small, and a new center only lowers the distances of points
//! near it. Here the points are cut into buckets of `B` nearby points (Morton order, then
//! index order inside each bucket), each with a bounding box and the max of its points'
//! distances. A bucket whose box is at least that max away from the new center cannot
//! change: every point in it is at least as far from the center as the box, so
//! `min(old, d)` keeps `old`. On ScanObjectNN-sized clouds (2048 → 1024) about one bucket
//! in seven is touched per pick.
//!
//! Why skipping gives the same bits: the box bound is computed with the same f32
//! operations as a point's distance (`gap*gap + gap*gap + gap*gap`, left to right), and
//! every operation is monotonic under IEEE rounding, so the computed bound is never above
//! any computed point distance in the box. The updated distances themselves are computed
//! exactly as the scan computes them, and the argmax keeps the lowest index on ties (the
//! buckets at the max are scanned for their first point at it, lowest index across them).

use super::geometry::{Point, FPS_INIT};

/// Points per bucket: two AVX2 vectors of 8 lanes x 2 (measured against 16, 64 and 128 on
/// 2048-point clouds: 32 skips most work while keeping the per-bucket test cheap).
const B: usize = 32;

/// Below this many points the plain scan is as fast (a handful of buckets).
pub(super) const MIN_POINTS: usize = 4 * B;

/// A cloud cut into buckets: `B` points per bucket in structure-of-arrays form (the last
/// bucket padded with copies of its last point), original indices, and per-bucket boxes.
struct Buckets {
    xs: Vec<f32>,
    ys: Vec<f32>,
    zs: Vec<f32>,
    idx: Vec<u32>,
    /// Real points (the rest of the last bucket is padding).
    len: usize,
    lo: [Vec<f32>; 3],
    hi: [Vec<f32>; 3],
}

/// Spreads the low 10 bits of `v` to every third bit (Morton interleave).
fn spread(v: u32) -> u64 {
    let mut x = u64::from(v) & 0x3ff;
    x = (x | (x << 16)) & 0x0300_00ff;
    x = (x | (x << 8)) & 0x0300_f00f;
    x = (x | (x << 4)) & 0x030c_30c3;
    x = (x | (x << 2)) & 0x0924_9249;
    x
}

/// Buckets of `points`, or None when a coordinate is not finite (the plain scan handles
/// those as the CUDA kernel does) or the cloud does not fit u32 indices.
fn buckets(points: &[Point]) -> Option<Buckets> {
    if points.len() > u32::MAX as usize {
        return None;
    }
    if !points.iter().flatten().all(|v| v.is_finite()) {
        return None;
    }
    let mut lo = [f32::INFINITY; 3];
    let mut hi = [f32::NEG_INFINITY; 3];
    for p in points {
        for a in 0..3 {
            lo[a] = lo[a].min(p[a]);
            hi[a] = hi[a].max(p[a]);
        }
    }
    // The Morton order only decides which points share a bucket (speed); correctness never
    // depends on it, so an overflowing extent (scale 0: one cell) is fine.
    let mut scale = [0f32; 3];
    for a in 0..3 {
        let extent = hi[a] - lo[a];
        if extent > 0.0 && extent.is_finite() {
            scale[a] = 1023.0 / extent;
        }
    }
    let mut keys: Vec<u64> = points
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let q = |a: usize| (((p[a] - lo[a]) * scale[a]) as u32).min(1023);
            let code = spread(q(0)) | (spread(q(1)) << 1) | (spread(q(2)) << 2);
            (code << 32) | i as u64
        })
        .collect();
    keys.sort_unstable();
    let mut order: Vec<u32> = keys.iter().map(|k| *k as u32).collect();
    for bucket in order.chunks_mut(B) {
        // Index order inside a bucket: its first point at the max is its lowest index.
        bucket.sort_unstable();
    }
    let nb = points.len().div_ceil(B);
    let mut bk = Buckets {
        xs: Vec::with_capacity(nb * B),
        ys: Vec::with_capacity(nb * B),
        zs: Vec::with_capacity(nb * B),
        idx: Vec::with_capacity(nb * B),
        len: points.len(),
        lo: std::array::from_fn(|_| Vec::with_capacity(nb)),
        hi: std::array::from_fn(|_| Vec::with_capacity(nb)),
    };
    for bucket in order.chunks(B) {
        let mut l = [f32::INFINITY; 3];
        let mut h = [f32::NEG_INFINITY; 3];
        for k in 0..B {
            let i = bucket[k.min(bucket.len() - 1)];
            let p = points[i as usize];
            for a in 0..3 {
                l[a] = l[a].min(p[a]);
                h[a] = h[a].max(p[a]);
            }
            bk.xs.push(p[0]);
            bk.ys.push(p[1]);
            bk.zs.push(p[2]);
            bk.idx.push(i);
        }
        for a in 0..3 {
            bk.lo[a].push(l[a]);
            bk.hi[a].push(h[a]);
        }
    }
    Some(bk)
}

#[inline(always)]
fn fmax(a: f32, b: f32) -> f32 {
    if a > b {
        a
    } else {
        b
    }
}

/// Lowers one bucket's distances to `c` and returns their new max.
#[inline(always)]
fn update(xs: &[f32; B], ys: &[f32; B], zs: &[f32; B], mind: &mut [f32; B], c: Point) -> f32 {
    let [cx, cy, cz] = c;
    // The new values stay in registers (`t`): reading them back from `mind` right after
    // storing them stalls on store forwarding.
    let mut t = [0f32; B];
    for k in 0..B {
        let dx = xs[k] - cx;
        let dy = ys[k] - cy;
        let dz = zs[k] - cz;
        let d = dx * dx + dy * dy + dz * dz;
        // The min of two non-negative floats, taken on their bits (same order, same result
        // bits): written as a float select, LLVM turns it into a masked store, which is
        // slow on AVX2.
        t[k] = f32::from_bits(d.to_bits().min(mind[k].to_bits()));
    }
    *mind = t;
    let mut acc = [-1f32; 8];
    for k in 0..B {
        acc[k % 8] = fmax(acc[k % 8], t[k]);
    }
    let a4 = [
        fmax(acc[0], acc[4]),
        fmax(acc[1], acc[5]),
        fmax(acc[2], acc[6]),
        fmax(acc[3], acc[7]),
    ];
    fmax(fmax(a4[0], a4[2]), fmax(a4[1], a4[3]))
}

/// Whether bucket j's box is nearer to `c` than the bucket's max distance `bmax[j]` (then a
/// point in it may get nearer to the chosen set). The bound is `gap*gap + gap*gap +
/// gap*gap` in f32, left to right, as a point's distance is computed.
#[inline(always)]
fn may_change(lo: [&[f32]; 3], hi: [&[f32]; 3], bmax: &[f32], c: Point, j: usize) -> bool {
    let [cx, cy, cz] = c;
    let gx = fmax(fmax(lo[0][j] - cx, cx - hi[0][j]), 0.0);
    let gy = fmax(fmax(lo[1][j] - cy, cy - hi[1][j]), 0.0);
    let gz = fmax(fmax(lo[2][j] - cz, cz - hi[2][j]), 0.0);
    let bound = gx * gx + gy * gy + gz * gz;
    bound < bmax[j]
}

/// The lowest original index of a point at distance `m` in the buckets `from..` whose max
/// is `m` (u32::MAX if none).
#[inline(always)]
fn first_at_max(bmax: &[f32], mind: &[f32], idx: &[u32], m: f32, from: usize) -> u32 {
    let mut best = u32::MAX;
    for (j, &v) in bmax.iter().enumerate().skip(from) {
        if v == m {
            let s = j * B;
            if let Some(p) = mind[s..s + B].iter().position(|&d| d == m) {
                best = best.min(idx[s + p]);
            }
        }
    }
    best
}

/// `avx2`: use the hand-written AVX2 kernels (`fps_avx2.rs`) for the bucket test and the
/// argmax; only `run_avx2` passes true.
#[inline(always)]
fn run(points: &[Point], bk: &Buckets, n: usize, avx2: bool) -> Vec<usize> {
    #[cfg(not(target_arch = "x86_64"))]
    let _ = avx2;
    let nb = bk.lo[0].len();
    let mut mind = vec![FPS_INIT; nb * B];
    // Padding sits at 0: never above a real point of its bucket, and after them in it.
    for v in &mut mind[bk.len..] {
        *v = 0.0;
    }
    let mut bmax = vec![FPS_INIT; nb];
    let mut need = vec![0u64; nb.div_ceil(64)];
    let (xs, _) = bk.xs.as_chunks::<B>();
    let (ys, _) = bk.ys.as_chunks::<B>();
    let (zs, _) = bk.zs.as_chunks::<B>();
    let [lx, ly, lz] = [&bk.lo[0][..nb], &bk.lo[1][..nb], &bk.lo[2][..nb]];
    let [hx, hy, hz] = [&bk.hi[0][..nb], &bk.hi[1][..nb], &bk.hi[2][..nb]];
    let mut out = Vec::with_capacity(n);
    let mut last = 0usize;
    out.push(last);
    for _ in 1..n {
        let c = points[last];
        // One bit per bucket whose box is closer to c than its max (it may change).
        for (w, word) in need.iter_mut().enumerate() {
            let start = w * 64;
            let end = (start + 64).min(nb);
            let mut bits = 0u64;
            let mut first = start;
            #[cfg(target_arch = "x86_64")]
            if avx2 {
                let groups = (end - start) / 8;
                // SAFETY: `avx2` is true only in `run_avx2`, after the CPU reported AVX2.
                bits = unsafe {
                    super::fps_avx2::need_bits([lx, ly, lz], [hx, hy, hz], &bmax, c, start, groups)
                };
                first = start + groups * 8;
            }
            for j in first..end {
                bits |=
                    u64::from(may_change([lx, ly, lz], [hx, hy, hz], &bmax, c, j)) << (j - start);
            }
            *word = bits;
        }
        {
            let (minds, _) = mind.as_chunks_mut::<B>();
            for (w, &word) in need.iter().enumerate() {
                let mut bits = word;
                while bits != 0 {
                    let j = w * 64 + bits.trailing_zeros() as usize;
                    bits &= bits - 1;
                    bmax[j] = update(&xs[j], &ys[j], &zs[j], &mut minds[j], c);
                }
            }
        }
        let mut acc = [-1f32; 16];
        let mut chunks = bmax.chunks_exact(16);
        for ch in &mut chunks {
            for k in 0..16 {
                acc[k] = fmax(acc[k], ch[k]);
            }
        }
        let m = chunks
            .remainder()
            .iter()
            .chain(&acc)
            .fold(-1f32, |a, &v| fmax(a, v));
        // The lowest index at the max: one bucket holds it unless there are ties.
        let mut best = u32::MAX;
        let mut searched = 0;
        #[cfg(target_arch = "x86_64")]
        if avx2 {
            // SAFETY: as above.
            (best, searched) =
                unsafe { super::fps_avx2::first_at_max::<B>(&bmax, &mind, &bk.idx, m) };
        }
        best = best.min(first_at_max(&bmax, &mind, &bk.idx, m, searched));
        // `best` is always set (the max is some bucket's point); 0 is a safe fallback.
        last = if best == u32::MAX { 0 } else { best as usize };
        out.push(last);
    }
    out
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn run_avx2(points: &[Point], bk: &Buckets, n: usize) -> Vec<usize> {
    run(points, bk, n, true)
}

/// FPS from index 0, `n` picks, or None when the cloud is one the plain scan must do
/// (fewer than `MIN_POINTS`, a non-finite coordinate, over u32::MAX points).
/// `allow_avx2` lets tests compare both builds of the loop.
pub(super) fn farthest_point_sample(
    points: &[Point],
    n: usize,
    allow_avx2: bool,
) -> Option<Vec<usize>> {
    if points.len() < MIN_POINTS || n == 0 {
        return None;
    }
    let bk = buckets(points)?;
    #[cfg(target_arch = "x86_64")]
    {
        if allow_avx2 && std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU reported AVX2 support.
            return Some(unsafe { run_avx2(points, &bk, n) });
        }
    }
    let _ = allow_avx2;
    Some(run(points, &bk, n, false))
}

/// The AVX2 kernels (`fps_avx2.rs`) against the scalar code that defines them, on inputs
/// chosen for ties: a palette of few values (equal bounds and maxima, +0 and -0, a center
/// on a box face or inside it, huge and infinite values, NaN from inf - inf), bucket
/// counts that are not a multiple of 8. The whole FPS is compared in `geometry.rs`.
#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;
    use rand::{RngExt, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    const PALETTE: [f32; 9] = [-1.0, -0.0, 0.0, 0.5, 1.0, 2.0, 1e20, -1e20, f32::INFINITY];

    fn has_avx2() -> bool {
        let yes = std::arch::is_x86_feature_detected!("avx2");
        if !yes {
            eprintln!("no AVX2 on this CPU: kernel test skipped");
        }
        yes
    }

    #[test]
    fn need_bits_equals_may_change() {
        if !has_avx2() {
            return;
        }
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let pick = |rng: &mut ChaCha8Rng| PALETTE[rng.random_range(0..PALETTE.len())];
        for nb in [1, 8, 13, 64, 77, 130] {
            let mut lo: [Vec<f32>; 3] = Default::default();
            let mut hi: [Vec<f32>; 3] = Default::default();
            for a in 0..3 {
                for _ in 0..nb {
                    let (x, y) = (pick(&mut rng), pick(&mut rng));
                    lo[a].push(x.min(y));
                    hi[a].push(x.max(y));
                }
            }
            let l = [&lo[0][..], &lo[1][..], &lo[2][..]];
            let h = [&hi[0][..], &hi[1][..], &hi[2][..]];
            for round in 0..40 {
                let c = [pick(&mut rng), pick(&mut rng), pick(&mut rng)];
                let mut bmax: Vec<f32> = (0..nb).map(|_| pick(&mut rng).abs()).collect();
                if round % 2 == 0 {
                    // Maxima equal to their bounds: the strict `<` decides.
                    for (j, b) in bmax.iter_mut().enumerate() {
                        let gap = |a: usize| fmax(fmax(l[a][j] - c[a], c[a] - h[a][j]), 0.0);
                        *b = gap(0) * gap(0) + gap(1) * gap(1) + gap(2) * gap(2);
                    }
                }
                for start in (0..nb).step_by(64) {
                    let groups = ((nb - start).min(64)) / 8;
                    // SAFETY: the CPU reported AVX2 (checked above).
                    let bits =
                        unsafe { super::super::fps_avx2::need_bits(l, h, &bmax, c, start, groups) };
                    for j in start..start + groups * 8 {
                        let want = may_change(l, h, &bmax, c, j);
                        assert_eq!(
                            bits >> (j - start) & 1 == 1,
                            want,
                            "nb {nb}, j {j}, c {c:?}"
                        );
                    }
                    if groups < 8 {
                        assert_eq!(bits >> (groups * 8), 0, "bits past the groups");
                    }
                }
            }
        }
    }

    #[test]
    fn first_at_max_equals_scalar() {
        if !has_avx2() {
            return;
        }
        let mut rng = ChaCha8Rng::seed_from_u64(6);
        for nb in [1, 7, 8, 9, 64, 75] {
            for round in 0..60 {
                let m = [0.5f32, 0.0, 2.0][round % 3];
                let vals = [m, 0.0, 0.25, 1.0, m];
                let mind: Vec<f32> = (0..nb * B)
                    .map(|_| vals[rng.random_range(0..vals.len())])
                    .collect();
                // Some buckets at the max hold no point at it (the kernel must skip them).
                let bmax: Vec<f32> = (0..nb)
                    .map(|_| if rng.random_range(0..3) == 0 { 1.0 } else { m })
                    .collect();
                let mut idx: Vec<u32> = (0..(nb * B) as u32).collect();
                for i in (1..idx.len()).rev() {
                    idx.swap(i, rng.random_range(0..=i));
                }
                let want = first_at_max(&bmax, &mind, &idx, m, 0);
                // SAFETY: the CPU reported AVX2 (checked above).
                let (got, done) =
                    unsafe { super::super::fps_avx2::first_at_max::<B>(&bmax, &mind, &idx, m) };
                assert_eq!(done, nb / 8 * 8);
                let got = got.min(first_at_max(&bmax, &mind, &idx, m, done));
                assert_eq!(got, want, "nb {nb}, round {round}");
            }
        }
    }
}
