//! A scenario's own vector map, `log_map_archive_<id>.json` (av2's `ArgoverseStaticMap`
//! layout), read with serde: lane segments with their boundaries, types, marks and
//! intersection flag, and pedestrian crossings. Drivable areas are not read (the
//! vectorizer does not use them).
//!
//! The centerline of a lane is av2's `compute_midpoint_line` of its 3-D boundaries with 10
//! points (what `ArgoverseStaticMap.get_lane_segment_centerline` returns): both boundaries
//! resampled by `interp_arc` and averaged, or — when one side is a single point (a cul-de-sac)
//! — the midpoints between that point and every point of the other side. A fixture made by
//! av2's own code holds this equal (`tests/fixtures/av2/`).

use serde::Deserialize;
use std::collections::BTreeMap;

/// av2's `LaneType` values, in code order.
pub const LANE_TYPES: [&str; 3] = ["VEHICLE", "BIKE", "BUS"];
/// av2's `LaneMarkType` values, in code order.
pub const MARK_TYPES: [&str; 15] = [
    "DASH_SOLID_YELLOW",
    "DASH_SOLID_WHITE",
    "DASHED_WHITE",
    "DASHED_YELLOW",
    "DOUBLE_SOLID_YELLOW",
    "DOUBLE_SOLID_WHITE",
    "DOUBLE_DASH_YELLOW",
    "DOUBLE_DASH_WHITE",
    "SOLID_YELLOW",
    "SOLID_WHITE",
    "SOLID_DASH_WHITE",
    "SOLID_DASH_YELLOW",
    "SOLID_BLUE",
    "NONE",
    "UNKNOWN",
];
/// Points of a centerline (av2's `NUM_CENTERLINE_INTERP_PTS`).
pub const CENTERLINE_POINTS: usize = 10;

#[derive(Debug, Clone, PartialEq)]
pub struct Lane {
    pub id: i64,
    /// Index into [`LANE_TYPES`].
    pub lane_type: u8,
    pub is_intersection: bool,
    /// Indices into [`MARK_TYPES`].
    pub left_mark: u8,
    pub right_mark: u8,
    /// The centerline (x, y); not finite when a boundary is degenerate (every point the
    /// same: av2 divides by its zero length too), which the vectorizer skips and counts.
    pub centerline: Vec<[f64; 2]>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Crossing {
    pub id: i64,
    pub edge1: Vec<[f64; 2]>,
    pub edge2: Vec<[f64; 2]>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct ScenarioMap {
    /// By lane id.
    pub lanes: Vec<Lane>,
    /// By crossing id.
    pub crossings: Vec<Crossing>,
}

#[derive(Deserialize)]
struct MapJson {
    lane_segments: BTreeMap<String, LaneJson>,
    /// av2 logs an error and goes on when a map has none; so does this reader.
    #[serde(default)]
    pedestrian_crossings: BTreeMap<String, CrossingJson>,
}

#[derive(Deserialize)]
struct Pt {
    x: f64,
    y: f64,
    #[serde(default)]
    z: f64,
}

#[derive(Deserialize)]
struct LaneJson {
    id: i64,
    is_intersection: bool,
    lane_type: String,
    left_lane_boundary: Vec<Pt>,
    right_lane_boundary: Vec<Pt>,
    left_lane_mark_type: String,
    right_lane_mark_type: String,
}

#[derive(Deserialize)]
struct CrossingJson {
    id: i64,
    edge1: Vec<Pt>,
    edge2: Vec<Pt>,
}

/// Parses a map file's bytes. Every error is a reject reason of the scenario.
pub fn parse_map(bytes: &[u8]) -> Result<ScenarioMap, String> {
    let m: MapJson = serde_json::from_slice(bytes)
        .map_err(|e| format!("damaged map JSON ({e}); re-extract it from the AV2 archive"))?;
    let code = |table: &[&str], v: &str, what: &str, id: i64| -> Result<u8, String> {
        table
            .iter()
            .position(|t| *t == v)
            .map(|i| i as u8)
            .ok_or_else(|| format!("lane segment {id}: unknown {what} `{v}`"))
    };
    let mut lanes = Vec::with_capacity(m.lane_segments.len());
    for l in m.lane_segments.values() {
        let left: Vec<[f64; 3]> = l
            .left_lane_boundary
            .iter()
            .map(|p| [p.x, p.y, p.z])
            .collect();
        let right: Vec<[f64; 3]> = l
            .right_lane_boundary
            .iter()
            .map(|p| [p.x, p.y, p.z])
            .collect();
        if left.is_empty() || right.is_empty() {
            return Err(format!("lane segment {}: an empty boundary", l.id));
        }
        lanes.push(Lane {
            id: l.id,
            lane_type: code(&LANE_TYPES, &l.lane_type, "lane type", l.id)?,
            is_intersection: l.is_intersection,
            left_mark: code(&MARK_TYPES, &l.left_lane_mark_type, "mark type", l.id)?,
            right_mark: code(&MARK_TYPES, &l.right_lane_mark_type, "mark type", l.id)?,
            centerline: midpoint_line(&left, &right, CENTERLINE_POINTS),
        });
    }
    lanes.sort_by_key(|l| l.id);
    let xy = |pts: &[Pt]| pts.iter().map(|p| [p.x, p.y]).collect::<Vec<_>>();
    let mut crossings: Vec<Crossing> = m
        .pedestrian_crossings
        .values()
        .map(|c| Crossing {
            id: c.id,
            edge1: xy(&c.edge1),
            edge2: xy(&c.edge2),
        })
        .collect();
    if let Some(c) = crossings
        .iter()
        .find(|c| c.edge1.is_empty() || c.edge2.is_empty())
    {
        return Err(format!("pedestrian crossing {}: an empty edge", c.id));
    }
    crossings.sort_by_key(|c| c.id);
    Ok(ScenarioMap { lanes, crossings })
}

/// av2's `compute_midpoint_line(left, right, n)` (x, y of its result).
pub fn midpoint_line(left: &[[f64; 3]], right: &[[f64; 3]], n: usize) -> Vec<[f64; 2]> {
    let pivot = |single: [f64; 3], arc: &[[f64; 3]]| {
        arc.iter()
            .map(|p| [(single[0] + p[0]) / 2.0, (single[1] + p[1]) / 2.0])
            .collect()
    };
    match (left, right) {
        ([single], arc) => pivot(*single, arc),
        (arc, [single]) => pivot(*single, arc),
        _ => {
            let (l, r) = (interp_arc(n, left), interp_arc(n, right));
            l.iter()
                .zip(&r)
                .map(|(a, b)| [(a[0] + b[0]) / 2.0, (a[1] + b[1]) / 2.0])
                .collect()
        }
    }
}

/// av2's `interp_arc(t, points)`: `t` points evenly spaced by (chordal) arc length along
/// the polyline, in as many dimensions as the points have (3 here: z counts in the length).
pub fn interp_arc(t: usize, points: &[[f64; 3]]) -> Vec<[f64; 3]> {
    let n = points.len();
    let chord: Vec<f64> = points
        .windows(2)
        .map(|w| {
            let d = [w[1][0] - w[0][0], w[1][1] - w[0][1], w[1][2] - w[0][2]];
            (d[0] * d[0] + d[1] * d[1] + d[2] * d[2]).sqrt()
        })
        .collect();
    let total = pairwise_sum(&chord);
    let chord: Vec<f64> = chord.iter().map(|c| c / total).collect();
    let mut cum = vec![0.0; n];
    for i in 1..n {
        cum[i] = cum[i - 1] + chord[i - 1];
    }
    (0..t)
        .map(|k| {
            // numpy's linspace(0, 1, t): k·step, the last exactly 1.
            let e = if k + 1 == t && t > 1 {
                1.0
            } else if t > 1 {
                k as f64 * (1.0 / (t - 1) as f64)
            } else {
                0.0
            };
            // np.digitize: the number of bins <= e (bins increasing), then clamped to 1..n-1.
            let mut bin = cum.partition_point(|c| *c <= e);
            if bin == 0 || e <= 0.0 {
                bin = 1;
            }
            if bin >= n || e >= 1.0 {
                bin = n - 1;
            }
            let s = (e - cum[bin - 1]) / chord[bin - 1];
            let (a, b) = (points[bin - 1], points[bin]);
            [
                a[0] + (b[0] - a[0]) * s,
                a[1] + (b[1] - a[1]) * s,
                a[2] + (b[2] - a[2]) * s,
            ]
        })
        .collect()
}

/// A float64 sum in numpy's order (pairwise, 8 accumulators per block), so the normalized
/// chord lengths follow av2's rounding as closely as a port can (the fixture test allows
/// 1e-9 m).
fn pairwise_sum(x: &[f64]) -> f64 {
    if x.len() < 8 {
        return x.iter().fold(0.0, |a, b| a + b);
    }
    if x.len() <= 128 {
        let mut r = [0.0f64; 8];
        r.copy_from_slice(&x[..8]);
        let mut i = 8;
        while i + 8 <= x.len() {
            for j in 0..8 {
                r[j] += x[i + j];
            }
            i += 8;
        }
        let mut s = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for v in &x[i..] {
            s += v;
        }
        return s;
    }
    let half = (x.len() / 2) & !7;
    pairwise_sum(&x[..half]) + pairwise_sum(&x[half..])
}
