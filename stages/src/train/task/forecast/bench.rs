//! The training bench's VectorNet (`lm4ve bench-train`): Argoverse-sized random scenes.

use super::{AvBatch, AvShape, Forecasting};
use crate::train::models::vectornet::VectorNetConfig;
use crate::train::task::BenchSetup;
use anyhow::Result;
use candle_core::{DType, Device, Tensor};

/// A batch of `b` random scenes (`tiny`: a few actors and lanes, for tests).
pub(super) fn setup(tiny: bool, b: usize, device: &Device) -> Result<BenchSetup<Forecasting>> {
    use crate::train::bench_inputs::{mask, randn};
    let cfg = VectorNetConfig::default();
    let (actors, lanes) = if tiny { (8, 12) } else { (64, 128) };
    let (actor_vectors, lane_vectors, pred) = (19, 9, 30);
    let (af, lf) = (
        crate::argoverse::vectorize::ACTOR_FEATURES,
        crate::argoverse::vectorize::LANE_FEATURES,
    );
    Ok(BenchSetup {
        sizes: serde_json::json!({
            "actors": actors, "actor_vectors": actor_vectors,
            "lanes": lanes, "lane_vectors": lane_vectors,
            "width": cfg.width(), "modes": cfg.modes, "pred_steps": pred,
        }),
        batch: AvBatch {
            actors: randn(&[b, actors, actor_vectors, af], device)?,
            // Real scenes are padded: about 3/4 of the slots hold an actor or a lane.
            actor_mask: mask(b, actors, actors * 3 / 4, device)?,
            lanes: randn(&[b, lanes, lane_vectors, lf], device)?,
            lane_mask: mask(b, lanes, lanes * 3 / 4, device)?,
            actor_ctrs: randn(&[b, actors, 2], device)?,
            agent: randn(&[b, pred, 2], device)?,
            futures: randn(&[b, actors, pred, 2], device)?,
            future_mask: Tensor::ones((b, actors, pred), DType::F32, device)?,
            has_target: None,
        },
        shape: AvShape {
            actors,
            actor_vectors,
            actor_features: af,
            lanes,
            lane_vectors,
            lane_features: lf,
            pred_steps: pred,
        },
        classes: 0,
        config: cfg,
    })
}
