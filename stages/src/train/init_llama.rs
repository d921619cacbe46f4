//! The LLaMA layers a LM4VisualEncoding ViT-LLaMA checkpoint carries (`llama.layers.{i}.*`,
//! Meta's names: `attention.wq`, `feed_forward.w1`, ...), read as the canonical block tensors
//! the trainer's block is built from (`assemble::core_of` with `LayerWeights::File`). `init`
//! itself ignores `llama.*` (the train stage's block comes from its `block` stage); this is
//! the route for checking a reference checkpoint's whole forward, and for taking the block
//! out of such a checkpoint.
//!
//! The reference's `LLaMATransformer` ends with `self.norm`, an RMSNorm whose weight is never
//! loaded nor trained (`custom_load_state_dict` loads layers only, `requires_grad = False`):
//! all ones, which is lm4ve's final norm. A checkpoint whose `llama.norm.weight` is not all
//! ones is refused rather than silently run with lm4ve's all-ones norm.

use super::assemble::BlockTensors;
use super::init::Family;
use crate::llm::block_format::{tensors_of, Arch};
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::path::Path;

/// The LLaMA layers of the checkpoint at `path` (state dict found as `fam` finds it), in
/// layer order, each under the canonical names. Empty when the file has no `llama.layers.`.
pub fn llama_layers(path: &Path, fam: &Family) -> Result<Vec<BlockTensors>> {
    let (_, tensors) = crate::pth::read_state_dict(path, fam.keys)?;
    let mut layers: BTreeMap<usize, BlockTensors> = BTreeMap::new();
    for (key, t) in tensors {
        let k = key.strip_prefix("module.").unwrap_or(&key);
        if k == "llama.norm.weight" {
            let v = t
                .to_dtype(candle_core::DType::F32)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            if v.iter().any(|x| *x != 1.0) {
                bail!(
                    "{}: `{key}` is not all ones; lm4ve's block ends with the all-ones RMSNorm of the reference (its final norm is never trained)",
                    path.display()
                );
            }
            continue;
        }
        let Some(rest) = k.strip_prefix("llama.layers.") else {
            continue;
        };
        let (i, name) = rest
            .split_once('.')
            .and_then(|(i, n)| Some((i.parse::<usize>().ok()?, n)))
            .with_context(|| format!("{}: `{key}` is no LLaMA layer tensor", path.display()))?;
        let meta = name.strip_suffix(".weight").unwrap_or(name);
        let Some(row) = tensors_of(Arch::Llama).find(|r| r.meta == Some(meta)) else {
            bail!(
                "{}: `{key}`: no LLaMA block tensor is called `{meta}` (expected Meta's names: attention.wq, feed_forward.w1, attention_norm, ...)",
                path.display()
            );
        };
        let t = t.to_dtype(candle_core::DType::F32)?;
        let values = t.flatten_all()?.to_vec1::<f32>()?;
        layers
            .entry(i)
            .or_default()
            .insert(row.name.to_string(), (t.dims().to_vec(), values));
    }
    // Layers are numbered from 0 in the reference's ModuleList whatever `first_layer` is.
    for (want, got) in layers.keys().enumerate() {
        if want != *got {
            bail!(
                "{}: the LLaMA layers are numbered {:?}; expected 0, 1, ... without gaps",
                path.display(),
                layers.keys().collect::<Vec<_>>()
            );
        }
    }
    Ok(layers.into_values().collect())
}
