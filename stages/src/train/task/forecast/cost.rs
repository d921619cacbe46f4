//! The dry run's estimate for VectorNet (`train::plan`): FLOPs of the trained parts and
//! the bytes of activations autograd keeps, per batch of `b` scenes.

use super::AvShape;
use crate::train::models::vectornet::VectorNetConfig;
use crate::train::plan::cost::{Cost, F32};

/// VectorNet's global graph: floats kept per polyline and channel (measured).
const GLOBAL_PER_TOKEN: f64 = 10.0;
/// A decoder head's residual MLP per actor and channel (measured).
const HEAD_PER_ACTOR: f64 = 7.0;
/// The prediction fusion and confidence head per actor, mode and channel (measured).
const FUSION_PER_MODE: f64 = 25.0;
/// Floats per channel of a strided concat that the MKL build copies to contiguous memory
/// before its Linear (`ops::mkl_layout::for_matmul`, the fusion's): the
/// copy is kept for the backward too. None in the default build.
const MKL_CAT_COPY: f64 = if cfg!(feature = "mkl") { 1.0 } else { 0.0 };

/// The encoder's cost for a batch of `b` scenes of shape `s`.
pub(super) fn vectornet(c: &VectorNetConfig, s: AvShape, b: f64) -> Cost {
    let mut cost = Cost::default();
    let d = c.width() as f64;
    for (polys, vecs, feat) in [
        (s.actors, s.actor_vectors, s.actor_features),
        (s.lanes, s.lane_vectors, s.lane_features),
    ] {
        let v = b * (polys * vecs) as f64;
        let mut inp = feat as f64;
        for &w in &c.subgraph_widths {
            let w = w as f64;
            cost.trained += 2.0 * v * (inp * w + w * w);
            // Linear, LayerNorm, ReLU twice, then [x, max] (one contiguous node,
            // `ops::pool`): 10.5 floats per vector and channel (measured).
            cost.act_bytes += F32 * v * 10.5 * w;
            inp = 2.0 * w;
        }
    }
    let t = (s.actors + s.lanes) as f64;
    // The global graph: q, k, v, the attention's output projection and the skip
    // projection, one head over all polylines.
    cost.trained += 2.0 * b * t * 5.0 * d * d + 4.0 * b * t * t * d;
    cost.act_bytes += F32 * (b * t * GLOBAL_PER_TOKEN * d + 3.0 * b * t * t);
    // The decoder on every actor slot: K mode heads and the single-mode head (residual
    // MLP → 2P offsets), the prediction fusion and the confidence head per mode.
    let na = b * s.actors as f64;
    let k = c.modes as f64;
    let p2 = 2.0 * s.pred_steps as f64;
    let head = 2.0 * d * d + d * p2;
    // The fusion's [endpoint, actor] concat is 2d wide.
    let fusion_per_mode = FUSION_PER_MODE + 2.0 * MKL_CAT_COPY;
    cost.trained +=
        2.0 * na * ((k + 1.0) * head + k * (2.0 * d + 3.0 * d * d) + k * (2.0 * d * d + d));
    cost.act_bytes +=
        F32 * na * ((k + 1.0) * (HEAD_PER_ACTOR * d + 2.0 * p2) + k * fusion_per_mode * d);
    cost
}
