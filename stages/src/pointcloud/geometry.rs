//! Per-cloud geometry of PointBERT tokens (PAPER.md §3): unit-sphere normalization,
//! farthest point sampling, k-nearest-neighbour grouping.
//!
//! Everything here is single-threaded and allocation-light on purpose: the stage runs one
//! cloud per rayon task, so parallelism lives one level up and these functions stay
//! deterministic by construction (same input bytes → same output bytes, any thread count).
//!
//! Float arithmetic is written so that `scripts/bench/pc_reference.py` (numpy) reproduces
//! it bit for bit: squared distances are `dx*dx + dy*dy + dz*dz` in f32 in that order (Rust
//! never fuses into FMA on its own), the normalization runs in f64 with a sequential sum,
//! and ties are always broken by the lower index.

pub type Point = [f32; 3];

/// Initial "distance to the chosen set" in FPS. The pointnet2 CUDA kernel uses 1e10 rather
/// than infinity; we keep the same constant so that the two agree even on huge coordinates.
pub(super) const FPS_INIT: f32 = 1e10;

/// Lanes of the FPS inner loop. Independent (max, argmax) accumulators let LLVM keep the
/// loop in SIMD registers; the lanes are merged with a first-index tie-break after. Two
/// vectors' worth per pass (2 x SSE here, 2 x AVX2 below) hide the latency of the
/// loop-carried max.
const LANES: usize = 8;
#[cfg(target_arch = "x86_64")]
const AVX2_LANES: usize = 16;

/// Subtract the centroid, divide by the max norm (unit sphere). Degenerate (all same point)
/// -> leave centered (no div by zero).
///
/// Runs in f64 because georeferenced LAS coordinates (1e5..1e7) lose their sub-metre digits
/// in an f32 centroid; the result is rounded to f32 once, at the end.
pub fn normalize_unit_sphere(points: &mut [Point]) {
    if points.is_empty() {
        return;
    }
    // Sequential sum in f64, then one division: this is exactly what numpy's
    // `p.mean(axis=0)` does for an [N,3] float64 array (axis-0 reduction is not pairwise).
    let mut sum = [0f64; 3];
    for p in points.iter() {
        sum[0] += f64::from(p[0]);
        sum[1] += f64::from(p[1]);
        sum[2] += f64::from(p[2]);
    }
    let n = points.len() as f64;
    let c = [sum[0] / n, sum[1] / n, sum[2] / n];

    let mut max_sq = 0f64;
    for p in points.iter() {
        let dx = f64::from(p[0]) - c[0];
        let dy = f64::from(p[1]) - c[1];
        let dz = f64::from(p[2]) - c[2];
        let sq = dx * dx + dy * dy + dz * dz;
        if sq > max_sq {
            max_sq = sq;
        }
    }
    let m = max_sq.sqrt();
    // A cloud that is a single repeated point has m == 0: keep it centered rather than
    // produce NaNs; the caller may still reject it for other reasons.
    let scale = m > 0.0;
    for p in points.iter_mut() {
        for (v, cv) in p.iter_mut().zip(c) {
            let centered = f64::from(*v) - cv;
            // Divide (not multiply by 1/m) so numpy's `p / m` gives the same bits.
            *v = if scale { centered / m } else { centered } as f32;
        }
    }
}

/// Farthest point sampling as the pointnet2 CUDA op does: start at index 0, keep for every
/// point its min squared distance to the chosen set, pick the argmax (first index on ties),
/// n picks. Requires n <= points.len() (caller checks). Returns indices.
///
/// If `n > points.len()` anyway, the extra picks repeat already chosen points (every
/// distance is then 0 and the first index wins), as the CUDA kernel does; it never panics.
///
/// Clouds of `fps::MIN_POINTS` or more go through the bucketed FPS (`fps.rs`, the same
/// picks with most distance updates skipped); smaller ones, and any with a non-finite
/// coordinate, through the full scan below.
pub fn farthest_point_sample(points: &[Point], n: usize) -> Vec<usize> {
    fps_impl(points, n, true, true)
}

/// `farthest_point_sample` with the AVX2 dispatch and the bucketed FPS switchable, so
/// tests can check that every code path picks the same points.
fn fps_impl(points: &[Point], n: usize, allow_avx2: bool, allow_buckets: bool) -> Vec<usize> {
    let len = points.len();
    if n == 0 || len == 0 {
        return Vec::new();
    }
    if allow_buckets {
        if let Some(picks) = super::fps::farthest_point_sample(points, n, allow_avx2) {
            return picks;
        }
    }
    if len > u32::MAX as usize {
        // The fast path keeps lane indices in u32 (half the register pressure of usize).
        return fps_scalar(points, n);
    }
    // Structure of arrays: the hot loop then reads three contiguous f32 streams.
    let mut xs = Vec::with_capacity(len);
    let mut ys = Vec::with_capacity(len);
    let mut zs = Vec::with_capacity(len);
    for p in points {
        xs.push(p[0]);
        ys.push(p[1]);
        zs.push(p[2]);
    }
    // Two min-distance buffers, read from one and written to the other, swapped every
    // iteration. Updating one buffer in place lets LLVM turn "keep the old value" into a
    // masked store, and the store-to-load stall on the next pass costs ~2x throughput.
    let mut prev = vec![FPS_INIT; len];
    let mut mind = vec![FPS_INIT; len];
    let mut out = Vec::with_capacity(n);
    let mut last = 0usize;
    out.push(last);
    #[cfg(target_arch = "x86_64")]
    let avx2 = allow_avx2 && std::arch::is_x86_feature_detected!("avx2");
    #[cfg(not(target_arch = "x86_64"))]
    let avx2 = {
        let _ = allow_avx2;
        false
    };
    for _ in 1..n {
        last = fps_step(avx2, &xs, &ys, &zs, &prev, &mut mind, points[last]);
        std::mem::swap(&mut prev, &mut mind);
        out.push(last);
    }
    out
}

/// One FPS iteration: `mind = min(prev, distance to c)`, returning the first index of the
/// maximum of `mind`. With `avx2` (which the caller has detected on this CPU) it runs an
/// AVX2 build of the same code, as the default x86-64 target only assumes SSE2; both give
/// identical bits: the same IEEE operations in the same order, and Rust never fuses a*b+c.
#[inline]
fn fps_step(
    avx2: bool,
    xs: &[f32],
    ys: &[f32],
    zs: &[f32],
    prev: &[f32],
    mind: &mut [f32],
    c: Point,
) -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        if avx2 {
            // SAFETY: `avx2` is only true when the CPU reported AVX2 support.
            return unsafe { fps_step_avx2(xs, ys, zs, prev, mind, c) };
        }
    }
    let _ = avx2;
    fps_step_lanes::<LANES>(xs, ys, zs, prev, mind, c)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn fps_step_avx2(
    xs: &[f32],
    ys: &[f32],
    zs: &[f32],
    prev: &[f32],
    mind: &mut [f32],
    c: Point,
) -> usize {
    fps_step_lanes::<AVX2_LANES>(xs, ys, zs, prev, mind, c)
}

#[inline(always)]
fn fps_step_lanes<const L: usize>(
    xs: &[f32],
    ys: &[f32],
    zs: &[f32],
    prev: &[f32],
    mind: &mut [f32],
    c: Point,
) -> usize {
    let [cx, cy, cz] = c;
    // -1 is below any distance, so lane j is seeded by its first element (index j), which
    // keeps the first-index rule when every distance is 0 (duplicated points).
    let mut best_v = [-1f32; L];
    let mut best_i = [0u32; L];
    let full = xs.len() / L * L;
    let chunks = xs[..full]
        .chunks_exact(L)
        .zip(ys[..full].chunks_exact(L))
        .zip(zs[..full].chunks_exact(L))
        .zip(prev[..full].chunks_exact(L))
        .zip(mind[..full].chunks_exact_mut(L));
    let mut base = 0u32;
    for ((((xc, yc), zc), pc), mc) in chunks {
        for j in 0..L {
            let dx = xc[j] - cx;
            let dy = yc[j] - cy;
            let dz = zc[j] - cz;
            let d = dx * dx + dy * dy + dz * dz;
            let m = if d < pc[j] { d } else { pc[j] };
            mc[j] = m;
            // Strict `>`: within a lane, indices grow, so the first one wins ties.
            let old = best_v[j];
            best_i[j] = if m > old { base + j as u32 } else { best_i[j] };
            best_v[j] = if m > old { m } else { old };
        }
        base += L as u32;
    }
    // Merge lanes: the largest value, and among equal values the lowest index.
    let mut bv = -1f32;
    let mut bi = usize::MAX;
    for j in 0..L {
        let (v, i) = (best_v[j], best_i[j] as usize);
        if v < 0.0 {
            continue; // lane never saw a point (fewer than L points in total)
        }
        if v > bv || (v == bv && i < bi) {
            bv = v;
            bi = i;
        }
    }
    // The tail has higher indices than every chunk, so strict `>` keeps first-index ties.
    for k in full..xs.len() {
        let dx = xs[k] - cx;
        let dy = ys[k] - cy;
        let dz = zs[k] - cz;
        let d = dx * dx + dy * dy + dz * dz;
        let m = if d < prev[k] { d } else { prev[k] };
        mind[k] = m;
        if m > bv {
            bv = m;
            bi = k;
        }
    }
    // Unreachable for a non-empty cloud (every point is >= 0 > -1); 0 is a safe fallback
    // for NaN coordinates, which `tokenize` rejects before getting here.
    if bi == usize::MAX {
        0
    } else {
        bi
    }
}

/// Plain FPS for clouds with more than u32::MAX points (never hit in practice).
fn fps_scalar(points: &[Point], n: usize) -> Vec<usize> {
    let mut mind = vec![FPS_INIT; points.len()];
    let mut out = Vec::with_capacity(n);
    let mut last = 0usize;
    out.push(last);
    for _ in 1..n {
        let c = points[last];
        let mut bv = -1f32;
        let mut bi = 0usize;
        for (k, (p, md)) in points.iter().zip(mind.iter_mut()).enumerate() {
            let d = sq_dist(p, &c);
            let m = if d < *md { d } else { *md };
            *md = m;
            if m > bv {
                bv = m;
                bi = k;
            }
        }
        last = bi;
        out.push(last);
    }
    out
}

#[inline]
fn sq_dist(a: &Point, b: &Point) -> f32 {
    let dx = a[0] - b[0];
    let dy = a[1] - b[1];
    let dz = a[2] - b[2];
    dx * dx + dy * dy + dz * dz
}

/// For each center, the k nearest points of `points` (squared euclidean, ties broken by
/// lower index), ordered nearest first. Returns flat indices [centers.len() * k].
///
/// If `k > points.len()` (callers should prevent it), each row holds all points in order
/// and is padded with its nearest index, the way PointNet++ ball query pads; with no
/// points at all the result is empty.
///
/// The selection lives in `knn.rs` (a bound that discards most points first, AVX2 when the
/// CPU has it); it works on coordinate streams, built here once per call. Indices are kept
/// in 32 bits there: `points` is the FPS-sampled set (num_points), never a raw
/// multi-billion-point scan.
pub fn knn(points: &[Point], centers: &[Point], k: usize) -> Vec<usize> {
    let xs: Vec<f32> = points.iter().map(|p| p[0]).collect();
    let ys: Vec<f32> = points.iter().map(|p| p[1]).collect();
    let zs: Vec<f32> = points.iter().map(|p| p[2]).collect();
    super::knn::knn(&xs, &ys, &zs, centers, k, true)
}

/// PointBERT tokens of one cloud.
#[derive(Debug, Clone, PartialEq)]
pub struct PcTokens {
    /// Group centers, `num_groups * 3` (x, y, z per center), in FPS order.
    pub centers: Vec<f32>,
    /// `num_groups * group_size * 3`: the neighbours of each center, nearest first, each
    /// point minus its center.
    pub neighborhoods: Vec<f32>,
}

/// Why one cloud cannot be tokenized. The stage skips the cloud and records the message
/// in `rejects.jsonl`, so every message says what is wrong and what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CloudReject {
    #[error(
        "point {index} has a non-finite coordinate (NaN or infinity); \
         clean the source file (drop or repair that point) to keep this cloud"
    )]
    NotFinite { index: usize },
    #[error(
        "the cloud has {have} points but num_points = {need}; \
         lower num_points or remove clouds this small from the input"
    )]
    TooFewPoints { have: usize, need: usize },
    #[error(
        "num_groups = {num_groups} exceeds num_points = {num_points} (centers are chosen \
         among the sampled points); lower num_groups or raise num_points"
    )]
    TooManyGroups {
        num_groups: usize,
        num_points: usize,
    },
    #[error(
        "group_size = {group_size} exceeds num_points = {num_points} (neighbours come from \
         the sampled points); lower group_size or raise num_points"
    )]
    GroupTooLarge {
        group_size: usize,
        num_points: usize,
    },
    #[error("{name} = 0; it must be at least 1")]
    ZeroParameter { name: &'static str },
}

/// Full per-cloud pipeline (PAPER.md §3): reject non-finite points, reject if fewer than
/// num_points (and if num_groups > num_points or group_size > num_points), normalize to
/// the unit sphere when asked, FPS to num_points, FPS num_groups centers among those, group_size
/// nearest neighbours among the num_points sampled points for each center,
/// neighbourhoods relative to their center.
pub fn tokenize(
    points: &[Point],
    normalize: bool,
    num_points: usize,
    num_groups: usize,
    group_size: usize,
) -> Result<PcTokens, CloudReject> {
    // Parameter problems first: they are the same for every cloud, so reporting them
    // ahead of per-cloud problems points the user at the config.
    for (name, v) in [
        ("num_points", num_points),
        ("num_groups", num_groups),
        ("group_size", group_size),
    ] {
        if v == 0 {
            return Err(CloudReject::ZeroParameter { name });
        }
    }
    if num_groups > num_points {
        return Err(CloudReject::TooManyGroups {
            num_groups,
            num_points,
        });
    }
    if group_size > num_points {
        return Err(CloudReject::GroupTooLarge {
            group_size,
            num_points,
        });
    }
    if let Some(index) = points
        .iter()
        .position(|p| !(p[0].is_finite() && p[1].is_finite() && p[2].is_finite()))
    {
        return Err(CloudReject::NotFinite { index });
    }
    if points.len() < num_points {
        return Err(CloudReject::TooFewPoints {
            have: points.len(),
            need: num_points,
        });
    }

    // A copy only when the coordinates change (h5 clouds are sampled as they are).
    let pts: std::borrow::Cow<[Point]> = if normalize {
        let mut pts = points.to_vec();
        normalize_unit_sphere(&mut pts);
        pts.into()
    } else {
        points.into()
    };
    let sampled: Vec<Point> = farthest_point_sample(&pts, num_points)
        .into_iter()
        .map(|i| pts[i])
        .collect();
    Ok(group(&sampled, num_groups, group_size))
}

/// PointBERT's grouping of an already sampled cloud (its `Group` module): `num_groups` FPS
/// centers (from index 0), the `group_size` nearest points of each, relative to the center.
pub fn group(sampled: &[Point], num_groups: usize, group_size: usize) -> PcTokens {
    let centers: Vec<Point> = farthest_point_sample(sampled, num_groups)
        .into_iter()
        .map(|i| sampled[i])
        .collect();
    let nn = knn(sampled, &centers, group_size);
    let mut neighborhoods = Vec::with_capacity(num_groups * group_size * 3);
    for (c, row) in centers.iter().zip(nn.chunks_exact(group_size)) {
        for &i in row {
            let p = sampled[i];
            neighborhoods.extend_from_slice(&[p[0] - c[0], p[1] - c[1], p[2] - c[2]]);
        }
    }
    PcTokens {
        centers: centers.iter().flatten().copied().collect(),
        neighborhoods,
    }
}

/// `n` points of `points` for the per-step resampling's pool: the cloud as it is when it
/// has exactly `n`, FPS to `n` when it has more, and cycled (point i mod len) when it has
/// fewer, so that every kept cloud has the same shape. Duplicates cost FPS nothing: a point
/// already chosen is at distance 0.
pub fn keep_points(points: &[Point], n: usize) -> Vec<Point> {
    use std::cmp::Ordering;
    match points.len().cmp(&n) {
        _ if points.is_empty() => Vec::new(),
        Ordering::Equal => points.to_vec(),
        Ordering::Greater => farthest_point_sample(points, n)
            .into_iter()
            .map(|i| points[i])
            .collect(),
        Ordering::Less => (0..n).map(|i| points[i % points.len()]).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngExt, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn random_cloud(seed: u64, n: usize) -> Vec<Point> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..n)
            .map(|_| {
                [
                    rng.random_range(-1.0f32..1.0),
                    rng.random_range(-1.0f32..1.0),
                    rng.random_range(-1.0f32..1.0),
                ]
            })
            .collect()
    }

    /// Textbook FPS, written independently of the laned version.
    fn naive_fps(points: &[Point], n: usize) -> Vec<usize> {
        let mut mind = vec![1e10f32; points.len()];
        let mut out = vec![0usize];
        while out.len() < n {
            let last = points[*out.last().unwrap()];
            for (k, p) in points.iter().enumerate() {
                let d = sq_dist(p, &last);
                mind[k] = mind[k].min(d);
            }
            let mut best = 0;
            for k in 1..points.len() {
                if mind[k] > mind[best] {
                    best = k;
                }
            }
            out.push(best);
        }
        out
    }

    fn naive_knn(points: &[Point], centers: &[Point], k: usize) -> Vec<usize> {
        let mut out = Vec::new();
        for c in centers {
            let mut all: Vec<(f32, usize)> = points
                .iter()
                .enumerate()
                .map(|(i, p)| (sq_dist(p, c), i))
                .collect();
            all.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap().then(a.1.cmp(&b.1)));
            out.extend(all[..k].iter().map(|x| x.1));
        }
        out
    }

    #[test]
    fn fps_matches_naive() {
        for (seed, n, picks) in [
            (1, 2048, 1024),
            (2, 100, 37),
            (3, 7, 7),
            (4, 1, 1),
            (5, 33, 5),
        ] {
            let pts = random_cloud(seed, n);
            assert_eq!(
                farthest_point_sample(&pts, picks),
                naive_fps(&pts, picks),
                "seed {seed}"
            );
        }
    }

    #[test]
    fn fps_code_paths_agree() {
        for (seed, n) in [(9, 513), (10, 2048), (11, 5)] {
            let pts = random_cloud(seed, n);
            let picks = n.min(300);
            let fast = farthest_point_sample(&pts, picks);
            assert_eq!(fast, fps_scalar(&pts, picks));
            assert_eq!(fast, fps_impl(&pts, picks, false, true));
            assert_eq!(fast, fps_impl(&pts, picks, true, false));
            assert_eq!(fast, fps_impl(&pts, picks, false, false));
        }
    }

    /// The bucketed FPS (fps.rs) against the full scan on clouds chosen to break it: ties
    /// (grids, duplicates), a flat cloud (zero extent), far clusters, tiny spacing
    /// (subnormal distances), huge coordinates, a size that pads the last bucket, and more
    /// picks than points.
    #[test]
    fn bucketed_fps_matches_scan_on_hard_clouds() {
        let mut clouds: Vec<(Vec<Point>, usize)> = Vec::new();
        for seed in 0..6 {
            clouds.push((random_cloud(100 + seed, 2048), 1024));
        }
        let mut grid = Vec::new();
        for x in 0..8 {
            for y in 0..8 {
                for z in 0..8 {
                    grid.push([x as f32, y as f32, z as f32]);
                }
            }
        }
        let dup = grid.clone();
        grid.extend(dup);
        clouds.push((grid.clone(), 1024));
        clouds.push((grid[..700].to_vec(), 700));
        let flat: Vec<Point> = random_cloud(7, 1000)
            .into_iter()
            .map(|p| [p[0], p[1], 0.0])
            .collect();
        clouds.push((flat, 600));
        let mut clusters = random_cloud(8, 600);
        for p in clusters.iter_mut().skip(300) {
            p[0] += 1e4;
        }
        clouds.push((clusters, 400));
        let tiny: Vec<Point> = random_cloud(9, 500)
            .into_iter()
            .map(|p| [p[0] * 1e-22, p[1] * 1e-22, p[2] * 1e-22])
            .collect();
        clouds.push((tiny, 300));
        let huge: Vec<Point> = random_cloud(10, 500)
            .into_iter()
            .map(|p| [p[0] * 1e9, p[1] * 1e9, 3e8])
            .collect();
        clouds.push((huge, 300));
        clouds.push((random_cloud(11, 129), 129));
        clouds.push((random_cloud(12, 200), 260));
        clouds.push((vec![[0.25f32, -0.5, 2.0]; 300], 5));
        for (i, (pts, picks)) in clouds.iter().enumerate() {
            let scan = fps_impl(pts, *picks, true, false);
            assert_eq!(fps_impl(pts, *picks, true, true), scan, "cloud {i}");
            assert_eq!(fps_impl(pts, *picks, false, true), scan, "cloud {i}");
            if pts.len() <= 1000 {
                assert_eq!(naive_fps(pts, *picks), scan, "cloud {i}");
            }
        }
    }

    #[test]
    fn fps_ties_take_first_index() {
        // A grid has many equal distances; duplicates force all-zero ties at the end.
        let mut pts = Vec::new();
        for x in 0..4 {
            for y in 0..4 {
                for z in 0..3 {
                    pts.push([x as f32, y as f32, z as f32]);
                }
            }
        }
        let dup = pts.clone();
        pts.extend(dup);
        assert_eq!(farthest_point_sample(&pts, 60), naive_fps(&pts, 60));
        // More picks than distinct points: the repeats are the lowest indices with min 0.
        let same = vec![[0.5f32, 0.5, 0.5]; 10];
        assert_eq!(farthest_point_sample(&same, 4), vec![0, 0, 0, 0]);
    }

    #[test]
    fn knn_matches_naive_and_breaks_ties_by_index() {
        let pts = random_cloud(11, 1024);
        let centers = random_cloud(12, 64);
        assert_eq!(knn(&pts, &centers, 32), naive_knn(&pts, &centers, 32));
        assert_eq!(knn(&pts, &centers, 1024), naive_knn(&pts, &centers, 1024));
        // Both code paths (few neighbours of many: insertion; many: selection), on a grid
        // with duplicates (ties everywhere) and with the centers among the points.
        let mut grid = Vec::new();
        for x in 0..6 {
            for y in 0..6 {
                for z in 0..6 {
                    grid.push([x as f32, y as f32, z as f32 * 0.5]);
                }
            }
        }
        let dup = grid.clone();
        grid.extend(dup);
        let grid_centers: Vec<Point> = grid.iter().step_by(37).copied().collect();
        for k in [1, 5, 17, 32, 53, 54, 100, 431, 432] {
            assert_eq!(
                knn(&grid, &grid_centers, k),
                naive_knn(&grid, &grid_centers, k),
                "k {k}"
            );
            assert_eq!(
                knn(&pts, &centers, k),
                naive_knn(&pts, &centers, k),
                "k {k}"
            );
        }
        // Equidistant points: order must be by index.
        let ring = vec![
            [1.0f32, 0.0, 0.0],
            [0.0, 1.0, 0.0],
            [-1.0, 0.0, 0.0],
            [0.0, -1.0, 0.0],
            [0.0, 0.0, 5.0],
        ];
        assert_eq!(knn(&ring, &[[0.0, 0.0, 0.0]], 3), vec![0, 1, 2]);
        // k larger than the cloud pads with the nearest index instead of panicking.
        assert_eq!(knn(&ring[..2], &[[1.0, 0.0, 0.0]], 4), vec![0, 1, 0, 0]);
    }

    #[test]
    fn normalize_unit_sphere_bounds_and_degenerate() {
        let mut pts = random_cloud(21, 300);
        for p in pts.iter_mut() {
            p[0] = p[0] * 1000.0 + 5e5;
        }
        normalize_unit_sphere(&mut pts);
        let max = pts
            .iter()
            .map(|p| (p[0] * p[0] + p[1] * p[1] + p[2] * p[2]).sqrt())
            .fold(0f32, f32::max);
        assert!((max - 1.0).abs() < 1e-5, "{max}");
        let mut same = vec![[3.0f32, -2.0, 7.0]; 5];
        normalize_unit_sphere(&mut same);
        assert!(same.iter().all(|p| *p == [0.0, 0.0, 0.0]));
        let mut empty: Vec<Point> = Vec::new();
        normalize_unit_sphere(&mut empty);
    }

    #[test]
    fn tokenize_shapes_and_relative_neighbourhoods() {
        let pts = random_cloud(31, 2048);
        let t = tokenize(&pts, true, 1024, 64, 32).unwrap();
        assert_eq!(t.centers.len(), 64 * 3);
        assert_eq!(t.neighborhoods.len(), 64 * 32 * 3);
        // Each center is its own nearest neighbour: the first offset of every group is 0.
        for g in 0..64 {
            let off = &t.neighborhoods[g * 32 * 3..g * 32 * 3 + 3];
            assert_eq!(off, &[0.0, 0.0, 0.0]);
        }
        // Deterministic.
        assert_eq!(t, tokenize(&pts, true, 1024, 64, 32).unwrap());
    }

    #[test]
    fn tokenize_rejects() {
        let mut pts = random_cloud(41, 100);
        pts[17][1] = f32::NAN;
        assert_eq!(
            tokenize(&pts, true, 50, 10, 5),
            Err(CloudReject::NotFinite { index: 17 })
        );
        pts[17][1] = f32::INFINITY;
        assert!(matches!(
            tokenize(&pts, true, 50, 10, 5),
            Err(CloudReject::NotFinite { index: 17 })
        ));
        let pts = random_cloud(42, 100);
        let e = tokenize(&pts, true, 1024, 64, 32).unwrap_err();
        assert_eq!(
            e,
            CloudReject::TooFewPoints {
                have: 100,
                need: 1024
            }
        );
        assert!(e.to_string().contains("lower num_points"));
        assert!(matches!(
            tokenize(&pts, true, 50, 64, 5),
            Err(CloudReject::TooManyGroups { .. })
        ));
        assert!(matches!(
            tokenize(&pts, true, 50, 10, 51),
            Err(CloudReject::GroupTooLarge { .. })
        ));
        assert!(matches!(
            tokenize(&pts, true, 50, 0, 5),
            Err(CloudReject::ZeroParameter { name: "num_groups" })
        ));
        assert!(matches!(
            tokenize(&[], true, 1, 1, 1),
            Err(CloudReject::TooFewPoints { have: 0, need: 1 })
        ));
    }
}
