//! Shape-only weights: a `VarBuilder` backend whose tensors have their real shapes and cost
//! one float, so the dry run builds a 7B layer with the real block code and no memory.

use super::{LlmBlock, MlpBlock, MlpConfig};
use crate::llm::block_format::BlockConfig;
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::VarBuilder;
use std::collections::HashMap;

/// A `VarBuilder` backend that hands out zero-stride broadcasts of one zero: every tensor has
/// its real shape and costs one float (how the plan builds a 7B layer without its 800 MB).
pub struct ShapeOnly;

impl candle_nn::var_builder::SimpleBackend for ShapeOnly {
    fn get(
        &self,
        s: Shape,
        _name: &str,
        _h: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        Tensor::zeros((), dtype, dev)?.broadcast_as(s)
    }
    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("shape-only weights: `{name}` has no shape")
    }
    fn contains_tensor(&self, _name: &str) -> bool {
        true
    }
}

impl LlmBlock {
    /// A layer of shape `cfg` whose weights are shape-only (for counting, not running).
    pub fn shape_only(cfg: &BlockConfig) -> anyhow::Result<Self> {
        LlmBlock::load(
            cfg,
            VarBuilder::from_backend(Box::new(ShapeOnly), DType::F32, Device::Cpu),
        )
    }
}

impl MlpBlock {
    /// The MLP of shape `cfg` with shape-only weights.
    pub fn shape_only(cfg: &MlpConfig) -> anyhow::Result<Self> {
        let dev = Device::Cpu;
        let named: HashMap<&'static str, Tensor> = cfg
            .tensor_shapes()
            .into_iter()
            .map(|(n, s)| Ok((n, Tensor::zeros((), DType::F32, &dev)?.broadcast_as(s)?)))
            .collect::<candle_core::Result<_>>()?;
        MlpBlock::from_named(cfg, named, &dev)
    }
}
