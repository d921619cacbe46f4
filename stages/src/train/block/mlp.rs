//! The `mlp` ablation (PAPER.md §2: "an MLP of matched capacity instead of the block", 80.4
//! vs 80.7 frozen on ImageNet: the gain is not capacity). Neither the paper's text we have nor
//! the reference code (LM4VisualEncoding has no MLP variant) gives its shape, so lm4ve defines
//! it as the block with its attention half removed, trained:
//!
//! `Linear(d, H)` → `y = x + FFN(norm(x))` → all-ones RMSNorm → `Linear(H, d)`
//!
//! at the block's width H with FFN hidden size F (default: the block's `intermediate_size`;
//! `mlp_hidden` overrides it), pre-norm like the block's FFN half and in the block's own
//! flavour: RMSNorm + SwiGLU (`gate`, `up`, `down`, no biases) for a LLaMA block, LayerNorm +
//! ReLU MLP with biases for OPT (always pre-norm, also for a post-LayerNorm OPT block). No
//! attention. The all-ones RMSNorm after it is kept, so the down adapter sees the same scale as
//! with the block. Weights: seeded random init (normal std 0.02, norm weights ones, biases
//! zeros, as [`super::LlmBlock::random`]), always trainable.
//!
//! Parameters, LLaMA flavour: `3·H·F + H`. For LLaMA-7B (H 4096, F 11008) that is 135.3M
//! against the block's 202.4M (`4·H² + 3·H·F + 2·H`, the attention's 67.1M removed). The
//! block's count needs a hidden size of F + (4·H + 2)/3 (no GQA): for LLaMA-7B
//! `mlp_hidden = 16470` gives 202,387,456, the block's 202,383,360 plus the MLP's one norm
//! vector. The test `mlp_param_counts_next_to_the_block` checks these numbers.

use std::collections::HashMap;

use anyhow::{bail, Context as _};
use candle_core::{DType, Device, Tensor, Var};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::forward::{affine, lin, norm_stats};
use super::normal_vec;
use crate::llm::block_format::{Arch, BlockConfig, FINAL_NORM_EPS};

/// The MLP's shape: width, FFN hidden size and flavour (from a block's config).
#[derive(Debug, Clone, PartialEq)]
pub struct MlpConfig {
    /// LLaMA (RMSNorm, SwiGLU) or OPT (LayerNorm, ReLU, biases).
    pub arch: Arch,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub norm_eps: f64,
}

impl MlpConfig {
    /// The MLP that stands in for `block`: its width and flavour, FFN hidden size `hidden`
    /// (None: the block's own).
    pub fn of_block(block: &BlockConfig, hidden: Option<usize>) -> Self {
        MlpConfig {
            arch: block.arch,
            hidden_size: block.hidden_size,
            intermediate_size: hidden.unwrap_or(block.intermediate_size),
            norm_eps: block.norm_eps,
        }
    }

    /// Tensor names (under the trainer's `llm_mlp.` prefix) and shapes, in init order.
    pub fn tensor_shapes(&self) -> Vec<(&'static str, Vec<usize>)> {
        let (h, f) = (self.hidden_size, self.intermediate_size);
        match self.arch {
            Arch::Llama => vec![
                ("norm.weight", vec![h]),
                ("gate_proj.weight", vec![f, h]),
                ("up_proj.weight", vec![f, h]),
                ("down_proj.weight", vec![h, f]),
            ],
            Arch::Opt => vec![
                ("norm.weight", vec![h]),
                ("norm.bias", vec![h]),
                ("fc1.weight", vec![f, h]),
                ("fc1.bias", vec![f]),
                ("fc2.weight", vec![h, f]),
                ("fc2.bias", vec![h]),
            ],
        }
    }

    /// Number of weights.
    pub fn num_params(&self) -> usize {
        self.tensor_shapes()
            .iter()
            .map(|(_, s)| s.iter().product::<usize>())
            .sum()
    }
}

/// The trainable residual MLP of the `mlp` ablation (see the module doc).
#[derive(Clone)]
pub struct MlpBlock {
    cfg: MlpConfig,
    device: Device,
    /// (name, tensor) in `cfg.tensor_shapes()` order; Var-backed after `make_trainable`.
    w: Vec<(&'static str, Tensor)>,
    vars: Option<Vec<Var>>,
}

impl std::fmt::Debug for MlpBlock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MlpBlock")
            .field("cfg", &self.cfg)
            .field("trainable", &self.vars.is_some())
            .finish()
    }
}

impl MlpBlock {
    /// Seeded init: normal std 0.02 for matrices, ones for the norm weight, zeros for biases.
    pub fn random(cfg: &MlpConfig, seed: u64, device: &Device) -> anyhow::Result<Self> {
        if cfg.hidden_size == 0 || cfg.intermediate_size == 0 {
            bail!("mlp block: width and hidden size must be > 0, got {cfg:?}");
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut named = HashMap::new();
        for (name, shape) in cfg.tensor_shapes() {
            let n: usize = shape.iter().product();
            let data = if name.ends_with(".bias") {
                vec![0.0; n]
            } else if shape.len() == 1 {
                vec![1.0; n]
            } else {
                normal_vec(&mut rng, n, 0.02)
            };
            named.insert(name, Tensor::from_vec(data, shape.as_slice(), device)?);
        }
        Self::from_named(cfg, named, device)
    }

    /// From tensors by name (every name of `cfg.tensor_shapes()`, shapes checked).
    pub fn from_named(
        cfg: &MlpConfig,
        mut named: HashMap<&'static str, Tensor>,
        device: &Device,
    ) -> anyhow::Result<Self> {
        let mut w = Vec::new();
        for (name, shape) in cfg.tensor_shapes() {
            let t = named
                .remove(name)
                .with_context(|| format!("mlp block: missing `{name}`"))?;
            if t.dims() != shape.as_slice() {
                bail!(
                    "mlp block: `{name}` has shape {:?}, expected {shape:?}",
                    t.dims()
                );
            }
            w.push((name, t.to_dtype(DType::F32)?));
        }
        Ok(MlpBlock {
            cfg: cfg.clone(),
            device: device.clone(),
            w,
            vars: None,
        })
    }

    /// Registers every weight as a Var (returned in `cfg.tensor_shapes()` order with its
    /// name); calling it again returns the same Vars.
    pub fn make_trainable(&mut self) -> anyhow::Result<Vec<(&'static str, Var)>> {
        if self.vars.is_none() {
            let mut vars = Vec::new();
            for (name, t) in self.w.iter_mut() {
                let v =
                    Var::from_tensor(t).with_context(|| format!("mlp block: Var for `{name}`"))?;
                *t = v.as_tensor().clone();
                vars.push(v);
            }
            self.vars = Some(vars);
        }
        let vars = self.vars.clone().unwrap_or_default();
        Ok(self.w.iter().map(|(n, _)| *n).zip(vars).collect())
    }

    pub fn is_trainable(&self) -> bool {
        self.vars.is_some()
    }

    pub fn config(&self) -> &MlpConfig {
        &self.cfg
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The weights by name (current values).
    pub fn tensors(&self) -> Vec<(&'static str, Tensor)> {
        self.w.clone()
    }

    pub fn num_params(&self) -> usize {
        self.cfg.num_params()
    }

    fn get(&self, name: &str) -> candle_core::Result<&Tensor> {
        match self.w.iter().find(|(n, _)| *n == name) {
            Some((_, t)) => Ok(t),
            None => candle_core::bail!("mlp block: internal error, no `{name}`"),
        }
    }

    /// x [B, T, H] f32 → `x + FFN(norm(x))`, then the all-ones RMSNorm; plain differentiable
    /// ops in f32 (autograd reaches the weights).
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (b, t, h) = x.dims3()?;
        if h != self.cfg.hidden_size || x.dtype() != DType::F32 {
            candle_core::bail!(
                "mlp block: input must be f32 [B, T, {}], got {:?} {:?}",
                self.cfg.hidden_size,
                x.dtype(),
                x.dims()
            );
        }
        let x2 = x.reshape((b * t, h))?;
        let opt = self.cfg.arch == Arch::Opt;
        let (xh, _) = norm_stats(&x2, opt, self.cfg.norm_eps)?;
        let n = if opt {
            affine(&xh, self.get("norm.weight")?, Some(self.get("norm.bias")?))?
        } else {
            affine(&xh, self.get("norm.weight")?, None)?
        };
        let m = if opt {
            let a = lin(&n, self.get("fc1.weight")?, Some(self.get("fc1.bias")?))?.relu()?;
            lin(&a, self.get("fc2.weight")?, Some(self.get("fc2.bias")?))?
        } else {
            let g = lin(&n, self.get("gate_proj.weight")?, None)?.silu()?;
            let u = lin(&n, self.get("up_proj.weight")?, None)?;
            lin(&(g * u)?, self.get("down_proj.weight")?, None)?
        };
        let y = (x2 + m)?;
        let (out, _) = norm_stats(&y, false, FINAL_NORM_EPS)?;
        out.reshape((b, t, h))
    }
}
