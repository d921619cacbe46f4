//! The LLM block inside the encoder (PAPER.md §2, DESIGN.md §5): one LLaMA or OPT layer
//! with no rotary embedding and no causal mask, softmax in f32, scale `1/sqrt(head_dim)`,
//! followed by the all-ones RMSNorm (eps [`FINAL_NORM_EPS`]).
//!
//! Three ways to run it:
//! - [`LlmBlock::forward`]: plain candle ops; autograd flows into the weights once they are
//!   Vars ([`LlmBlock::make_trainable`]). This is also the "naive tracked block" baseline.
//! - [`LlmBlock::forward_frozen`]: the same values as one autograd node whose backward
//!   returns only dL/dx (hand-written in `block_grad.rs`): no weight gradients are ever
//!   computed and the weights never enter the optimizer.
//! - [`LlmBlock::forward_frozen_autocast`]: the frozen node with bf16 matmuls on CUDA.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use anyhow::{bail, Context as _};
use candle_core::{DType, Device, Tensor, Var};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::attention::AttnImpl;
use super::block_grad::{self, Prec};
use super::precision::Precision;
use crate::llm::block_format::{Arch, BlockConfig};

/// Which block sits between the adapters (PAPER.md §2 ablations: `init = pretrained | random`
/// × `train = frozen | trainable`, and `none` = no block and no adapters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlockMode {
    /// Pretrained weights, never updated (the paper's method; the default).
    #[default]
    Frozen,
    /// Same shapes, seeded random init, never updated.
    Random,
    /// Pretrained weights, fine-tuned with the rest of the model.
    Trainable,
    /// No block and no adapters.
    None,
}

impl BlockMode {
    /// Whether the block's weights receive gradients and optimizer updates.
    pub fn is_trainable(self) -> bool {
        matches!(self, BlockMode::Trainable)
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
            BlockMode::Trainable => "trainable",
            BlockMode::None => "none",
        })
    }
}

// Slots of the weight table. Both architectures share one table so the forward/backward
// code is written once; a slot an architecture lacks (biases in LLaMA, `up` in OPT) is None.
pub(crate) const NORM1_W: usize = 0;
pub(crate) const NORM1_B: usize = 1;
pub(crate) const WQ: usize = 2;
pub(crate) const BQ: usize = 3;
pub(crate) const WK: usize = 4;
pub(crate) const BK: usize = 5;
pub(crate) const WV: usize = 6;
pub(crate) const BV: usize = 7;
pub(crate) const WO: usize = 8;
pub(crate) const BO: usize = 9;
pub(crate) const NORM2_W: usize = 10;
pub(crate) const NORM2_B: usize = 11;
/// LLaMA `gate_proj` / OPT `fc1`.
pub(crate) const W_IN: usize = 12;
pub(crate) const B_IN: usize = 13;
/// LLaMA `up_proj` only.
pub(crate) const W_UP: usize = 14;
/// LLaMA `down_proj` / OPT `fc2`.
pub(crate) const W_OUT: usize = 15;
pub(crate) const B_OUT: usize = 16;
const N_SLOTS: usize = 17;

const LLAMA_SLOTS: [(&str, usize); 9] = [
    ("input_layernorm.weight", NORM1_W),
    ("self_attn.q_proj.weight", WQ),
    ("self_attn.k_proj.weight", WK),
    ("self_attn.v_proj.weight", WV),
    ("self_attn.o_proj.weight", WO),
    ("post_attention_layernorm.weight", NORM2_W),
    ("mlp.gate_proj.weight", W_IN),
    ("mlp.up_proj.weight", W_UP),
    ("mlp.down_proj.weight", W_OUT),
];

const OPT_SLOTS: [(&str, usize); 16] = [
    ("self_attn_layer_norm.weight", NORM1_W),
    ("self_attn_layer_norm.bias", NORM1_B),
    ("self_attn.q_proj.weight", WQ),
    ("self_attn.q_proj.bias", BQ),
    ("self_attn.k_proj.weight", WK),
    ("self_attn.k_proj.bias", BK),
    ("self_attn.v_proj.weight", WV),
    ("self_attn.v_proj.bias", BV),
    ("self_attn.out_proj.weight", WO),
    ("self_attn.out_proj.bias", BO),
    ("final_layer_norm.weight", NORM2_W),
    ("final_layer_norm.bias", NORM2_B),
    ("fc1.weight", W_IN),
    ("fc1.bias", B_IN),
    ("fc2.weight", W_OUT),
    ("fc2.bias", B_OUT),
];

fn slots(arch: Arch) -> &'static [(&'static str, usize)] {
    match arch {
        Arch::Llama => &LLAMA_SLOTS,
        Arch::Opt => &OPT_SLOTS,
    }
}

/// Slots of the projections and their biases (what bf16 autocast converts).
const MM_SLOTS: [usize; 13] = [
    WQ, BQ, WK, BK, WV, BV, WO, BO, W_IN, B_IN, W_UP, W_OUT, B_OUT,
];

/// The weight table of one block.
#[derive(Clone)]
pub(crate) struct Weights {
    t: [Option<Tensor>; N_SLOTS],
}

impl Weights {
    /// A weight every architecture has; absent only if the table was built wrongly.
    pub(crate) fn get(&self, slot: usize) -> candle_core::Result<&Tensor> {
        match self.t.get(slot).and_then(|t| t.as_ref()) {
            Some(t) => Ok(t),
            None => candle_core::bail!("llm block: internal error, weight slot {slot} is empty"),
        }
    }

    /// A weight only some architectures have (biases, LLaMA's up projection).
    pub(crate) fn opt(&self, slot: usize) -> Option<&Tensor> {
        self.t.get(slot).and_then(|t| t.as_ref())
    }

    /// The autocast copy: matrices and projection biases in `dtype` (bf16 or f16: they act
    /// inside those matmuls); norm weights and biases stay f32 (norms run in f32).
    fn to_autocast(&self, dtype: DType) -> candle_core::Result<Weights> {
        let mut t = self.t.clone();
        for slot in MM_SLOTS {
            if let Some(w) = &self.t[slot] {
                t[slot] = Some(w.to_dtype(dtype)?);
            }
        }
        Ok(Weights { t })
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
    if !(c.norm_eps.is_finite() && c.norm_eps > 0.0) {
        bail!(
            "llm block: norm_eps must be a positive number, got {}",
            c.norm_eps
        );
    }
    Ok(())
}

impl LlmBlock {
    fn from_slots(cfg: &BlockConfig, t: [Option<Tensor>; N_SLOTS], device: &Device) -> Self {
        LlmBlock {
            cfg: cfg.clone(),
            device: device.clone(),
            w: Weights { t },
            vars: None,
            bf16: OnceLock::new(),
            f16: OnceLock::new(),
            attn: AttnImpl::Full,
        }
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
        let mut t: [Option<Tensor>; N_SLOTS] = Default::default();
        for &(name, slot) in slots(cfg.arch) {
            let shape = expected
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, s)| s.clone())
                .with_context(|| format!("llm block: no expected shape for `{name}`"))?;
            let (got_shape, data) = tensors
                .get(name)
                .with_context(|| format!("llm block: missing tensor `{name}`"))?;
            if *got_shape != shape {
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
            t[slot] = Some(tensor);
        }
        Ok(Self::from_slots(cfg, t, device))
    }

    /// Same shapes, seeded init (normal std 0.02 for matrices, ones for norm weights, zeros
    /// for biases): the `random` ablation. Same seed, same weights, on every machine.
    pub fn random(cfg: &BlockConfig, seed: u64, device: &Device) -> anyhow::Result<Self> {
        validate_config(cfg)?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let shapes = cfg.tensor_shapes();
        let mut t: [Option<Tensor>; N_SLOTS] = Default::default();
        for &(name, slot) in slots(cfg.arch) {
            let shape = shapes
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, s)| s.clone())
                .with_context(|| format!("llm block: no expected shape for `{name}`"))?;
            let n: usize = shape.iter().product();
            let data: Vec<f32> = if name.ends_with(".bias") {
                vec![0.0; n]
            } else if shape.len() == 1 {
                vec![1.0; n]
            } else {
                normal_vec(&mut rng, n, 0.02)
            };
            t[slot] = Some(Tensor::from_vec(data, shape.as_slice(), device)?);
        }
        Ok(Self::from_slots(cfg, t, device))
    }

    /// For `trainable` mode: registers every weight as a candle Var (returned for the
    /// optimizer, in the order of `cfg.tensor_shapes()`); afterwards [`Self::forward`] tracks
    /// weight gradients. Calling it again returns the same Vars.
    pub fn make_trainable(&mut self) -> anyhow::Result<Vec<Var>> {
        if let Some(vars) = &self.vars {
            return Ok(vars.clone());
        }
        let mut vars = Vec::new();
        let mut t = self.w.t.clone();
        for &(name, slot) in slots(self.cfg.arch) {
            let w = self.w.get(slot)?;
            let var =
                Var::from_tensor(w).with_context(|| format!("llm block: Var for `{name}`"))?;
            t[slot] = Some(var.as_tensor().clone());
            vars.push(var);
        }
        self.w = Weights { t };
        self.bf16 = OnceLock::new();
        self.f16 = OnceLock::new();
        self.vars = Some(vars.clone());
        Ok(vars)
    }

    /// Whether [`Self::make_trainable`] was called.
    pub fn is_trainable(&self) -> bool {
        self.vars.is_some()
    }

    /// Chooses full or chunked attention (see `train::attention`).
    pub fn set_attention(&mut self, attn: AttnImpl) {
        self.attn = attn;
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
        slots(self.cfg.arch)
            .iter()
            .filter_map(|&(name, slot)| self.w.opt(slot).map(|t| (name, t.clone())))
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

    /// The module exactly as the encoder uses it: the layer (no RoPE, no mask, softmax in
    /// f32) then the all-ones RMSNorm. x: [B, T, D] f32 → [B, T, D]. Plain candle ops: if the
    /// weights are Vars, autograd flows into them.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.forward_masked(x, None)
    }

    /// [`Self::forward`] with an optional key-padding mask [B, T] (1 = real token, 0 = pad):
    /// padded keys get a -1e30 score before the softmax, so they receive no attention.
    /// (A finite value rather than -inf so that an all-padding row gives a uniform, not a
    /// NaN, distribution.)
    pub fn forward_masked(
        &self,
        x: &Tensor,
        key_mask: Option<&Tensor>,
    ) -> candle_core::Result<Tensor> {
        self.check_input(x)?;
        let bias = self.mask_bias(x, key_mask)?;
        // Autograd needs differentiable ops; when nothing is tracked (inference, `llm apply`)
        // the fused kernels are used instead.
        let mode = if x.track_op() || self.vars.is_some() {
            block_grad::Mode::Tracked
        } else {
            block_grad::Mode::Fast
        };
        let (y, _) = block_grad::forward_impl(
            &self.w,
            &self.cfg,
            x,
            bias.as_ref(),
            Prec::F32,
            mode,
            self.attn,
        )?;
        Ok(y)
    }

    /// Frozen path: same values as [`Self::forward`], as ONE autograd node whose backward
    /// computes only dL/dx — never weight gradients, no optimizer state.
    pub fn forward_frozen(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.forward_frozen_with(x, None, false)
    }

    /// bf16 variant of [`Self::forward_frozen`] for CUDA: projections, attention matmuls and
    /// the MLP activation in bf16; norms, softmax, the residual stream, the output and the
    /// gradient it returns in f32. On other devices it is [`Self::forward_frozen`]: CPU bf16
    /// matmuls are slower than f32 ones, so autocast there would only lose precision.
    pub fn forward_frozen_autocast(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.forward_frozen_with(x, None, true)
    }

    /// The frozen node with an optional key-padding mask (see [`Self::forward_masked`]) and
    /// optional autocast (effective on CUDA only).
    pub fn forward_frozen_with(
        &self,
        x: &Tensor,
        key_mask: Option<&Tensor>,
        autocast: bool,
    ) -> candle_core::Result<Tensor> {
        let prec = if autocast && self.device.is_cuda() {
            Prec::Bf16
        } else {
            Prec::F32
        };
        self.frozen_impl(x, key_mask, prec)
    }

    /// The frozen node at an explicit precision (a `train` stage's `precision`), on any
    /// device.
    pub fn forward_frozen_at(
        &self,
        x: &Tensor,
        key_mask: Option<&Tensor>,
        precision: Precision,
    ) -> candle_core::Result<Tensor> {
        let prec = match precision {
            Precision::F32 => Prec::F32,
            Precision::Bf16 => Prec::Bf16,
            Precision::F16 => Prec::F16,
        };
        self.frozen_impl(x, key_mask, prec)
    }

    /// What the trainer calls: a trainable block goes through autograd ([`Self::forward_masked`],
    /// f32), any other through the frozen node.
    pub fn forward_train(
        &self,
        x: &Tensor,
        key_mask: Option<&Tensor>,
        autocast: bool,
    ) -> candle_core::Result<Tensor> {
        if self.vars.is_some() {
            self.forward_masked(x, key_mask)
        } else {
            self.forward_frozen_with(x, key_mask, autocast)
        }
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
            candle_core::bail!("llm block: the block is trainable, use forward()/forward_masked()");
        }
        self.check_input(x)?;
        let bias = self.mask_bias(x, key_mask)?;
        let w = match prec {
            Prec::F32 => &self.w,
            Prec::Bf16 => self.autocast_weights(&self.bf16, DType::BF16)?,
            Prec::F16 => self.autocast_weights(&self.f16, DType::F16)?,
        };
        block_grad::forward_frozen(w, &self.cfg, x, bias.as_ref(), prec, self.attn)
    }

    /// Bytes the frozen node keeps alive between forward and backward for input x (its
    /// saved intermediates and output), for memory reports and benchmarks.
    pub fn frozen_saved_bytes(&self, x: &Tensor) -> candle_core::Result<usize> {
        self.check_input(x)?;
        block_grad::saved_bytes(&self.w, &self.cfg, x, Prec::F32, self.attn)
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn llama_cfg() -> BlockConfig {
        BlockConfig {
            arch: Arch::Llama,
            hidden_size: 32,
            num_heads: 4,
            num_kv_heads: 2,
            head_dim: 8,
            intermediate_size: 48,
            norm_eps: 1e-5,
        }
    }

    pub(crate) fn opt_cfg() -> BlockConfig {
        BlockConfig {
            arch: Arch::Opt,
            hidden_size: 32,
            num_heads: 4,
            num_kv_heads: 4,
            head_dim: 8,
            intermediate_size: 48,
            norm_eps: 1e-5,
        }
    }

    /// Random canonical tensors with non-trivial norms and biases (a `random()` block has
    /// all-ones norms and zero biases, which would hide slot mix-ups).
    pub(crate) fn random_tensors(
        cfg: &BlockConfig,
        seed: u64,
    ) -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        cfg.tensor_shapes()
            .into_iter()
            .map(|(name, shape)| {
                let n: usize = shape.iter().product();
                let data = if shape.len() == 1 && name.ends_with(".weight") {
                    (0..n)
                        .map(|_| 1.0 + 0.3 * (rng.random::<f32>() - 0.5))
                        .collect()
                } else if shape.len() == 1 {
                    (0..n).map(|_| 0.2 * (rng.random::<f32>() - 0.5)).collect()
                } else {
                    // std ~ 1/sqrt(fan_in) so activations stay O(1) and softmax is not one-hot.
                    let s = 1.0 / (shape[1] as f64).sqrt();
                    normal_vec(&mut rng, n, s)
                };
                (name.to_string(), (shape, data))
            })
            .collect()
    }

    pub(crate) fn random_input(b: usize, t: usize, d: usize, seed: u64) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        normal_vec(&mut rng, b * t * d, 1.0)
    }

    // ---------- independent reference: plain Vec<f64> loops, no candle ----------

    fn w<'a>(ts: &'a BTreeMap<String, (Vec<usize>, Vec<f32>)>, name: &str) -> &'a [f32] {
        &ts[name].1
    }

    /// y[i] = sum_j W[i][j] x[j] (+ b[i]); W is [out, in] row-major.
    fn linear(x: &[f64], wm: &[f32], b: Option<&[f32]>, out: usize) -> Vec<f64> {
        let inn = x.len();
        (0..out)
            .map(|i| {
                let row = &wm[i * inn..(i + 1) * inn];
                let s: f64 = row.iter().zip(x).map(|(a, b)| *a as f64 * b).sum();
                s + b.map_or(0.0, |b| b[i] as f64)
            })
            .collect()
    }

    fn rms_norm(x: &[f64], wt: Option<&[f32]>, eps: f64) -> Vec<f64> {
        let ms = x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64;
        let r = 1.0 / (ms + eps).sqrt();
        x.iter()
            .enumerate()
            .map(|(i, v)| v * r * wt.map_or(1.0, |w| w[i] as f64))
            .collect()
    }

    fn layer_norm(x: &[f64], wt: &[f32], b: &[f32], eps: f64) -> Vec<f64> {
        let n = x.len() as f64;
        let mu = x.iter().sum::<f64>() / n;
        let var = x.iter().map(|v| (v - mu) * (v - mu)).sum::<f64>() / n;
        let r = 1.0 / (var + eps).sqrt();
        x.iter()
            .enumerate()
            .map(|(i, v)| (v - mu) * r * wt[i] as f64 + b[i] as f64)
            .collect()
    }

    /// The whole module for one sequence x[t][d], written from PAPER.md §2 directly.
    pub(crate) fn reference_seq(
        cfg: &BlockConfig,
        ts: &BTreeMap<String, (Vec<usize>, Vec<f32>)>,
        x: &[Vec<f64>],
        key_mask: Option<&[f32]>,
    ) -> Vec<Vec<f64>> {
        let (d, h, kvh, hd, f) = (
            cfg.hidden_size,
            cfg.num_heads,
            cfg.num_kv_heads,
            cfg.head_dim,
            cfg.intermediate_size,
        );
        let t = x.len();
        let llama = cfg.arch == Arch::Llama;
        let (n1w, n1b, qn, kn, vn, on, n2w, n2b) = if llama {
            (
                "input_layernorm.weight",
                "",
                "self_attn.q_proj",
                "self_attn.k_proj",
                "self_attn.v_proj",
                "self_attn.o_proj",
                "post_attention_layernorm.weight",
                "",
            )
        } else {
            (
                "self_attn_layer_norm.weight",
                "self_attn_layer_norm.bias",
                "self_attn.q_proj",
                "self_attn.k_proj",
                "self_attn.v_proj",
                "self_attn.out_proj",
                "final_layer_norm.weight",
                "final_layer_norm.bias",
            )
        };
        let bias = |n: &str| -> Option<&[f32]> {
            if llama {
                None
            } else {
                Some(w(ts, &format!("{n}.bias")))
            }
        };
        let norm = |v: &[f64], wn: &str, bn: &str| -> Vec<f64> {
            if llama {
                rms_norm(v, Some(w(ts, wn)), cfg.norm_eps)
            } else {
                layer_norm(v, w(ts, wn), w(ts, bn), cfg.norm_eps)
            }
        };
        let n1: Vec<Vec<f64>> = x.iter().map(|r| norm(r, n1w, n1b)).collect();
        let q: Vec<Vec<f64>> = n1
            .iter()
            .map(|r| linear(r, w(ts, &format!("{qn}.weight")), bias(qn), h * hd))
            .collect();
        let k: Vec<Vec<f64>> = n1
            .iter()
            .map(|r| linear(r, w(ts, &format!("{kn}.weight")), bias(kn), kvh * hd))
            .collect();
        let v: Vec<Vec<f64>> = n1
            .iter()
            .map(|r| linear(r, w(ts, &format!("{vn}.weight")), bias(vn), kvh * hd))
            .collect();
        let scale = 1.0 / (hd as f64).sqrt();
        let group = h / kvh;
        let mut o = vec![vec![0.0f64; h * hd]; t];
        for head in 0..h {
            let kv = head / group;
            for i in 0..t {
                let mut s: Vec<f64> = (0..t)
                    .map(|j| {
                        let dot: f64 = (0..hd)
                            .map(|c| q[i][head * hd + c] * k[j][kv * hd + c])
                            .sum();
                        let masked = key_mask.is_some_and(|m| m[j] == 0.0);
                        if masked {
                            f64::NEG_INFINITY
                        } else {
                            dot * scale
                        }
                    })
                    .collect();
                let mx = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                s.iter_mut().for_each(|e| *e = (*e - mx).exp());
                let z: f64 = s.iter().sum();
                for j in 0..t {
                    for c in 0..hd {
                        o[i][head * hd + c] += s[j] / z * v[j][kv * hd + c];
                    }
                }
            }
        }
        let hres: Vec<Vec<f64>> = (0..t)
            .map(|i| {
                let a = linear(&o[i], w(ts, &format!("{on}.weight")), bias(on), d);
                x[i].iter().zip(&a).map(|(p, q)| p + q).collect()
            })
            .collect();
        hres.iter()
            .map(|hr| {
                let n2 = norm(hr, n2w, n2b);
                let m: Vec<f64> = if llama {
                    let g = linear(&n2, w(ts, "mlp.gate_proj.weight"), None, f);
                    let u = linear(&n2, w(ts, "mlp.up_proj.weight"), None, f);
                    g.iter()
                        .zip(&u)
                        .map(|(g, u)| g / (1.0 + (-g).exp()) * u)
                        .collect()
                } else {
                    let a = linear(&n2, w(ts, "fc1.weight"), Some(w(ts, "fc1.bias")), f);
                    a.iter().map(|v| v.max(0.0)).collect()
                };
                let mlp = if llama {
                    linear(&m, w(ts, "mlp.down_proj.weight"), None, d)
                } else {
                    linear(&m, w(ts, "fc2.weight"), Some(w(ts, "fc2.bias")), d)
                };
                let y: Vec<f64> = hr.iter().zip(&mlp).map(|(a, b)| a + b).collect();
                rms_norm(&y, None, 1e-6)
            })
            .collect()
    }

    /// Reference for a whole batch, flattened like the tensor [B, T, D].
    pub(crate) fn reference(
        cfg: &BlockConfig,
        ts: &BTreeMap<String, (Vec<usize>, Vec<f32>)>,
        x: &[f32],
        b: usize,
        t: usize,
        key_mask: Option<&[f32]>,
    ) -> Vec<f64> {
        let d = cfg.hidden_size;
        let mut out = Vec::with_capacity(b * t * d);
        for bi in 0..b {
            let seq: Vec<Vec<f64>> = (0..t)
                .map(|ti| {
                    x[(bi * t + ti) * d..(bi * t + ti + 1) * d]
                        .iter()
                        .map(|v| *v as f64)
                        .collect()
                })
                .collect();
            let m = key_mask.map(|m| &m[bi * t..(bi + 1) * t]);
            for row in reference_seq(cfg, ts, &seq, m) {
                out.extend(row);
            }
        }
        out
    }

    pub(crate) fn max_abs_diff(a: &[f32], b: &[f64]) -> f64 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(a, b)| (*a as f64 - b).abs())
            .fold(0.0, f64::max)
    }

    fn check_forward(cfg: &BlockConfig) {
        let (b, t) = (2, 5);
        let ts = random_tensors(cfg, 7);
        let dev = Device::Cpu;
        let block = LlmBlock::from_tensors(cfg, &ts, &dev).unwrap();
        let xv = random_input(b, t, cfg.hidden_size, 11);
        let x = Tensor::from_slice(&xv, (b, t, cfg.hidden_size), &dev).unwrap();
        let want = reference(cfg, &ts, &xv, b, t, None);

        let fast = block.forward(&x).unwrap();
        let got: Vec<f32> = fast.flatten_all().unwrap().to_vec1().unwrap();
        let err = max_abs_diff(&got, &want);
        assert!(
            err < 1e-4,
            "{}: forward vs reference max abs err {err}",
            cfg.arch
        );

        // The differentiable path (x tracked) computes the same values.
        let xvar = Var::from_tensor(&x).unwrap();
        let tracked: Vec<f32> = block
            .forward(xvar.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let err = max_abs_diff(&tracked, &want);
        assert!(
            err < 1e-4,
            "{}: tracked forward vs reference max abs err {err}",
            cfg.arch
        );
    }

    #[test]
    fn forward_matches_reference_llama_gqa() {
        check_forward(&llama_cfg());
    }

    #[test]
    fn forward_matches_reference_opt() {
        check_forward(&opt_cfg());
    }

    #[test]
    fn masked_forward_matches_reference() {
        for cfg in [llama_cfg(), opt_cfg()] {
            let (b, t) = (2, 5);
            let ts = random_tensors(&cfg, 3);
            let dev = Device::Cpu;
            let block = LlmBlock::from_tensors(&cfg, &ts, &dev).unwrap();
            let xv = random_input(b, t, cfg.hidden_size, 5);
            let x = Tensor::from_slice(&xv, (b, t, cfg.hidden_size), &dev).unwrap();
            let mv = vec![1.0f32, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0];
            let m = Tensor::from_slice(&mv, (b, t), &dev).unwrap();
            let want = reference(&cfg, &ts, &xv, b, t, Some(&mv));
            let got: Vec<f32> = block
                .forward_masked(&x, Some(&m))
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let err = max_abs_diff(&got, &want);
            assert!(err < 1e-4, "{}: masked forward err {err}", cfg.arch);
            let xvar = Var::from_tensor(&x).unwrap();
            let got: Vec<f32> = block
                .forward_frozen_with(xvar.as_tensor(), Some(&m), false)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let err = max_abs_diff(&got, &want);
            assert!(err < 1e-4, "{}: masked frozen forward err {err}", cfg.arch);
        }
    }

    #[test]
    fn bad_tensors_are_clear_errors() {
        let cfg = llama_cfg();
        let dev = Device::Cpu;
        let good = random_tensors(&cfg, 1);

        let mut missing = good.clone();
        missing.remove("mlp.up_proj.weight");
        let e = LlmBlock::from_tensors(&cfg, &missing, &dev)
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing tensor `mlp.up_proj.weight`"), "{e}");

        let mut wrong = good.clone();
        wrong.insert(
            "self_attn.k_proj.weight".into(),
            (vec![32, 16], vec![0.0; 512]),
        );
        let e = LlmBlock::from_tensors(&cfg, &wrong, &dev)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`self_attn.k_proj.weight` has shape [32, 16]"),
            "{e}"
        );

        let mut short = good.clone();
        short.insert("input_layernorm.weight".into(), (vec![32], vec![0.0; 31]));
        let e = LlmBlock::from_tensors(&cfg, &short, &dev)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`input_layernorm.weight` has 31 values"), "{e}");

        let mut extra = good.clone();
        extra.insert("fc1.weight".into(), (vec![48, 32], vec![0.0; 48 * 32]));
        let e = LlmBlock::from_tensors(&cfg, &extra, &dev)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unexpected tensor `fc1.weight`"), "{e}");

        let mut bad = cfg.clone();
        bad.num_kv_heads = 3;
        let e = LlmBlock::from_tensors(&bad, &good, &dev)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a multiple"), "{e}");

        let block = LlmBlock::from_tensors(&cfg, &good, &dev).unwrap();
        let x = Tensor::zeros((2, 5, 16), DType::F32, &dev).unwrap();
        let e = block.forward(&x).unwrap_err().to_string();
        assert!(e.contains("input must be [B, T, 32]"), "{e}");
        let x = Tensor::zeros((2, 5, 32), DType::F32, &dev).unwrap();
        let m = Tensor::zeros((2, 4), DType::F32, &dev).unwrap();
        let e = block.forward_masked(&x, Some(&m)).unwrap_err().to_string();
        assert!(e.contains("key mask must be [2, 5]"), "{e}");
    }

    #[test]
    fn random_init_is_seeded_and_shaped() {
        for cfg in [llama_cfg(), opt_cfg()] {
            let a = LlmBlock::random(&cfg, 42, &Device::Cpu).unwrap();
            let b = LlmBlock::random(&cfg, 42, &Device::Cpu).unwrap();
            let c = LlmBlock::random(&cfg, 43, &Device::Cpu).unwrap();
            let shapes = cfg.tensor_shapes();
            assert_eq!(a.tensors().len(), shapes.len());
            for ((name, ta), ((_, tb), (_, tc))) in a
                .tensors()
                .into_iter()
                .zip(b.tensors().into_iter().zip(c.tensors()))
            {
                let want = &shapes.iter().find(|(n, _)| *n == name).unwrap().1;
                assert_eq!(ta.dims(), want.as_slice(), "{name}");
                let va: Vec<f32> = ta.flatten_all().unwrap().to_vec1().unwrap();
                let vb: Vec<f32> = tb.flatten_all().unwrap().to_vec1().unwrap();
                let vc: Vec<f32> = tc.flatten_all().unwrap().to_vec1().unwrap();
                assert_eq!(va, vb, "{name}: same seed, same weights");
                if name.ends_with(".bias") {
                    assert!(va.iter().all(|v| *v == 0.0), "{name}");
                } else if want.len() == 1 {
                    assert!(va.iter().all(|v| *v == 1.0), "{name}");
                } else {
                    assert_ne!(va, vc, "{name}: another seed, other weights");
                    let n = va.len() as f64;
                    let mean = va.iter().map(|v| *v as f64).sum::<f64>() / n;
                    let std =
                        (va.iter().map(|v| (*v as f64 - mean).powi(2)).sum::<f64>() / n).sqrt();
                    assert!(
                        (std - 0.02).abs() < 0.004 && mean.abs() < 0.004,
                        "{name}: std {std} mean {mean}"
                    );
                }
            }
        }
    }

    #[test]
    fn block_mode_serde_is_lowercase() {
        for (m, s) in [
            (BlockMode::Frozen, "\"frozen\""),
            (BlockMode::Random, "\"random\""),
            (BlockMode::Trainable, "\"trainable\""),
            (BlockMode::None, "\"none\""),
        ] {
            assert_eq!(serde_json::to_string(&m).unwrap(), s);
            assert_eq!(serde_json::from_str::<BlockMode>(s).unwrap(), m);
            assert_eq!(format!("\"{m}\""), s);
        }
        assert_eq!(BlockMode::default(), BlockMode::Frozen);
    }
}
