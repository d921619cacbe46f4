//! Checkpoints of a `train` stage's work units: trainable weights (and BN statistics) under
//! `model.<name>`, AdamW moments under `opt.m.<name>` / `opt.v.<name>`, the step under
//! `train.step`, and under f16 the loss scale under `train.loss_scale`. The step is the whole
//! RNG state (shuffle, augmentation and dropout streams derive from (seed, step/epoch)), so a
//! restored run continues bit for bit.

use super::ops::precision::LossScaler;
use super::optim::AdamW;
use anyhow::{Context, Result};
use candle_core::{Device, Tensor, Var};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// The checkpoint tensors (on the CPU) of the current training state.
pub(super) fn save<'a>(
    vars: impl Iterator<Item = &'a (String, Var)>,
    opt: &AdamW,
    scaler: Option<&LossScaler>,
) -> Result<HashMap<String, Tensor>> {
    let mut ck: HashMap<String, Tensor> = HashMap::new();
    for (name, var) in vars {
        ck.insert(
            format!("model.{name}"),
            var.as_tensor().to_device(&Device::Cpu)?,
        );
    }
    for (name, t) in opt.state() {
        ck.insert(format!("opt.{name}"), t.to_device(&Device::Cpu)?);
    }
    ck.insert(
        "train.step".into(),
        Tensor::new(&[opt.step as i64], &Device::Cpu)?,
    );
    if let Some(sc) = scaler {
        // f16's loss scale is training state too: a resumed run must continue with it.
        ck.insert(
            "train.loss_scale".into(),
            Tensor::new(&[sc.scale, sc.good_steps as f64], &Device::Cpu)?,
        );
    }
    Ok(ck)
}

/// Loads a checkpoint file into the model's vars, the optimizer and the loss scaler.
pub(super) fn restore<'a>(
    path: &Path,
    device: &Device,
    vars: impl Iterator<Item = &'a (String, Var)>,
    opt: &mut AdamW,
    scaler: Option<&mut LossScaler>,
) -> Result<()> {
    let ck = candle_core::safetensors::load(path, device)?;
    for (name, var) in vars {
        let t = ck
            .get(&format!("model.{name}"))
            .with_context(|| format!("checkpoint lacks `{name}`"))?;
        var.set(t)?;
    }
    let step = ck
        .get("train.step")
        .context("checkpoint lacks train.step")?
        .to_vec1::<i64>()?
        .first()
        .copied()
        .context("checkpoint's train.step is empty")? as u64;
    let state: BTreeMap<String, Tensor> = ck
        .iter()
        .filter_map(|(n, t)| n.strip_prefix("opt.").map(|s| (s.to_string(), t.clone())))
        .collect();
    opt.load_state(&state, step)?;
    if let Some(sc) = scaler {
        let v = ck
            .get("train.loss_scale")
            .context("checkpoint lacks train.loss_scale (f16 training)")?
            .to_vec1::<f64>()?;
        sc.scale = v.first().copied().unwrap_or(sc.scale);
        sc.good_steps = v.get(1).copied().unwrap_or(0.0) as u64;
    }
    Ok(())
}

/// The model's weights alone, under their own names (`model.safetensors`).
pub(super) fn model_weights(ck: &HashMap<String, Tensor>) -> HashMap<String, Tensor> {
    ck.iter()
        .filter_map(|(n, t)| n.strip_prefix("model.").map(|s| (s.to_string(), t.clone())))
        .collect()
}

pub(super) fn to_bytes(tensors: &HashMap<String, Tensor>) -> Result<Vec<u8>> {
    // candle writes files only; the object store wants bytes.
    let dir = tempdir_in_tmp()?;
    let path = dir.join("ckpt.safetensors");
    candle_core::safetensors::save(tensors, &path)?;
    let bytes = std::fs::read(&path)?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(bytes)
}

fn tempdir_in_tmp() -> Result<std::path::PathBuf> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let d = std::env::temp_dir().join(format!(
        "lm4ve-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}
