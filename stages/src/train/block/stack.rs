//! What sits between the width adapters: one LLM layer, a stack of consecutive layers (the
//! paper's "two LLaMA blocks" ablation, `blocks = N` of the `llm.block` stage), or the `mlp`
//! control. A stack runs its layers in order with the all-ones RMSNorm once, after the last,
//! as the reference's `LLaMATransformer.forward` does (`for layer in self.layers: h =
//! layer(h)`, then `h = self.norm(h)`). Every layer of a stack follows the stage's `mode`
//! (frozen: none trains; trainable / random-trained: all train).

use candle_core::{Device, Result, Tensor};

use super::mlp::MlpBlock;
use super::LlmBlock;
use crate::train::ops::attention::AttnImpl;
use crate::train::ops::precision::Precision;

#[derive(Clone, Debug)]
pub enum BlockCore {
    /// One or more LLM layers; every one but the last is built without the final norm
    /// ([`BlockCore::stack`] sees to it).
    Llm(Vec<LlmBlock>),
    /// The trainable residual MLP of the `mlp` ablation.
    Mlp(MlpBlock),
}

impl From<LlmBlock> for BlockCore {
    fn from(b: LlmBlock) -> Self {
        BlockCore::Llm(vec![b])
    }
}

impl BlockCore {
    /// Layers run in order, the all-ones RMSNorm after the last only. Fails on an empty
    /// list or layers of different widths.
    pub fn stack(layers: Vec<LlmBlock>) -> anyhow::Result<Self> {
        let n = layers.len();
        anyhow::ensure!(n > 0, "llm block: a stack needs at least one layer");
        let width = layers[0].config().hidden_size;
        anyhow::ensure!(
            layers.iter().all(|l| l.config().hidden_size == width),
            "llm block: the layers of a stack must have one width"
        );
        Ok(BlockCore::Llm(
            layers
                .into_iter()
                .enumerate()
                .map(|(i, l)| if i + 1 < n { l.without_final_norm() } else { l })
                .collect(),
        ))
    }

    /// The width H the adapters map to and from.
    pub fn width(&self) -> usize {
        match self {
            BlockCore::Llm(ls) => ls.first().map_or(0, |l| l.config().hidden_size),
            BlockCore::Mlp(m) => m.config().hidden_size,
        }
    }

    pub fn device(&self) -> Option<&Device> {
        match self {
            BlockCore::Llm(ls) => ls.first().map(|l| l.device()),
            BlockCore::Mlp(m) => Some(m.device()),
        }
    }

    /// Whether its weights train (Vars registered).
    pub fn is_trainable(&self) -> bool {
        match self {
            BlockCore::Llm(ls) => ls.iter().any(|l| l.is_trainable()),
            BlockCore::Mlp(m) => m.is_trainable(),
        }
    }

    /// Number of LLM layers (0 for the MLP).
    pub fn layers(&self) -> usize {
        match self {
            BlockCore::Llm(ls) => ls.len(),
            BlockCore::Mlp(_) => 0,
        }
    }

    /// Number of weights.
    pub fn num_params(&self) -> usize {
        match self {
            BlockCore::Llm(ls) => ls.iter().map(|l| l.num_params()).sum(),
            BlockCore::Mlp(m) => m.num_params(),
        }
    }

    /// Full or chunked attention and the frozen path's precision for every LLM layer (a
    /// trainable layer and the MLP run in f32).
    pub fn configure(self, attn: AttnImpl, prec: Option<Precision>) -> Self {
        match self {
            BlockCore::Llm(ls) => BlockCore::Llm(
                ls.into_iter()
                    .map(|l| {
                        let l = l.with_attention(attn);
                        match prec {
                            Some(p) if !l.is_trainable() => l.with_precision(p),
                            _ => l,
                        }
                    })
                    .collect(),
            ),
            m => m,
        }
    }

    /// x [B, T, H] → [B, T, H]; `key_mask` [B, T] (1 = real token) reaches every layer's
    /// attention (the MLP has none).
    pub fn forward(&self, x: &Tensor, key_mask: Option<&Tensor>) -> Result<Tensor> {
        match self {
            BlockCore::Llm(ls) => {
                let mut h = x.clone();
                for l in ls {
                    h = l.forward(&h, key_mask)?;
                }
                Ok(h)
            }
            BlockCore::Mlp(m) => m.forward(x),
        }
    }
}
