//! A synthetic Argoverse 1.1 look-alike for the demo, the tests and the benchmark: two city
//! vector maps (a street grid with signalised intersections, left/right turn lanes and
//! same-direction neighbours; PIT's grid is turned by 20° so the agent box is not aligned with
//! the map) and scenario CSVs of vehicles that follow the lane graph — straight, left and
//! right manoeuvres, constant speed, accelerating, braking and stop-and-go — with the real
//! file layout (`<root>/map_files/pruned_argoverse_<CITY>_<ID>_vector_map.xml`,
//! `<root>/{train,val}/data/<seq_id>.csv`, 50 steps at 10 Hz, one AGENT, one AV, OTHERS of
//! which some appear late, leave early or miss a few frames).
//!
//! Why it exists: the real data is 5 GB behind a licence form; the stage, the model and the
//! bench must run on a fresh machine. Determinism: each scenario has its own ChaCha8 stream
//! derived from (seed, split, index), so generation runs in parallel yet every byte depends
//! only on the seed and the sizes.

use super::index::CityLanes;
use super::map::{write_vector_map, Lane, Turn};
use anyhow::Context;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use std::collections::HashMap;
use std::fmt::Write;
use std::path::Path;

/// Sizes of the demo dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct DemoAvConfig {
    pub seed: u64,
    /// Scenarios in `train/data`.
    pub train: usize,
    /// Scenarios in `val/data`.
    pub val: usize,
    /// Intersections per side of each city's street grid.
    pub grid: usize,
    /// Distance between neighbouring intersections (metres).
    pub block: f64,
}

impl Default for DemoAvConfig {
    fn default() -> Self {
        DemoAvConfig {
            seed: 0,
            train: 600,
            val: 150,
            grid: 8,
            block: 60.0,
        }
    }
}

/// What was written.
#[derive(Debug, Clone, PartialEq)]
pub struct DemoAvSummary {
    pub train: usize,
    pub val: usize,
    /// (city, lanes in its map)
    pub cities: Vec<(String, usize)>,
}

/// The demo cities: name, map file, origin of the grid, grid rotation (degrees), first lane id.
const CITIES: [(&str, &str, [f64; 2], f64, i64); 2] = [
    (
        "MIA",
        "pruned_argoverse_MIA_10316_vector_map.xml",
        [-320.0, 1150.0],
        0.0,
        9_600_000,
    ),
    (
        "PIT",
        "pruned_argoverse_PIT_10314_vector_map.xml",
        [2200.0, 480.0],
        20.0,
        2_100_000,
    ),
];

/// Steps per scenario (Argoverse 1.1: 5 s at 10 Hz).
pub const DEMO_STEPS: usize = 50;
const DT: f64 = 0.1;
const LANE_WIDTH: f64 = 3.5;
/// Half the size of an intersection box (two lanes each way fit inside).
const HALF: f64 = 10.0;
const NODES_PER_LANE: usize = 10;

/// Writes `dir/map_files`, `dir/train/data` and `dir/val/data`.
pub fn write_demo_argoverse(dir: &Path, cfg: &DemoAvConfig) -> anyhow::Result<DemoAvSummary> {
    anyhow::ensure!(
        cfg.grid >= 2,
        "the street grid needs at least 2×2 intersections"
    );
    anyhow::ensure!(
        cfg.block > 2.0 * HALF + 10.0,
        "blocks must be longer than {} m",
        2.0 * HALF + 10.0
    );
    let maps_dir = dir.join("map_files");
    std::fs::create_dir_all(&maps_dir)
        .with_context(|| format!("creating {}", maps_dir.display()))?;
    let mut cities = Vec::new();
    for (name, file, origin, angle, base) in CITIES {
        let lanes = grid_lanes(cfg.grid, cfg.block, origin, angle.to_radians(), base);
        let path = maps_dir.join(file);
        std::fs::write(&path, write_vector_map(&lanes))
            .with_context(|| format!("writing {}", path.display()))?;
        cities.push(DemoCity::new(name, lanes));
    }
    for (split, n) in [("train", cfg.train), ("val", cfg.val)] {
        let data = dir.join(split).join("data");
        if data.exists() {
            // Stale scenarios of an earlier, larger run would join this one.
            for e in std::fs::read_dir(&data)? {
                let p = e?.path();
                if p.extension().is_some_and(|e| e == "csv") {
                    std::fs::remove_file(&p)?;
                }
            }
        }
        std::fs::create_dir_all(&data).with_context(|| format!("creating {}", data.display()))?;
        let split_id = if split == "train" { 1 } else { 2 };
        (1..=n).into_par_iter().try_for_each(|i| {
            let mut rng = ChaCha8Rng::seed_from_u64(mix(cfg.seed, split_id, i as u64));
            let text = scenario_csv(&mut rng, &cities, i);
            let path = data.join(format!("{i}.csv"));
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
        })?;
    }
    Ok(DemoAvSummary {
        train: cfg.train,
        val: cfg.val,
        cities: cities
            .iter()
            .map(|c| (c.lanes.city.clone(), c.lanes.lanes.len()))
            .collect(),
    })
}

fn mix(seed: u64, split: u64, index: u64) -> u64 {
    let mut h = blake3::Hasher::new();
    h.update(b"lm4ve-demo-argoverse");
    h.update(&seed.to_le_bytes());
    h.update(&split.to_le_bytes());
    h.update(&index.to_le_bytes());
    let b = h.finalize();
    u64::from_le_bytes(b.as_bytes()[..8].try_into().unwrap_or([0; 8]))
}

// ---------------------------------------------------------------------------------------
// The map: a grid of two-lane-each-way streets.

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Dir {
    E,
    N,
    W,
    S,
}

impl Dir {
    const ALL: [Dir; 4] = [Dir::E, Dir::N, Dir::W, Dir::S];
    fn v(self) -> [f64; 2] {
        match self {
            Dir::E => [1.0, 0.0],
            Dir::N => [0.0, 1.0],
            Dir::W => [-1.0, 0.0],
            Dir::S => [0.0, -1.0],
        }
    }
    fn step(self) -> (i64, i64) {
        let v = self.v();
        (v[0] as i64, v[1] as i64)
    }
    fn left(self) -> Dir {
        match self {
            Dir::E => Dir::N,
            Dir::N => Dir::W,
            Dir::W => Dir::S,
            Dir::S => Dir::E,
        }
    }
    fn right(self) -> Dir {
        self.left().left().left()
    }
}

/// Which lane of the grid: a half of a link (`piece` 0 leaves an intersection, 1 arrives at
/// the next) or a movement through an intersection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    Link {
        i: i64,
        j: i64,
        d: Dir,
        k: u8,
        piece: u8,
    },
    Through {
        i: i64,
        j: i64,
        d: Dir,
        k: u8,
    },
    Left {
        i: i64,
        j: i64,
        d: Dir,
    },
    Right {
        i: i64,
        j: i64,
        d: Dir,
    },
}

fn add(a: [f64; 2], b: [f64; 2], s: f64) -> [f64; 2] {
    [a[0] + s * b[0], a[1] + s * b[1]]
}

/// Centre of lane `k` (0 = left/inner, 1 = right/outer) of direction `d`, offset from a point.
fn lane_offset(p: [f64; 2], d: Dir, k: u8) -> [f64; 2] {
    let v = d.v();
    let right = [v[1], -v[0]];
    add(p, right, (k as f64 + 0.5) * LANE_WIDTH)
}

fn straight(a: [f64; 2], b: [f64; 2]) -> Vec<[f64; 2]> {
    (0..NODES_PER_LANE)
        .map(|n| {
            let t = n as f64 / (NODES_PER_LANE - 1) as f64;
            [a[0] + t * (b[0] - a[0]), a[1] + t * (b[1] - a[1])]
        })
        .collect()
}

/// A quadratic Bézier from `a` (heading `d`) to `b`, through the corner where the two
/// headings' lines meet.
fn turn(a: [f64; 2], d: Dir, b: [f64; 2]) -> Vec<[f64; 2]> {
    let v = d.v();
    let along = (b[0] - a[0]) * v[0] + (b[1] - a[1]) * v[1];
    let q = add(a, v, along);
    (0..NODES_PER_LANE)
        .map(|n| {
            let t = n as f64 / (NODES_PER_LANE - 1) as f64;
            let (u, w) = ((1.0 - t) * (1.0 - t), t * t);
            let m = 2.0 * t * (1.0 - t);
            [
                u * a[0] + m * q[0] + w * b[0],
                u * a[1] + m * q[1] + w * b[1],
            ]
        })
        .collect()
}

/// A lane before it has an id: key, centerline, turn, is_intersection, has_traffic_control.
type KeyedLane = (Key, Vec<[f64; 2]>, Turn, bool, bool);

/// Every lane of a `g`×`g` grid, spaced `block` metres, turned by `angle` about the first
/// intersection and moved to `origin`; ids from `base` in a fixed order.
fn grid_lanes(g: usize, block: f64, origin: [f64; 2], angle: f64, base: i64) -> Vec<Lane> {
    let g = g as i64;
    let inside = |i: i64, j: i64| (0..g).contains(&i) && (0..g).contains(&j);
    let has_link = |i: i64, j: i64, d: Dir| {
        let (di, dj) = d.step();
        inside(i, j) && inside(i + di, j + dj)
    };
    let centre = |i: i64, j: i64| [i as f64 * block, j as f64 * block];
    // Not every intersection has signals or stop signs.
    let controlled = |i: i64, j: i64| (i * 7 + j * 3).rem_euclid(4) != 0;

    // 1. Geometry and attributes per key, in a fixed order.
    let mut keys: Vec<KeyedLane> = Vec::new();
    for i in 0..g {
        for j in 0..g {
            for d in Dir::ALL {
                if !has_link(i, j, d) {
                    continue;
                }
                let (di, dj) = d.step();
                let a = add(centre(i, j), d.v(), HALF);
                let b = add(centre(i + di, j + dj), d.v(), -HALF);
                let mid = [(a[0] + b[0]) / 2.0, (a[1] + b[1]) / 2.0];
                for k in 0..2u8 {
                    for (piece, (s, e)) in [(a, mid), (mid, b)].into_iter().enumerate() {
                        keys.push((
                            Key::Link {
                                i,
                                j,
                                d,
                                k,
                                piece: piece as u8,
                            },
                            straight(lane_offset(s, d, k), lane_offset(e, d, k)),
                            Turn::None,
                            false,
                            false,
                        ));
                    }
                }
            }
        }
    }
    for i in 0..g {
        for j in 0..g {
            let c = centre(i, j);
            let ctl = controlled(i, j);
            for d in Dir::ALL {
                // Arriving with heading d from the intersection behind.
                let (di, dj) = d.step();
                if !has_link(i - di, j - dj, d) {
                    continue;
                }
                let entry = add(c, d.v(), -HALF);
                if has_link(i, j, d) {
                    let exit = add(c, d.v(), HALF);
                    for k in 0..2u8 {
                        keys.push((
                            Key::Through { i, j, d, k },
                            straight(lane_offset(entry, d, k), lane_offset(exit, d, k)),
                            Turn::None,
                            true,
                            ctl,
                        ));
                    }
                }
                let l = d.left();
                if has_link(i, j, l) {
                    let a = lane_offset(entry, d, 0);
                    let b = lane_offset(add(c, l.v(), HALF), l, 0);
                    keys.push((Key::Left { i, j, d }, turn(a, d, b), Turn::Left, true, ctl));
                }
                let r = d.right();
                if has_link(i, j, r) {
                    let a = lane_offset(entry, d, 1);
                    let b = lane_offset(add(c, r.v(), HALF), r, 1);
                    keys.push((
                        Key::Right { i, j, d },
                        turn(a, d, b),
                        Turn::Right,
                        true,
                        ctl,
                    ));
                }
            }
        }
    }
    let ids: HashMap<Key, i64> = keys
        .iter()
        .enumerate()
        .map(|(n, k)| (k.0, base + n as i64))
        .collect();
    let id = |k: Key| ids.get(&k).copied();

    // 2. Topology: successors, then predecessors as their inverse.
    let successors = |k: Key| -> Vec<i64> {
        let v = match k {
            Key::Link {
                i,
                j,
                d,
                k,
                piece: 0,
            } => vec![Key::Link {
                i,
                j,
                d,
                k,
                piece: 1,
            }],
            Key::Link { i, j, d, k, .. } => {
                let (di, dj) = d.step();
                let (i, j) = (i + di, j + dj);
                let mut v = vec![Key::Through { i, j, d, k }];
                v.push(if k == 0 {
                    Key::Left { i, j, d }
                } else {
                    Key::Right { i, j, d }
                });
                v
            }
            Key::Through { i, j, d, k } => vec![Key::Link {
                i,
                j,
                d,
                k,
                piece: 0,
            }],
            Key::Left { i, j, d } => vec![Key::Link {
                i,
                j,
                d: d.left(),
                k: 0,
                piece: 0,
            }],
            Key::Right { i, j, d } => vec![Key::Link {
                i,
                j,
                d: d.right(),
                k: 1,
                piece: 0,
            }],
        };
        v.into_iter().filter_map(id).collect()
    };
    let neighbours = |k: Key| -> (Option<i64>, Option<i64>) {
        match k {
            Key::Link { i, j, d, k, piece } => {
                let other = Key::Link {
                    i,
                    j,
                    d,
                    k: 1 - k,
                    piece,
                };
                if k == 0 {
                    (None, id(other))
                } else {
                    (id(other), None)
                }
            }
            Key::Through { i, j, d, k } => {
                let other = Key::Through { i, j, d, k: 1 - k };
                if k == 0 {
                    (None, id(other))
                } else {
                    (id(other), None)
                }
            }
            _ => (None, None),
        }
    };
    let (s, c) = angle.sin_cos();
    let place = |p: [f64; 2]| {
        [
            origin[0] + c * p[0] - s * p[1],
            origin[1] + s * p[0] + c * p[1],
        ]
    };
    let mut lanes: Vec<Lane> = keys
        .iter()
        .map(|(k, pts, t, inter, ctl)| {
            let (l, r) = neighbours(*k);
            Lane {
                id: ids[k],
                centerline: pts.iter().map(|&p| place(p)).collect(),
                turn: *t,
                is_intersection: *inter,
                has_traffic_control: *ctl,
                l_neighbor: l,
                r_neighbor: r,
                predecessors: Vec::new(),
                successors: successors(*k),
            }
        })
        .collect();
    let index: HashMap<i64, usize> = lanes.iter().enumerate().map(|(n, l)| (l.id, n)).collect();
    let edges: Vec<(i64, i64)> = lanes
        .iter()
        .flat_map(|l| l.successors.iter().map(move |s| (l.id, *s)))
        .collect();
    for (from, to) in edges {
        if let Some(&n) = index.get(&to) {
            lanes[n].predecessors.push(from);
        }
    }
    lanes
}

// ---------------------------------------------------------------------------------------
// Scenarios: vehicles driving along routes of the lane graph.

struct DemoCity {
    lanes: CityLanes,
    index: HashMap<i64, usize>,
}

impl DemoCity {
    fn new(name: &str, lanes: Vec<Lane>) -> Self {
        let lanes = CityLanes::new(name, lanes);
        let index = lanes
            .lanes
            .iter()
            .enumerate()
            .map(|(n, l)| (l.id, n))
            .collect();
        DemoCity { lanes, index }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Manoeuvre {
    Straight,
    Left,
    Right,
    Any,
}

/// A polyline with cumulative arc lengths; positions beyond its end stay at the end.
struct RoutePath {
    pts: Vec<[f64; 2]>,
    cum: Vec<f64>,
}

impl RoutePath {
    fn new(route: &[usize], city: &DemoCity) -> RoutePath {
        let mut pts: Vec<[f64; 2]> = Vec::new();
        for &l in route {
            for &p in &city.lanes.lanes[l].centerline {
                if pts
                    .last()
                    .is_none_or(|q| (q[0] - p[0]).hypot(q[1] - p[1]) > 1e-9)
                {
                    pts.push(p);
                }
            }
        }
        let mut cum = vec![0.0];
        for w in pts.windows(2) {
            let d = (w[1][0] - w[0][0]).hypot(w[1][1] - w[0][1]);
            cum.push(cum[cum.len() - 1] + d);
        }
        RoutePath { pts, cum }
    }
    fn len(&self) -> f64 {
        self.cum[self.cum.len() - 1]
    }
    fn at(&self, s: f64) -> [f64; 2] {
        let s = s.clamp(0.0, self.len());
        if self.pts.len() < 2 {
            return self.pts.first().copied().unwrap_or([0.0; 2]);
        }
        let seg = match self.cum.binary_search_by(|c| c.total_cmp(&s)) {
            Ok(i) => i.min(self.pts.len().saturating_sub(2)),
            Err(i) => i.saturating_sub(1).min(self.pts.len().saturating_sub(2)),
        };
        let (a, b) = (self.pts[seg], self.pts[seg + 1]);
        let len = self.cum[seg + 1] - self.cum[seg];
        let f = if len > 0.0 {
            (s - self.cum[seg]) / len
        } else {
            0.0
        };
        [a[0] + f * (b[0] - a[0]), a[1] + f * (b[1] - a[1])]
    }
}

/// Lanes from `start` following successors until `needed` metres past the start of `start`;
/// at the first intersection the manoeuvre's movement is preferred (straight when it has none).
fn route(
    rng: &mut ChaCha8Rng,
    city: &DemoCity,
    start: usize,
    m: Manoeuvre,
    needed: f64,
) -> Vec<usize> {
    let lanes = &city.lanes.lanes;
    let mut r = vec![start];
    let mut length = lane_length(&lanes[start]);
    let mut done = false;
    while length < needed && r.len() < 64 {
        let cur = &lanes[r[r.len() - 1]];
        let succ: Vec<usize> = cur
            .successors
            .iter()
            .filter_map(|s| city.index.get(s).copied())
            .collect();
        if succ.is_empty() {
            break;
        }
        let branching = succ.len() > 1;
        let want = match (m, done) {
            (Manoeuvre::Left, false) => Some(Turn::Left),
            (Manoeuvre::Right, false) => Some(Turn::Right),
            (Manoeuvre::Straight, _) | (Manoeuvre::Left | Manoeuvre::Right, true) => {
                Some(Turn::None)
            }
            (Manoeuvre::Any, _) => None,
        };
        let pick = match want.and_then(|t| succ.iter().copied().find(|&s| lanes[s].turn == t)) {
            Some(s) => s,
            None => succ[rng.random_range(0..succ.len() as u64) as usize],
        };
        if branching {
            done = true;
        }
        length += lane_length(&lanes[pick]);
        r.push(pick);
    }
    r
}

fn lane_length(l: &Lane) -> f64 {
    l.centerline
        .windows(2)
        .map(|w| (w[1][0] - w[0][0]).hypot(w[1][1] - w[0][1]))
        .sum()
}

/// Arc lengths at the 50 steps: one of constant speed, accelerating, braking, stop-and-go.
fn speed_profile(rng: &mut ChaCha8Rng, parked: bool) -> Vec<f64> {
    if parked {
        return vec![0.0; DEMO_STEPS];
    }
    let kind = rng.random_range(0..4u32);
    let u = |rng: &mut ChaCha8Rng, lo: f64, hi: f64| lo + (hi - lo) * rng.random::<f64>();
    let (mut v, a1, a2, switch) = match kind {
        0 => (u(rng, 4.0, 14.0), 0.0, 0.0, 0.0),
        1 => (
            u(rng, 0.5, 6.0),
            u(rng, 1.0, 2.5),
            u(rng, 0.0, 1.0),
            u(rng, 2.0, 4.0),
        ),
        2 => (u(rng, 8.0, 14.0), u(rng, -3.0, -1.0), 0.0, u(rng, 1.0, 4.0)),
        _ => (
            u(rng, 6.0, 12.0),
            u(rng, -4.0, -2.0),
            u(rng, 1.5, 3.0),
            u(rng, 1.5, 3.0),
        ),
    };
    let mut s = 0.0;
    let mut out = Vec::with_capacity(DEMO_STEPS);
    for n in 0..DEMO_STEPS {
        out.push(s);
        let t = n as f64 * DT;
        let a = if t < switch { a1 } else { a2 };
        v = (v + a * DT).clamp(0.0, 16.0);
        s += v * DT;
    }
    out
}

fn gauss(rng: &mut ChaCha8Rng) -> f64 {
    let u1 = rng.random::<f64>().max(1e-12);
    let u2 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

struct Vehicle {
    id: String,
    kind: &'static str,
    /// Position per step, `None` where the vehicle is not in the log.
    points: Vec<Option<[f64; 2]>>,
}

/// One vehicle: a route from `start` at `offset` metres into it, a speed profile, noise.
fn drive(
    rng: &mut ChaCha8Rng,
    city: &DemoCity,
    start: usize,
    offset: f64,
    m: Manoeuvre,
    parked: bool,
) -> Vec<Option<[f64; 2]>> {
    let s = speed_profile(rng, parked);
    let needed = offset + s[DEMO_STEPS - 1] + 5.0;
    let r = route(rng, city, start, m, needed);
    let path = RoutePath::new(&r, city);
    s.iter()
        .map(|&s| {
            let p = path.at(offset + s);
            Some([p[0] + 0.03 * gauss(rng), p[1] + 0.03 * gauss(rng)])
        })
        .collect()
}

/// A random non-intersection lane index and offset, among lanes touching the box of
/// half-size `half` around `centre` (the whole map when `centre` is `None`).
fn pick_start(
    rng: &mut ChaCha8Rng,
    city: &DemoCity,
    centre: Option<[f64; 2]>,
    half: f64,
    lane_filter: impl Fn(&Lane) -> bool,
) -> Option<(usize, f64)> {
    let lanes = &city.lanes.lanes;
    let candidates: Vec<usize> = match centre {
        Some(c) => city
            .lanes
            .lanes_touching_aabb([c[0] - half, c[1] - half], [c[0] + half, c[1] + half])
            .into_iter()
            .map(|i| i as usize)
            .filter(|&i| !lanes[i].is_intersection && lane_filter(&lanes[i]))
            .collect(),
        None => (0..lanes.len())
            .filter(|&i| !lanes[i].is_intersection && lane_filter(&lanes[i]))
            .collect(),
    };
    if candidates.is_empty() {
        return None;
    }
    let i = candidates[rng.random_range(0..candidates.len() as u64) as usize];
    let offset = rng.random::<f64>() * lane_length(&lanes[i]);
    Some((i, offset))
}

/// The text of one scenario CSV.
fn scenario_csv(rng: &mut ChaCha8Rng, cities: &[DemoCity], seq: usize) -> String {
    let city = &cities[rng.random_range(0..cities.len() as u64) as usize];
    let m = match rng.random_range(0..10u32) {
        0..=3 => Manoeuvre::Straight,
        4..=6 => Manoeuvre::Left,
        _ => Manoeuvre::Right,
    };
    // Left turns start from the inner lane, right turns from the outer one (the grid's lane
    // ids alternate k = 0, 1 per piece, so the neighbour tags tell them apart).
    let agent_ok = |l: &Lane| match m {
        Manoeuvre::Left => l.r_neighbor.is_some(),
        Manoeuvre::Right => l.l_neighbor.is_some(),
        _ => true,
    };
    let (start, offset) = pick_start(rng, city, None, 0.0, agent_ok).unwrap_or((0, 0.0));
    let agent = drive(rng, city, start, offset, m, false);
    let centre = agent[0].unwrap_or([0.0, 0.0]);

    let mut used: Vec<u32> = Vec::new();
    let mut track_id = |rng: &mut ChaCha8Rng| loop {
        let n = rng.random_range(1..100_000u32);
        if !used.contains(&n) {
            used.push(n);
            return format!("00000000-0000-0000-0000-0000000{n:05}");
        }
    };
    let mut vehicles = Vec::new();
    if let Some((s, o)) = pick_start(rng, city, Some(centre), 30.0, |_| true) {
        vehicles.push(Vehicle {
            id: "00000000-0000-0000-0000-000000000000".into(),
            kind: "AV",
            points: drive(rng, city, s, o, Manoeuvre::Any, false),
        });
    }
    vehicles.push(Vehicle {
        id: track_id(rng),
        kind: "AGENT",
        points: agent,
    });
    let others = 5 + rng.random_range(0..16u32) as usize;
    for _ in 0..others {
        let Some((s, o)) = pick_start(rng, city, Some(centre), 130.0, |_| true) else {
            continue;
        };
        let parked = rng.random::<f64>() < 0.15;
        let mut points = drive(rng, city, s, o, Manoeuvre::Any, parked);
        match rng.random_range(0..20u32) {
            0..=2 => {
                // Appears late.
                let from = rng.random_range(1..40u32) as usize;
                points[..from].fill(None);
            }
            3..=5 => {
                // Leaves early.
                let to = rng.random_range(5..46u32) as usize;
                points[to..].fill(None);
            }
            6 => {
                // Missed by the tracker for a few frames.
                let from = rng.random_range(2..40u32) as usize;
                let len = rng.random_range(1..5u32) as usize;
                points[from..from + len].fill(None);
            }
            _ => {}
        }
        vehicles.push(Vehicle {
            id: track_id(rng),
            kind: "OTHERS",
            points,
        });
    }

    let t0 = 315_968_000.0 + seq as f64 * 60.0 + rng.random::<f64>();
    let mut s = String::with_capacity(DEMO_STEPS * vehicles.len() * 80);
    s.push_str("TIMESTAMP,TRACK_ID,OBJECT_TYPE,X,Y,CITY_NAME\n");
    let name = &city.lanes.city;
    for n in 0..DEMO_STEPS {
        let ts = format!("{:.5}", t0 + n as f64 * DT);
        for v in &vehicles {
            if let Some(p) = v.points[n] {
                let _ = writeln!(s, "{ts},{},{},{:.6},{:.6},{name}", v.id, v.kind, p[0], p[1]);
            }
        }
    }
    s
}
