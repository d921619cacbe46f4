//! VectorNet vectorization of one scenario (PAPER.md §5): actors and lane centerlines become
//! polylines of vectors in a frame centred on the AGENT and turned to its heading.
//!
//! Why a module of its own: this is the contract the VectorNet model is built against
//! (SHARDS.md, `av.tokens`), so every convention lives here, in one place, tested by hand:
//! - **Frame.** origin = AGENT at step `obs_steps-1`; heading = direction from step
//!   `obs_steps-2` to `obs_steps-1` (when those points coincide, within 1e-6 m, the latest
//!   earlier step that differs; when none does, no rotation: `theta = 0`). Normalized
//!   coordinates turn the heading to **+y**: `p = R(-theta)·(world - origin)` with
//!   `theta = heading - π/2`, so `world = R(theta)·p + origin`. Origin and theta are rounded
//!   to f32 *before* use, so the stored `frame` undoes the normalization exactly.
//! - **Actors.** Every track observed at step `obs_steps-1` whose normalized position there
//!   is within ±radius on both axes. Actor 0 is the AGENT, the rest by distance to the AGENT
//!   at that step (compared as squared distances; ties: TRACK_ID string order); beyond `max_actors` the farthest are dropped.
//!   Vector i (0 ≤ i < obs_steps-1) = `[x_i, y_i, dx, dy, valid, t]`: start point, step to
//!   point i+1, valid = both observed (else x, y, dx, dy = 0), `t = i/(obs_steps-1)`.
//! - **Lanes.** As the reference selects them (StreamingForecasting `VecMapReader`): every
//!   lane whose whole centerline is within ±radius of the origin along the WORLD axes (the
//!   box is not turned with the agent), in lane-id order. Beyond `max_lanes` the farthest
//!   (minimum distance from the AGENT to the centerline polyline, compared as squared
//!   distances; ties: lane id) are dropped; the stage meta counts them. Centerlines with exactly `lane_points` points
//!   are kept, shorter ones are edge-padded (last point repeated, as the VectorNet reference),
//!   longer ones resampled to `lane_points` points evenly spaced by arc length. Vector i =
//!   `[x_i, y_i, dx, dy, turn, is_intersection, has_traffic_control]` (start point, step).
//! - **Futures.** Every kept actor's last observed position (`actor_ctrs`) and its positions
//!   at the `pred_steps` future steps (`actor_futures`, with `actor_future_mask` = observed):
//!   the reference (StreamingForecasting's VectorNet, after LaneGCN) predicts and supervises
//!   every actor that has a future, not only the AGENT. `target` is the AGENT's (row 0).
//! - **No future** (a test scenario, which ends at step `obs_steps-1`): `target` and every
//!   future are zeros with `actor_future_mask` 0; the eval counts such samples and scores none.
//! - Padding rows are all zeros with mask 0. Maths in f64, stored as f32.

use super::csv::Scenario;
pub use super::frame::{sq_distance_local, Frame};
use super::index::CityLanes;

/// Features per actor vector: x, y, dx, dy, valid, t.
pub const ACTOR_FEATURES: usize = 6;
/// Features per lane vector: x, y, dx, dy, turn, is_intersection, has_traffic_control.
pub const LANE_FEATURES: usize = 7;

/// The sizes and ranges of the vectorization (the stage's params).
#[derive(Debug, Clone, PartialEq)]
pub struct VecParams {
    pub obs_steps: usize,
    pub pred_steps: usize,
    pub radius: f64,
    pub max_actors: usize,
    pub max_lanes: usize,
    pub lane_points: usize,
}

/// One scenario's tensors (flattened, C order) and what the stage reports about it.
#[derive(Debug, Clone, PartialEq)]
pub struct Vectorized {
    /// [max_actors, obs_steps-1, 6]
    pub actors: Vec<f32>,
    /// [max_actors]
    pub actor_mask: Vec<u8>,
    /// [max_lanes, lane_points-1, 7]
    pub lanes: Vec<f32>,
    /// [max_lanes]
    pub lane_mask: Vec<u8>,
    /// [pred_steps, 2]
    pub target: Vec<f32>,
    /// [max_actors, 2]: each actor's position at step `obs_steps-1`.
    pub actor_ctrs: Vec<f32>,
    /// [max_actors, pred_steps, 2]: each actor's future positions (0 where unobserved).
    pub actor_futures: Vec<f32>,
    /// [max_actors, pred_steps]: 1 where that future position was observed.
    pub actor_future_mask: Vec<u8>,
    pub frame: Frame,
    /// Actors (AGENT included) / lanes in range before truncation to the maxima.
    pub actors_in_range: usize,
    pub lanes_in_range: usize,
}

/// Vectorizes a parsed scenario against its city's lanes. The scenario's grid must hold
/// `obs_steps + pred_steps` steps (what [`super::csv::parse_scenario`] guarantees).
pub fn vectorize(scn: &Scenario, city: &CityLanes, p: &VecParams) -> Result<Vectorized, String> {
    let obs = p.obs_steps;
    if obs < 2 || p.lane_points < 2 || p.max_actors < 1 {
        return Err(format!(
            "unusable sizes {p:?}: obs_steps and lane_points need 2, max_actors 1"
        ));
    }
    let agent = scn
        .tracks
        .get(scn.agent)
        .ok_or_else(|| "no AGENT track".to_string())?;
    // A test scenario ends at the last observed step: no target, no futures (zeros, mask 0).
    let has_future = agent.points.len() != obs;
    if has_future && agent.points.len() < obs + p.pred_steps {
        return Err(format!(
            "needs {} steps for the AGENT, found {}",
            obs + p.pred_steps,
            agent.points.len()
        ));
    }
    let frame = Frame::from_agent(&agent.points, obs)
        .ok_or_else(|| format!("AGENT not observed at step {}", obs - 1))?;

    // Actors: observed at the last observed step, inside the box; AGENT first.
    let mut others: Vec<(f64, &str, usize)> = Vec::new();
    for (t, track) in scn.tracks.iter().enumerate() {
        if t == scn.agent {
            continue;
        }
        // (Tracks shorter than the grid cannot come from the parser; skipped all the same.)
        let Some(w) = track.points.get(obs - 1).copied().flatten() else {
            continue;
        };
        let q = frame.to_local(w);
        if q[0].abs() <= p.radius && q[1].abs() <= p.radius {
            others.push((q[0] * q[0] + q[1] * q[1], &track.id, t));
        }
    }
    others.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(b.1)));
    let actors_in_range = 1 + others.len();
    let chosen = std::iter::once(scn.agent)
        .chain(others.iter().map(|o| o.2))
        .take(p.max_actors);
    let nv = obs - 1;
    let ps = p.pred_steps;
    let mut actors = vec![0f32; p.max_actors * nv * ACTOR_FEATURES];
    let mut actor_mask = vec![0u8; p.max_actors];
    let mut actor_ctrs = vec![0f32; p.max_actors * 2];
    let mut actor_futures = vec![0f32; p.max_actors * ps * 2];
    let mut actor_future_mask = vec![0u8; p.max_actors * ps];
    for (a, t) in chosen.enumerate() {
        actor_mask[a] = 1;
        let pts: Vec<Option<[f64; 2]>> = scn.tracks[t].points[..obs]
            .iter()
            .map(|w| w.map(|w| frame.to_local(w)))
            .collect();
        if let Some(c) = pts[obs - 1] {
            actor_ctrs[a * 2] = c[0] as f32;
            actor_ctrs[a * 2 + 1] = c[1] as f32;
        }
        let future = scn.tracks[t].points.iter().skip(obs).take(ps);
        for (j, w) in future.enumerate() {
            if let Some(w) = w {
                let q = frame.to_local(*w);
                actor_futures[(a * ps + j) * 2] = q[0] as f32;
                actor_futures[(a * ps + j) * 2 + 1] = q[1] as f32;
                actor_future_mask[a * ps + j] = 1;
            }
        }
        for i in 0..nv {
            let row = &mut actors[(a * nv + i) * ACTOR_FEATURES..][..ACTOR_FEATURES];
            row[5] = (i as f64 / nv as f64) as f32;
            if let (Some(s), Some(e)) = (pts[i], pts[i + 1]) {
                row[0] = s[0] as f32;
                row[1] = s[1] as f32;
                row[2] = (e[0] - s[0]) as f32;
                row[3] = (e[1] - s[1]) as f32;
                row[4] = 1.0;
            }
        }
    }

    // Lanes: as the reference (StreamingForecasting `VecMapReader.get_lane_data`), every lane
    // whose whole centerline lies in the WORLD-axis box of ±radius around the origin (not the
    // agent-aligned one), in lane-id order. Shapes are fixed, so beyond `max_lanes` the
    // farthest (minimum distance to the AGENT; ties: lane id) are dropped and counted.
    let o = frame.origin;
    let mut near: Vec<(f64, i64, usize)> = city
        .lanes_within_aabb(
            [o[0] - p.radius, o[1] - p.radius],
            [o[0] + p.radius, o[1] + p.radius],
        )
        .into_iter()
        .map(|i| (0.0, city.lanes[i as usize].id, i as usize))
        .collect();
    let lanes_in_range = near.len();
    if near.len() > p.max_lanes {
        let mut local: Vec<[f64; 2]> = Vec::new();
        for n in near.iter_mut() {
            local.clear();
            local.extend(
                city.centerline(n.2)
                    .iter()
                    .map(|w| [w[0] - o[0], w[1] - o[1]]),
            );
            n.0 = sq_distance_local(&local);
        }
        let by =
            |a: &(f64, i64, usize), b: &(f64, i64, usize)| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1));
        near.select_nth_unstable_by(p.max_lanes, by);
        near.truncate(p.max_lanes);
    }
    // Lane ids are unique within a city.
    near.sort_unstable_by_key(|n| n.1);
    let lv = p.lane_points - 1;
    let mut lanes = vec![0f32; p.max_lanes * lv * LANE_FEATURES];
    let mut lane_mask = vec![0u8; p.max_lanes];
    let mut pts: Vec<[f64; 2]> = Vec::with_capacity(p.lane_points);
    for (k, &(_, _, i)) in near.iter().take(p.max_lanes).enumerate() {
        lane_mask[k] = 1;
        let lane = &city.lanes[i];
        resample_into(city.centerline(i), p.lane_points, &mut pts);
        for q in pts.iter_mut() {
            *q = frame.to_local(*q);
        }
        let attrs = [
            lane.turn.code(),
            lane.is_intersection as u8 as f32,
            lane.has_traffic_control as u8 as f32,
        ];
        for j in 0..lv {
            let row = &mut lanes[(k * lv + j) * LANE_FEATURES..][..LANE_FEATURES];
            let (s, e) = (pts[j], pts[j + 1]);
            row[0] = s[0] as f32;
            row[1] = s[1] as f32;
            row[2] = (e[0] - s[0]) as f32;
            row[3] = (e[1] - s[1]) as f32;
            row[4..].copy_from_slice(&attrs);
        }
    }

    let mut target = Vec::with_capacity(p.pred_steps * 2);
    if !has_future {
        target.resize(p.pred_steps * 2, 0.0);
    }
    for w in agent
        .points
        .get(obs..obs + p.pred_steps)
        .unwrap_or_default()
    {
        let w = w.ok_or_else(|| "AGENT not observed at a future step".to_string())?;
        let q = frame.to_local(w);
        target.extend([q[0] as f32, q[1] as f32]);
    }

    Ok(Vectorized {
        actors,
        actor_mask,
        lanes,
        lane_mask,
        target,
        actor_ctrs,
        actor_futures,
        actor_future_mask,
        frame,
        actors_in_range,
        lanes_in_range,
    })
}

/// `lane_points` points: as is, edge-padded when shorter, evenly resampled by arc length
/// when longer (first and last points kept exactly).
pub fn resample(points: &[[f64; 2]], n: usize) -> Vec<[f64; 2]> {
    let mut out = Vec::with_capacity(n);
    resample_into(points, n, &mut out);
    out
}

/// [`resample`] into a reused buffer.
pub fn resample_into(points: &[[f64; 2]], n: usize, out: &mut Vec<[f64; 2]>) {
    out.clear();
    let Some(&last) = points.last() else {
        out.resize(n, [0.0; 2]);
        return;
    };
    if points.len() <= n {
        out.extend_from_slice(points);
        out.resize(n, last);
        return;
    }
    let mut cum = Vec::with_capacity(points.len());
    cum.push(0.0);
    for w in points.windows(2) {
        let d = (w[1][0] - w[0][0]).hypot(w[1][1] - w[0][1]);
        cum.push(cum[cum.len() - 1] + d);
    }
    let total = cum[cum.len() - 1];
    let mut seg = 0;
    for k in 0..n {
        if k == n - 1 {
            out.push(last);
            break;
        }
        let s = total * k as f64 / (n - 1) as f64;
        while seg + 2 < points.len() && cum[seg + 1] < s {
            seg += 1;
        }
        let len = cum[seg + 1] - cum[seg];
        let f = if len > 0.0 { (s - cum[seg]) / len } else { 0.0 };
        let (a, b) = (points[seg], points[seg + 1]);
        out.push([a[0] + f * (b[0] - a[0]), a[1] + f * (b[1] - a[1])]);
    }
}
