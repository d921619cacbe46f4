//! One `av.tokens` sample's bytes: its features checked finite, laid out as the schema
//! ([`schema_for`], SHARDS.md) says, and compressed with a per-thread zstd context.

use super::vectorize::{VecParams, Vectorized, ACTOR_FEATURES, LANE_FEATURES};
use lm4ve_pipeline::shard::{Dtype, Field, Schema};

/// A sample's features must be finite: a coordinate too large for f32 (an AGENT at 1e39 m)
/// would reach the shard as inf/NaN.
pub(super) fn check_finite(v: &Vectorized) -> std::result::Result<(), String> {
    let frame = v.frame.to_f32();
    let parts: [(&str, &[f32]); 6] = [
        ("actor", &v.actors),
        ("lane", &v.lanes),
        ("target", &v.target),
        ("frame", &frame),
        ("actor center", &v.actor_ctrs),
        ("actor future", &v.actor_futures),
    ];
    for (what, xs) in parts {
        if let Some(i) = xs.iter().position(|x| !x.is_finite()) {
            return Err(format!(
                "a {what} feature (value {i}) is not finite: a coordinate in the scenario is too large for f32 (over ~3e38 m) or not a number; fix the CSV"
            ));
        }
    }
    Ok(())
}

/// One sample's frame: the same bytes as [`lm4ve_pipeline::shard::encode_sample`] with
/// [`schema_for`] (a test holds them equal), written straight into one buffer and compressed
/// with a per-thread zstd context instead of a fresh one per sample.
pub fn encode_vectorized(
    p: &VecParams,
    level: i32,
    scenario_id: i64,
    v: &Vectorized,
) -> std::result::Result<Vec<u8>, String> {
    let raw_len = 4
        * (v.actors.len()
            + v.lanes.len()
            + v.target.len()
            + 3
            + v.actor_ctrs.len()
            + v.actor_futures.len())
        + v.actor_mask.len()
        + v.lane_mask.len()
        + 8
        + v.actor_future_mask.len();
    let want = 4
        * (p.max_actors * (p.obs_steps - 1) * ACTOR_FEATURES
            + p.max_lanes * (p.lane_points - 1) * LANE_FEATURES
            + p.pred_steps * 2
            + 3
            + p.max_actors * 2
            + p.max_actors * p.pred_steps * 2)
        + p.max_actors
        + p.max_lanes
        + 8
        + p.max_actors * p.pred_steps;
    if raw_len != want {
        return Err(format!(
            "internal: a sample of {raw_len} bytes, the schema says {want}"
        ));
    }
    let mut raw = Vec::with_capacity(raw_len);
    push_f32(&mut raw, &v.actors);
    raw.extend_from_slice(&v.actor_mask);
    push_f32(&mut raw, &v.lanes);
    raw.extend_from_slice(&v.lane_mask);
    push_f32(&mut raw, &v.target);
    push_f32(&mut raw, &v.frame.to_f32());
    raw.extend_from_slice(&scenario_id.to_le_bytes());
    push_f32(&mut raw, &v.actor_ctrs);
    push_f32(&mut raw, &v.actor_futures);
    raw.extend_from_slice(&v.actor_future_mask);
    compress(&raw, level).map_err(|e| format!("zstd: {e}"))
}

fn push_f32(out: &mut Vec<u8>, v: &[f32]) {
    for x in v {
        out.extend_from_slice(&x.to_le_bytes());
    }
}

thread_local! {
    /// One zstd context per rayon thread (creating one costs as much as compressing a
    /// small sample), with the level it was made for.
    static ZSTD: std::cell::RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { std::cell::RefCell::new(None) };
}

/// `zstd::bulk::compress` with the thread's context (identical output).
fn compress(raw: &[u8], level: i32) -> std::io::Result<Vec<u8>> {
    ZSTD.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().is_none_or(|(l, _)| *l != level) {
            *slot = Some((level, zstd::bulk::Compressor::new(level)?));
        }
        match slot.as_mut() {
            Some((_, c)) => c.compress(raw),
            None => zstd::bulk::compress(raw, level),
        }
    })
}

/// The sample layout (SHARDS.md, `av.tokens`).
pub fn schema_for(p: &VecParams) -> Schema {
    vec![
        Field::new(
            "actors",
            Dtype::Float32,
            &[p.max_actors, p.obs_steps - 1, ACTOR_FEATURES],
        ),
        Field::new("actor_mask", Dtype::Uint8, &[p.max_actors]),
        Field::new(
            "lanes",
            Dtype::Float32,
            &[p.max_lanes, p.lane_points - 1, LANE_FEATURES],
        ),
        Field::new("lane_mask", Dtype::Uint8, &[p.max_lanes]),
        Field::new("target", Dtype::Float32, &[p.pred_steps, 2]),
        Field::new("frame", Dtype::Float32, &[3]),
        Field::new("scenario_id", Dtype::Int64, &[1]),
        Field::new("actor_ctrs", Dtype::Float32, &[p.max_actors, 2]),
        Field::new(
            "actor_futures",
            Dtype::Float32,
            &[p.max_actors, p.pred_steps, 2],
        ),
        Field::new(
            "actor_future_mask",
            Dtype::Uint8,
            &[p.max_actors, p.pred_steps],
        ),
    ]
}
