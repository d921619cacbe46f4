//! How a custom autograd node hands candle an output it already computed with tensor ops.
//!
//! candle's `CustomOp*` forwards receive storages, not tensors, so the nodes of this crate
//! (the frozen LLM block, chunked attention, checkpointed blocks) compute their output first,
//! with ordinary ops on detached inputs, and give it to the node; the node's forward copies it
//! into the storage candle asks for and lets go of its own reference, so the output is not
//! kept twice for the rest of the step.

use std::sync::Mutex;

use candle_core::backend::{BackendDevice, BackendStorage};
use candle_core::{CpuStorage, CudaStorage, Layout, MetalStorage, Result, Shape, Storage, Tensor};

/// The output a node hands over, taken by its (single) forward.
pub(crate) struct Handover {
    name: &'static str,
    out: Mutex<Option<Tensor>>,
}

/// A fresh contiguous copy of `src` viewed through `layout`, on the same device.
fn copy_storage<S>(src: &S, layout: &Layout) -> Result<(S, Shape)>
where
    S: BackendStorage,
    S::Device: BackendDevice<Storage = S>,
{
    let shape = layout.shape().clone();
    let mut dst = src.device().zeros_impl(&shape, src.dtype())?;
    src.copy_strided_src(&mut dst, 0, layout)?;
    Ok((dst, shape))
}

impl Handover {
    pub(crate) fn new(name: &'static str, out: Tensor) -> Self {
        Handover {
            name,
            out: Mutex::new(Some(out)),
        }
    }

    fn take(&self) -> Result<Tensor> {
        self.out
            .lock()
            .map_err(|_| candle_core::Error::Msg(format!("{}: lock poisoned", self.name)))?
            .take()
            .ok_or_else(|| candle_core::Error::Msg(format!("{}: forward ran twice", self.name)))
    }

    pub(crate) fn cpu(&self) -> Result<(CpuStorage, Shape)> {
        let t = self.take()?;
        let (storage, layout) = t.storage_and_layout();
        match &*storage {
            Storage::Cpu(s) => copy_storage(s, layout),
            _ => candle_core::bail!("{}: input on cpu, output elsewhere", self.name),
        }
    }

    pub(crate) fn cuda(&self) -> Result<(CudaStorage, Shape)> {
        let t = self.take()?;
        let (storage, layout) = t.storage_and_layout();
        match &*storage {
            Storage::Cuda(s) => copy_storage(s, layout),
            _ => candle_core::bail!("{}: input on cuda, output elsewhere", self.name),
        }
    }

    pub(crate) fn metal(&self) -> Result<(MetalStorage, Shape)> {
        let t = self.take()?;
        let (storage, layout) = t.storage_and_layout();
        match &*storage {
            Storage::Metal(s) => copy_storage(s, layout),
            _ => candle_core::bail!("{}: input on metal, output elsewhere", self.name),
        }
    }
}
