//! A synthetic ScanObjectNN look-alike for the embedded demo and the tests: parametric
//! shapes sampled on their surface, then made scan-like (noise, random pose, a missing
//! side, floor and clutter points masked -1), written with the real file layout.
//!
//! Determinism: every cloud has its own ChaCha8 stream derived from (seed, split, index),
//! so clouds are generated in parallel yet bit-identical for any thread count. Only IEEE
//! basic operations and `sqrt` (exact) touch the points, except f64 `sin`/`cos` for the
//! helix, rounded to f32 afterwards. Unit vectors and rotations come from rejection
//! sampling rather than trigonometry for the same reason.

use super::geometry::Point;
use super::h5::write_scanobjectnn_h5;
use anyhow::Context;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use std::path::Path;

/// Class names of the demo; the position is the label.
pub const DEMO_CLASSES: &[&str] = &[
    "sphere", "cube", "cylinder", "cone", "torus", "pyramid", "capsule", "helix", "ring", "cross",
    "table", "chair",
];

pub const DEMO_TRAIN_FILE: &str = "training_objectdataset.h5";
pub const DEMO_TEST_FILE: &str = "test_objectdataset.h5";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoPcConfig {
    pub seed: u64,
    pub train_per_class: usize,
    pub test_per_class: usize,
    /// Points per cloud, object and background together (ScanObjectNN has 2048).
    pub points: usize,
}

impl Default for DemoPcConfig {
    fn default() -> Self {
        Self {
            seed: 0,
            train_per_class: 40,
            test_per_class: 12,
            points: 2048,
        }
    }
}

/// Writes dir/training_objectdataset.h5 and dir/test_objectdataset.h5, each object:
/// points sampled on the shape surface with random size/aspect, gaussian noise, random 3D
/// rotation, partial occlusion (points on one side of a random plane dropped, 0-30%),
/// background clutter (10-20% of the points on a floor patch and in blobs, mask -1),
/// exactly `points` per cloud; classes interleaved in a seeded random order. Returns the
/// (train, test) cloud counts.
pub fn write_demo_scanobjectnn(dir: &Path, cfg: &DemoPcConfig) -> anyhow::Result<(usize, usize)> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating the demo data folder {}", dir.display()))?;
    let mut counts = [0usize; 2];
    for (split, (file, per_class)) in [
        (DEMO_TRAIN_FILE, cfg.train_per_class),
        (DEMO_TEST_FILE, cfg.test_per_class),
    ]
    .into_iter()
    .enumerate()
    {
        let (clouds, labels, masks) = generate_split(cfg, split as u64, per_class);
        let path = dir.join(file);
        write_scanobjectnn_h5(&path, &clouds, &labels, &masks)
            .with_context(|| format!("writing the demo point clouds to {}", path.display()))?;
        counts[split] = clouds.len();
    }
    Ok((counts[0], counts[1]))
}

type Split = (Vec<Vec<Point>>, Vec<i64>, Vec<Vec<i32>>);

fn generate_split(cfg: &DemoPcConfig, split: u64, per_class: usize) -> Split {
    let nclass = DEMO_CLASSES.len();
    let mut order: Vec<usize> = (0..per_class * nclass).map(|i| i % nclass).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(mix(cfg.seed, split, u64::MAX));
    shuffle(&mut order, &mut rng);
    let objects: Vec<(Vec<Point>, Vec<i32>)> = order
        .par_iter()
        .enumerate()
        .map(|(i, &class)| {
            let mut rng = ChaCha8Rng::seed_from_u64(mix(cfg.seed, split, i as u64));
            scan_object(class, cfg.points, &mut rng)
        })
        .collect();
    let labels = order.iter().map(|&c| c as i64).collect();
    let (clouds, masks) = objects.into_iter().unzip();
    (clouds, labels, masks)
}

/// splitmix64 finalizer over the three inputs: independent-looking seeds for neighbouring
/// (seed, split, index) triples.
fn mix(seed: u64, split: u64, index: u64) -> u64 {
    let mut z = seed
        ^ split.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn shuffle<T>(v: &mut [T], rng: &mut ChaCha8Rng) {
    for i in (1..v.len()).rev() {
        let j = rng.random_range(0..=i as u64) as usize;
        v.swap(i, j);
    }
}

fn uniform(rng: &mut ChaCha8Rng, lo: f32, hi: f32) -> f32 {
    rng.random_range(lo..hi)
}

/// Approximately standard normal: Irwin–Hall sum of four uniforms, rescaled to unit
/// variance. Good enough for sensor noise and free of `ln`, whose last bit may vary
/// between libm implementations.
fn gauss(rng: &mut ChaCha8Rng) -> f32 {
    let s: f32 = (0..4).map(|_| rng.random::<f32>()).sum();
    (s - 2.0) * 1.732_050_8
}

fn unit3(rng: &mut ChaCha8Rng) -> Point {
    loop {
        let v = [
            uniform(rng, -1.0, 1.0),
            uniform(rng, -1.0, 1.0),
            uniform(rng, -1.0, 1.0),
        ];
        let n2 = v[0] * v[0] + v[1] * v[1] + v[2] * v[2];
        if n2 > 1e-4 && n2 <= 1.0 {
            let n = n2.sqrt();
            return [v[0] / n, v[1] / n, v[2] / n];
        }
    }
}

fn unit2(rng: &mut ChaCha8Rng) -> [f32; 2] {
    loop {
        let v = [uniform(rng, -1.0, 1.0), uniform(rng, -1.0, 1.0)];
        let n2 = v[0] * v[0] + v[1] * v[1];
        if n2 > 1e-4 && n2 <= 1.0 {
            let n = n2.sqrt();
            return [v[0] / n, v[1] / n];
        }
    }
}

/// Uniformly random rotation matrix, from a unit quaternion drawn uniformly in the 4-ball.
fn random_rotation(rng: &mut ChaCha8Rng) -> [[f32; 3]; 3] {
    let [w, x, y, z] = loop {
        let q = [
            uniform(rng, -1.0, 1.0),
            uniform(rng, -1.0, 1.0),
            uniform(rng, -1.0, 1.0),
            uniform(rng, -1.0, 1.0),
        ];
        let n2 = q.iter().map(|v| v * v).sum::<f32>();
        if n2 > 1e-4 && n2 <= 1.0 {
            let n = n2.sqrt();
            break [q[0] / n, q[1] / n, q[2] / n, q[3] / n];
        }
    };
    [
        [
            1.0 - 2.0 * (y * y + z * z),
            2.0 * (x * y - w * z),
            2.0 * (x * z + w * y),
        ],
        [
            2.0 * (x * y + w * z),
            1.0 - 2.0 * (x * x + z * z),
            2.0 * (y * z - w * x),
        ],
        [
            2.0 * (x * z - w * y),
            2.0 * (y * z + w * x),
            1.0 - 2.0 * (x * x + y * y),
        ],
    ]
}

/// Index drawn with probability proportional to `weights`.
fn pick(rng: &mut ChaCha8Rng, weights: &[f32]) -> usize {
    let total: f32 = weights.iter().sum();
    let mut r = rng.random::<f32>() * total;
    for (i, w) in weights.iter().enumerate() {
        if r < *w {
            return i;
        }
        r -= w;
    }
    weights.len() - 1
}

/// An axis-aligned box: center and half extents.
struct Cuboid {
    c: Point,
    h: Point,
}

const fn cuboid(c: Point, h: Point) -> Cuboid {
    Cuboid { c, h }
}

/// Uniform point on the union of box surfaces (overlaps are sampled twice; harmless).
fn boxes_surface(rng: &mut ChaCha8Rng, boxes: &[Cuboid]) -> Point {
    // At most 6 boxes: a fixed array avoids allocating per point.
    let mut areas = [0f32; 6];
    let n = boxes.len().min(6);
    for (a, b) in areas.iter_mut().zip(&boxes[..n]) {
        let [x, y, z] = b.h;
        *a = x * y + y * z + x * z;
    }
    let b = &boxes[pick(rng, &areas[..n])];
    let [hx, hy, hz] = b.h;
    // Face pair normal to axis k has area proportional to the product of the other two.
    let axis = pick(rng, &[hy * hz, hx * hz, hx * hy]);
    let sign = if rng.random::<bool>() { 1.0 } else { -1.0 };
    let mut p = [
        uniform(rng, -hx, hx),
        uniform(rng, -hy, hy),
        uniform(rng, -hz, hz),
    ];
    p[axis] = sign * b.h[axis];
    [p[0] + b.c[0], p[1] + b.c[1], p[2] + b.c[2]]
}

fn disc(rng: &mut ChaCha8Rng, r_in: f32, r_out: f32) -> [f32; 2] {
    // Area-uniform radius between r_in and r_out.
    let u = rng.random::<f32>();
    let r = (r_in * r_in + u * (r_out * r_out - r_in * r_in)).sqrt();
    let [a, b] = unit2(rng);
    [a * r, b * r]
}

/// Uniform point in the triangle (a, b, c).
fn triangle(rng: &mut ChaCha8Rng, a: Point, b: Point, c: Point) -> Point {
    let s = rng.random::<f32>().sqrt();
    let t = rng.random::<f32>();
    let (wa, wb, wc) = (1.0 - s, s * (1.0 - t), s * t);
    [
        wa * a[0] + wb * b[0] + wc * c[0],
        wa * a[1] + wb * b[1] + wc * c[1],
        wa * a[2] + wb * b[2] + wc * c[2],
    ]
}

/// One point on the canonical surface of `class` (roughly within [-1, 1]^3, z up).
fn shape_point(class: usize, rng: &mut ChaCha8Rng) -> Point {
    match DEMO_CLASSES.get(class).copied().unwrap_or("sphere") {
        "cube" => boxes_surface(rng, &[cuboid([0.0; 3], [0.8, 0.8, 0.8])]),
        "cylinder" => {
            let (r, h) = (0.7f32, 1.0f32);
            // side 2πr·2h vs two caps 2πr²: π cancels.
            if pick(rng, &[2.0 * r * h, r * r]) == 0 {
                let [a, b] = unit2(rng);
                [a * r, b * r, uniform(rng, -h, h)]
            } else {
                let [a, b] = disc(rng, 0.0, r);
                [a, b, if rng.random::<bool>() { h } else { -h }]
            }
        }
        "cone" => {
            // Base radius 1 at z = -1, apex at z = 1; lateral area π·√5 vs base π.
            if pick(rng, &[5f32.sqrt(), 1.0]) == 0 {
                let t = rng.random::<f32>().sqrt();
                let [a, b] = unit2(rng);
                [a * t, b * t, 1.0 - 2.0 * t]
            } else {
                let [a, b] = disc(rng, 0.0, 1.0);
                [a, b, -1.0]
            }
        }
        "torus" => {
            let (big, small) = (0.72f32, 0.28f32);
            // Outer parts of the tube have more area: accept the tube angle with
            // probability (R + r cos v) / (R + r).
            let [cv, sv] = loop {
                let d = unit2(rng);
                if rng.random::<f32>() * (big + small) <= big + small * d[0] {
                    break d;
                }
            };
            let [a, b] = unit2(rng);
            let rr = big + small * cv;
            [a * rr, b * rr, small * sv]
        }
        "pyramid" => {
            let apex = [0.0, 0.0, 1.0];
            let c = [
                [-1.0, -1.0, -1.0],
                [1.0, -1.0, -1.0],
                [1.0, 1.0, -1.0],
                [-1.0, 1.0, -1.0],
            ];
            // Base area 4, each side 0.5·2·√5.
            let s = 5f32.sqrt();
            match pick(rng, &[4.0, s, s, s, s]) {
                0 => [uniform(rng, -1.0, 1.0), uniform(rng, -1.0, 1.0), -1.0],
                f => triangle(rng, apex, c[f - 1], c[f % 4]),
            }
        }
        "capsule" => {
            let (r, h) = (0.42f32, 0.6f32);
            // side 2πr·2h vs the two half spheres 4πr².
            if pick(rng, &[4.0 * r * h, 4.0 * r * r]) == 0 {
                let [a, b] = unit2(rng);
                [a * r, b * r, uniform(rng, -h, h)]
            } else {
                let [a, b, c] = unit3(rng);
                [a * r, b * r, c * r + if c >= 0.0 { h } else { -h }]
            }
        }
        "helix" => {
            let u = rng.random::<f32>();
            let angle = f64::from(u) * 3.0 * std::f64::consts::TAU;
            let (s, c) = angle.sin_cos();
            let o = unit3(rng);
            let tube = 0.13;
            [
                0.75 * c as f32 + tube * o[0],
                0.75 * s as f32 + tube * o[1],
                -1.0 + 2.0 * u + tube * o[2],
            ]
        }
        "ring" => {
            let [a, b] = disc(rng, 0.55, 1.0);
            [a, b, uniform(rng, -0.05, 0.05)]
        }
        "cross" => boxes_surface(
            rng,
            &[
                cuboid([0.0, 0.0, 0.0], [0.17, 0.12, 1.0]),
                cuboid([0.0, 0.0, 0.35], [0.75, 0.12, 0.17]),
            ],
        ),
        "table" => boxes_surface(
            rng,
            &[
                cuboid([0.0, 0.0, 0.45], [1.0, 0.65, 0.05]),
                cuboid([0.85, 0.5, -0.15], [0.06, 0.06, 0.55]),
                cuboid([-0.85, 0.5, -0.15], [0.06, 0.06, 0.55]),
                cuboid([0.85, -0.5, -0.15], [0.06, 0.06, 0.55]),
                cuboid([-0.85, -0.5, -0.15], [0.06, 0.06, 0.55]),
            ],
        ),
        "chair" => boxes_surface(
            rng,
            &[
                cuboid([0.0, 0.0, 0.0], [0.5, 0.5, 0.05]),
                cuboid([0.0, -0.46, 0.55], [0.5, 0.04, 0.5]),
                cuboid([0.44, 0.44, -0.48], [0.04, 0.04, 0.45]),
                cuboid([-0.44, 0.44, -0.48], [0.04, 0.04, 0.45]),
                cuboid([0.44, -0.44, -0.48], [0.04, 0.04, 0.45]),
                cuboid([-0.44, -0.44, -0.48], [0.04, 0.04, 0.45]),
            ],
        ),
        _ => unit3(rng), // "sphere"
    }
}

/// One scan-like cloud of `points` points: (points, mask), mask 1 = object, -1 = background.
fn scan_object(class: usize, points: usize, rng: &mut ChaCha8Rng) -> (Vec<Point>, Vec<i32>) {
    let bg_frac = uniform(rng, 0.10, 0.20);
    let nb = ((points as f32 * bg_frac).round() as usize).min(points);
    let no = points - nb;
    let occlusion = uniform(rng, 0.0, 0.30);
    // Oversample so that exactly `no` points survive the cut.
    let m = ((no as f32 / (1.0 - occlusion)).ceil() as usize).max(no);

    let size = uniform(rng, 0.6, 1.0);
    let aspect = [
        uniform(rng, 0.75, 1.25) * size,
        uniform(rng, 0.75, 1.25) * size,
        uniform(rng, 0.75, 1.25) * size,
    ];
    let sigma = 0.012 * size;
    let rot = random_rotation(rng);
    let mut obj: Vec<Point> = (0..m)
        .map(|_| {
            let p = shape_point(class, rng);
            let q = [
                p[0] * aspect[0] + sigma * gauss(rng),
                p[1] * aspect[1] + sigma * gauss(rng),
                p[2] * aspect[2] + sigma * gauss(rng),
            ];
            [
                rot[0][0] * q[0] + rot[0][1] * q[1] + rot[0][2] * q[2],
                rot[1][0] * q[0] + rot[1][1] * q[1] + rot[1][2] * q[2],
                rot[2][0] * q[0] + rot[2][1] * q[1] + rot[2][2] * q[2],
            ]
        })
        .collect();

    // Occlusion: the side of the object facing away from a virtual sensor is missing.
    // Keep the `no` points lowest along a random direction (ties by index: total order).
    let dir = unit3(rng);
    let mut order: Vec<(f32, usize)> = obj
        .iter()
        .enumerate()
        .map(|(i, p)| (p[0] * dir[0] + p[1] * dir[1] + p[2] * dir[2], i))
        .collect();
    order.sort_unstable_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    order.truncate(no);
    order.sort_unstable_by_key(|x| x.1);
    obj = order.into_iter().map(|(_, i)| obj[i]).collect();

    // Center on the visible object, as ScanObjectNN's clouds are.
    let mut sum = [0f64; 3];
    for p in &obj {
        for k in 0..3 {
            sum[k] += f64::from(p[k]);
        }
    }
    let denom = obj.len().max(1) as f64;
    let c = sum.map(|s| (s / denom) as f32);
    let mut lo = [f32::INFINITY; 3];
    let mut hi = [f32::NEG_INFINITY; 3];
    for p in obj.iter_mut() {
        for k in 0..3 {
            p[k] -= c[k];
            lo[k] = lo[k].min(p[k]);
            hi[k] = hi[k].max(p[k]);
        }
    }
    if obj.is_empty() {
        lo = [-0.5; 3];
        hi = [0.5; 3];
    }

    // Background: mostly a floor patch under the object, the rest small blobs of clutter.
    let floor_z = lo[2] - 0.01;
    let margin = uniform(rng, 0.15, 0.4);
    let n_floor = ((nb as f32 * uniform(rng, 0.5, 1.0)).round() as usize).min(nb);
    let mut all = obj;
    for _ in 0..n_floor {
        all.push([
            uniform(rng, lo[0] - margin, hi[0] + margin),
            uniform(rng, lo[1] - margin, hi[1] + margin),
            floor_z + 0.005 * gauss(rng),
        ]);
    }
    let n_blobs = 1 + rng.random_range(0..3u32) as usize;
    let reach = (hi[0] - lo[0]).max(hi[1] - lo[1]) * 0.5 + margin;
    let blobs: Vec<(Point, f32)> = (0..n_blobs)
        .map(|_| {
            let [a, b] = unit2(rng);
            let r = reach * uniform(rng, 0.8, 1.3);
            let center = [a * r, b * r, floor_z + uniform(rng, 0.0, 0.4)];
            (center, uniform(rng, 0.03, 0.1))
        })
        .collect();
    for i in 0..nb - n_floor {
        let (c, s) = blobs[i % n_blobs];
        all.push([
            c[0] + s * gauss(rng),
            c[1] + s * gauss(rng),
            c[2] + s * gauss(rng),
        ]);
    }

    // Interleave object and background points as a scanner's output would.
    let mut mask: Vec<i32> = (0..points).map(|i| if i < no { 1 } else { -1 }).collect();
    let mut perm: Vec<usize> = (0..points).collect();
    shuffle(&mut perm, rng);
    let cloud = perm.iter().map(|&i| all[i]).collect();
    mask = perm.iter().map(|&i| mask[i]).collect();
    (cloud, mask)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pointcloud::h5::H5Clouds;

    fn small() -> DemoPcConfig {
        DemoPcConfig {
            seed: 7,
            train_per_class: 3,
            test_per_class: 2,
            points: 512,
        }
    }

    #[test]
    fn files_are_byte_identical_across_runs() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let cfg = small();
        let na = write_demo_scanobjectnn(a.path(), &cfg).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1100));
        // A different thread count must not change a byte.
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let nb = pool.install(|| write_demo_scanobjectnn(b.path(), &cfg).unwrap());
        assert_eq!(na, (3 * DEMO_CLASSES.len(), 2 * DEMO_CLASSES.len()));
        assert_eq!(na, nb);
        for f in [DEMO_TRAIN_FILE, DEMO_TEST_FILE] {
            let x = std::fs::read(a.path().join(f)).unwrap();
            let y = std::fs::read(b.path().join(f)).unwrap();
            assert!(x == y, "{f} differs between two runs with the same seed");
        }
        let c = tempfile::tempdir().unwrap();
        write_demo_scanobjectnn(c.path(), &DemoPcConfig { seed: 8, ..cfg }).unwrap();
        assert_ne!(
            std::fs::read(a.path().join(DEMO_TRAIN_FILE)).unwrap(),
            std::fs::read(c.path().join(DEMO_TRAIN_FILE)).unwrap()
        );
    }

    #[test]
    fn clouds_look_like_scanobjectnn() {
        let cfg = small();
        let (clouds, labels, masks) = generate_split(&cfg, 0, cfg.train_per_class);
        let n = DEMO_CLASSES.len() * cfg.train_per_class;
        assert_eq!((clouds.len(), labels.len(), masks.len()), (n, n, n));
        for class in 0..DEMO_CLASSES.len() as i64 {
            assert_eq!(labels.iter().filter(|&&l| l == class).count(), 3);
        }
        // Interleaved, not sorted by class.
        let mut sorted = labels.clone();
        sorted.sort();
        assert_ne!(labels, sorted);
        for (c, m) in clouds.iter().zip(&masks) {
            assert_eq!(c.len(), 512);
            assert_eq!(m.len(), 512);
            assert!(c.iter().flatten().all(|v| v.is_finite()));
            let bg = m.iter().filter(|&&v| v == -1).count();
            assert_eq!(bg + m.iter().filter(|&&v| v == 1).count(), 512);
            assert!((40..=110).contains(&bg), "{bg} background points");
            // Background is not all at the end (interleaved).
            assert!(m[..256].contains(&-1));
        }
    }

    #[test]
    fn every_class_tokenizes_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = DemoPcConfig {
            seed: 1,
            train_per_class: 1,
            test_per_class: 0,
            points: 2048,
        };
        let (ntrain, ntest) = write_demo_scanobjectnn(dir.path(), &cfg).unwrap();
        assert_eq!((ntrain, ntest), (DEMO_CLASSES.len(), 0));
        let h = H5Clouds::open(&dir.path().join(DEMO_TRAIN_FILE)).unwrap();
        assert_eq!(h.points_per_cloud(), 2048);
        for (_, pts) in h.read_range(0, h.len()).unwrap() {
            crate::pointcloud::geometry::tokenize(&pts, true, 1024, 64, 32).unwrap();
        }
        assert!(H5Clouds::open(&dir.path().join(DEMO_TEST_FILE))
            .unwrap()
            .is_empty());
    }
}
