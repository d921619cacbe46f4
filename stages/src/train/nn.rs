//! Small layers the encoders share, written with differentiable candle ops (candle-nn's
//! fused LayerNorm has no backward), plus deterministic parameter init: candle's CPU RNG
//! cannot be seeded, and a resumed run must rebuild exactly the model it started with.

use candle_core::{DType, Module, Result, Tensor, Var, D};
use candle_nn::{VarBuilder, VarMap};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// LayerNorm over the last dim (eps 1e-5 as PyTorch's default).
#[derive(Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
}

impl LayerNorm {
    pub fn new(dim: usize, vb: VarBuilder) -> Result<Self> {
        Ok(LayerNorm {
            weight: vb.get_with_hints(dim, "weight", candle_nn::Init::Const(1.0))?,
            bias: vb.get_with_hints(dim, "bias", candle_nn::Init::Const(0.0))?,
        })
    }
}

impl LayerNorm {
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }
    pub fn bias(&self) -> &Tensor {
        &self.bias
    }
}

impl Module for LayerNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        candle_nn::ops::layer_norm_slow(x, &self.weight, &self.bias, 1e-5)
    }
}

/// Max over dim `d` (the pooling of PointNet and of the classification head).
pub fn max_over(x: &Tensor, d: usize) -> Result<Tensor> {
    x.max(d)
}

/// Cross-entropy with label smoothing, mean over the batch. `logits` [B, C], `labels` u32 [B].
pub fn smoothed_cross_entropy(logits: &Tensor, labels: &Tensor, smoothing: f64) -> Result<Tensor> {
    let logp = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let nll = logp
        .gather(&labels.unsqueeze(1)?, 1)?
        .squeeze(1)?
        .neg()?
        .mean_all()?;
    if smoothing == 0.0 {
        return Ok(nll);
    }
    let uniform = logp.mean(D::Minus1)?.neg()?.mean_all()?;
    (nll * (1.0 - smoothing))? + (uniform * smoothing)?
}

/// A dropout mask drawn from a seeded RNG (candle's own dropout uses an unseedable RNG).
pub fn dropout(x: &Tensor, p: f64, rng: &mut ChaCha8Rng) -> Result<Tensor> {
    if p <= 0.0 {
        return Ok(x.clone());
    }
    let n = x.elem_count();
    let keep = 1.0 - p;
    let mask: Vec<f32> = (0..n)
        .map(|_| {
            if rng.random::<f64>() < keep {
                (1.0 / keep) as f32
            } else {
                0.0
            }
        })
        .collect();
    let mask = Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(x.dtype())?;
    x * mask
}

/// Stochastic depth: drop the whole residual branch of some samples. `x` [B, ...].
pub fn drop_path(x: &Tensor, p: f64, rng: &mut ChaCha8Rng) -> Result<Tensor> {
    if p <= 0.0 {
        return Ok(x.clone());
    }
    let b = x.dim(0)?;
    let keep = 1.0 - p;
    let mask: Vec<f32> = (0..b)
        .map(|_| {
            if rng.random::<f64>() < keep {
                (1.0 / keep) as f32
            } else {
                0.0
            }
        })
        .collect();
    let mut shape = vec![b];
    shape.extend(std::iter::repeat_n(1, x.rank() - 1));
    let mask = Tensor::from_vec(mask, shape, x.device())?.to_dtype(x.dtype())?;
    x.broadcast_mul(&mask)
}

/// Overwrites every variable with the reference init (PointBERT's `_init_weights`):
/// matrices truncated-normal(0.02), norm scales 1, biases 0, BN running var 1. Each
/// variable's values come from its own RNG stream seeded by (seed, name), so the result
/// does not depend on creation order.
pub fn init_vars(varmap: &VarMap, seed: u64) -> Result<()> {
    let vars = varmap
        .data()
        .lock()
        .map_err(|_| candle_core::Error::Msg("varmap lock poisoned".into()))?;
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort();
    for name in names {
        let var = &vars[name];
        init_var(name, var, seed)?;
    }
    Ok(())
}

fn init_var(name: &str, var: &Var, seed: u64) -> Result<()> {
    let shape = var.shape().clone();
    let n = shape.elem_count();
    let leaf = name.rsplit('.').next().unwrap_or(name);
    let values: Vec<f32> = if leaf == "running_var" {
        vec![1.0; n]
    } else if leaf == "running_mean" || leaf.ends_with("bias") {
        vec![0.0; n]
    } else if leaf == "weight" && shape.rank() == 1 {
        vec![1.0; n]
    } else {
        let h = blake3::hash(format!("{seed}:{name}").as_bytes());
        let mut s = [0u8; 32];
        s.copy_from_slice(h.as_bytes());
        let mut rng = ChaCha8Rng::from_seed(s);
        (0..n).map(|_| trunc_normal(&mut rng) * 0.02).collect()
    };
    let t = Tensor::from_vec(values, shape, var.device())?.to_dtype(var.dtype())?;
    var.set(&t)
}

/// Standard normal truncated to [-2, 2] (timm's trunc_normal_ bounds at std 1), Box-Muller.
fn trunc_normal(rng: &mut ChaCha8Rng) -> f32 {
    loop {
        let u1: f64 = rng.random::<f64>().max(1e-12);
        let u2: f64 = rng.random();
        let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
        if z.abs() <= 2.0 {
            return z as f32;
        }
    }
}

/// A seeded RNG for one purpose at one step (augmentation, dropout), so a resumed run draws
/// exactly what the uninterrupted one drew.
pub fn step_rng(seed: u64, purpose: &str, step: u64) -> ChaCha8Rng {
    let h = blake3::hash(format!("{seed}:{purpose}:{step}").as_bytes());
    let mut s = [0u8; 32];
    s.copy_from_slice(h.as_bytes());
    ChaCha8Rng::from_seed(s)
}

pub fn f32_vec(t: &Tensor) -> Result<Vec<f32>> {
    t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()
}
