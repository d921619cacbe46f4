//! The agent's normalized frame and the distance rule the lane index and the vectorizer share
//! (kept apart from both so neither imports the other).

/// Points closer than this (metres) count as the same point when finding the heading.
pub const SAME_POINT: f64 = 1e-6;

/// The normalized frame: `world = R(theta)·p + origin`, `p = R(-theta)·(world - origin)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Frame {
    pub origin: [f64; 2],
    pub theta: f64,
    cos: f64,
    sin: f64,
}

impl Frame {
    pub fn new(origin: [f64; 2], theta: f64) -> Self {
        let (sin, cos) = theta.sin_cos();
        Frame {
            origin,
            theta,
            cos,
            sin,
        }
    }

    /// The AGENT's frame from its points (index = step). `None` when the AGENT is not
    /// observed at step `obs_steps-1`. Origin and theta are rounded to f32 (what is stored).
    pub fn from_agent(agent: &[Option<[f64; 2]>], obs_steps: usize) -> Option<Frame> {
        let last = obs_steps.checked_sub(1)?;
        let o = (*agent.get(last)?)?;
        let heading = (0..last).rev().find_map(|k| {
            let p = agent[k]?;
            let d = [o[0] - p[0], o[1] - p[1]];
            (d[0].hypot(d[1]) > SAME_POINT).then_some(d)
        });
        let theta = match heading {
            Some(d) => wrap(d[1].atan2(d[0]) - std::f64::consts::FRAC_PI_2),
            None => 0.0,
        };
        let origin = [o[0] as f32 as f64, o[1] as f32 as f64];
        Some(Frame::new(origin, theta as f32 as f64))
    }

    /// World → normalized.
    pub fn to_local(&self, w: [f64; 2]) -> [f64; 2] {
        let d = [w[0] - self.origin[0], w[1] - self.origin[1]];
        [
            self.cos * d[0] + self.sin * d[1],
            -self.sin * d[0] + self.cos * d[1],
        ]
    }

    /// Normalized → world (what eval does with the stored `frame`).
    pub fn to_world(&self, p: [f64; 2]) -> [f64; 2] {
        [
            self.cos * p[0] - self.sin * p[1] + self.origin[0],
            self.sin * p[0] + self.cos * p[1] + self.origin[1],
        ]
    }

    /// `[origin_x, origin_y, theta]` as stored in the `frame` field.
    pub fn to_f32(&self) -> [f32; 3] {
        [
            self.origin[0] as f32,
            self.origin[1] as f32,
            self.theta as f32,
        ]
    }
}

/// Angle into (-π, π].
fn wrap(a: f64) -> f64 {
    use std::f64::consts::PI;
    let mut a = a % (2.0 * PI);
    if a <= -PI {
        a += 2.0 * PI;
    } else if a > PI {
        a -= 2.0 * PI;
    }
    a
}

/// Squared minimum distance from (0, 0) to a polyline (to its only point when it has one).
/// Squared because only the order matters: it skips a square root per segment.
pub fn sq_distance_local(points: &[[f64; 2]]) -> f64 {
    let mut best = f64::INFINITY;
    let mut prev: Option<[f64; 2]> = None;
    for &b in points {
        let q = match prev {
            None => b,
            Some(a) => {
                let d = [b[0] - a[0], b[1] - a[1]];
                let len2 = d[0] * d[0] + d[1] * d[1];
                let t = if len2 > 0.0 {
                    (-(a[0] * d[0] + a[1] * d[1]) / len2).clamp(0.0, 1.0)
                } else {
                    0.0
                };
                [a[0] + t * d[0], a[1] + t * d[1]]
            }
        };
        best = best.min(q[0] * q[0] + q[1] * q[1]);
        prev = Some(b);
    }
    best
}
