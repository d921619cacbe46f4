//! k nearest neighbours of group centers among the sampled points, without sorting or
//! selecting over every point.
//!
//! The result is defined by keys: a point's squared distance bits (high 32) and its index
//! (low 32). Squared distances are never negative, so their IEEE bits order like their
//! values (+inf and NaN bits sort last), and the keys are a total order: the k smallest keys
//! are one set whatever algorithm finds them. The full selection over n keys per center was
//! ~15% of the stage; here a cheap bound throws away almost every point first:
//!
//! - the distances of all points, as `u32` bits (`x*x + y*y + z*z` of the differences, in
//!   f32, in that order: the same bits as `geometry.rs`'s distance, with or without AVX2);
//! - `nb >= k` disjoint blocks (point i is in block `i % nb`) and the min of each;
//! - `t` = the k-th smallest block min: k blocks hold a point at or below `t`, so at least
//!   k points are at or below `t`, hence the k smallest keys all have distance bits `<= t`;
//! - the keys of the points at or below `t` (~4% of them at 1024 points, k = 32), sorted.
//!
//! This file imports nothing from the rest of `pointcloud` (it works on coordinate slices),
//! so `geometry.rs` can use it without an import circle.

/// Lanes of an AVX2 vector of f32 or u32.
const W: usize = 8;

/// Squared distances of the points to `c` as f32 bits, `d[i]` for point i.
fn dist_scalar(xs: &[f32], ys: &[f32], zs: &[f32], c: [f32; 3], d: &mut [u32]) {
    let [cx, cy, cz] = c;
    for (((dv, &x), &y), &z) in d.iter_mut().zip(xs).zip(ys).zip(zs) {
        let dx = x - cx;
        let dy = y - cy;
        let dz = z - cz;
        *dv = (dx * dx + dy * dy + dz * dz).to_bits();
    }
}

/// `m[j]` = min of `d[i]` over the i with `i % m.len() == j` (m.len() <= d.len()).
fn block_min_scalar(d: &[u32], m: &mut [u32]) {
    m.fill(u32::MAX);
    for row in d.chunks(m.len()) {
        for (mj, &v) in m.iter_mut().zip(row) {
            *mj = (*mj).min(v);
        }
    }
}

/// Appends the key of every point with `d[i] <= t`, in index order.
fn filter_scalar(d: &[u32], t: u32, out: &mut Vec<u64>) {
    for (i, &v) in d.iter().enumerate() {
        if v <= t {
            out.push(key(v, i));
        }
    }
}

#[inline(always)]
fn key(dist_bits: u32, i: usize) -> u64 {
    (u64::from(dist_bits) << 32) | (i as u64 & 0xffff_ffff)
}

/// The three kernels, scalar or AVX2; each gives the other's output bit for bit.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kernels {
    Scalar,
    #[cfg(target_arch = "x86_64")]
    Avx2,
}

impl Kernels {
    fn detect(allow_avx2: bool) -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if allow_avx2 && std::arch::is_x86_feature_detected!("avx2") {
                return Kernels::Avx2;
            }
        }
        let _ = allow_avx2;
        Kernels::Scalar
    }

    fn dist(self, xs: &[f32], ys: &[f32], zs: &[f32], c: [f32; 3], d: &mut [u32]) {
        match self {
            Kernels::Scalar => dist_scalar(xs, ys, zs, c, d),
            // SAFETY: `Avx2` is only made after the CPU reported AVX2.
            #[cfg(target_arch = "x86_64")]
            Kernels::Avx2 => unsafe { avx2::dist(xs, ys, zs, c, d) },
        }
    }

    fn block_min(self, d: &[u32], m: &mut [u32]) {
        match self {
            Kernels::Scalar => block_min_scalar(d, m),
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            Kernels::Avx2 => unsafe { avx2::block_min(d, m) },
        }
    }

    fn filter(self, d: &[u32], t: u32, out: &mut Vec<u64>) {
        match self {
            Kernels::Scalar => filter_scalar(d, t, out),
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            Kernels::Avx2 => unsafe { avx2::filter(d, t, out) },
        }
    }
}

/// For each center, the indices of its `k` nearest points (squared euclidean distance,
/// ties by lower index), nearest first: `centers.len() * k` indices. `xs`, `ys`, `zs` are
/// the points' coordinates (equal lengths). With `k > n` a row holds every point and is
/// padded with its nearest; with no points or `k == 0` the result is empty.
/// `allow_avx2` lets tests compare both builds.
pub(super) fn knn(
    xs: &[f32],
    ys: &[f32],
    zs: &[f32],
    centers: &[[f32; 3]],
    k: usize,
    allow_avx2: bool,
) -> Vec<usize> {
    let n = xs.len().min(ys.len()).min(zs.len());
    if n == 0 || k == 0 {
        return Vec::new();
    }
    let kern = Kernels::detect(allow_avx2);
    let take = k.min(n);
    // Twice k blocks (a multiple of the vector width): the k-th smallest of their mins is
    // about the 4% quantile at 1024 points, k = 32, so few points pass the filter. With
    // blocks of fewer than 4 points the filter would keep too many: select over all keys.
    let nb = (2 * take).next_multiple_of(W);
    let bounded = nb * 4 <= n;
    let mut d = vec![0u32; n];
    let mut mins = vec![0u32; if bounded { nb } else { 0 }];
    let mut sorted_mins = Vec::with_capacity(mins.len());
    let mut keys: Vec<u64> = Vec::with_capacity(if bounded { 4 * take } else { n });
    let mut out = Vec::with_capacity(centers.len() * k);
    for &c in centers {
        kern.dist(&xs[..n], &ys[..n], &zs[..n], c, &mut d);
        keys.clear();
        if bounded {
            kern.block_min(&d, &mut mins);
            sorted_mins.clear();
            sorted_mins.extend_from_slice(&mins);
            let (_, t, _) = sorted_mins.select_nth_unstable(take - 1);
            kern.filter(&d, *t, &mut keys);
        } else {
            keys.extend(d.iter().enumerate().map(|(i, &v)| key(v, i)));
        }
        if take < keys.len() {
            keys.select_nth_unstable(take);
            keys.truncate(take);
        }
        keys.sort_unstable();
        let row_start = out.len();
        out.extend(keys.iter().map(|&key| (key & 0xffff_ffff) as usize));
        // `keys` holds `take >= 1` keys (at least k points pass the bound), so the row
        // has a first entry; the fallback 0 is never used.
        let nearest = out.get(row_start).copied().unwrap_or(0);
        out.resize(row_start + k, nearest);
    }
    out
}

/// The AVX2 builds of the kernels: the same f32 operations in the same order per value
/// (sub, mul, add; never a fused multiply-add), unsigned compares on the bits.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{key, W};
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx2")]
    pub(super) fn dist(xs: &[f32], ys: &[f32], zs: &[f32], c: [f32; 3], d: &mut [u32]) {
        let n = d.len().min(xs.len()).min(ys.len()).min(zs.len());
        let full = n / W * W;
        let cx = _mm256_set1_ps(c[0]);
        let cy = _mm256_set1_ps(c[1]);
        let cz = _mm256_set1_ps(c[2]);
        let mut i = 0;
        while i < full {
            // SAFETY: i + W <= n, within every slice.
            unsafe {
                let dx = _mm256_sub_ps(_mm256_loadu_ps(xs.as_ptr().add(i)), cx);
                let dy = _mm256_sub_ps(_mm256_loadu_ps(ys.as_ptr().add(i)), cy);
                let dz = _mm256_sub_ps(_mm256_loadu_ps(zs.as_ptr().add(i)), cz);
                let s = _mm256_add_ps(
                    _mm256_add_ps(_mm256_mul_ps(dx, dx), _mm256_mul_ps(dy, dy)),
                    _mm256_mul_ps(dz, dz),
                );
                _mm256_storeu_si256(d.as_mut_ptr().add(i).cast(), _mm256_castps_si256(s));
            }
            i += W;
        }
        super::dist_scalar(&xs[full..n], &ys[full..n], &zs[full..n], c, &mut d[full..n]);
    }

    #[target_feature(enable = "avx2")]
    pub(super) fn block_min(d: &[u32], m: &mut [u32]) {
        let nb = m.len();
        if !nb.is_multiple_of(W) || nb == 0 {
            return super::block_min_scalar(d, m);
        }
        m.fill(u32::MAX);
        let mut rows = d.chunks_exact(nb);
        for row in &mut rows {
            for g in (0..nb).step_by(W) {
                // SAFETY: g + W <= nb = row.len() = m.len().
                unsafe {
                    let a = _mm256_loadu_si256(m.as_ptr().add(g).cast());
                    let b = _mm256_loadu_si256(row.as_ptr().add(g).cast());
                    _mm256_storeu_si256(m.as_mut_ptr().add(g).cast(), _mm256_min_epu32(a, b));
                }
            }
        }
        for (mj, &v) in m.iter_mut().zip(rows.remainder()) {
            *mj = (*mj).min(v);
        }
    }

    #[target_feature(enable = "avx2")]
    pub(super) fn filter(d: &[u32], t: u32, out: &mut Vec<u64>) {
        let full = d.len() / W * W;
        let tv = _mm256_set1_epi32(t as i32);
        let mut i = 0;
        while i < full {
            // SAFETY: i + W <= d.len().
            let v = unsafe { _mm256_loadu_si256(d.as_ptr().add(i).cast()) };
            // v <= t (unsigned) exactly when max(v, t) == t.
            let le = _mm256_cmpeq_epi32(_mm256_max_epu32(v, tv), tv);
            let mut mask = _mm256_movemask_ps(_mm256_castsi256_ps(le)) as u32;
            while mask != 0 {
                let j = i + mask.trailing_zeros() as usize;
                mask &= mask - 1;
                out.push(key(d[j], j));
            }
            i += W;
        }
        for (j, &v) in d.iter().enumerate().skip(full) {
            if v <= t {
                out.push(key(v, j));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngExt, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    type Cloud = (Vec<f32>, Vec<f32>, Vec<f32>);

    fn soa(points: &[[f32; 3]]) -> Cloud {
        (
            points.iter().map(|p| p[0]).collect(),
            points.iter().map(|p| p[1]).collect(),
            points.iter().map(|p| p[2]).collect(),
        )
    }

    fn random(seed: u64, n: usize, scale: f32) -> Vec<[f32; 3]> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..n)
            .map(|_| std::array::from_fn(|_| rng.random_range(-1.0f32..1.0) * scale))
            .collect()
    }

    /// Clouds chosen to break a kernel: ties (grids, duplicates, all one point), sizes that
    /// are not a multiple of 8, tiny clouds, subnormal and overflowing (+inf) distances.
    fn hard_clouds() -> Vec<Vec<[f32; 3]>> {
        let mut clouds = Vec::new();
        for n in [1, 2, 7, 8, 9, 31, 63, 65, 255, 257, 1023, 1024, 1031] {
            clouds.push(random(n as u64, n, 1.0));
        }
        let mut grid = Vec::new();
        for x in 0..7 {
            for y in 0..6 {
                for z in 0..5 {
                    grid.push([x as f32, y as f32, z as f32 * 0.5]);
                }
            }
        }
        let dup = grid.clone();
        grid.extend(dup);
        grid.push([0.0, 0.0, 0.0]);
        clouds.push(grid);
        clouds.push(vec![[0.25, -0.5, 2.0]; 301]);
        clouds.push(random(5, 517, 1e-22));
        clouds.push(random(6, 333, 3e19));
        clouds.push(
            random(7, 1024, 1.0)
                .into_iter()
                .map(|p| [p[0], p[1], 0.0])
                .collect(),
        );
        clouds
    }

    /// Sort every key: the definition the bounded selection must meet.
    fn brute(points: &[[f32; 3]], centers: &[[f32; 3]], k: usize) -> Vec<usize> {
        let mut out = Vec::new();
        for &c in centers {
            let mut keys: Vec<u64> = points
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    let (dx, dy, dz) = (p[0] - c[0], p[1] - c[1], p[2] - c[2]);
                    key((dx * dx + dy * dy + dz * dz).to_bits(), i)
                })
                .collect();
            keys.sort_unstable();
            let row: Vec<usize> = keys.iter().take(k).map(|&x| x as u32 as usize).collect();
            let nearest = row[0];
            out.extend(&row);
            out.resize(out.len() + k - row.len(), nearest);
        }
        out
    }

    fn centers_of(points: &[[f32; 3]]) -> Vec<[f32; 3]> {
        let mut c: Vec<[f32; 3]> = points.iter().step_by(13).copied().take(20).collect();
        c.push([0.0, 0.0, 0.0]);
        c.push([1e30, -1e30, 0.0]);
        c
    }

    #[test]
    fn avx2_kernels_equal_scalar_bit_for_bit() {
        let avx2 = Kernels::detect(true);
        if avx2 == Kernels::Scalar {
            eprintln!("no AVX2 on this CPU: only the scalar kernels ran");
        }
        for pts in hard_clouds() {
            let (xs, ys, zs) = soa(&pts);
            let n = pts.len();
            for c in centers_of(&pts) {
                let (mut a, mut b) = (vec![0u32; n], vec![1u32; n]);
                Kernels::Scalar.dist(&xs, &ys, &zs, c, &mut a);
                avx2.dist(&xs, &ys, &zs, c, &mut b);
                assert_eq!(a, b, "dist, n {n}, center {c:?}");
                for nb in [1, 8, 16, 64, 72] {
                    if nb > n {
                        continue;
                    }
                    let (mut ma, mut mb) = (vec![0u32; nb], vec![7u32; nb]);
                    Kernels::Scalar.block_min(&a, &mut ma);
                    avx2.block_min(&a, &mut mb);
                    assert_eq!(ma, mb, "block min, n {n}, nb {nb}");
                }
                let mut sorted = a.clone();
                sorted.sort_unstable();
                for t in [0, sorted[0], sorted[n / 2], sorted[n - 1], u32::MAX] {
                    let (mut fa, mut fb) = (Vec::new(), Vec::new());
                    Kernels::Scalar.filter(&a, t, &mut fa);
                    avx2.filter(&a, t, &mut fb);
                    assert_eq!(fa, fb, "filter, n {n}, t {t}");
                }
            }
        }
    }

    #[test]
    fn bounded_selection_equals_sorting_every_key() {
        for pts in hard_clouds() {
            let (xs, ys, zs) = soa(&pts);
            let centers = centers_of(&pts);
            for k in [1, 2, 5, 8, 17, 32, 33, 64, 200, pts.len(), pts.len() + 3] {
                let want = brute(&pts, &centers, k);
                for allow_avx2 in [false, true] {
                    assert_eq!(
                        knn(&xs, &ys, &zs, &centers, k, allow_avx2),
                        want,
                        "n {}, k {k}, avx2 {allow_avx2}",
                        pts.len()
                    );
                }
            }
        }
        assert!(knn(&[], &[], &[], &[[0.0; 3]], 3, true).is_empty());
        assert!(knn(&[1.0], &[1.0], &[1.0], &[[0.0; 3]], 0, true).is_empty());
    }
}
