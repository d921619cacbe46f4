//! AdamW with per-parameter lr scale and weight decay and global-norm gradient clipping (the
//! lr schedules are `schedule.rs`). Own implementation (not candle-nn's AdamW) because a
//! checkpoint must carry the moment estimates, and candle-nn keeps them private.

use candle_core::{backprop::GradStore, DType, Result, Tensor, Var};
use std::collections::BTreeMap;

pub struct Param {
    pub name: String,
    pub var: Var,
    pub lr_scale: f64,
    pub weight_decay: f64,
    m: Tensor,
    v: Tensor,
}

pub struct AdamW {
    pub params: Vec<Param>,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub step: u64,
}

impl AdamW {
    /// `params`: (name, var, lr scale, weight decay), in a fixed (sorted) order.
    pub fn new(params: Vec<(String, Var, f64, f64)>) -> Result<Self> {
        let params = params
            .into_iter()
            .map(|(name, var, lr_scale, weight_decay)| {
                Ok(Param {
                    m: var.zeros_like()?,
                    v: var.zeros_like()?,
                    name,
                    var,
                    lr_scale,
                    weight_decay,
                })
            })
            .collect::<Result<_>>()?;
        Ok(AdamW {
            params,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            step: 0,
        })
    }

    /// Multiplies every parameter's gradient by `factor` (loss-scale removal).
    pub fn scale_grads(&self, grads: &mut GradStore, factor: f64) -> Result<()> {
        for p in &self.params {
            if let Some(g) = grads.remove(p.var.as_tensor()) {
                grads.insert(p.var.as_tensor(), (g * factor)?);
            }
        }
        Ok(())
    }

    /// Counts a step whose update was skipped (f16 overflow): the moments and weights stay,
    /// the step counter that drives the schedule and the RNG streams moves on.
    pub fn skip_step(&mut self) {
        self.step += 1;
    }

    /// Global L2 norm of the gradients (inf or NaN if any gradient is).
    pub fn grad_norm(&self, grads: &GradStore) -> Result<f64> {
        // Per-parameter sums stay on the device and come back in one read (one device
        // synchronisation per step, not one per parameter); they are added on the host in
        // parameter order, in f64, so the norm does not depend on the device.
        let mut sums = Vec::with_capacity(self.params.len());
        for p in &self.params {
            if let Some(g) = grads.get(p.var.as_tensor()) {
                sums.push(g.sqr()?.sum_all()?.to_dtype(DType::F64)?.reshape(1)?);
            }
        }
        let total: f64 = if sums.is_empty() {
            0.0
        } else {
            Tensor::cat(&sums, 0)?.to_vec1::<f64>()?.iter().sum()
        };
        Ok(total.sqrt())
    }

    /// Global L2 norm of the gradients; scales them down to `max_norm` if above.
    /// Returns the norm before clipping.
    pub fn clip_grad_norm(&self, grads: &mut GradStore, max_norm: f64) -> Result<f64> {
        let norm = self.grad_norm(grads)?;
        if max_norm > 0.0 && norm > max_norm {
            let scale = max_norm / (norm + 1e-6);
            for p in &self.params {
                if let Some(g) = grads.remove(p.var.as_tensor()) {
                    grads.insert(p.var.as_tensor(), (g * scale)?);
                }
            }
        }
        Ok(norm)
    }

    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        self.step += 1;
        let t = self.step as i32;
        let bc1 = 1.0 - self.beta1.powi(t);
        let bc2 = 1.0 - self.beta2.powi(t);
        for p in &mut self.params {
            let Some(g) = grads.get(p.var.as_tensor()) else {
                continue;
            };
            let lr = lr * p.lr_scale;
            p.m = ((&p.m * self.beta1)? + (g * (1.0 - self.beta1))?)?;
            p.v = ((&p.v * self.beta2)? + (g.sqr()? * (1.0 - self.beta2))?)?;
            let m_hat = (&p.m / bc1)?;
            let v_hat = (&p.v / bc2)?;
            let update = (m_hat / (v_hat.sqrt()? + self.eps)?)?;
            let decayed = (p.var.as_tensor() * (1.0 - lr * p.weight_decay))?;
            p.var.set(&(decayed - (update * lr)?)?)?;
        }
        Ok(())
    }

    /// Moment estimates by name (`m.<param>`, `v.<param>`) for a checkpoint.
    pub fn state(&self) -> BTreeMap<String, Tensor> {
        let mut s = BTreeMap::new();
        for p in &self.params {
            s.insert(format!("m.{}", p.name), p.m.clone());
            s.insert(format!("v.{}", p.name), p.v.clone());
        }
        s
    }

    pub fn load_state(&mut self, state: &BTreeMap<String, Tensor>, step: u64) -> Result<()> {
        for p in &mut self.params {
            let (Some(m), Some(v)) = (
                state.get(&format!("m.{}", p.name)),
                state.get(&format!("v.{}", p.name)),
            ) else {
                candle_core::bail!("checkpoint lacks optimizer state for `{}`", p.name);
            };
            p.m = m.to_device(p.var.device())?;
            p.v = v.to_device(p.var.device())?;
        }
        self.step = step;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn adamw_minimises_a_quadratic() {
        let x = Var::new(&[3.0f32, -2.0], &Device::Cpu).unwrap();
        let mut opt = AdamW::new(vec![("x".into(), x.clone(), 1.0, 0.0)]).unwrap();
        for _ in 0..500 {
            let loss = x.as_tensor().sqr().unwrap().sum_all().unwrap();
            let g = loss.backward().unwrap();
            opt.step(&g, 0.05).unwrap();
        }
        let v: Vec<f32> = x.as_tensor().to_vec1().unwrap();
        assert!(v.iter().all(|a| a.abs() < 0.05), "{v:?}");
    }
}
