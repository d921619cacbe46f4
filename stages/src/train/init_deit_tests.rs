//! `init` from DeiT / timm ViT checkpoints into the image ViT: a checkpoint written with
//! timm's names and layouts (the `Conv2d` patch embedding `[d, 3, p, p]`, DeiT's distillation
//! token and head, a ViT-LLaMA's `llama.*`) loads every parameter, ignores what lm4ve has no
//! use for, and the converted patch embedding computes what the convolution computes
//! (checked against candle's own `conv2d` on the NCHW image).

use super::assemble::sorted_vars;
use super::init::{load_into, DEIT};
use super::models::image_vit::{ImageVit, ImageVitConfig};
use super::models::layers::init_vars;
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use std::collections::HashMap;

const SIDE: usize = 8;
const PATCH: usize = 4;
const DIM: usize = 8;

fn model(seed: u64) -> (VarMap, ImageVit) {
    let cfg: ImageVitConfig = serde_json::from_value(serde_json::json!({
        "patch": PATCH, "embed_dim": DIM, "depth": 1, "heads": 2, "drop_path": 0.0
    }))
    .unwrap();
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let m = ImageVit::new(&cfg, SIDE, 3, None, vb).unwrap();
    init_vars(&varmap, seed).unwrap();
    (varmap, m)
}

/// Our weights as timm would store them: the patch embedding back to `Conv2d` layout, plus
/// DeiT's distillation token and head and an LLM layer.
fn timm_state_dict(varmap: &VarMap) -> HashMap<String, Tensor> {
    let mut sd = HashMap::new();
    for (name, var) in sorted_vars(varmap).unwrap() {
        let t = var.as_tensor().clone();
        let t = if name == "patch_embed.proj.weight" {
            t.reshape((DIM, PATCH, PATCH, 3))
                .unwrap()
                .permute((0, 3, 1, 2))
                .unwrap()
                .contiguous()
                .unwrap()
        } else {
            t
        };
        sd.insert(name, t);
    }
    let dev = Device::Cpu;
    sd.insert(
        "dist_token".into(),
        Tensor::ones((1, 1, DIM), DType::F32, &dev).unwrap(),
    );
    sd.insert(
        "head_dist.weight".into(),
        Tensor::ones((3, DIM), DType::F32, &dev).unwrap(),
    );
    sd.insert(
        "head_dist.bias".into(),
        Tensor::ones(3, DType::F32, &dev).unwrap(),
    );
    sd.insert(
        "llama.layers.0.attention.wq.weight".into(),
        Tensor::ones((2, 2), DType::F32, &dev).unwrap(),
    );
    sd
}

#[test]
fn a_timm_vit_checkpoint_loads_into_the_image_vit() {
    let dir = tempfile::tempdir().unwrap();
    let (src_vars, src) = model(1);
    let path = dir.path().join("deit_tiny.safetensors");
    candle_core::safetensors::save(&timm_state_dict(&src_vars), &path).unwrap();

    let (dst_vars, dst) = model(2);
    let report = load_into(&path, &DEIT, &sorted_vars(&dst_vars).unwrap()).unwrap();
    assert!(report.missing.is_empty(), "{:?}", report.missing);
    assert_eq!(report.loaded.len(), sorted_vars(&dst_vars).unwrap().len());
    let ignored: Vec<&String> = report.ignored.values().flatten().collect();
    for k in ["dist_token", "head_dist.weight", "head_dist.bias"] {
        assert!(
            ignored.iter().any(|i| *i == k),
            "{k} not ignored: {ignored:?}"
        );
    }
    assert!(ignored.iter().any(|i| i.starts_with("llama.")));

    // Same weights, same logits.
    let x = Tensor::randn(0f32, 1.0, (2, SIDE, SIDE, 3), &Device::Cpu).unwrap();
    let (a, b) = (
        src.forward(&x, None).unwrap(),
        dst.forward(&x, None).unwrap(),
    );
    assert!(crate::test_util::max_abs_diff(&a, &b) < 1e-6);

    // The converted patch embedding is the convolution: conv2d(NCHW image, [d, 3, p, p],
    // stride p) at every patch equals our Linear on the patch flattened as (dy, dx, rgb).
    let sd = timm_state_dict(&src_vars);
    let conv = x
        .permute((0, 3, 1, 2))
        .unwrap()
        .contiguous()
        .unwrap()
        .conv2d(&sd["patch_embed.proj.weight"], 0, PATCH, 1, 1)
        .unwrap()
        .broadcast_add(&sd["patch_embed.proj.bias"].reshape((1, DIM, 1, 1)).unwrap())
        .unwrap();
    let g = SIDE / PATCH;
    let conv = conv
        .permute((0, 2, 3, 1))
        .unwrap()
        .reshape((2, g * g, DIM))
        .unwrap();
    let vars: HashMap<String, Tensor> = sorted_vars(&dst_vars)
        .unwrap()
        .into_iter()
        .map(|(n, v)| (n, v.as_tensor().clone()))
        .collect();
    let patches = x
        .reshape((2, g, PATCH, g, PATCH, 3))
        .unwrap()
        .permute((0, 1, 3, 2, 4, 5))
        .unwrap()
        .contiguous()
        .unwrap()
        .reshape((2, g * g, PATCH * PATCH * 3))
        .unwrap();
    let linear = patches
        .broadcast_matmul(&vars["patch_embed.proj.weight"].t().unwrap())
        .unwrap()
        .broadcast_add(&vars["patch_embed.proj.bias"])
        .unwrap();
    assert!(crate::test_util::max_abs_diff(&conv, &linear) < 1e-5);
}

/// A checkpoint at another resolution (another `pos_embed` grid) loads with its table resized
/// as DeiT's `--finetune` does, said in the report; the resized values are
/// `pos_embed::resize`'s (checked against PyTorch there).
#[test]
fn another_resolution_is_resized_as_deit_finetune_does() {
    let dir = tempfile::tempdir().unwrap();
    let (src_vars, _) = model(1);
    let mut sd = timm_state_dict(&src_vars);
    let table = Tensor::randn(0f32, 0.02, (1, 1 + 7 * 7, DIM), &Device::Cpu).unwrap();
    sd.insert("pos_embed".into(), table.clone());
    let path = dir.path().join("deit_other_res.safetensors");
    candle_core::safetensors::save(&sd, &path).unwrap();
    let (dst_vars, _) = model(2);
    let vars = sorted_vars(&dst_vars).unwrap();
    let report = load_into(&path, &DEIT, &vars).unwrap();
    assert!(report.loaded.contains_key("pos_embed"), "{report:?}");
    let g = SIDE / PATCH;
    assert!(
        report
            .notes
            .iter()
            .any(|n| n.contains(&format!("7×7 to a {g}×{g}"))),
        "{:?}",
        report.notes
    );
    let (want, _) = crate::train::pos_embed::resize(&table, 1 + g * g).unwrap();
    let got = vars
        .iter()
        .find(|(n, _)| n == "pos_embed")
        .unwrap()
        .1
        .as_tensor();
    assert!(crate::test_util::max_abs_diff(got, &want) == 0.0);
}

/// A table that is no class token before a square grid is an error naming the key and both
/// shapes, not a silent partial load.
#[test]
fn a_table_that_is_no_grid_names_pos_embed_and_both_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let (src_vars, _) = model(1);
    let mut sd = timm_state_dict(&src_vars);
    sd.insert(
        "pos_embed".into(),
        Tensor::zeros((1, 19, DIM), DType::F32, &Device::Cpu).unwrap(),
    );
    let path = dir.path().join("deit_bad.safetensors");
    candle_core::safetensors::save(&sd, &path).unwrap();
    let (dst_vars, _) = model(2);
    let err = format!(
        "{:#}",
        load_into(&path, &DEIT, &sorted_vars(&dst_vars).unwrap()).unwrap_err()
    );
    assert!(err.contains("pos_embed") && err.contains("19"), "{err}");
}
