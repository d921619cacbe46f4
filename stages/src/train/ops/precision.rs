//! Mixed precision (`precision` in a `train` stage's params): which dtype the matmuls run in.
//! Masters stay f32: weights are cast per use (a differentiable cast, so their gradients come
//! back in f32), and norms, softmax, residual streams and losses stay f32, as under PyTorch's
//! autocast. Left unset, the encoder is f32 and a frozen LLM block runs bf16 on CUDA only
//! (what every earlier artifact was trained with).

use candle_core::{DType, Result, Tensor};
use candle_nn::Linear;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Everything in f32 (PointBERT's reference trains so).
    F32,
    /// bf16 matmuls: f32's range, so no loss scaling.
    Bf16,
    /// f16 matmuls with dynamic loss scaling (VideoMAE's reference: torch.cuda.amp + GradScaler).
    F16,
}

impl Precision {
    /// The matmul dtype, None for f32 (no casts at all).
    pub fn autocast_dtype(self) -> Option<DType> {
        match self {
            Precision::F32 => None,
            Precision::Bf16 => Some(DType::BF16),
            Precision::F16 => Some(DType::F16),
        }
    }

    pub fn needs_loss_scaling(self) -> bool {
        self == Precision::F16
    }
}

/// `l(x)` with the matmul (and bias) in the autocast dtype of `prec`, result in f32; exactly
/// `l.forward(x)` when there is no autocast (its bias added by `bias::add_bias`: the same bytes).
pub fn linear(l: &Linear, x: &Tensor, prec: Option<Precision>) -> Result<Tensor> {
    match prec.and_then(Precision::autocast_dtype) {
        None => super::bias::linear_forward(l, x),
        Some(dt) => {
            let w = l.weight().to_dtype(dt)?;
            let xd = x.to_dtype(dt)?;
            let dims = xd.dims().to_vec();
            let (rows, inner) = (
                dims[..dims.len() - 1].iter().product::<usize>(),
                dims[dims.len() - 1],
            );
            let mut y = xd.reshape((rows, inner))?.matmul(&w.t()?)?;
            if let Some(b) = l.bias() {
                y = y.broadcast_add(&b.to_dtype(dt)?)?;
            }
            let mut out_dims = dims;
            if let Some(last) = out_dims.last_mut() {
                *last = w.dim(0)?;
            }
            y.reshape(out_dims)?.to_dtype(DType::F32)
        }
    }
}

/// Casts `x` to the autocast dtype of `prec` (no-op without autocast).
pub fn to_autocast(x: &Tensor, prec: Option<Precision>) -> Result<Tensor> {
    match prec.and_then(Precision::autocast_dtype) {
        Some(dt) => x.to_dtype(dt),
        None => Ok(x.clone()),
    }
}

/// Dynamic loss scaling for f16, as torch.cuda.amp.GradScaler: the loss is multiplied by
/// `scale` before the backward; gradients are divided by it before clipping; a step whose
/// gradients overflowed is skipped and halves the scale; 2000 clean steps double it.
#[derive(Debug, Clone, PartialEq)]
pub struct LossScaler {
    pub scale: f64,
    pub good_steps: u64,
}

impl Default for LossScaler {
    fn default() -> Self {
        LossScaler {
            scale: 65536.0,
            good_steps: 0,
        }
    }
}

impl LossScaler {
    const GROWTH_INTERVAL: u64 = 2000;

    /// After unscaling: `finite` says whether the gradients were all finite. Returns whether
    /// the optimizer may step.
    pub fn update(&mut self, finite: bool) -> bool {
        if finite {
            self.good_steps += 1;
            if self.good_steps >= Self::GROWTH_INTERVAL {
                self.scale *= 2.0;
                self.good_steps = 0;
            }
        } else {
            self.scale = (self.scale * 0.5).max(1.0);
            self.good_steps = 0;
        }
        finite
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Module};
    use candle_nn::VarBuilder;

    #[test]
    fn autocast_linear_is_close_and_trains_f32_masters() {
        let dev = Device::Cpu;
        let vm = candle_nn::VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &dev);
        let l = candle_nn::linear(16, 8, vb).unwrap();
        let x = Tensor::randn(0f32, 1.0, (2, 3, 16), &dev).unwrap();
        let y32 = linear(&l, &x, Some(Precision::F32)).unwrap();
        assert_eq!(
            y32.to_vec3::<f32>().unwrap(),
            l.forward(&x).unwrap().to_vec3::<f32>().unwrap()
        );
        for p in [Precision::Bf16, Precision::F16] {
            let y = linear(&l, &x, Some(p)).unwrap();
            assert_eq!(y.dtype(), DType::F32);
            let d = crate::test_util::max_abs_diff(&y, &y32);
            assert!(d < 0.05, "{p:?} differs by {d}");
            let g = y.sum_all().unwrap().backward().unwrap();
            let gw = g.get(l.weight()).expect("weight gradient");
            assert_eq!(gw.dtype(), DType::F32);
        }
    }

    #[test]
    fn scaler_backs_off_on_overflow_and_grows_after_clean_steps() {
        let mut s = LossScaler::default();
        assert!(!s.update(false));
        assert_eq!(s.scale, 32768.0);
        for _ in 0..LossScaler::GROWTH_INTERVAL {
            assert!(s.update(true));
        }
        assert_eq!(s.scale, 65536.0);
        assert_eq!(s.good_steps, 0);
    }
}
