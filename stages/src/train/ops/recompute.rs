//! Activation checkpointing (`checkpoint_blocks = true`): an encoder block becomes one
//! autograd node that keeps only its input. Its forward runs the block and lets every
//! intermediate go; its backward runs the block again on the kept input — with the same
//! drop-path draws — and backpropagates through that copy.
//!
//! candle's custom nodes return gradients for their inputs only, so the block's own weight
//! gradients, computed in that inner backward, are handed to a [`GradSink`] that the trainer
//! merges into the step's gradients after `loss.backward()`. Each weight is used by one block
//! only, so the merged gradient is the one the plain path computes.

use std::sync::{Arc, Mutex};

use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, CudaStorage, CustomOp1, Layout, MetalStorage, Result, Shape};
use candle_core::{Tensor, Var};
use rand_chacha::ChaCha8Rng;

use super::handover::Handover;

/// A block that can be run again: its forward, and the parameters it trains.
pub trait Recompute: Send + Sync + 'static {
    fn forward(&self, x: &Tensor, rng: Option<&mut ChaCha8Rng>) -> Result<Tensor>;
    fn params(&self) -> Vec<Tensor>;
}

/// Weight gradients produced inside checkpointed blocks during one backward.
#[derive(Clone, Default)]
pub struct GradSink(Arc<Mutex<Vec<(Tensor, Tensor)>>>);

impl GradSink {
    fn push(&self, param: Tensor, grad: Tensor) -> Result<()> {
        self.0
            .lock()
            .map_err(|_| candle_core::Error::Msg("gradient sink lock poisoned".into()))?
            .push((param, grad));
        Ok(())
    }

    /// Adds the collected gradients into `grads` (summing with any already there) and empties
    /// the sink for the next step.
    pub fn merge_into(&self, grads: &mut GradStore) -> Result<()> {
        let taken = std::mem::take(
            &mut *self
                .0
                .lock()
                .map_err(|_| candle_core::Error::Msg("gradient sink lock poisoned".into()))?,
        );
        for (param, g) in taken {
            let g = match grads.remove(&param) {
                Some(prev) => (prev + g)?,
                None => g,
            };
            grads.insert(&param, g);
        }
        Ok(())
    }
}

/// `block(x)` as one node that keeps only x. `rng` is the caller's training RNG: it advances
/// exactly as a plain call would, and the node replays the same draws in its backward.
pub fn checkpointed<B: Recompute>(
    block: Arc<B>,
    x: &Tensor,
    rng: Option<&mut ChaCha8Rng>,
    sink: &GradSink,
) -> Result<Tensor> {
    let replay = rng.as_deref().cloned();
    // The weights are Vars, so this builds a graph; dropping `y` drops it with every
    // intermediate. Only the output's storage survives, moved into the node.
    let y = block.forward(&x.detach(), rng)?;
    let out = y.detach();
    drop(y);
    let node = Checkpoint {
        block,
        replay,
        out: Handover::new(NAME, out),
        sink: sink.clone(),
    };
    x.apply_op1_arc(Arc::new(Box::new(node)))
}

struct Checkpoint<B: Recompute> {
    block: Arc<B>,
    replay: Option<ChaCha8Rng>,
    out: Handover,
    sink: GradSink,
}

const NAME: &str = "lm4ve-checkpointed-block";

impl<B: Recompute> CustomOp1 for Checkpoint<B> {
    fn name(&self) -> &'static str {
        NAME
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        self.out.cpu()
    }

    fn cuda_fwd(&self, _: &CudaStorage, _: &Layout) -> Result<(CudaStorage, Shape)> {
        self.out.cuda()
    }

    fn metal_fwd(&self, _: &MetalStorage, _: &Layout) -> Result<(MetalStorage, Shape)> {
        self.out.metal()
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let xv = Var::from_tensor(&x.detach())?;
        let mut rng = self.replay.clone();
        let y = self.block.forward(xv.as_tensor(), rng.as_mut())?;
        // d(Σ y·g)/dy = g exactly, so this backward is the outer one restricted to the block.
        let grads = (y * grad_res.detach())?.sum_all()?.backward()?;
        for p in self.block.params() {
            if let Some(g) = grads.get(&p) {
                self.sink.push(p.clone(), g.clone())?;
            }
        }
        Ok(grads.get(xv.as_tensor()).cloned())
    }
}
