//! `init = "path"` of a `train` stage: pretrained encoder weights from a PyTorch checkpoint
//! (`.pth` as `torch.save` writes it, or `.safetensors`), loaded into the model after
//! lm4ve's own init and before the first step. One key mapping per model family, chosen by
//! the task; the result is reported like PyTorch's `load_state_dict(strict=False)`: which
//! checkpoint tensors were loaded (and into what), which model parameters the checkpoint
//! lacks (they keep lm4ve's init), which checkpoint tensors were ignored and why. A tensor
//! whose shape differs from the model's is an error naming both shapes, except for the
//! interface layers (the classification head and the LLM block's adapters), which are
//! skipped as the references skip a head of another class count.
//!
//! **Point-BERT → PointBERT** (state dict under `base_model`, else `model`, else the file):
//! `module.` is removed from every key. A pretraining checkpoint (`Point-BERT.pth`, keys
//! under `transformer_q.`) is read as the reference's `PointTransformer.load_model_from_ckpt`
//! reads it: the query encoder `transformer_q.*` without its contrastive `cls_head`, and
//! nothing else (momentum encoder `transformer_k`, dVAE, queue). Otherwise the keys are a
//! fine-tuned `PointTransformer`'s, or lm4ve's own. Then `blocks.blocks.{i}.` → `blocks.{i}.`;
//! the kernel-1 `Conv1d` weights `[o, i, 1]` of the group encoder → Linear `[o, i]`;
//! BatchNorm `weight`, `bias`, `running_mean`, `running_var` as they are (`num_batches_tracked`
//! is unused: the momentum is fixed); `cls_head_finetune.{0,3}` → `cls_head.{0,4}`;
//! LM4VisualEncoding's `llama_dim_mapper{1,2}` → `llm_adapter_{up,down}`. Pretraining-only
//! tensors (`mask_token`, `lm_head`) and the LLM layer (`llama.*`; the block comes from the
//! stage's `block`) are ignored.
//!
//! **VideoMAE → video ViT** (state dict under `model`, else `module`, as the reference's
//! `--model_key model|module`, else the file): a leading `module.` (DDP) and then
//! `backbone.` or `encoder.` (VideoMAE's pretraining checkpoints) are removed; the `Conv3d`
//! tubelet embedding `[d, 3, t, p, p]` becomes our Linear `[d, t·p·p·3]` (the shards hold
//! each tubelet as (dt, dy, dx, rgb), see `ssv2::tubelets`); `attn.qkv.weight`, `attn.q_bias`,
//! `attn.v_bias` (no k bias, as VideoMAE), norms, MLP, `fc_norm` and `head` by their names;
//! layer scale (`gamma_1`, `gamma_2`, VideoMAE's `init_values > 0`) is folded exactly into
//! `attn.proj` and `mlp.fc2`, which lm4ve's block then computes. Ignored: `pos_embed` (lm4ve,
//! like VideoMAE's fine-tuning model, uses the fixed sinusoid table, which is no parameter),
//! `norm.*` (VideoMAE's mean-pooling models replace `norm` by Identity and train a new
//! `fc_norm`), the pretraining decoder (`decoder.*`, `encoder_to_decoder`, `mask_token`),
//! `llama.*`.
//!
//! **DeiT / timm ViT → image ViT** (state dict under `model`, as DeiT's `main.py` saves it and
//! its released `deit_*.pth` hold it, else `state_dict`, else the file): a leading `module.`
//! is removed; the `Conv2d` patch embedding `[d, 3, p, p]` becomes our Linear `[d, p·p·3]`
//! (patches are flattened as (dy, dx, rgb)); timm's fused `attn.qkv.bias` [3d] is split into
//! `attn.q_bias` and `attn.v_bias` (the k third is dropped: the softmax cancels it exactly);
//! `cls_token`, `pos_embed`, the blocks, `norm` and
//! `head` by timm's names, which lm4ve's image ViT shares; a LM4VisualEncoding ViT-LLaMA
//! checkpoint's `llama_dim_mapper{1,2}` → `llm_adapter_{up,down}`. Ignored: DeiT's
//! distillation token and head (`dist_token`, `head_dist.*`: lm4ve trains without a teacher),
//! `fc_norm` (timm's average-pooling variant; lm4ve pools the class token after `norm`),
//! `llama.*`. A checkpoint of another resolution (or a distilled one, whose table has the
//! distillation token's entry) has another `pos_embed` length: it is resized as DeiT's
//! `--finetune` does (`train::pos_embed`, bicubic over the patch grid), said in the report's
//! notes; a table that is no square grid is an error naming both shapes.
//!
//! What the models do not share: lm4ve's video ViT always mean-pools (VideoMAE's
//! `use_mean_pooling = False` variant, `norm` then token 0, is not built), has no learned
//! positional table, and needs the checkpoint's `embed_dim`, `depth`, `mlp_ratio` and heads
//! in `[model]` (heads cannot be read from the weights: a wrong count is not detected);
//! likewise PointBERT's `trans_dim`, `depth`, `heads`, `encoder_dims` (Point-BERT's are
//! lm4ve's defaults). The layer norms' eps is the reference's (PointBERT 1e-5, VideoMAE 1e-6).

use anyhow::{bail, Context, Result};
use candle_core::{Tensor, Var};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// How a checkpoint of one model family maps onto an lm4ve model.
pub struct Family {
    /// Shown in logs and the manifest: `Point-BERT`, `VideoMAE`.
    pub name: &'static str,
    /// Top-level keys the state dict may sit under, in order of preference.
    pub keys: &'static [&'static str],
    route: fn(&str, bool) -> Route,
    /// Whether any key marks the file as this family's pretraining layout (Point-BERT:
    /// `transformer_q.`), which `route` is told.
    pretrain: fn(&str) -> bool,
    /// Key rewriting that needs several tensors at once (VideoMAE layer scale).
    fold: fn(&mut Vec<Routed>) -> Result<Vec<String>>,
    /// Our parameters whose shape may legitimately differ (head, adapters): skipped then.
    interface: &'static [&'static str],
    /// Our position tables a checkpoint of another resolution may hold: resized to ours
    /// (`train::pos_embed`, DeiT's `--finetune`) instead of refused.
    resizable: &'static [&'static str],
}

/// Where one checkpoint tensor goes.
#[derive(Debug, Clone, PartialEq)]
enum Route {
    /// Into our parameter of this name, converted from `Layout`.
    To(String, Layout),
    /// Not loaded, for this reason.
    Skip(&'static str),
}

/// Layout conversions between PyTorch layers and ours.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Layout {
    /// Already a Linear weight (or not a weight).
    Linear,
    /// Kernel-1 `Conv1d` weight `[o, i, 1]` → Linear `[o, i]`.
    Conv1d,
    /// `Conv3d` tubelet weight `[d, c, t, p, q]` → Linear `[d, t·p·q·c]`.
    Conv3d,
    /// `Conv2d` patch weight `[d, c, p, q]` → Linear `[d, p·q·c]`.
    Conv2d,
}

struct Routed {
    /// The key as the file has it.
    key: String,
    tensor: Tensor,
    route: Route,
}

/// What `init` did, for the log and the train manifest's `init`.
#[derive(Debug, Clone, Serialize)]
pub struct InitReport {
    /// The checkpoint's file name.
    pub file: String,
    pub family: &'static str,
    /// The top-level key the state dict was read from (None: the file is the state dict).
    pub state_dict: Option<String>,
    /// Our parameter → the checkpoint key it was loaded from.
    pub loaded: BTreeMap<String, String>,
    /// Our parameters the checkpoint does not provide (they keep lm4ve's init).
    pub missing: Vec<String>,
    /// Checkpoint keys not loaded, by reason.
    pub ignored: BTreeMap<String, Vec<String>>,
    /// Rewrites worth knowing (folded layer scale).
    pub notes: Vec<String>,
}

impl InitReport {
    /// One line for the log.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "init from {} ({}{}): loaded {} tensors",
            self.file,
            self.family,
            self.state_dict
                .as_ref()
                .map(|k| format!(", state dict `{k}`"))
                .unwrap_or_default(),
            self.loaded.len()
        );
        if !self.missing.is_empty() {
            s.push_str(&format!(
                "; {} model parameters not in the checkpoint (kept lm4ve's init): {}",
                self.missing.len(),
                abbreviate(&self.missing)
            ));
        }
        for (why, keys) in &self.ignored {
            s.push_str(&format!(
                "; ignored {} checkpoint tensors ({why}): {}",
                keys.len(),
                abbreviate(keys)
            ));
        }
        for n in &self.notes {
            s.push_str(&format!("; {n}"));
        }
        s
    }
}

fn abbreviate(names: &[String]) -> String {
    const SHOW: usize = 6;
    let mut s = names
        .iter()
        .take(SHOW)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOW {
        s.push_str(&format!(", … ({} more)", names.len() - SHOW));
    }
    s
}

/// Checks that `path` is a checkpoint lm4ve can read (its headers only): what a stage does
/// when it is built, so a corrupt file fails before any training.
pub fn check_readable(path: &Path, fam: &Family) -> Result<(), crate::pth::PthError> {
    match crate::pth::sniff(path)? {
        crate::pth::Format::TorchZip => crate::pth::PthFile::open(path, fam.keys).map(|_| ()),
        crate::pth::Format::Safetensors => crate::pth::check_safetensors(path),
    }
}

/// Loads the checkpoint at `path` into `vars` (the model's parameters and BatchNorm
/// statistics by name), mapping keys as `fam` says.
pub fn load_into(path: &Path, fam: &Family, vars: &[(String, Var)]) -> Result<InitReport> {
    let (key, tensors) = crate::pth::read_state_dict(path, fam.keys)?;
    let file = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let pretrain = tensors
        .iter()
        .any(|(k, _)| (fam.pretrain)(&k.replace("module.", "")));
    let mut routed: Vec<Routed> = tensors
        .into_iter()
        .map(|(key, tensor)| {
            let route = if tensor.dtype().is_float() {
                (fam.route)(&key, pretrain)
            } else if key.ends_with("num_batches_tracked") {
                Route::Skip(BN_COUNTER)
            } else {
                Route::Skip("not a float tensor")
            };
            Routed { key, tensor, route }
        })
        .collect();
    let notes = (fam.fold)(&mut routed)?;
    let ours: BTreeMap<&str, &Var> = vars.iter().map(|(n, v)| (n.as_str(), v)).collect();
    let mut report = InitReport {
        file,
        family: fam.name,
        state_dict: key,
        loaded: BTreeMap::new(),
        missing: Vec::new(),
        ignored: BTreeMap::new(),
        notes,
    };
    let mut skip = |why: String, key: String| report.ignored.entry(why).or_default().push(key);
    let mut assign: Vec<(&Var, Tensor, String, String)> = Vec::new();
    let mut taken: BTreeMap<String, String> = BTreeMap::new();
    for r in routed {
        let (name, conv) = match r.route {
            Route::Skip(why) => {
                skip(why.to_string(), r.key);
                continue;
            }
            Route::To(name, conv) => (name, conv),
        };
        let Some(var) = ours.get(name.as_str()) else {
            skip(
                format!("lm4ve's {} model has no such parameter", fam.name),
                r.key,
            );
            continue;
        };
        let mut t = convert(&r.tensor, conv)
            .with_context(|| format!("{}: converting `{}`", path.display(), r.key))?;
        if t.dims() != var.dims() && fam.resizable.contains(&name.as_str()) {
            let (resized, what) =
                super::pos_embed::resize(&t, var.dims().get(1).copied().unwrap_or(0))
                    .with_context(|| {
                        format!(
                            "{}: resizing `{}` {:?} to the model's {:?}",
                            path.display(),
                            r.key,
                            t.dims(),
                            var.dims()
                        )
                    })?;
            if resized.dims() == var.dims() {
                report.notes.push(what.note());
                t = resized;
            }
        }
        if t.dims() != var.dims() {
            if fam.interface.iter().any(|p| name.starts_with(p)) {
                skip(
                    "interface layer of another size (class count or LLM block width): left to lm4ve's init".into(),
                    format!("{} {:?}", r.key, r.tensor.dims()),
                );
                continue;
            }
            bail!(
                "{}: `{}` (lm4ve `{name}`) has shape {:?}{}, the model's is {:?}; set the train stage's [model] sizes to the checkpoint's",
                path.display(),
                r.key,
                r.tensor.dims(),
                if conv == Layout::Linear {
                    String::new()
                } else {
                    format!(" ({:?} as a Linear)", t.dims())
                },
                var.dims()
            );
        }
        if let Some(prev) = taken.insert(name.clone(), r.key.clone()) {
            bail!(
                "{}: `{prev}` and `{}` both map to lm4ve `{name}`; the checkpoint holds two copies of one layer",
                path.display(),
                r.key
            );
        }
        assign.push((var, t, name, r.key));
    }
    for (var, t, name, key) in assign {
        var.set(&t.to_dtype(var.dtype())?)
            .with_context(|| format!("{}: setting `{name}` from `{key}`", path.display()))?;
        report.loaded.insert(name, key);
    }
    report.missing = vars
        .iter()
        .map(|(n, _)| n)
        .filter(|n| !report.loaded.contains_key(*n))
        .cloned()
        .collect();
    for keys in report.ignored.values_mut() {
        keys.sort();
    }
    Ok(report)
}

fn convert(t: &Tensor, conv: Layout) -> candle_core::Result<Tensor> {
    match (conv, t.dims()) {
        (Layout::Conv1d, &[o, i, 1]) => t.reshape((o, i)),
        (Layout::Conv3d, &[d, c, kt, p, q]) => t
            .permute((0, 2, 3, 4, 1))?
            .contiguous()?
            .reshape((d, kt * p * q * c)),
        (Layout::Conv2d, &[d, c, p, q]) => t
            .permute((0, 2, 3, 1))?
            .contiguous()?
            .reshape((d, p * q * c)),
        // Already a Linear (lm4ve's own files), or a shape the check then reports.
        _ => Ok(t.clone()),
    }
}

const BN_COUNTER: &str = "BatchNorm step counter (unused: lm4ve's BatchNorm momentum is fixed)";
const LLM_LAYER: &str = "the LLM layer (lm4ve's comes from the train stage's `block`)";

// ---------------------------------------------------------------- Point-BERT

pub static POINT_BERT: Family = Family {
    name: "Point-BERT",
    keys: &["base_model", "model"],
    route: pointbert_route,
    pretrain: |k| k.starts_with("transformer_q."),
    fold: |_| Ok(Vec::new()),
    interface: &["cls_head.", "llm_adapter_"],
    resizable: &[],
};

fn pointbert_route(key: &str, pretrain: bool) -> Route {
    let k = key.replace("module.", "");
    let k = if pretrain {
        if let Some(rest) = k.strip_prefix("transformer_q.") {
            if rest.starts_with("cls_head") {
                return Route::Skip("Point-BERT pretraining's contrastive head");
            }
            rest.to_string()
        } else if let Some(rest) = k.strip_prefix("base_model.") {
            rest.to_string()
        } else {
            return Route::Skip(
                "not the query encoder `transformer_q` (momentum encoder, dVAE, queue: pretraining only)",
            );
        }
    } else {
        k
    };
    if k == "mask_token" || k.starts_with("lm_head.") {
        return Route::Skip("pretraining only (masked point modelling)");
    }
    if k.starts_with("llama.") {
        return Route::Skip(LLM_LAYER);
    }
    let to = |n: String| Route::To(n, Layout::Linear);
    match k.as_str() {
        "llama_dim_mapper1.weight" => return to("llm_adapter_up.weight".into()),
        "llama_dim_mapper2.weight" => return to("llm_adapter_down.weight".into()),
        "encoder.first_conv.0.weight"
        | "encoder.first_conv.3.weight"
        | "encoder.second_conv.0.weight"
        | "encoder.second_conv.3.weight" => return Route::To(k, Layout::Conv1d),
        _ => {}
    }
    if let Some(rest) = k.strip_prefix("blocks.blocks.") {
        return to(format!("blocks.{rest}"));
    }
    if let Some(rest) = k.strip_prefix("cls_head_finetune.") {
        // Linear(2C, 256), ReLU, Dropout, Linear(256, classes): Sequential indices 0 and 3;
        // lm4ve's head names them 0 and 4.
        return match rest.split_once('.') {
            Some(("0", p)) => to(format!("cls_head.0.{p}")),
            Some(("3", p)) => to(format!("cls_head.4.{p}")),
            _ => Route::Skip("lm4ve's Point-BERT model has no such parameter"),
        };
    }
    to(k)
}

// ---------------------------------------------------------------- DeiT / timm ViT

pub static DEIT: Family = Family {
    name: "DeiT/timm ViT",
    keys: &["model", "state_dict"],
    route: deit_route,
    pretrain: |_| false,
    fold: split_qkv_bias,
    interface: &["head.", "llm_adapter_"],
    resizable: &["pos_embed"],
};

fn deit_route(key: &str, _pretrain: bool) -> Route {
    let k = key.strip_prefix("module.").unwrap_or(key);
    let to = |n: &str| Route::To(n.to_string(), Layout::Linear);
    match k {
        "patch_embed.proj.weight" => return Route::To(k.to_string(), Layout::Conv2d),
        "llama_dim_mapper1.weight" => return to("llm_adapter_up.weight"),
        "llama_dim_mapper2.weight" => return to("llm_adapter_down.weight"),
        "dist_token" => return Route::Skip(DEIT_DISTILLATION),
        _ => {}
    }
    if k.starts_with("head_dist.") {
        return Route::Skip(DEIT_DISTILLATION);
    }
    if k.starts_with("fc_norm.") {
        return Route::Skip(
            "`fc_norm`: timm's average-pooling ViT; lm4ve's pools the class token after `norm`",
        );
    }
    if k.starts_with("llama.") {
        return Route::Skip(LLM_LAYER);
    }
    to(k)
}

/// timm's fused `attn.qkv.bias` [3d] → lm4ve's `attn.q_bias` and `attn.v_bias` [d] each.
/// The k third is dropped exactly: it adds `q · b_k` to every score of a query, the same for
/// every key, which the softmax cancels.
fn split_qkv_bias(routed: &mut Vec<Routed>) -> Result<Vec<String>> {
    let mut extra = Vec::new();
    let mut split = 0;
    for r in routed.iter_mut() {
        let Route::To(name, _) = &r.route else {
            continue;
        };
        let Some(block) = name.strip_suffix(".attn.qkv.bias") else {
            continue;
        };
        let block = block.to_string();
        let n = r.tensor.elem_count();
        if r.tensor.rank() != 1 || n % 3 != 0 {
            bail!(
                "`{}` has shape {:?}; a qkv bias is one vector of 3 × the width",
                r.key,
                r.tensor.dims()
            );
        }
        let d = n / 3;
        extra.push(Routed {
            key: r.key.clone(),
            tensor: r.tensor.narrow(0, 2 * d, d)?,
            route: Route::To(format!("{block}.attn.v_bias"), Layout::Linear),
        });
        r.tensor = r.tensor.narrow(0, 0, d)?;
        r.route = Route::To(format!("{block}.attn.q_bias"), Layout::Linear);
        split += 1;
    }
    routed.extend(extra);
    Ok(if split > 0 {
        vec![format!(
            "{split} fused `attn.qkv.bias` split into `attn.q_bias` and `attn.v_bias` (the k bias is dropped: the softmax cancels it)"
        )]
    } else {
        Vec::new()
    })
}

const DEIT_DISTILLATION: &str =
    "DeiT's distillation token and head (lm4ve trains without a teacher)";

// ---------------------------------------------------------------- VideoMAE

pub static VIDEOMAE: Family = Family {
    name: "VideoMAE",
    keys: &["model", "module"],
    route: videomae_route,
    pretrain: |_| false,
    fold: fold_layer_scale,
    interface: &["head.", "llm_adapter_"],
    resizable: &[],
};

fn videomae_route(key: &str, _pretrain: bool) -> Route {
    let k = key.strip_prefix("module.").unwrap_or(key);
    let k = k
        .strip_prefix("backbone.")
        .or_else(|| k.strip_prefix("encoder."))
        .unwrap_or(k);
    let to = |n: &str| Route::To(n.to_string(), Layout::Linear);
    match k {
        "pos_embed" => {
            return Route::Skip(
                "positional table: lm4ve uses VideoMAE's fixed sinusoid table, not a parameter",
            )
        }
        "norm.weight" | "norm.bias" => return Route::Skip(
            "`norm`: VideoMAE's mean-pooling model replaces it by Identity and trains `fc_norm`",
        ),
        "mask_token" => return Route::Skip("VideoMAE pretraining decoder"),
        "patch_embed.proj.weight" => return Route::To(k.to_string(), Layout::Conv3d),
        "llama_dim_mapper1.weight" => return to("llm_adapter_up.weight"),
        "llama_dim_mapper2.weight" => return to("llm_adapter_down.weight"),
        _ => {}
    }
    if k.starts_with("decoder.") || k.starts_with("encoder_to_decoder.") {
        return Route::Skip("VideoMAE pretraining decoder");
    }
    if k.starts_with("llama.") {
        return Route::Skip(LLM_LAYER);
    }
    to(k)
}

/// VideoMAE's layer scale (`x + γ1 ⊙ attn(..)`, `x + γ2 ⊙ mlp(..)`) folded into the last
/// Linear of each branch: `γ ⊙ (W a + b) = (diag(γ) W) a + γ ⊙ b`, exactly.
fn fold_layer_scale(routed: &mut Vec<Routed>) -> Result<Vec<String>> {
    let mut notes = Vec::new();
    let gammas: Vec<(usize, String, String)> = routed
        .iter()
        .enumerate()
        .filter_map(|(i, r)| match &r.route {
            Route::To(n, _) => {
                let (block, g) = n.rsplit_once('.')?;
                let target = match g {
                    "gamma_1" => "attn.proj",
                    "gamma_2" => "mlp.fc2",
                    _ => return None,
                };
                Some((i, format!("{block}.{target}"), r.key.clone()))
            }
            _ => None,
        })
        .collect();
    let mut folded = BTreeSet::new();
    for (gi, target, gkey) in gammas {
        let gamma = routed[gi].tensor.clone();
        for part in ["weight", "bias"] {
            let name = format!("{target}.{part}");
            let r = routed
                .iter_mut()
                .find(|r| matches!(&r.route, Route::To(n, _) if *n == name))
                .with_context(|| {
                    format!("layer scale `{gkey}` without `{name}` to fold it into; the checkpoint is incomplete")
                })?;
            r.tensor = if part == "weight" {
                r.tensor
                    .broadcast_mul(&gamma.unsqueeze(1)?)
                    .with_context(|| format!("folding `{gkey}` into `{name}`"))?
            } else {
                (&r.tensor * &gamma).with_context(|| format!("folding `{gkey}` into `{name}`"))?
            };
        }
        folded.insert(gi);
        notes.push(format!("layer scale `{gkey}` folded into `{target}`"));
    }
    let mut i = 0;
    routed.retain(|_| {
        let keep = !folded.contains(&i);
        i += 1;
        keep
    });
    Ok(notes)
}
