//! The optimizer's parameter groups: which weights train at which lr scale and weight
//! decay, as each reference groups them (LM4VisualEncoding `tools/builder.py`; VideoMAE's
//! layer-wise decay).

use super::assemble::sorted_vars;
use super::params::TrainParams;
use anyhow::Result;
use candle_core::Var;
use candle_nn::VarMap;

/// BatchNorm statistics: buffers, not trained.
pub fn is_running_stat(name: &str) -> bool {
    name.ends_with("running_mean") || name.ends_with("running_var")
}

/// The optimizer's parameters: (name, var, lr scale, weight decay), in the reference's groups
/// (LM4VisualEncoding `tools/builder.py`): the adapters around the LLM block (`llm_adapter_*`)
/// train at `adapter_lr_scale` with no weight decay; 1-D tensors, biases and tokens
/// (`cls_token`; not `cls_pos`, which the reference decays) at `no_decay_lr_scale` without
/// decay; everything else at the full lr with `weight_decay`. A trainable LLM block's own
/// weights decay like the encoder's matrices.
pub fn params_for(
    p: &TrainParams,
    varmap: &VarMap,
    block_vars: &[(String, Var)],
    vit_depth: Option<usize>,
) -> Result<Vec<(String, Var, f64, f64)>> {
    let mut params = Vec::new();
    let layer_decay = p.layer_decay.zip(vit_depth);
    for (name, var) in sorted_vars(varmap)? {
        if is_running_stat(&name) {
            continue;
        }
        let (lr_scale, wd) = if layer_decay.is_some() || p.timm_groups {
            // VideoMAE's `get_parameter_groups` and timm's `add_weight_decay` (DeiT): no decay
            // for 1-D tensors, biases and the skip list (`pos_embed`, `cls_token`);
            // everything else, the adapters included, decays. The lr scale is the layer's
            // under layer-wise decay, else 1.
            let scale = layer_decay.map_or(1.0, |(decay, depth)| {
                decay.powi((depth + 1 - vit_layer_id(&name, depth)) as i32)
            });
            let no_decay = var.rank() <= 1
                || name.ends_with(".bias")
                || name == "pos_embed"
                || name == "cls_token";
            if no_decay {
                (scale * p.no_decay_lr_scale, 0.0)
            } else if name.starts_with("llm_adapter") {
                (scale * p.adapter_lr_scale, p.weight_decay)
            } else {
                (scale, p.weight_decay)
            }
        } else if name.starts_with("llm_adapter") {
            (p.adapter_lr_scale, 0.0)
        } else if var.rank() <= 1 || name.ends_with(".bias") || name.contains("token") {
            (p.no_decay_lr_scale, 0.0)
        } else {
            (1.0, p.weight_decay)
        };
        params.push((name, var, lr_scale, wd));
    }
    for (name, var) in block_vars {
        let wd = if var.rank() <= 1 { 0.0 } else { p.weight_decay };
        params.push((name.clone(), var.clone(), 1.0, wd));
    }
    Ok(params)
}

/// VideoMAE's `get_num_layer_for_vit` for a model of `depth` blocks: 0 for the embeddings
/// (`patch_embed*`, `cls_token`, `mask_token`, `pos_embed`), i + 1 for `blocks.i.*`, and
/// depth + 1 for everything else (norm, head, the adapters and the LLM block).
pub fn vit_layer_id(name: &str, depth: usize) -> usize {
    if matches!(name, "cls_token" | "mask_token" | "pos_embed") || name.starts_with("patch_embed") {
        return 0;
    }
    name.strip_prefix("blocks.")
        .and_then(|rest| rest.split('.').next())
        .and_then(|i| i.parse::<usize>().ok())
        .map_or(depth + 1, |i| (i + 1).min(depth + 1))
}

#[cfg(test)]
#[path = "groups_tests.rs"]
mod tests;
