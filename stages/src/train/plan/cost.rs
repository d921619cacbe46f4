//! The cost model of the dry run: FLOPs (2 per multiply-add, matmuls and attention only)
//! and the activations a training step keeps for its backward, for the parts every model
//! shares — a pre-norm ViT block, the adapters and the block core. Each task adds its
//! encoder's own (`Task::encoder_cost`). How the numbers are made: `plan/mod.rs`.

use crate::llm::block_format::Arch;
use crate::llm::block_format::BlockConfig;
use crate::train::block::BlockMode;
use crate::train::ops::attention::AttnImpl;
use crate::train::ops::precision::Precision;

/// One forward's cost: FLOPs of layers whose weights train, of frozen projections and of
/// frozen attention; activations kept for the backward, in bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cost {
    pub trained: f64,
    pub frozen_proj: f64,
    pub frozen_attn: f64,
    pub act_bytes: f64,
    /// The encoder blocks' forward (recomputed under `checkpoint_blocks`).
    pub trunk: f64,
}

impl Cost {
    pub fn add(&mut self, o: Cost) {
        self.trained += o.trained;
        self.frozen_proj += o.frozen_proj;
        self.frozen_attn += o.frozen_attn;
        self.act_bytes += o.act_bytes;
        self.trunk += o.trunk;
    }
}

/// Bytes of an f32.
pub const F32: f64 = 4.0;

/// How the encoder blocks run.
#[derive(Debug, Clone, Copy)]
pub struct Exec {
    pub attn: AttnImpl,
    pub checkpoint: bool,
}

/// One pre-norm ViT block on B sequences of T tokens of width d (h heads, MLP ratio r).
/// Activations measured on the autograd graph: (20 + 3r) floats per token and channel
/// (+2 with drop path), 4 per head and token pair (scores and probabilities under full
/// attention; chunked attention keeps none), 2 per head and
/// token, 2 per token (the fused LayerNorm, `ops::layer_norm`, keeps only its output).
pub fn vit_block(b: f64, t: f64, d: f64, h: f64, r: f64, drop_path: bool, exec: Exec) -> Cost {
    let flops = 2.0 * b * t * (4.0 * d * d + 2.0 * r * d * d) + 4.0 * b * t * t * d;
    let acts = if exec.checkpoint {
        // Only the block's input is kept; its insides are recomputed in the backward.
        b * t * d
    } else {
        let per_token = (20.0 + 3.0 * r + if drop_path { 2.0 } else { 0.0 }) * d + 2.0;
        let attn = match exec.attn {
            AttnImpl::Full => 4.0 * b * h * t * t + 2.0 * b * h * t,
            // No probabilities, and nothing the full path's per-token floats do not cover
            // (measured since the fused LayerNorm; it was 3 floats per token and channel).
            AttnImpl::Chunked => 0.0,
        };
        b * t * per_token + attn
    };
    Cost {
        trained: flops,
        act_bytes: acts * F32,
        trunk: flops,
        ..Default::default()
    }
}

/// The adapters and the block core (`layers` layers of shape `block`) on B·T tokens
/// (encoder width d).
#[allow(clippy::too_many_arguments)] // the sizes, the block, and how it runs
pub fn block_cost(
    b: f64,
    t: f64,
    d: f64,
    mode: BlockMode,
    block: &BlockConfig,
    layers: usize,
    mlp_hidden: Option<usize>,
    block_prec: Precision,
    attn: AttnImpl,
) -> (Cost, f64) {
    let c = block;
    let n = b * t;
    let hw = c.hidden_size as f64;
    // Adapters: d → H → d, no bias; they keep the H-wide input of the block and their outputs.
    let mut cost = Cost {
        trained: 2.0 * 2.0 * n * d * hw,
        act_bytes: (n * hw + n * d) * F32,
        ..Default::default()
    };
    let f = c.intermediate_size as f64;
    let llama = c.arch == Arch::Llama;
    let mut block_fwd = 0.0;
    if mode == BlockMode::Mlp {
        let fm = mlp_hidden.unwrap_or(c.intermediate_size) as f64;
        let mats = if llama { 3.0 } else { 2.0 };
        let fl = 2.0 * n * mats * hw * fm;
        let per_f = if llama { 4.0 } else { 2.0 };
        block_fwd += fl;
        cost.add(Cost {
            trained: fl,
            act_bytes: n * (7.0 * hw + per_f * fm + 10.0) * F32,
            ..Default::default()
        });
        return (cost, block_fwd);
    }
    let hq = (c.num_heads * c.head_dim) as f64;
    let kv = (c.num_kv_heads * c.head_dim) as f64;
    let heads = c.num_heads as f64;
    let mlp_mats = if llama { 3.0 } else { 2.0 };
    let proj = 2.0 * n * (hw * hq + 2.0 * hw * kv + hq * hw + mlp_mats * hw * f);
    let att = 4.0 * b * t * t * hq;
    for i in 0..layers {
        let last = i + 1 == layers;
        block_fwd += proj + att;
        if mode.is_trainable() {
            // Plain candle ops in f32 (coefficients measured on the autograd graph).
            let per_f = if llama { 4.0 } else { 2.0 };
            let probs = match attn {
                AttnImpl::Full => 4.0 * b * heads * t * t + 2.0 * b * heads * t,
                AttnImpl::Chunked => 0.0,
            };
            let acts = n * (12.0 * hw + 5.0 * hq + 4.0 * kv + per_f * f + 15.0) + probs;
            cost.add(Cost {
                trained: proj + att,
                act_bytes: acts * F32,
                ..Default::default()
            });
        } else {
            // The frozen node keeps exactly `Saved` (block/forward.rs) and its output.
            let mm = match block_prec {
                Precision::F32 => 4.0,
                Precision::Bf16 | Precision::F16 => 2.0,
            };
            let mut bytes = F32 * (2.0 * n * hw + 2.0 * n) // x̂1, r1, x̂2, r2
                + mm * n * (hq + 2.0 * kv) // q, k, v
                + mm * n * f * if llama { 2.0 } else { 1.0 } // MLP pre-activations
                + F32 * n * hw; // the node's output
            if attn == AttnImpl::Full {
                bytes += mm * b * heads * t * t;
            }
            if last {
                bytes += F32 * (n * hw + n); // the final norm's output and 1/rms
            }
            cost.add(Cost {
                frozen_proj: proj,
                frozen_attn: att,
                act_bytes: bytes,
                ..Default::default()
            });
        }
    }
    (cost, block_fwd)
}
