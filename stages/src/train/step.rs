//! One optimisation step after the forward: the backward with loss scaling, the weight
//! gradients of checkpointed blocks, the data-parallel gradient average, unscaling and the
//! overflow check, clipping, AdamW. Shared by the trainer and the benches.

use super::dist::collective::Collective;
use super::dist::grads::average_gradients;
use super::ops::precision::LossScaler;
use super::ops::recompute::GradSink;
use super::optim::AdamW;
use anyhow::Result;
use candle_core::Var;

/// The backward and the update of one step: loss scaling (f16), the weight gradients of
/// checkpointed blocks, unscaling and the overflow check (a step whose gradients overflowed is
/// skipped and halves the scale), clipping, AdamW.
///
/// In a data-parallel job the gradients are averaged over the ranks right after the backward
/// (`dist::grads`), so every rank sees the same gradients, overflow check and clipping, and
/// takes the same step.
#[allow(clippy::too_many_arguments)] // the step's parts, each a different concern
pub fn backward_and_step(
    loss: &candle_core::Tensor,
    opt: &mut AdamW,
    scaler: Option<&mut LossScaler>,
    sink: &GradSink,
    coll: &dyn Collective,
    grad_clip: f64,
    lr: f64,
) -> Result<()> {
    let scale = scaler.as_ref().map_or(1.0, |s| s.scale);
    let mut grads = if scale == 1.0 {
        loss.backward()?
    } else {
        (loss * scale)?.backward()?
    };
    sink.merge_into(&mut grads)?;
    if coll.is_joined() {
        let vars: Vec<&Var> = opt.params.iter().map(|p| &p.var).collect();
        average_gradients(coll, &vars, &mut grads)?;
    }
    let mut finite = true;
    if let Some(sc) = scaler {
        opt.scale_grads(&mut grads, 1.0 / sc.scale)?;
        finite = sc.update(opt.grad_norm(&grads)?.is_finite());
    }
    if finite {
        opt.clip_grad_norm(&mut grads, grad_clip)?;
        opt.step(&grads, lr)?;
    } else {
        opt.skip_step();
    }
    Ok(())
}
