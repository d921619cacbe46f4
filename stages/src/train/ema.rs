//! The model's exponential moving average, as DeiT keeps it (timm's `ModelEma`, on by default
//! in the reference's `main.py` with decay 0.99996): after every optimizer step each averaged
//! tensor becomes `ema · decay + w · (1 − decay)`; it starts as a copy of the model when
//! training starts (after `init` and the LLM block are loaded, as the reference creates it).
//!
//! Averaged: every tensor the training changes (trained weights and BatchNorm statistics,
//! the `model.` entries of a checkpoint). The reference averages the whole state dict, the
//! frozen LLM layer included; a frozen tensor's average is itself, so it is not carried (the
//! reference's float32 arithmetic can move it by an ulp; this keeps it exact).
//!
//! The average travels in each unit's checkpoint (under `ema.<name>`), so a resumed run
//! continues it bit for bit, and the last unit writes it as [`EMA_MODEL_FILE`].

use anyhow::{Context, Result};
use candle_core::{Device, Tensor, Var};
use std::collections::HashMap;

/// The artifact's averaged weights (beside `model.safetensors` and `model-best.safetensors`).
pub const EMA_MODEL_FILE: &str = "model-ema.safetensors";

/// DeiT's `--model-ema-decay` default.
pub const DEIT_EMA_DECAY: f64 = 0.99996;

/// `model_ema = true | false` or the decay (`model_ema = 0.9998`).
#[derive(Debug, Clone, Copy, serde::Deserialize)]
#[serde(untagged)]
pub enum EmaToml {
    Switch(bool),
    Decay(f64),
}

impl EmaToml {
    /// The decay a stage trains with: the config's, else DeiT's when the task has the
    /// average on by default.
    pub fn resolve(t: Option<EmaToml>, on_by_default: bool) -> Option<f64> {
        match t {
            Some(EmaToml::Decay(d)) => Some(d),
            Some(EmaToml::Switch(true)) => Some(DEIT_EMA_DECAY),
            Some(EmaToml::Switch(false)) => None,
            None => on_by_default.then_some(DEIT_EMA_DECAY),
        }
    }
}

/// Why a decay is unusable (None: it is fine).
pub fn check_decay(d: f64) -> Option<String> {
    (!(d > 0.0 && d < 1.0)).then(|| {
        format!(
            "model_ema = {d}: the decay must be in (0, 1), e.g. 0.99996 (DeiT), or true / false"
        )
    })
}

/// The checkpoint entry prefix of the averaged tensors.
const PREFIX: &str = "ema.";

/// The running average of a model's trained tensors, in the order of the vars it follows.
pub struct ModelEma {
    decay: f64,
    names: Vec<String>,
    avg: Vec<Tensor>,
}

impl ModelEma {
    /// A copy of `vars` as they are now (training's start).
    pub fn start<'a>(decay: f64, vars: impl Iterator<Item = &'a (String, Var)>) -> Result<Self> {
        let (mut names, mut avg) = (Vec::new(), Vec::new());
        for (name, var) in vars {
            names.push(name.clone());
            // A copy, not a handle: the var changes in place at every step.
            avg.push(var.as_tensor().copy()?);
        }
        Ok(ModelEma { decay, names, avg })
    }

    /// The average as a resumed run left it: the `ema.` entries of checkpoint `path`.
    pub fn restore<'a>(
        decay: f64,
        path: &std::path::Path,
        device: &Device,
        vars: impl Iterator<Item = &'a (String, Var)>,
    ) -> Result<Self> {
        let ck = candle_core::safetensors::load(path, device)?;
        let (mut names, mut avg) = (Vec::new(), Vec::new());
        for (name, var) in vars {
            let t = ck.get(&format!("{PREFIX}{name}")).with_context(|| {
                format!(
                    "checkpoint {} lacks the model average of `{name}` (written without model_ema?)",
                    path.display()
                )
            })?;
            names.push(name.clone());
            avg.push(t.to_dtype(var.dtype())?);
        }
        Ok(ModelEma { decay, names, avg })
    }

    /// One step of the average: `ema · decay + w · (1 − decay)` for every tensor, `vars` in
    /// the order [`ModelEma::start`] saw them.
    pub fn update<'a>(&mut self, vars: impl Iterator<Item = &'a (String, Var)>) -> Result<()> {
        let keep = self.decay;
        let take = 1.0 - self.decay;
        for (avg, (name, var)) in self.avg.iter_mut().zip(vars) {
            debug_assert!(self.names.iter().any(|n| n == name));
            let next = (avg.affine(keep, 0.0)? + var.as_tensor().affine(take, 0.0)?)?;
            *avg = next;
        }
        Ok(())
    }

    /// Adds the average to a unit's checkpoint tensors (`ema.<name>`, on the CPU).
    pub fn save_into(&self, ck: &mut HashMap<String, Tensor>) -> Result<()> {
        for (name, t) in self.names.iter().zip(&self.avg) {
            ck.insert(format!("{PREFIX}{name}"), t.to_device(&Device::Cpu)?);
        }
        Ok(())
    }

    /// The averaged model under the weights' own names: `weights` (the model's tensors, as
    /// `model.safetensors` holds them) with each averaged tensor replaced by its average.
    pub fn weights(&self, weights: &HashMap<String, Tensor>) -> Result<HashMap<String, Tensor>> {
        let mut out = weights.clone();
        for (name, t) in self.names.iter().zip(&self.avg) {
            out.insert(name.clone(), t.to_device(&Device::Cpu)?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::DType;

    fn var(name: &str, v: &[f32]) -> (String, Var) {
        (
            name.to_string(),
            Var::from_tensor(&Tensor::new(v, &Device::Cpu).unwrap()).unwrap(),
        )
    }

    #[test]
    fn update_is_timm_model_ema_arithmetic() {
        // timm's ModelEma: ema_v.copy_(ema_v * decay + (1. - decay) * model_v), each step.
        let vars = [var("a", &[1.0, -2.0]), var("b", &[0.5])];
        let mut ema = ModelEma::start(0.9, vars.iter()).unwrap();
        vars[0]
            .1
            .set(&Tensor::new(&[3.0f32, 0.0], &Device::Cpu).unwrap())
            .unwrap();
        vars[1]
            .1
            .set(&Tensor::new(&[1.5f32], &Device::Cpu).unwrap())
            .unwrap();
        ema.update(vars.iter()).unwrap();
        ema.update(vars.iter()).unwrap();
        let mut ck = HashMap::new();
        ema.save_into(&mut ck).unwrap();
        let a = ck["ema.a"].to_vec1::<f32>().unwrap();
        let b = ck["ema.b"].to_vec1::<f32>().unwrap();
        // Two steps towards a constant: w + (e0 − w)·0.9².
        let want = |e0: f32, w: f32| w + (e0 - w) * 0.81;
        assert!((a[0] - want(1.0, 3.0)).abs() < 1e-6, "{a:?}");
        assert!((a[1] - want(-2.0, 0.0)).abs() < 1e-6, "{a:?}");
        assert!((b[0] - want(0.5, 1.5)).abs() < 1e-6, "{b:?}");
    }

    #[test]
    fn start_copies_so_the_model_moving_does_not_move_the_average() {
        let vars = [var("a", &[1.0])];
        let ema = ModelEma::start(0.99996, vars.iter()).unwrap();
        vars[0]
            .1
            .set(&Tensor::new(&[9.0f32], &Device::Cpu).unwrap())
            .unwrap();
        let mut ck = HashMap::new();
        ema.save_into(&mut ck).unwrap();
        assert_eq!(ck["ema.a"].to_vec1::<f32>().unwrap(), vec![1.0]);
    }

    #[test]
    fn a_checkpoint_round_trip_continues_the_average_exactly() {
        let dir = std::env::temp_dir().join(format!("lm4ve-ema-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let vars = [var("w", &[0.25, 4.0, -1.0])];
        let mut ema = ModelEma::start(0.99, vars.iter()).unwrap();
        vars[0]
            .1
            .set(&Tensor::new(&[1.0f32, 2.0, 3.0], &Device::Cpu).unwrap())
            .unwrap();
        ema.update(vars.iter()).unwrap();
        let mut ck = HashMap::new();
        ema.save_into(&mut ck).unwrap();
        let path = dir.join("ck.safetensors");
        candle_core::safetensors::save(&ck, &path).unwrap();
        let mut back = ModelEma::restore(0.99, &path, &Device::Cpu, vars.iter()).unwrap();
        ema.update(vars.iter()).unwrap();
        back.update(vars.iter()).unwrap();
        let (mut x, mut y) = (HashMap::new(), HashMap::new());
        ema.save_into(&mut x).unwrap();
        back.save_into(&mut y).unwrap();
        assert_eq!(
            x["ema.w"].to_vec1::<f32>().unwrap(),
            y["ema.w"].to_vec1::<f32>().unwrap()
        );
        // A checkpoint without the average is a named error, not a silent restart.
        let missing = dir.join("plain.safetensors");
        let plain: HashMap<String, Tensor> = [(
            "model.w".to_string(),
            Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap(),
        )]
        .into();
        candle_core::safetensors::save(&plain, &missing).unwrap();
        let err = ModelEma::restore(0.99, &missing, &Device::Cpu, vars.iter())
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("model average of `w`"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn weights_replace_only_the_averaged_tensors() {
        let vars = [var("a", &[1.0])];
        let ema = ModelEma::start(0.5, vars.iter()).unwrap();
        let frozen = Tensor::new(&[7.0f32], &Device::Cpu).unwrap();
        let model: HashMap<String, Tensor> = [
            (
                "a".to_string(),
                Tensor::new(&[2.0f32], &Device::Cpu).unwrap(),
            ),
            ("block.w".to_string(), frozen),
        ]
        .into();
        let w = ema.weights(&model).unwrap();
        assert_eq!(w["a"].to_vec1::<f32>().unwrap(), vec![1.0]);
        assert_eq!(w["block.w"].to_vec1::<f32>().unwrap(), vec![7.0]);
    }
}
