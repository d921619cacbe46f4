//! One city's lanes with an R-tree (crate `rstar`) over their centerline bounding boxes,
//! built once per city map and shared read-only by every scenario of the run.
//!
//! Why: the VectorNet lane query ("centerlines entirely within ±radius of the agent") is what
//! makes the common Python preprocessing slow — it tests every lane of the city (tens of
//! thousands) for every scenario. The tree answers it by visiting only the boxes near the
//! agent; [`CityLanes::lanes_in_box_brute`] is the brute-force definition the tests hold it to.
//!
//! Memory layout matters as much as the tree: the lanes are stored in Z-order of their
//! bounding-box centres and all centerline points in one contiguous array, so the lanes one
//! query touches sit together in memory (the per-lane allocations of the file order made the
//! query wait on cache misses more than it computed).

use super::frame::{sq_distance_local, Frame};
use super::map::Lane;
use rstar::primitives::{GeomWithData, Rectangle};
use rstar::{RTree, AABB};

type Entry = GeomWithData<Rectangle<[f64; 2]>, u32>;

/// The lanes of one city and their spatial index.
pub struct CityLanes {
    pub city: String,
    /// In Z-order of their bounding-box centres (not file order); indices refer to this order.
    pub lanes: Vec<Lane>,
    /// Every centerline, concatenated in lane order: lane `i` is `points[starts[i]..starts[i+1]]`.
    points: Vec<[f64; 2]>,
    starts: Vec<usize>,
    tree: RTree<Entry>,
}

/// Interleaves the bits of two 16-bit values (x in the even bits).
fn morton(x: u32, y: u32) -> u32 {
    let spread = |mut v: u32| {
        v &= 0xffff;
        v = (v | (v << 8)) & 0x00ff_00ff;
        v = (v | (v << 4)) & 0x0f0f_0f0f;
        v = (v | (v << 2)) & 0x3333_3333;
        (v | (v << 1)) & 0x5555_5555
    };
    spread(x) | (spread(y) << 1)
}

fn bbox(lane: &Lane) -> ([f64; 2], [f64; 2]) {
    let mut lo = [f64::INFINITY; 2];
    let mut hi = [f64::NEG_INFINITY; 2];
    for p in &lane.centerline {
        for k in 0..2 {
            lo[k] = lo[k].min(p[k]);
            hi[k] = hi[k].max(p[k]);
        }
    }
    (lo, hi)
}

impl CityLanes {
    /// Sorts the lanes in Z-order (ties: lane id), packs their points and bulk-loads the
    /// tree (O(n log n)); lane `i` of `lanes` is entry `i`.
    pub fn new(city: &str, mut lanes: Vec<Lane>) -> Self {
        let boxes: Vec<([f64; 2], [f64; 2])> = lanes.iter().map(bbox).collect();
        let (mut lo, mut hi) = ([f64::INFINITY; 2], [f64::NEG_INFINITY; 2]);
        for (l, h) in &boxes {
            for k in 0..2 {
                lo[k] = lo[k].min(l[k]);
                hi[k] = hi[k].max(h[k]);
            }
        }
        let cell = |v: f64, k: usize| {
            let span = (hi[k] - lo[k]).max(1e-9);
            (((v - lo[k]) / span) * 65535.0).clamp(0.0, 65535.0) as u32
        };
        let mut order: Vec<(u32, i64, usize)> = boxes
            .iter()
            .zip(&lanes)
            .enumerate()
            .map(|(i, ((l, h), lane))| {
                let c = [(l[0] + h[0]) / 2.0, (l[1] + h[1]) / 2.0];
                (morton(cell(c[0], 0), cell(c[1], 1)), lane.id, i)
            })
            .collect();
        order.sort_unstable();
        let mut slots: Vec<Option<Lane>> = lanes.drain(..).map(Some).collect();
        let lanes: Vec<Lane> = order.iter().filter_map(|o| slots[o.2].take()).collect();
        let mut points = Vec::with_capacity(lanes.iter().map(|l| l.centerline.len()).sum());
        let mut starts = Vec::with_capacity(lanes.len() + 1);
        for l in &lanes {
            starts.push(points.len());
            points.extend_from_slice(&l.centerline);
        }
        starts.push(points.len());
        let entries: Vec<Entry> = order
            .iter()
            .enumerate()
            .map(|(i, o)| {
                let (lo, hi) = boxes[o.2];
                GeomWithData::new(Rectangle::from_corners(lo, hi), i as u32)
            })
            .collect();
        CityLanes {
            city: city.to_string(),
            lanes,
            points,
            starts,
            tree: RTree::bulk_load(entries),
        }
    }

    /// The centerline of lane `i` (the same points as `lanes[i].centerline`, packed).
    pub fn centerline(&self, i: usize) -> &[[f64; 2]] {
        &self.points[self.starts[i]..self.starts[i + 1]]
    }

    /// Indices (ascending) of the lanes whose bounding box lies entirely inside the
    /// axis-aligned box `[lo, hi]` (city coordinates).
    pub fn lanes_within_aabb(&self, lo: [f64; 2], hi: [f64; 2]) -> Vec<u32> {
        let mut out: Vec<u32> = self
            .tree
            .locate_in_envelope(AABB::from_corners(lo, hi))
            .map(|e| e.data)
            .collect();
        out.sort_unstable();
        out
    }

    /// Indices (ascending) of the lanes whose bounding box intersects `[lo, hi]`.
    pub fn lanes_touching_aabb(&self, lo: [f64; 2], hi: [f64; 2]) -> Vec<u32> {
        let mut out: Vec<u32> = self
            .tree
            .locate_in_envelope_intersecting(AABB::from_corners(lo, hi))
            .map(|e| e.data)
            .collect();
        out.sort_unstable();
        out
    }

    /// Indices (ascending) of the lanes whose every centerline point lies within ±`radius` of
    /// the frame's origin along both axes of the frame (the normalized, agent-aligned box).
    /// The tree is queried with the world-axis box that contains the rotated one, then each
    /// candidate is checked exactly as [`Self::lanes_in_box_brute`] checks every lane.
    pub fn lanes_in_box(&self, frame: &Frame, radius: f64) -> Vec<u32> {
        let mut out: Vec<u32> = self
            .lanes_in_box_dist(frame, radius)
            .into_iter()
            .map(|(i, _)| i)
            .collect();
        out.sort_unstable();
        out
    }

    /// [`Self::lanes_in_box`] with each lane's squared minimum distance to the origin
    /// (normalized frame), computed from the same transformed points; in tree order.
    pub fn lanes_in_box_dist(&self, frame: &Frame, radius: f64) -> Vec<(u32, f64)> {
        let (s, c) = frame.theta.sin_cos();
        // Half-extent of the rotated square's bounding box, padded for rounding.
        let half = radius * (c.abs() + s.abs()) * (1.0 + 1e-9) + 1e-6;
        let o = frame.origin;
        let lo = [o[0] - half, o[1] - half];
        let hi = [o[0] + half, o[1] + half];
        let mut local: Vec<[f64; 2]> = Vec::new();
        self.tree
            .locate_in_envelope(AABB::from_corners(lo, hi))
            .filter_map(|e| {
                local.clear();
                for &p in self.centerline(e.data as usize) {
                    let q = frame.to_local(p);
                    if q[0].abs() > radius || q[1].abs() > radius {
                        return None;
                    }
                    local.push(q);
                }
                Some((e.data, sq_distance_local(&local)))
            })
            .collect()
    }

    /// The definition [`Self::lanes_in_box`] must match: every lane of the city, tested point
    /// by point (what the common Python preprocessing does).
    pub fn lanes_in_box_brute(&self, frame: &Frame, radius: f64) -> Vec<u32> {
        (0..self.lanes.len() as u32)
            .filter(|&i| lane_in_box(&self.lanes[i as usize], frame, radius))
            .collect()
    }
}

fn lane_in_box(lane: &Lane, frame: &Frame, radius: f64) -> bool {
    lane.centerline.iter().all(|&p| {
        let q = frame.to_local(p);
        q[0].abs() <= radius && q[1].abs() <= radius
    })
}
