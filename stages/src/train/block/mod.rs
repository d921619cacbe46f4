//! The LLM block inside the encoder (PAPER.md §2, DESIGN.md §5): one LLaMA or OPT layer
//! with no rotary embedding and no causal mask, softmax in f32, scale `1/sqrt(head_dim)`,
//! followed by the all-ones RMSNorm (eps `FINAL_NORM_EPS`).
//!
//! What lives here, in the style of candle-transformers' models: [`LlmBlock`], a plain struct
//! of named weights (`weights.rs`) loaded by name through a `VarBuilder` over the canonical
//! block safetensors, with ONE public `forward(x, mask)`. How it runs is decided when it is
//! built, not per call:
//! - frozen (the default): the forward (`forward.rs`) becomes one autograd node whose
//!   hand-written backward (`backward.rs`) returns only dL/dx — no weight gradients are ever
//!   computed and the weights never enter the optimizer; its matmul precision is set by
//!   [`LlmBlock::with_precision`];
//! - trainable ([`LlmBlock::make_trainable`]): plain candle ops with the weights as Vars, so
//!   autograd reaches them (also the "naive tracked block" baseline of the benchmarks).
//!
//! OPT layers run pre- or post-LayerNorm as their config says (`BlockConfig::post_norm`).
//! `stack.rs` holds [`BlockCore`], what the adapters wrap: one layer, a stack of layers with the
//! final norm once after the last (`blocks = N`), or the trainable MLP of the `mlp` ablation
//! (`mlp.rs`). `adapter.rs` holds the width adapters around it; `shape_only.rs` builds either with
//! weights of the real shapes and no memory (the dry run). Depends on `llm::block_format`
//! (the one tensor-name table) and `train::ops`; nothing here imports the pipeline engine.

mod adapter;
mod backward;
mod forward;
mod mlp;
mod shape_only;
mod stack;
#[cfg(test)]
pub(crate) mod tests;
mod weights;

pub use adapter::BlockAdapter;
pub use mlp::{MlpBlock, MlpConfig};
pub use shape_only::ShapeOnly;
pub use stack::BlockCore;

use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;

use anyhow::{bail, Context as _};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarBuilder;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::llm::block_format::{tensors_of, Arch, BlockConfig};
use crate::train::ops::attention::AttnImpl;
use crate::train::ops::precision::Precision;
use forward::Mode;
pub(crate) use forward::Prec;
use weights::Weights;

/// Which block sits between the adapters (PAPER.md §2 ablations: `init = pretrained | random`
/// × `train = frozen | trainable`, `mlp` = a trained MLP instead of the block, and `none` = no
/// block and no adapters). With a stack of layers (`blocks = N`), every layer follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BlockMode {
    /// Pretrained weights, never updated (the paper's method; the default).
    #[default]
    Frozen,
    /// Same shapes, seeded random init, never updated (`random` or `random-frozen`).
    #[serde(alias = "random-frozen")]
    Random,
    /// Same shapes, seeded random init, trained with the rest of the model: the paper's
    /// "random LLM" row (76.9 on ImageNet vs 80.7 frozen pretrained).
    RandomTrained,
    /// Pretrained weights, fine-tuned with the rest of the model.
    Trainable,
    /// The control "an MLP of matched capacity instead of the block" (PAPER.md §2): the
    /// adapters around a trainable, randomly initialised residual MLP at the block's width
    /// and FFN size, no attention (see `block/mlp.rs`). The block stage gives only the shape.
    Mlp,
    /// No block and no adapters.
    None,
}

impl BlockMode {
    /// Whether the block's (or the MLP's) weights receive gradients and optimizer updates.
    pub fn is_trainable(self) -> bool {
        matches!(
            self,
            BlockMode::Trainable | BlockMode::RandomTrained | BlockMode::Mlp
        )
    }

    /// Whether the block starts from a seeded random init instead of the checkpoint.
    pub fn is_random(self) -> bool {
        matches!(self, BlockMode::Random | BlockMode::RandomTrained)
    }

    /// Whether the model has a block (and its adapters) at all.
    pub fn has_block(self) -> bool {
        !matches!(self, BlockMode::None)
    }
}

impl std::fmt::Display for BlockMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BlockMode::Frozen => "frozen",
            BlockMode::Random => "random",
            BlockMode::RandomTrained => "random-trained",
            BlockMode::Trainable => "trainable",
            BlockMode::Mlp => "mlp",
            BlockMode::None => "none",
        })
    }
}

/// One LLM layer plus the all-ones final RMSNorm, weights in f32.
#[derive(Clone)]
pub struct LlmBlock {
    cfg: BlockConfig,
    device: Device,
    w: Weights,
    /// Set by [`LlmBlock::make_trainable`]; the Vars share storage with `w`.
    vars: Option<Vec<Var>>,
    /// bf16 and f16 copies of the matrices for autocast, made on first use (frozen weights
    /// never change, so a copy never goes stale; trainable blocks never use them).
    bf16: OnceLock<Weights>,
    f16: OnceLock<Weights>,
    /// Full or chunked (memory-efficient) attention; the values are the same.
    attn: AttnImpl,
    /// Matmul precision of the frozen path (f32 unless [`LlmBlock::with_precision`]).
    prec: Prec,
    /// Whether the all-ones RMSNorm follows the layer: true, except for the blocks of a
    /// stack before its last ([`LlmBlock::without_final_norm`]).
    final_norm: bool,
}

impl std::fmt::Debug for LlmBlock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmBlock")
            .field("cfg", &self.cfg)
            .field("device", &self.device)
            .field("trainable", &self.vars.is_some())
            .finish()
    }
}

/// Checks the config describes a block this code can run (the readers should never produce
/// anything else, but a hand-edited block file could).
fn validate_config(cfg: &BlockConfig) -> anyhow::Result<()> {
    let c = cfg;
    if c.hidden_size == 0 || c.num_heads == 0 || c.num_kv_heads == 0 || c.head_dim == 0 {
        bail!(
            "llm block: hidden_size, num_heads, num_kv_heads and head_dim must be > 0, got {c:?}"
        );
    }
    if c.intermediate_size == 0 {
        bail!("llm block: intermediate_size must be > 0");
    }
    if !c.num_heads.is_multiple_of(c.num_kv_heads) {
        bail!(
            "llm block: num_heads {} is not a multiple of num_kv_heads {}",
            c.num_heads,
            c.num_kv_heads
        );
    }
    if c.arch == Arch::Opt && c.num_kv_heads != c.num_heads {
        bail!(
            "llm block: OPT has no grouped-query attention, but num_kv_heads {} != num_heads {}",
            c.num_kv_heads,
            c.num_heads
        );
    }
    if c.post_norm && c.arch != Arch::Opt {
        bail!(
            "llm block: post-LayerNorm is an OPT variant, a {} block has none",
            c.arch
        );
    }
    if !(c.norm_eps.is_finite() && c.norm_eps > 0.0) {
        bail!(
            "llm block: norm_eps must be a positive number, got {}",
            c.norm_eps
        );
    }
    Ok(())
}

impl LlmBlock {
    /// Loads the block's weights by their canonical names through `vb` (a `VarBuilder`
    /// over a canonical `block.safetensors`, or over tensors in memory).
    pub fn load(cfg: &BlockConfig, vb: VarBuilder) -> anyhow::Result<Self> {
        validate_config(cfg)?;
        let w = Weights::load(cfg, &vb).context("llm block: loading the weights")?;
        Ok(LlmBlock {
            cfg: cfg.clone(),
            device: vb.device().clone(),
            w,
            vars: None,
            bf16: OnceLock::new(),
            f16: OnceLock::new(),
            attn: AttnImpl::Full,
            prec: Prec::F32,
            final_norm: true,
        })
    }

    /// From canonical tensors (name -> (shape, data)) as the llm module returns them; every
    /// name and shape is checked against `cfg.tensor_shapes()`.
    pub fn from_tensors(
        cfg: &BlockConfig,
        tensors: &BTreeMap<String, (Vec<usize>, Vec<f32>)>,
        device: &Device,
    ) -> anyhow::Result<Self> {
        validate_config(cfg)?;
        let expected = cfg.tensor_shapes();
        // An unexpected tensor means the file was made for another architecture or by a
        // broken reader: refuse rather than silently ignore it.
        for name in tensors.keys() {
            if !expected.iter().any(|(n, _)| n == name) {
                bail!(
                    "llm block: unexpected tensor `{name}` for a {} block (expected: {})",
                    cfg.arch,
                    expected
                        .iter()
                        .map(|(n, _)| *n)
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
        }
        let mut named = HashMap::new();
        for (name, shape) in &expected {
            let (got_shape, data) = tensors
                .get(*name)
                .with_context(|| format!("llm block: missing tensor `{name}`"))?;
            if got_shape != shape {
                bail!("llm block: tensor `{name}` has shape {got_shape:?}, expected {shape:?}");
            }
            let n: usize = shape.iter().product();
            if data.len() != n {
                bail!(
                    "llm block: tensor `{name}` has {} values, its shape {shape:?} needs {n}",
                    data.len()
                );
            }
            if let Some(i) = data.iter().position(|v| !v.is_finite()) {
                bail!("llm block: tensor `{name}` holds a non-finite value at index {i}");
            }
            let tensor = Tensor::from_slice(data, shape.as_slice(), device)
                .with_context(|| format!("llm block: moving `{name}` to {device:?}"))?;
            named.insert(name.to_string(), tensor);
        }
        Self::load(cfg, VarBuilder::from_tensors(named, DType::F32, device))
    }

    /// Same shapes, seeded init (normal std 0.02 for matrices, ones for norm weights, zeros
    /// for biases): the `random` ablation. Same seed, same weights, on every machine.
    pub fn random(cfg: &BlockConfig, seed: u64, device: &Device) -> anyhow::Result<Self> {
        validate_config(cfg)?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut named = HashMap::new();
        // Table order: the RNG stream, and so the weights, never depend on a map's order.
        for (name, shape) in cfg.tensor_shapes() {
            let n: usize = shape.iter().product();
            let data: Vec<f32> = if name.ends_with(".bias") {
                vec![0.0; n]
            } else if shape.len() == 1 {
                vec![1.0; n]
            } else {
                normal_vec(&mut rng, n, 0.02)
            };
            named.insert(
                name.to_string(),
                Tensor::from_vec(data, shape.as_slice(), device)?,
            );
        }
        Self::load(cfg, VarBuilder::from_tensors(named, DType::F32, device))
    }

    /// The frozen path's matmul precision: `F32`, or autocast in bf16/f16 (norms, softmax,
    /// the residual stream, the output and the gradient it returns stay f32). Any device.
    pub fn with_precision(mut self, precision: Precision) -> Self {
        self.prec = match precision {
            Precision::F32 => Prec::F32,
            Precision::Bf16 => Prec::Bf16,
            Precision::F16 => Prec::F16,
        };
        self
    }

    /// Drops the all-ones RMSNorm after the layer: for every block of a stack but the last
    /// (the reference's `LLaMATransformer` runs its layers, then its one final norm).
    pub fn without_final_norm(mut self) -> Self {
        self.final_norm = false;
        self
    }

    /// Whether the all-ones RMSNorm follows the layer.
    pub fn has_final_norm(&self) -> bool {
        self.final_norm
    }

    /// Full or chunked attention (see `train::ops::attention`).
    pub fn with_attention(mut self, attn: AttnImpl) -> Self {
        self.attn = attn;
        self
    }

    /// For `trainable` mode: registers every weight as a candle Var (returned for the
    /// optimizer, in the order of `cfg.tensor_shapes()`); afterwards [`Self::forward`] tracks
    /// weight gradients, in f32. Calling it again returns the same Vars.
    pub fn make_trainable(&mut self) -> anyhow::Result<Vec<Var>> {
        if let Some(vars) = &self.vars {
            return Ok(vars.clone());
        }
        let mut vars = Vec::new();
        let mut named = HashMap::new();
        for t in tensors_of(self.cfg.arch) {
            let w = self
                .w
                .get(t.role)
                .with_context(|| format!("llm block: no `{}`", t.name))?;
            let var =
                Var::from_tensor(w).with_context(|| format!("llm block: Var for `{}`", t.name))?;
            named.insert(t.name.to_string(), var.as_tensor().clone());
            vars.push(var);
        }
        self.w = Weights::load(
            &self.cfg,
            &VarBuilder::from_tensors(named, DType::F32, &self.device),
        )?;
        self.bf16 = OnceLock::new();
        self.f16 = OnceLock::new();
        self.vars = Some(vars.clone());
        Ok(vars)
    }

    /// Whether [`Self::make_trainable`] was called.
    pub fn is_trainable(&self) -> bool {
        self.vars.is_some()
    }

    pub fn config(&self) -> &BlockConfig {
        &self.cfg
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The weights under their canonical names (for checkpoints of a trainable block and
    /// for tests); current values, also after optimizer steps.
    pub fn tensors(&self) -> Vec<(&'static str, Tensor)> {
        tensors_of(self.cfg.arch)
            .filter_map(|t| self.w.get(t.role).map(|w| (t.name, w.clone())))
            .collect()
    }

    /// Number of weights (for logs).
    pub fn num_params(&self) -> usize {
        self.cfg
            .tensor_shapes()
            .iter()
            .map(|(_, s)| s.iter().product::<usize>())
            .sum()
    }

    /// The module exactly as the encoder uses it: the layer (no RoPE, no causal mask, softmax
    /// in f32) then the all-ones RMSNorm. x: [B, T, D] f32 → [B, T, D] f32. `key_mask`
    /// [B, T] (1 = real token, 0 = pad): padded keys get a -1e30 score before the softmax, so
    /// they receive no attention (a finite value rather than -inf, so that an all-padding row
    /// gives a uniform, not a NaN, distribution).
    ///
    /// A trainable block runs plain ops (autograd reaches its Vars); any other block is the
    /// frozen node at its precision.
    pub fn forward(&self, x: &Tensor, key_mask: Option<&Tensor>) -> candle_core::Result<Tensor> {
        if self.vars.is_some() {
            self.forward_tracked(x, key_mask)
        } else {
            self.frozen_impl(x, key_mask, self.prec)
        }
    }

    /// Plain differentiable candle ops in f32, whatever the mode (the trainable path, and
    /// the autograd reference the frozen node is tested against).
    pub(crate) fn forward_tracked(
        &self,
        x: &Tensor,
        key_mask: Option<&Tensor>,
    ) -> candle_core::Result<Tensor> {
        self.check_input(x)?;
        let bias = self.mask_bias(x, key_mask)?;
        // Autograd needs differentiable ops; when nothing is tracked the fused kernels are
        // used instead.
        let mode = if x.track_op() || self.vars.is_some() {
            Mode::Tracked
        } else {
            Mode::Fast
        };
        let (y, _) = forward::forward_impl(
            &self.w,
            &self.cfg,
            x,
            bias.as_ref(),
            Prec::F32,
            mode,
            self.attn,
            self.final_norm,
        )?;
        Ok(y)
    }

    pub(crate) fn frozen_impl(
        &self,
        x: &Tensor,
        key_mask: Option<&Tensor>,
        prec: Prec,
    ) -> candle_core::Result<Tensor> {
        if self.vars.is_some() {
            // The frozen node never produces weight gradients: using it on a trainable
            // block would silently stop its training.
            candle_core::bail!("llm block: the block is trainable, it has no frozen path");
        }
        self.check_input(x)?;
        let bias = self.mask_bias(x, key_mask)?;
        let w = match prec {
            Prec::F32 => &self.w,
            Prec::Bf16 => self.autocast_weights(&self.bf16, DType::BF16)?,
            Prec::F16 => self.autocast_weights(&self.f16, DType::F16)?,
        };
        backward::forward_frozen(
            w,
            &self.cfg,
            x,
            bias.as_ref(),
            prec,
            self.attn,
            self.final_norm,
        )
    }

    /// Bytes the frozen node keeps alive between forward and backward for input x (its
    /// saved intermediates and output), for memory reports and benchmarks.
    pub fn frozen_saved_bytes(&self, x: &Tensor) -> candle_core::Result<usize> {
        self.check_input(x)?;
        backward::saved_bytes(&self.w, &self.cfg, x, Prec::F32, self.attn, self.final_norm)
    }

    fn autocast_weights<'a>(
        &self,
        cell: &'a OnceLock<Weights>,
        dtype: DType,
    ) -> candle_core::Result<&'a Weights> {
        if let Some(w) = cell.get() {
            return Ok(w);
        }
        let w = self.w.to_autocast(dtype)?;
        // A concurrent first use may have set it already; either copy is the same.
        let _ = cell.set(w);
        match cell.get() {
            Some(w) => Ok(w),
            None => candle_core::bail!("llm block: internal error, {dtype:?} weights missing"),
        }
    }

    fn check_input(&self, x: &Tensor) -> candle_core::Result<()> {
        let dims = x.dims();
        if dims.len() != 3 || dims[2] != self.cfg.hidden_size {
            candle_core::bail!(
                "llm block: input must be [B, T, {}], got {:?}",
                self.cfg.hidden_size,
                dims
            );
        }
        if x.dtype() != DType::F32 {
            candle_core::bail!("llm block: input must be f32, got {:?}", x.dtype());
        }
        if !x.device().same_device(&self.device) {
            candle_core::bail!(
                "llm block: input on {:?}, block weights on {:?}",
                x.device(),
                self.device
            );
        }
        Ok(())
    }

    /// The additive score bias [B, 1, 1, T] of a key mask (0 for real keys, -1e30 for pads).
    fn mask_bias(
        &self,
        x: &Tensor,
        key_mask: Option<&Tensor>,
    ) -> candle_core::Result<Option<Tensor>> {
        let Some(m) = key_mask else { return Ok(None) };
        let (b, t, _) = x.dims3()?;
        if m.dims() != [b, t] {
            candle_core::bail!("llm block: key mask must be [{b}, {t}], got {:?}", m.dims());
        }
        // Masks carry no gradient; detaching keeps them out of the autograd graph.
        let m = m.detach().to_dtype(DType::F32)?;
        let bias = ((m - 1.0)? * 1e30)?;
        Ok(Some(bias.reshape((b, 1, 1, t))?))
    }
}

/// `n` samples of N(0, std²) by Box–Muller (rand_distr is not a dependency).
fn normal_vec(rng: &mut ChaCha8Rng, n: usize, std: f64) -> Vec<f32> {
    let mut out = Vec::with_capacity(n + 1);
    while out.len() < n {
        // 1 - u keeps the log argument in (0, 1].
        let u1: f64 = 1.0 - rng.random::<f64>();
        let u2: f64 = rng.random::<f64>();
        let r = (-2.0 * u1.ln()).sqrt() * std;
        let a = 2.0 * std::f64::consts::PI * u2;
        out.push((r * a.cos()) as f32);
        out.push((r * a.sin()) as f32);
    }
    out.truncate(n);
    out
}
