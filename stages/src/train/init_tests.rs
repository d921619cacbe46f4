//! `init` against the official model code: the fixtures under `tests/fixtures/encoders/` were
//! written by `scripts/fixtures/encoder_ckpts.py` from LM4VisualEncoding's own Point-BERT and
//! VideoMAE classes (small sizes, seeded random weights), with the PyTorch outputs on one
//! input (eval mode). Here lm4ve loads the same checkpoints through `init` and must compute
//! the same features; plus the report, and the errors a bad file gives.

use super::assemble::sorted_vars;
use super::init::{check_readable, load_into, InitReport, POINT_BERT, VIDEOMAE};
use super::models::layers::init_vars;
use super::models::pointbert::{PointBert, PointBertConfig};
use super::models::video_vit::{VideoVit, VideoVitConfig};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/encoders")
        .join(name)
}

/// The expected tensors and the metadata of a `*.expected.safetensors`.
fn expected(name: &str) -> (HashMap<String, Tensor>, HashMap<String, String>) {
    let path = fixture(name);
    let bytes = std::fs::read(&path).unwrap();
    let (_, st) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let meta = st.metadata().clone().unwrap_or_default();
    let t = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    (t, meta)
}

fn json_list(meta: &HashMap<String, String>, key: &str) -> Vec<String> {
    serde_json::from_str(&meta[key]).unwrap()
}

/// Relative tolerance against PyTorch. Measured: ~3e-7 (f32 on both sides, same weights);
/// a LayerNorm eps of 1e-5 instead of VideoMAE's 1e-6 alone gives ~2e-5, so this catches it.
const TOL: f32 = 1e-5;

/// (max |a − b|, that over max |b|).
fn diff(a: &Tensor, b: &Tensor) -> (f32, f32) {
    let d = crate::test_util::max_abs_diff(a, b);
    let m = b
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    (d, d / m.max(1e-12))
}

fn pointbert_cfg(meta: &HashMap<String, String>) -> PointBertConfig {
    let c: serde_json::Value = serde_json::from_str(&meta["config"]).unwrap();
    let n = |k: &str| c[k].as_u64().unwrap() as usize;
    PointBertConfig {
        trans_dim: n("trans_dim"),
        depth: n("depth"),
        heads: n("num_heads"),
        encoder_dims: n("encoder_dims"),
        ..Default::default()
    }
}

fn pointbert(cfg: &PointBertConfig) -> (VarMap, PointBert) {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let model = PointBert::new(cfg, 15, None, vb).unwrap();
    init_vars(&varmap, 0).unwrap();
    (varmap, model)
}

fn load(path: &Path, fam: &super::init::Family, varmap: &VarMap) -> InitReport {
    load_into(path, fam, &sorted_vars(varmap).unwrap()).unwrap()
}

#[test]
fn point_bert_pretraining_checkpoint_gives_pytorchs_features() {
    let (want, meta) = expected("pointbert_pretrain.expected.safetensors");
    let cfg = pointbert_cfg(&meta);
    let (varmap, model) = pointbert(&cfg);
    let r = load(&fixture("pointbert_pretrain.pth"), &POINT_BERT, &varmap);
    let got = model
        .features(&want["center"], &want["neighborhood"], None)
        .unwrap();
    let (d, rel) = diff(&got, &want["features"]);
    eprintln!("Point-BERT features: max abs diff {d:.3e} (relative {rel:.3e})");
    assert!(
        rel < TOL,
        "features differ from PyTorch's by {d} ({rel} relative)"
    );

    assert_eq!(r.state_dict.as_deref(), Some("base_model"));
    // Missing: what PyTorch's load_state_dict(strict=False) said, in lm4ve's names.
    let torch_missing: Vec<String> = json_list(&meta, "torch_missing")
        .iter()
        .map(|k| {
            k.replace("cls_head_finetune.0.", "cls_head.0.")
                .replace("cls_head_finetune.3.", "cls_head.4.")
        })
        .collect();
    let mut missing = r.missing.clone();
    missing.sort();
    let mut tm = torch_missing;
    tm.sort();
    assert_eq!(missing, tm);
    // Everything else of the model came from the file: BN statistics included.
    assert_eq!(r.loaded.len() + r.missing.len(), varmap.all_vars().len());
    assert_eq!(
        r.loaded["encoder.first_conv.1.running_var"],
        "module.transformer_q.encoder.first_conv.1.running_var"
    );
    assert_eq!(
        r.loaded["blocks.1.attn.qkv.weight"],
        "module.transformer_q.blocks.blocks.1.attn.qkv.weight"
    );
    // PyTorch's unexpected keys are ignored here too, and so is what the reference's loader
    // drops before load_state_dict (momentum encoder, dVAE, queue, contrastive head).
    let ignored: Vec<&String> = r.ignored.values().flatten().collect();
    for k in json_list(&meta, "torch_unexpected") {
        let full = format!("module.transformer_q.{k}");
        assert!(ignored.contains(&&full), "{full} not reported: {ignored:?}");
    }
    for k in [
        "module.transformer_k.cls_token",
        "module.dvae.codebook",
        "module.queue",
        "module.transformer_q.cls_head.0.weight",
        "module.transformer_q.encoder.first_conv.1.num_batches_tracked",
    ] {
        assert!(ignored.contains(&&k.to_string()), "{k} not reported");
    }
    assert!(r.summary().contains("cls_head.0.weight"), "{}", r.summary());
}

fn video_cfg(meta: &HashMap<String, String>) -> (VideoVitConfig, usize, usize) {
    let c: serde_json::Value = serde_json::from_str(&meta["config"]).unwrap();
    let n = |k: &str| c[k].as_u64().unwrap() as usize;
    let (img, p, t) = (n("img"), n("patch"), n("tubelet"));
    let tokens = n("frames") / t * (img / p) * (img / p);
    (
        VideoVitConfig {
            embed_dim: n("embed_dim"),
            depth: n("depth"),
            heads: n("heads"),
            drop_path: 0.1,
            ..Default::default()
        },
        tokens,
        t * p * p * 3,
    )
}

fn video(meta: &HashMap<String, String>) -> (VarMap, VideoVit) {
    let (cfg, tokens, token_dim) = video_cfg(meta);
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let model = VideoVit::new(&cfg, tokens, token_dim, 5, None, vb).unwrap();
    init_vars(&varmap, 0).unwrap();
    (varmap, model)
}

#[test]
fn videomae_finetuned_checkpoint_gives_pytorchs_logits() {
    let (want, meta) = expected("videomae_finetuned.expected.safetensors");
    let (varmap, model) = video(&meta);
    let r = load(&fixture("videomae_finetuned.pth"), &VIDEOMAE, &varmap);
    let x = &want["tubelets"];
    let (d, rel) = diff(&model.features(x, None).unwrap(), &want["features"]);
    eprintln!("VideoMAE (fine-tuned) features: max abs diff {d:.3e} (relative {rel:.3e})");
    assert!(rel < TOL, "features differ by {d}");
    let (d, rel) = diff(&model.forward(x, None).unwrap(), &want["logits"]);
    eprintln!("VideoMAE (fine-tuned) logits: max abs diff {d:.3e} (relative {rel:.3e})");
    assert!(rel < TOL, "logits differ by {d}");
    assert_eq!(r.state_dict.as_deref(), Some("module"));
    assert!(r.missing.is_empty(), "{:?}", r.missing);
    assert!(r.ignored.is_empty(), "{:?}", r.ignored);
    assert_eq!(
        r.loaded["patch_embed.proj.weight"],
        "patch_embed.proj.weight"
    );
    assert_eq!(r.loaded["blocks.0.attn.q_bias"], "blocks.0.attn.q_bias");
    // Two layer scales per block, folded.
    assert_eq!(r.notes.len(), 4, "{:?}", r.notes);
    assert!(r.notes.iter().any(|n| n.contains("blocks.1.gamma_2")));
}

#[test]
fn videomae_pretraining_safetensors_gives_pytorchs_features() {
    let (want, meta) = expected("videomae_pretrain.expected.safetensors");
    let (varmap, model) = video(&meta);
    let r = load(
        &fixture("videomae_pretrain.safetensors"),
        &VIDEOMAE,
        &varmap,
    );
    let (d, rel) = diff(
        &model.features(&want["tubelets"], None).unwrap(),
        &want["features"],
    );
    eprintln!("VideoMAE (pretraining, safetensors f16) features: max abs diff {d:.3e} (relative {rel:.3e})");
    assert!(rel < TOL, "features differ by {d}");
    assert_eq!(r.state_dict, None);
    // PyTorch's missing keys (fc_norm, and the head it was not given) are ours too.
    let mut tm = json_list(&meta, "torch_missing");
    tm.sort();
    assert_eq!(r.missing, tm);
    let ignored = |k: &str| r.ignored.values().flatten().any(|i| i.starts_with(k));
    for k in json_list(&meta, "torch_unexpected") {
        assert!(ignored(&format!("encoder.{k}")), "{k}: {:?}", r.ignored);
    }
    for k in [
        "encoder.head.weight [7, 32]",
        "mask_token",
        "decoder.norm.weight",
        "encoder_to_decoder.weight",
    ] {
        assert!(ignored(k), "{k}: {:?}", r.ignored);
    }
}

#[test]
fn shape_mismatch_names_the_key_and_both_shapes() {
    let (_, meta) = expected("pointbert_pretrain.expected.safetensors");
    let cfg = PointBertConfig {
        trans_dim: 48,
        ..pointbert_cfg(&meta)
    };
    let (varmap, _) = pointbert(&cfg);
    let e = load_into(
        &fixture("pointbert_pretrain.pth"),
        &POINT_BERT,
        &sorted_vars(&varmap).unwrap(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("pointbert_pretrain.pth"), "{e}");
    // The first mismatch in key order: its checkpoint key, our name, both shapes.
    assert!(
        e.contains("`module.transformer_q.blocks.blocks.0.attn.proj.bias`")
            && e.contains("lm4ve `blocks.0.attn.proj.bias`")
            && e.contains("has shape [32], the model's is [48]"),
        "{e}"
    );
    // The tubelet Conv3d is named with its Linear shape too.
    let (_, vmeta) = expected("videomae_finetuned.expected.safetensors");
    let (cfg, tokens, _) = video_cfg(&vmeta);
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    VideoVit::new(&cfg, tokens, 48, 5, None, vb).unwrap();
    let e = load_into(
        &fixture("videomae_finetuned.pth"),
        &VIDEOMAE,
        &sorted_vars(&varmap).unwrap(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("patch_embed.proj.weight")
            && e.contains("[32, 3, 2, 4, 4]")
            && e.contains("[32, 96]")
            && e.contains("[32, 48]"),
        "{e}"
    );
}

#[test]
fn files_that_are_not_checkpoints_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (_, meta) = expected("pointbert_pretrain.expected.safetensors");
    let (varmap, _) = pointbert(&pointbert_cfg(&meta));
    let vars = sorted_vars(&varmap).unwrap();
    let real = std::fs::read(fixture("pointbert_pretrain.pth")).unwrap();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "notes.pth",
            b"this is a text file\n".to_vec(),
            "neither a PyTorch checkpoint",
        ),
        ("empty.pth", Vec::new(), "neither a PyTorch checkpoint"),
        (
            "legacy.pth",
            vec![0x80, 0x02, 0x8a, 0x0a],
            "legacy (pre-1.6",
        ),
        ("cut.pth", real[..real.len() / 2].to_vec(), "corrupt"),
        (
            "bad.safetensors",
            [&64u64.to_le_bytes()[..], b"{\"a\":1}"].concat(),
            "corrupt",
        ),
    ];
    for (name, bytes, needle) in cases {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        let e = load_into(&p, &POINT_BERT, &vars).unwrap_err().to_string();
        assert!(e.contains(name) && e.contains(needle), "{name}: {e}");
        let e = check_readable(&p, &POINT_BERT).unwrap_err().to_string();
        assert!(e.contains(name), "{name}: {e}");
    }
    // A pickle that would crash candle's reader (a tensor rebuilt from no arguments).
    let p = fixture("malformed_pickle.pth");
    let e = load_into(&p, &POINT_BERT, &vars).unwrap_err().to_string();
    assert!(
        e.contains("malformed_pickle.pth") && e.contains("malformed"),
        "{e}"
    );
    assert!(check_readable(&p, &POINT_BERT).is_err());
    // A file cut right after the zip magic.
    let p = dir.path().join("magic-only.pth");
    std::fs::write(&p, &real[..4]).unwrap();
    let e = load_into(&p, &POINT_BERT, &vars).unwrap_err().to_string();
    assert!(e.contains("magic-only.pth") && e.contains("corrupt"), "{e}");
    // A checkpoint whose state dict sits under a key this family does not look in (a
    // VideoMAE file, `module`, given to a PointBERT stage).
    let e = check_readable(&fixture("videomae_finetuned.pth"), &POINT_BERT)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("videomae_finetuned.pth") && e.contains("base_model"),
        "{e}"
    );
    // The real file passes the build-time check.
    check_readable(&fixture("pointbert_pretrain.pth"), &POINT_BERT).unwrap();
    check_readable(&fixture("videomae_pretrain.safetensors"), &VIDEOMAE).unwrap();
}

/// lm4ve's own `model.safetensors` (what a train stage writes) loads back by identity.
#[test]
fn lm4ves_own_weights_load_back_unchanged() {
    let (want, meta) = expected("pointbert_pretrain.expected.safetensors");
    let cfg = pointbert_cfg(&meta);
    let (varmap, model) = pointbert(&cfg);
    load(&fixture("pointbert_pretrain.pth"), &POINT_BERT, &varmap);
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("model.safetensors");
    let vars: HashMap<String, Tensor> = sorted_vars(&varmap)
        .unwrap()
        .into_iter()
        .map(|(n, v)| (n, v.as_tensor().clone()))
        .collect();
    candle_core::safetensors::save(&vars, &p).unwrap();
    let (varmap2, model2) = pointbert(&cfg);
    let r = load(&p, &POINT_BERT, &varmap2);
    assert!(r.missing.is_empty() && r.ignored.is_empty(), "{r:?}");
    let a = model
        .forward(&want["center"], &want["neighborhood"], None)
        .unwrap();
    let b = model2
        .forward(&want["center"], &want["neighborhood"], None)
        .unwrap();
    assert_eq!(diff(&a, &b).0, 0.0);
}

/// `init` in a train stage's params: a hashed input (role `init`), not a key param; a
/// missing file blocks only this stage (a missing input); a corrupt file or a task without a
/// pretrained family is a config error naming `init`.
#[test]
fn init_param_is_a_hashed_input_and_checked_at_build() {
    use lm4ve_pipeline::PipelineConfig;
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture("pointbert_pretrain.pth"),
        dir.path().join("Point-BERT.pth"),
    )
    .unwrap();
    std::fs::write(dir.path().join("broken.pth"), b"oops").unwrap();
    let build = |data_kind: &str, init: &str| {
        let text = format!(
            "[stages.d]\nkind = \"{data_kind}\"\n[stages.d.params]\n\n[stages.t]\nkind = \"train\"\n[stages.t.params]\ndata = \"d\"\nmode = \"none\"\n{init}\n"
        );
        let c = PipelineConfig::parse(&dir.path().join("p.toml"), &text).unwrap();
        crate::train::stage::build_train(&c, &c.stages["t"])
    };
    let plain = build("pc.tokens", "").unwrap();
    let with = build("pc.tokens", "init = \"Point-BERT.pth\"").unwrap();
    assert!(plain.inputs().is_empty());
    let inputs = with.inputs();
    assert_eq!(inputs.len(), 1);
    assert_eq!(inputs[0].role, "init");
    assert_eq!(inputs[0].path, dir.path().join("Point-BERT.pth"));
    // The key params are those of the same stage without init: the file's content hash is
    // what enters the key, and configs without `init` keep their keys.
    assert_eq!(plain.key_params(), with.key_params());
    assert!(!with.key_params().to_string().contains("Point-BERT"));
    // Missing: a missing input, naming the path and the key.
    let e = build("pc.tokens", "init = \"../models/Point-BERT.pth\"")
        .err()
        .unwrap();
    assert!(e
        .missing_input
        .as_deref()
        .unwrap()
        .ends_with("Point-BERT.pth"));
    let s = e.to_string();
    assert!(s.contains("init") && s.contains("Point-BERT"), "{s}");
    // Corrupt: a config error naming the file.
    let e = build("pc.tokens", "init = \"broken.pth\"").err().unwrap();
    assert!(e.missing_input.is_none());
    assert!(e.to_string().contains("broken.pth"), "{e}");
    // VectorNet has no pretrained checkpoint format.
    let e = build("av.tokens", "init = \"Point-BERT.pth\"")
        .err()
        .unwrap();
    assert!(e.to_string().contains("init"), "{e}");
}
