//! The image ViT-LLaMA's forward against the official code (issue 24): the fixtures under
//! `tests/fixtures/vit_llama/` were written by `scripts/fixtures/vit_llama_forward.py` from
//! LM4VisualEncoding's own `ViTLLaMA` (`image_classification/models/vit_llama.py`, its LLaMA
//! layer from the repo's `llama.py`) and `VisionTransformer` (`vit.py`) at tiny sizes, with a
//! fixed input and the official `forward_features` and logits. Here the checkpoints go through
//! lm4ve's real loading: the ViT, adapters and head by `init::load_into` with the DEIT family
//! (timm's names, the `Conv2d` patch embedding, the fused qkv bias), the LLaMA layer by
//! `init_llama::llama_layers` into `assemble::core_of` (the trainer's route for a pretrained
//! block, `frozen`), and the image is fed channels-last as the image task feeds it.
//!
//! Tolerance: both sides compute in f32 from the same f32 weights; they differ only in
//! summation order (PyTorch's conv and fused matmuls vs candle's, two softmaxes, two
//! LayerNorms and two RMSNorms). With O(1) activations that leaves differences of a few ulps
//! of the largest values, ~1e-6; 1e-4 absolute on features and logits of magnitude ~1–5 is
//! two orders above that and far below any real mismatch (a missing bias or a wrong layout
//! moves the logits by ~0.1–1).

use super::assemble::{core_of, sorted_vars, BlockTensors, LayerWeights};
use super::block::BlockMode;
use super::init::{load_into, DEIT};
use super::init_llama::llama_layers;
use super::models::image_vit::{ImageVit, ImageVitConfig};
use super::models::layers::init_vars;
use crate::llm::block_format::{Arch, BlockConfig};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use std::collections::HashMap;
use std::path::PathBuf;

const TOL: f32 = 1e-4;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/vit_llama")
}

fn meta() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join("meta.json")).unwrap()).unwrap()
}

fn io() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixtures().join("io.safetensors"), &Device::Cpu).unwrap()
}

fn size(m: &serde_json::Value, k: &str) -> usize {
    m[k].as_u64().unwrap() as usize
}

/// The reference's LLaMA layer config (`llama_configs` of the fixture).
fn block_config(m: &serde_json::Value) -> BlockConfig {
    let l = &m["llama"];
    let (d, h) = (size(l, "dim"), size(l, "n_heads"));
    BlockConfig {
        arch: Arch::Llama,
        hidden_size: d,
        num_heads: h,
        num_kv_heads: h,
        head_dim: d / h,
        intermediate_size: size(l, "hidden"),
        norm_eps: l["norm_eps"].as_f64().unwrap(),
        post_norm: false,
    }
}

/// lm4ve's image ViT of the fixture's sizes, `mode`'s block, weights from `file` through
/// lm4ve's loaders; its features and logits on the fixture's image.
fn run(file: &str, mode: BlockMode) -> (Tensor, Tensor) {
    let m = meta();
    let dev = Device::Cpu;
    let path = fixtures().join(file);
    let block = if mode.has_block() {
        let layers = llama_layers(&path, &DEIT).unwrap();
        assert_eq!(layers.len(), 1);
        let read = || -> anyhow::Result<Vec<BlockTensors>> { Ok(layers.clone()) };
        let cfg = block_config(&m);
        let core = core_of(mode, &cfg, 1, LayerWeights::File(&read), None, 0, &dev).unwrap();
        Some((core, mode))
    } else {
        None
    };
    let cfg = ImageVitConfig {
        patch: size(&m, "patch"),
        embed_dim: size(&m, "embed_dim"),
        depth: size(&m, "depth"),
        heads: size(&m, "heads"),
        drop_path: 0.0,
        ..Default::default()
    };
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
    let model = ImageVit::new(&cfg, size(&m, "image"), size(&m, "classes"), block, vb).unwrap();
    init_vars(&varmap, 7).unwrap();
    let vars = sorted_vars(&varmap).unwrap();
    let report = load_into(&path, &DEIT, &vars).unwrap();
    assert!(
        report.missing.is_empty(),
        "not in the reference's checkpoint: {:?}",
        report.missing
    );
    let ignored: Vec<&String> = report.ignored.values().flatten().collect();
    assert!(
        ignored.iter().all(|k| k.starts_with("llama.")),
        "{file}: ignored {ignored:?}"
    );
    // The image task feeds images channels-last.
    let image = io()["image"]
        .permute((0, 2, 3, 1))
        .unwrap()
        .contiguous()
        .unwrap();
    (
        model.features(&image, None).unwrap(),
        model.forward(&image, None).unwrap(),
    )
}

fn assert_close(what: &str, ours: &Tensor, theirs: &Tensor) {
    assert_eq!(ours.dims(), theirs.dims(), "{what}: shapes");
    let d = crate::test_util::max_abs_diff(ours, theirs);
    let scale = crate::test_util::max_abs_diff(theirs, &theirs.zeros_like().unwrap());
    eprintln!("{what}: max |lm4ve − reference| = {d:.2e} (values up to {scale:.2})");
    assert!(d < TOL, "{what}: max abs diff {d} ≥ {TOL}");
}

#[test]
fn the_frozen_vit_llama_matches_the_official_forward() {
    let (feats, logits) = run("frozen.safetensors", BlockMode::Frozen);
    let io = io();
    assert_close("frozen features", &feats, &io["frozen.features"]);
    assert_close("frozen logits", &logits, &io["frozen.logits"]);
}

#[test]
fn the_plain_vit_matches_the_official_forward() {
    let (feats, logits) = run("none.safetensors", BlockMode::None);
    let io = io();
    assert_close("none features", &feats, &io["none.features"]);
    assert_close("none logits", &logits, &io["none.logits"]);
}

/// Without the qkv-bias split (what `init` did before this fixture), the q and v biases
/// would keep lm4ve's init: the logits move far beyond the tolerance, so the test above
/// does see the biases.
#[test]
fn the_fixture_sees_the_qkv_bias() {
    let io = io();
    let dir = tempfile::tempdir().unwrap();
    let mut sd =
        candle_core::safetensors::load(fixtures().join("none.safetensors"), &Device::Cpu).unwrap();
    for (k, v) in sd.iter_mut() {
        if k.ends_with("attn.qkv.bias") {
            *v = v.zeros_like().unwrap();
        }
    }
    let path = dir.path().join("none.safetensors");
    candle_core::safetensors::save(&sd, &path).unwrap();
    let m = meta();
    let cfg = ImageVitConfig {
        patch: size(&m, "patch"),
        embed_dim: size(&m, "embed_dim"),
        depth: size(&m, "depth"),
        heads: size(&m, "heads"),
        drop_path: 0.0,
        ..Default::default()
    };
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let model = ImageVit::new(&cfg, size(&m, "image"), size(&m, "classes"), None, vb).unwrap();
    load_into(&path, &DEIT, &sorted_vars(&varmap).unwrap()).unwrap();
    let image = io["image"]
        .permute((0, 2, 3, 1))
        .unwrap()
        .contiguous()
        .unwrap();
    let logits = model.forward(&image, None).unwrap();
    assert!(crate::test_util::max_abs_diff(&logits, &io["none.logits"]) > 100.0 * TOL);
}

/// A checkpoint whose LLaMA final norm was changed is refused: lm4ve's is all ones.
#[test]
fn a_trained_final_llama_norm_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut sd =
        candle_core::safetensors::load(fixtures().join("frozen.safetensors"), &Device::Cpu)
            .unwrap();
    let w = sd["llama.norm.weight"].clone();
    sd.insert("llama.norm.weight".into(), (w * 2.0).unwrap());
    let path = dir.path().join("frozen.safetensors");
    candle_core::safetensors::save(&sd, &path).unwrap();
    let err = llama_layers(&path, &DEIT).unwrap_err().to_string();
    assert!(
        err.contains("llama.norm.weight") && err.contains("all ones"),
        "{err}"
    );
}
