//! The width adapters around the LLM block (PAPER.md §1: `Linear(d, D_llm, bias=False)` →
//! block → `Linear(D_llm, d, bias=False)`), and how the block (one layer, a stack, or the
//! `mlp` control: [`BlockCore`]) runs inside a trained model.

use candle_core::{Result, Tensor};
use candle_nn::{Linear, VarBuilder};

use super::{BlockCore, BlockMode};
use crate::train::ops::attention::AttnImpl;
use crate::train::ops::precision::{linear, Precision};

/// The LLM block with its width adapters.
pub struct BlockAdapter {
    pub block: BlockCore,
    up: Linear,
    down: Linear,
    /// The adapters' matmul precision (None: f32).
    prec: Option<Precision>,
}

impl BlockAdapter {
    /// The adapters (`llm_adapter_up`, `llm_adapter_down`) around `block` for an encoder of
    /// width `width`; None for the `none` ablation. Unless configured otherwise, a frozen
    /// block runs in bf16 on CUDA and in f32 elsewhere (CPU bf16 matmuls are slower than f32
    /// ones, so autocast there would only lose precision).
    pub fn maybe_new(
        width: usize,
        block: Option<(BlockCore, BlockMode)>,
        vb: &VarBuilder,
    ) -> Result<Option<Self>> {
        Ok(match block {
            Some((block, mode)) if mode != BlockMode::None => {
                let d = block.width();
                let block = if block.device().is_some_and(|d| d.is_cuda()) {
                    block.configure(AttnImpl::default(), Some(Precision::Bf16))
                } else {
                    block
                };
                Some(BlockAdapter {
                    up: candle_nn::linear_no_bias(width, d, vb.pp("llm_adapter_up"))?,
                    down: candle_nn::linear_no_bias(d, width, vb.pp("llm_adapter_down"))?,
                    block,
                    prec: None,
                })
            }
            _ => None,
        })
    }

    /// Full or chunked attention inside the LLM block, and an explicit precision for the
    /// adapters and a frozen block (None keeps the default split).
    pub fn configure(&mut self, attn: AttnImpl, prec: Option<Precision>) {
        self.block = self.block.clone().configure(attn, prec);
        self.prec = prec;
    }

    /// x [B, T, width] → [B, T, width]; `key_mask` [B, T] (1 = real token): padded tokens get
    /// no attention (VectorNet's padded polylines, PAPER.md §5).
    pub fn forward(&self, x: &Tensor, key_mask: Option<&Tensor>) -> Result<Tensor> {
        let h = linear(&self.up, x, self.prec)?;
        let h = self.block.forward(&h, key_mask)?;
        linear(&self.down, &h, self.prec)
    }
}
