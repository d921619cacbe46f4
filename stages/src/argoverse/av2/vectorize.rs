//! VectorNet vectorization of one AV2 scenario: the `av.tokens` contract (frame, actor and
//! map polylines with masks, every actor's future; SHARDS.md) with AV2's extras.
//!
//! What differs from AV1 and why:
//! - **Agent** = the focal track (category 3). Its frame is `av.tokens`' ([`Frame`]).
//! - **Actors**: the focal track first, then the scored tracks (category 2, the
//!   multi-agent challenge's) by distance, then the others by distance; scored tracks are
//!   kept even outside the ±radius box (they are scored, so they must be forecast) and are
//!   the last to be dropped. Vector = `[x, y, dx, dy, valid, t, object_type]` (the type's
//!   code in av2's `ObjectType` order); `actor_category` and `actor_type` repeat the
//!   category and type per actor.
//! - **Map polylines** (`lanes`): the scenario's lane centerlines (by id), then both edges of
//!   every pedestrian crossing (by id); a polyline is in range when all its points are within
//!   ±radius of the origin along the world axes (as `av.tokens`). Vector =
//!   `[x, y, dx, dy, is_crossing, lane_type, is_intersection, left_mark, right_mark]` (codes
//!   in av2's `LaneType` / `LaneMarkType` order; 0 for crossings).
//! - **Test split**: no futures; `target`, `actor_futures` and `actor_future_mask` are zeros.

use super::map::ScenarioMap;
use super::scenario::{Scenario, CATEGORY_SCORED};
use crate::argoverse::frame::{sq_distance_local, Frame};
use crate::argoverse::vectorize::resample_into;

/// Features per actor vector: x, y, dx, dy, valid, t, object_type.
pub const ACTOR_FEATURES: usize = 7;
/// Features per map vector: x, y, dx, dy, is_crossing, lane_type, is_intersection,
/// left_mark, right_mark.
pub const LANE_FEATURES: usize = 9;

#[derive(Debug, Clone, PartialEq)]
pub struct VecParams {
    pub obs_steps: usize,
    pub pred_steps: usize,
    pub radius: f64,
    pub max_actors: usize,
    pub max_lanes: usize,
    pub lane_points: usize,
}

/// One scenario's tensors (flattened, C order) and its counts.
#[derive(Debug, Clone, PartialEq)]
pub struct Vectorized {
    pub actors: Vec<f32>,
    pub actor_mask: Vec<u8>,
    pub actor_type: Vec<u8>,
    pub actor_category: Vec<u8>,
    pub lanes: Vec<f32>,
    pub lane_mask: Vec<u8>,
    pub target: Vec<f32>,
    pub actor_ctrs: Vec<f32>,
    pub actor_futures: Vec<f32>,
    pub actor_future_mask: Vec<u8>,
    pub frame: Frame,
    pub actors_in_range: usize,
    pub lanes_in_range: usize,
    /// Lanes skipped because their centerline is not finite (a zero-length boundary).
    pub lanes_degenerate: usize,
}

/// A map polyline before selection: its points (world), its attributes, its order key.
struct Poly<'a> {
    points: &'a [[f64; 2]],
    attrs: [f32; 5],
    key: (u8, i64, u8),
}

/// Vectorizes a scenario; `with_future` = false for the test split (no futures released).
pub fn vectorize(
    scn: &Scenario,
    map: &ScenarioMap,
    p: &VecParams,
    with_future: bool,
) -> Result<Vectorized, String> {
    let obs = p.obs_steps;
    if obs < 2 || p.lane_points < 2 || p.max_actors < 1 {
        return Err(format!(
            "unusable sizes {p:?}: obs_steps and lane_points need 2, max_actors 1"
        ));
    }
    let focal = scn
        .tracks
        .get(scn.focal)
        .ok_or_else(|| "no focal track".to_string())?;
    let frame = Frame::from_agent(&focal.points, obs)
        .ok_or_else(|| format!("focal track {} not observed at step {}", focal.id, obs - 1))?;
    if with_future {
        if let Some(k) =
            (obs..obs + p.pred_steps).find(|&k| focal.points.get(k).copied().flatten().is_none())
        {
            return Err(format!(
                "focal track {} has no position at future step {k} (needs steps 0..{})",
                focal.id,
                obs + p.pred_steps
            ));
        }
    }

    // Actors: (not scored, squared distance, track id, index).
    let mut others: Vec<(bool, f64, &str, usize)> = Vec::new();
    for (t, track) in scn.tracks.iter().enumerate() {
        if t == scn.focal {
            continue;
        }
        let Some(w) = track.points.get(obs - 1).copied().flatten() else {
            continue;
        };
        let q = frame.to_local(w);
        let scored = track.category == CATEGORY_SCORED;
        if scored || (q[0].abs() <= p.radius && q[1].abs() <= p.radius) {
            others.push((!scored, q[0] * q[0] + q[1] * q[1], &track.id, t));
        }
    }
    others.sort_by(|a, b| {
        a.0.cmp(&b.0)
            .then(a.1.total_cmp(&b.1))
            .then_with(|| a.2.cmp(b.2))
    });
    let actors_in_range = 1 + others.len();
    let chosen = std::iter::once(scn.focal)
        .chain(others.iter().map(|o| o.3))
        .take(p.max_actors);
    let (nv, ps, af) = (obs - 1, p.pred_steps, ACTOR_FEATURES);
    let mut v = Vectorized {
        actors: vec![0.0; p.max_actors * nv * af],
        actor_mask: vec![0; p.max_actors],
        actor_type: vec![0; p.max_actors],
        actor_category: vec![0; p.max_actors],
        lanes: vec![0.0; p.max_lanes * (p.lane_points - 1) * LANE_FEATURES],
        lane_mask: vec![0; p.max_lanes],
        target: vec![0.0; ps * 2],
        actor_ctrs: vec![0.0; p.max_actors * 2],
        actor_futures: vec![0.0; p.max_actors * ps * 2],
        actor_future_mask: vec![0; p.max_actors * ps],
        frame,
        actors_in_range,
        lanes_in_range: 0,
        lanes_degenerate: 0,
    };
    for (a, t) in chosen.enumerate() {
        let track = &scn.tracks[t];
        v.actor_mask[a] = 1;
        v.actor_type[a] = track.object_type;
        v.actor_category[a] = track.category;
        let pts: Vec<Option<[f64; 2]>> = (0..obs)
            .map(|k| {
                track
                    .points
                    .get(k)
                    .copied()
                    .flatten()
                    .map(|w| frame.to_local(w))
            })
            .collect();
        if let Some(c) = pts[obs - 1] {
            v.actor_ctrs[a * 2] = c[0] as f32;
            v.actor_ctrs[a * 2 + 1] = c[1] as f32;
        }
        if with_future {
            for j in 0..ps {
                if let Some(w) = track.points.get(obs + j).copied().flatten() {
                    let q = frame.to_local(w);
                    v.actor_futures[(a * ps + j) * 2] = q[0] as f32;
                    v.actor_futures[(a * ps + j) * 2 + 1] = q[1] as f32;
                    v.actor_future_mask[a * ps + j] = 1;
                }
            }
        }
        for i in 0..nv {
            let row = &mut v.actors[(a * nv + i) * af..][..af];
            row[5] = (i as f64 / nv as f64) as f32;
            row[6] = f32::from(track.object_type);
            if let (Some(s), Some(e)) = (pts[i], pts[i + 1]) {
                row[0] = s[0] as f32;
                row[1] = s[1] as f32;
                row[2] = (e[0] - s[0]) as f32;
                row[3] = (e[1] - s[1]) as f32;
                row[4] = 1.0;
            }
        }
    }
    if with_future {
        v.target.copy_from_slice(&v.actor_futures[..ps * 2]);
    }

    // Map polylines in range (world-axis box, whole polyline), in contract order.
    let mut polys: Vec<Poly> = Vec::new();
    for l in &map.lanes {
        if l.centerline
            .iter()
            .any(|q| !(q[0].is_finite() && q[1].is_finite()))
        {
            v.lanes_degenerate += 1;
            continue;
        }
        polys.push(Poly {
            points: &l.centerline,
            attrs: [
                0.0,
                f32::from(l.lane_type),
                f32::from(u8::from(l.is_intersection)),
                f32::from(l.left_mark),
                f32::from(l.right_mark),
            ],
            key: (0, l.id, 0),
        });
    }
    for c in &map.crossings {
        for (e, edge) in [&c.edge1, &c.edge2].into_iter().enumerate() {
            polys.push(Poly {
                points: edge,
                attrs: [1.0, 0.0, 0.0, 0.0, 0.0],
                key: (1, c.id, e as u8),
            });
        }
    }
    let o = frame.origin;
    let inside = |q: &[f64; 2]| (q[0] - o[0]).abs() <= p.radius && (q[1] - o[1]).abs() <= p.radius;
    let mut near: Vec<(f64, &Poly)> = polys
        .iter()
        .filter(|pl| pl.points.iter().all(inside))
        .map(|pl| (0.0, pl))
        .collect();
    v.lanes_in_range = near.len();
    if near.len() > p.max_lanes {
        for n in near.iter_mut() {
            let local: Vec<[f64; 2]> =
                n.1.points
                    .iter()
                    .map(|w| [w[0] - o[0], w[1] - o[1]])
                    .collect();
            n.0 = sq_distance_local(&local);
        }
        near.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.key.cmp(&b.1.key)));
        near.truncate(p.max_lanes);
    }
    near.sort_by_key(|n| n.1.key);
    let lv = p.lane_points - 1;
    let mut pts: Vec<[f64; 2]> = Vec::with_capacity(p.lane_points);
    for (k, (_, pl)) in near.iter().enumerate() {
        v.lane_mask[k] = 1;
        resample_into(pl.points, p.lane_points, &mut pts);
        for q in pts.iter_mut() {
            *q = frame.to_local(*q);
        }
        for j in 0..lv {
            let row = &mut v.lanes[(k * lv + j) * LANE_FEATURES..][..LANE_FEATURES];
            let (s, e) = (pts[j], pts[j + 1]);
            row[0] = s[0] as f32;
            row[1] = s[1] as f32;
            row[2] = (e[0] - s[0]) as f32;
            row[3] = (e[1] - s[1]) as f32;
            row[4..].copy_from_slice(&pl.attrs);
        }
    }
    Ok(v)
}
