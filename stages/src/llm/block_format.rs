//! The canonical extracted-block file (`block.safetensors`): one transformer layer of a
//! pretrained LLM, all tensors f32, Hugging Face tensor names with the `model.layers.N.` /
//! `model.decoder.layers.N.` prefix removed, and the layer's shape in the safetensors
//! metadata. Every reader (HF safetensors, GGUF, ...) converts to this; every consumer
//! (the trainer, `llm apply`) reads only this.
//!
//! LLaMA (q/k rows in Hugging Face order — the rotary row order of GGUF (llama.cpp) and of
//! Meta's original checkpoints, which is the same, is undone on extract, so every source of
//! one layer gives the same tensors):
//! `input_layernorm.weight` [D], `self_attn.q_proj.weight` [H·hd, D],
//! `self_attn.k_proj.weight` [KV·hd, D], `self_attn.v_proj.weight` [KV·hd, D],
//! `self_attn.o_proj.weight` [D, H·hd], `post_attention_layernorm.weight` [D],
//! `mlp.gate_proj.weight` [F, D], `mlp.up_proj.weight` [F, D], `mlp.down_proj.weight` [D, F].
//!
//! OPT: `self_attn.{q,k,v,out}_proj.{weight,bias}` ([D, D], [D]),
//! `self_attn_layer_norm.{weight,bias}` [D], `fc1.{weight,bias}` ([F, D], [F]),
//! `fc2.{weight,bias}` ([D, F], [D]), `final_layer_norm.{weight,bias}` [D]. Pre-LayerNorm
//! (`h = x + attn(LN1(x))`, `y = h + fc2(relu(fc1(LN2(h))))`: OPT-125m, 1.3b and up) or
//! post-LayerNorm (`h = LN1(x + attn(x))`, `y = LN2(h + fc2(relu(fc1(h))))`: opt-350m, whose
//! config.json says `do_layer_norm_before = false`); same tensors, different order.
//!
//! Metadata keys (strings): `format` = `lm4ve-block/1`, `architecture` (`llama` | `opt`),
//! `hidden_size`, `num_heads`, `num_kv_heads`, `head_dim`, `intermediate_size`, `norm_eps`,
//! `layer` (index in the source model), `num_layers` (of the source model), `source`
//! (file name of the checkpoint), `activation` (`silu` | `relu`), and only for a
//! post-LayerNorm OPT layer `do_layer_norm_before` = `false` (a file without the key is
//! pre-norm, so files written before the key existed read as they always did).
//!
//! A stack of N > 1 consecutive layers (`blocks = N` of the `llm.block` stage) is one file with
//! each layer's tensors under `layers.{i}.` (i = 0..N-1: source layers `layer`..`layer`+N-1),
//! the first layer's metadata and `blocks` = N. A file without `blocks` holds one layer under
//! the bare names above.

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
    /// OPT with `do_layer_norm_before = false` (opt-350m): each LayerNorm comes after its
    /// residual add instead of before its sublayer. Always false for LLaMA. Left out of the
    /// JSON when false, so pre-norm configs serialise as before the field existed.
    #[serde(default, skip_serializing_if = "is_false")]
    pub post_norm: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// eps of the all-ones RMSNorm after the block (PAPER.md §2: 1e-6 in the official configs).
pub const FINAL_NORM_EPS: f64 = 1e-6;

/// What a tensor of a block does: one name per role in [`TENSORS`], the one table of
/// canonical names that the checkpoint readers, the block writer and the trainer's block use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// First norm (LLaMA RMSNorm / OPT LayerNorm) weight and bias.
    Norm1,
    Norm1Bias,
    Q,
    QBias,
    K,
    KBias,
    V,
    VBias,
    /// Attention output projection.
    O,
    OBias,
    /// Second norm, before the MLP.
    Norm2,
    Norm2Bias,
    /// LLaMA `gate_proj` / OPT `fc1`.
    MlpIn,
    MlpInBias,
    /// LLaMA `up_proj` (OPT has none).
    MlpUp,
    /// LLaMA `down_proj` / OPT `fc2`.
    MlpOut,
    MlpOutBias,
}

/// One row of the table: the role, the architecture, the canonical (Hugging Face) name, and
/// for LLaMA the GGUF tensor name (`blk.N.<gguf>.weight`) and Meta's original name
/// (`layers.N.<meta>.weight` in `consolidated.NN.pth`).
pub struct TensorName {
    pub role: Role,
    pub arch: Arch,
    pub name: &'static str,
    pub gguf: Option<&'static str>,
    pub meta: Option<&'static str>,
}

const fn t(role: Role, arch: Arch, name: &'static str, gguf: Option<&'static str>) -> TensorName {
    TensorName {
        role,
        arch,
        name,
        gguf,
        meta: None,
    }
}

/// A LLaMA row: canonical, GGUF and Meta names.
const fn llama(
    role: Role,
    name: &'static str,
    gguf: &'static str,
    meta: &'static str,
) -> TensorName {
    TensorName {
        role,
        arch: Arch::Llama,
        name,
        gguf: Some(gguf),
        meta: Some(meta),
    }
}

/// Every tensor of a canonical block, per architecture, in file order.
pub const TENSORS: &[TensorName] = &[
    llama(
        Role::Norm1,
        "input_layernorm.weight",
        "attn_norm",
        "attention_norm",
    ),
    llama(Role::Q, "self_attn.q_proj.weight", "attn_q", "attention.wq"),
    llama(Role::K, "self_attn.k_proj.weight", "attn_k", "attention.wk"),
    llama(Role::V, "self_attn.v_proj.weight", "attn_v", "attention.wv"),
    llama(
        Role::O,
        "self_attn.o_proj.weight",
        "attn_output",
        "attention.wo",
    ),
    llama(
        Role::Norm2,
        "post_attention_layernorm.weight",
        "ffn_norm",
        "ffn_norm",
    ),
    llama(
        Role::MlpIn,
        "mlp.gate_proj.weight",
        "ffn_gate",
        "feed_forward.w1",
    ),
    llama(
        Role::MlpUp,
        "mlp.up_proj.weight",
        "ffn_up",
        "feed_forward.w3",
    ),
    llama(
        Role::MlpOut,
        "mlp.down_proj.weight",
        "ffn_down",
        "feed_forward.w2",
    ),
    t(Role::Norm1, Arch::Opt, "self_attn_layer_norm.weight", None),
    t(
        Role::Norm1Bias,
        Arch::Opt,
        "self_attn_layer_norm.bias",
        None,
    ),
    t(Role::Q, Arch::Opt, "self_attn.q_proj.weight", None),
    t(Role::QBias, Arch::Opt, "self_attn.q_proj.bias", None),
    t(Role::K, Arch::Opt, "self_attn.k_proj.weight", None),
    t(Role::KBias, Arch::Opt, "self_attn.k_proj.bias", None),
    t(Role::V, Arch::Opt, "self_attn.v_proj.weight", None),
    t(Role::VBias, Arch::Opt, "self_attn.v_proj.bias", None),
    t(Role::O, Arch::Opt, "self_attn.out_proj.weight", None),
    t(Role::OBias, Arch::Opt, "self_attn.out_proj.bias", None),
    t(Role::Norm2, Arch::Opt, "final_layer_norm.weight", None),
    t(Role::Norm2Bias, Arch::Opt, "final_layer_norm.bias", None),
    t(Role::MlpIn, Arch::Opt, "fc1.weight", None),
    t(Role::MlpInBias, Arch::Opt, "fc1.bias", None),
    t(Role::MlpOut, Arch::Opt, "fc2.weight", None),
    t(Role::MlpOutBias, Arch::Opt, "fc2.bias", None),
];

/// The table's rows for one architecture, in file order.
pub fn tensors_of(arch: Arch) -> impl Iterator<Item = &'static TensorName> {
    TENSORS.iter().filter(move |t| t.arch == arch)
}

impl BlockConfig {
    /// Tensor names and shapes the canonical file must hold.
    pub fn tensor_shapes(&self) -> Vec<(&'static str, Vec<usize>)> {
        tensors_of(self.arch)
            .map(|t| (t.name, self.shape_of(t.role)))
            .collect()
    }

    /// The shape of the tensor that plays `role` in this block.
    pub fn shape_of(&self, role: Role) -> Vec<usize> {
        let (d, f) = (self.hidden_size, self.intermediate_size);
        let q = self.num_heads * self.head_dim;
        let kv = self.num_kv_heads * self.head_dim;
        match role {
            Role::Norm1 | Role::Norm1Bias | Role::Norm2 | Role::Norm2Bias => vec![d],
            Role::Q => vec![q, d],
            Role::QBias => vec![q],
            Role::K | Role::V => vec![kv, d],
            Role::KBias | Role::VBias => vec![kv],
            Role::O => vec![d, q],
            Role::OBias | Role::MlpOutBias => vec![d],
            Role::MlpIn | Role::MlpUp => vec![f, d],
            Role::MlpInBias => vec![f],
            Role::MlpOut => vec![d, f],
        }
    }
}
