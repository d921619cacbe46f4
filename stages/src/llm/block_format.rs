//! The canonical extracted-block file (`block.safetensors`): one transformer layer of a
//! pretrained LLM, all tensors f32, Hugging Face tensor names with the `model.layers.N.` /
//! `model.decoder.layers.N.` prefix removed, and the layer's shape in the safetensors
//! metadata. Every reader (HF safetensors, GGUF, ...) converts to this; every consumer
//! (the trainer, `llm apply`) reads only this.
//!
//! LLaMA (q/k rows in Hugging Face order — GGUF's llama.cpp permutation is undone on extract):
//! `input_layernorm.weight` [D], `self_attn.q_proj.weight` [H·hd, D],
//! `self_attn.k_proj.weight` [KV·hd, D], `self_attn.v_proj.weight` [KV·hd, D],
//! `self_attn.o_proj.weight` [D, H·hd], `post_attention_layernorm.weight` [D],
//! `mlp.gate_proj.weight` [F, D], `mlp.up_proj.weight` [F, D], `mlp.down_proj.weight` [D, F].
//!
//! OPT (pre-LayerNorm layers): `self_attn.{q,k,v,out}_proj.{weight,bias}` ([D, D], [D]),
//! `self_attn_layer_norm.{weight,bias}` [D], `fc1.{weight,bias}` ([F, D], [F]),
//! `fc2.{weight,bias}` ([D, F], [D]), `final_layer_norm.{weight,bias}` [D].
//!
//! Metadata keys (strings): `format` = `lm4ve-block/1`, `architecture` (`llama` | `opt`),
//! `hidden_size`, `num_heads`, `num_kv_heads`, `head_dim`, `intermediate_size`, `norm_eps`,
//! `layer` (index in the source model), `num_layers` (of the source model), `source`
//! (file name of the checkpoint), `activation` (`silu` | `relu`).

use serde::{Deserialize, Serialize};

pub const BLOCK_FORMAT: &str = "lm4ve-block/1";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    Llama,
    Opt,
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Arch::Llama => "llama",
            Arch::Opt => "opt",
        })
    }
}

/// The shape of one block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlockConfig {
    pub arch: Arch,
    pub hidden_size: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub intermediate_size: usize,
    /// RMSNorm eps (LLaMA) or LayerNorm eps (OPT) of the layer's own norms.
    pub norm_eps: f64,
}

/// eps of the all-ones RMSNorm after the block (PAPER.md §2: 1e-6 in the official configs).
pub const FINAL_NORM_EPS: f64 = 1e-6;

impl BlockConfig {
    /// Tensor names and shapes the canonical file must hold.
    pub fn tensor_shapes(&self) -> Vec<(&'static str, Vec<usize>)> {
        let (d, f) = (self.hidden_size, self.intermediate_size);
        let q = self.num_heads * self.head_dim;
        let kv = self.num_kv_heads * self.head_dim;
        match self.arch {
            Arch::Llama => vec![
                ("input_layernorm.weight", vec![d]),
                ("self_attn.q_proj.weight", vec![q, d]),
                ("self_attn.k_proj.weight", vec![kv, d]),
                ("self_attn.v_proj.weight", vec![kv, d]),
                ("self_attn.o_proj.weight", vec![d, q]),
                ("post_attention_layernorm.weight", vec![d]),
                ("mlp.gate_proj.weight", vec![f, d]),
                ("mlp.up_proj.weight", vec![f, d]),
                ("mlp.down_proj.weight", vec![d, f]),
            ],
            Arch::Opt => vec![
                ("self_attn_layer_norm.weight", vec![d]),
                ("self_attn_layer_norm.bias", vec![d]),
                ("self_attn.q_proj.weight", vec![q, d]),
                ("self_attn.q_proj.bias", vec![q]),
                ("self_attn.k_proj.weight", vec![q, d]),
                ("self_attn.k_proj.bias", vec![q]),
                ("self_attn.v_proj.weight", vec![q, d]),
                ("self_attn.v_proj.bias", vec![q]),
                ("self_attn.out_proj.weight", vec![d, q]),
                ("self_attn.out_proj.bias", vec![d]),
                ("final_layer_norm.weight", vec![d]),
                ("final_layer_norm.bias", vec![d]),
                ("fc1.weight", vec![f, d]),
                ("fc1.bias", vec![f]),
                ("fc2.weight", vec![d, f]),
                ("fc2.bias", vec![d]),
            ],
        }
    }
}
