//! Each encoder's initial weights against its reference's `__init__` (the rules as the code
//! states them, written out here independently of `models::init_rules`): per tensor, the
//! distribution's bound and standard deviation, or its constant. No PyTorch fixture: the
//! rules are PyTorch's documented defaults (`kaiming_uniform_(a=√5)`: U(±1/√fan_in)) and
//! timm's `trunc_normal_` (absolute bounds ±2), read from the reference code.

use super::models::init_rules::{point_bert, timm_vit, videomae, Rule, VarInfo};
use super::models::video_vit::VideoVitConfig;
use super::task::image::Image;
use super::task::pointcloud::{PcShape, PointCloud};
use super::task::video::{Video, VideoShape, VIDEOMAE_INIT_SCALE};
use super::task::Task;
use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};

/// What the reference leaves in a tensor.
#[derive(Debug)]
enum Want {
    Const(f32),
    /// U(±b).
    Uniform(f32),
    /// N(0, std²) (timm's ±2 absolute bound never bites at these stds).
    Normal(f32),
}

fn check(name: &str, v: &[f32], want: &Want) {
    let n = v.len() as f64;
    let mean = v.iter().map(|x| *x as f64).sum::<f64>() / n;
    let std = (v.iter().map(|x| (*x as f64 - mean).powi(2)).sum::<f64>() / n).sqrt();
    let max = v.iter().fold(0f64, |m, x| m.max((*x as f64).abs()));
    match *want {
        Want::Const(c) => assert!(v.iter().all(|x| *x == c), "{name}: not all {c}"),
        Want::Uniform(b) => {
            let b = b as f64;
            assert!(max <= b, "{name}: {max} outside ±{b}");
            if n >= 2000.0 {
                let s = b / 3f64.sqrt();
                assert!(
                    (std - s).abs() < 0.06 * s,
                    "{name}: std {std}, U(±{b}) has {s}"
                );
                assert!(max > 0.9 * b, "{name}: max {max} of U(±{b})");
            }
        }
        Want::Normal(s) => {
            let s = s as f64;
            if n >= 2000.0 {
                assert!((std - s).abs() < 0.06 * s, "{name}: std {std}, want {s}");
                // Untruncated at 2σ: a plain normal of this size reaches past 3σ.
                assert!(max > 3.0 * s, "{name}: max {max} looks truncated (std {s})");
            }
            assert!(
                mean.abs() < 5.0 * s / n.sqrt() + 1e-12,
                "{name}: mean {mean}"
            );
        }
    }
}

fn values(varmap: &VarMap) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let data = varmap.data().lock().unwrap();
    let mut out: Vec<_> = data
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.dims().to_vec(),
                v.as_tensor()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap(),
            )
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn fan_in_bound(fan_in: usize) -> f32 {
    1.0 / (fan_in as f32).sqrt()
}

/// LM4VisualEncoding's PointTransformer: no init call, so PyTorch's defaults everywhere
/// (Linear and Conv1d weights and biases U(±1/√fan_in), BN and LN 1/0, BN stats 0/1),
/// `cls_token` zeros, `cls_pos` randn.
#[test]
fn point_bert_starts_as_pytorchs_defaults() {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let cfg = super::models::pointbert::PointBertConfig {
        depth: 2,
        ..Default::default()
    };
    let shape = PcShape {
        groups: 64,
        group_size: 32,
    };
    PointCloud.build_model(&cfg, shape, 15, None, vb).unwrap();
    PointCloud.init_weights(&varmap, 0).unwrap();
    let all = values(&varmap);
    let dims_of = |n: &str| {
        all.iter()
            .find(|(k, _, _)| k == n)
            .map(|(_, d, _)| d.clone())
    };
    let mut seen = 0;
    for (name, dims, v) in &all {
        let leaf = name.rsplit('.').next().unwrap();
        let stem = name.rsplit_once('.').map_or("", |s| s.0);
        let want = match (name.as_str(), leaf, dims.len()) {
            ("cls_token", _, _) => Want::Const(0.0),
            ("cls_pos", _, _) => Want::Normal(1.0),
            (_, "running_mean", _) => Want::Const(0.0),
            (_, "running_var", _) => Want::Const(1.0),
            (_, "weight", 2) => Want::Uniform(fan_in_bound(dims[1])),
            (_, "weight", 1) => Want::Const(1.0),
            (_, "bias", _) => match dims_of(&format!("{stem}.weight")) {
                Some(w) if w.len() == 2 => Want::Uniform(fan_in_bound(w[1])),
                _ => Want::Const(0.0),
            },
            other => panic!("{name}: no reference rule for {other:?}"),
        };
        check(name, v, &want);
        seen += 1;
    }
    assert!(seen > 40);
    // The head is the reference's nn.Linear(768, 256) and (256, classes): PyTorch's default.
    let head = all
        .iter()
        .find(|(k, _, _)| k == "cls_head.0.weight")
        .unwrap();
    assert_eq!(head.1, vec![256, 768]);
    check(
        "cls_head.0.weight",
        &head.2,
        &Want::Uniform(1.0 / 768f32.sqrt()),
    );
}

/// VideoMAE's ViTLLaMA: Linear weights timm trunc-normal 0.02, biases 0, LN 1/0, q/v biases
/// 0; the Conv3d tubelet embedding PyTorch's default (fan_in 3·2·16·16 = 1536); the head
/// trunc-normal 0.02 × init_scale 0.001 with bias 0.
#[test]
fn videomae_vit_starts_as_its_init_weights_and_init_scale() {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let cfg = VideoVitConfig {
        depth: 2,
        ..Default::default()
    };
    let shape = VideoShape {
        tokens: 16,
        token_dim: 2 * 16 * 16 * 3,
    };
    Video.build_model(&cfg, shape, 174, None, vb).unwrap();
    Video.init_weights(&varmap, 0).unwrap();
    assert_eq!(VIDEOMAE_INIT_SCALE, 0.001);
    for (name, dims, v) in values(&varmap) {
        let leaf = name.rsplit('.').next().unwrap();
        let want = match (name.as_str(), leaf, dims.len()) {
            ("patch_embed.proj.weight", _, _) => Want::Uniform(fan_in_bound(1536)),
            ("patch_embed.proj.bias", _, _) => Want::Uniform(fan_in_bound(1536)),
            ("head.weight", _, _) => Want::Normal(0.02 * 0.001),
            (_, "bias" | "q_bias" | "v_bias", _) => Want::Const(0.0),
            (_, "weight", 2) => Want::Normal(0.02),
            (_, "weight", 1) => Want::Const(1.0),
            other => panic!("{name}: no reference rule for {other:?}"),
        };
        check(&name, &v, &want);
    }
}

/// The image reference's timm init: Linear weights trunc-normal 0.02 with zero biases,
/// `pos_embed` trunc-normal 0.02, `cls_token` normal 1e-6, the Conv2d patch embedding
/// PyTorch's default (fan_in 3·16·16 = 768), LayerNorms 1/0.
#[test]
fn image_vit_starts_as_timms_init_weights() {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let cfg = super::models::image_vit::ImageVitConfig {
        depth: 2,
        ..Default::default()
    };
    Image.build_model(&cfg, 224, 1000, None, vb).unwrap();
    Image.init_weights(&varmap, 0).unwrap();
    for (name, dims, v) in values(&varmap) {
        let leaf = name.rsplit('.').next().unwrap();
        let want = match (name.as_str(), leaf, dims.len()) {
            ("patch_embed.proj.weight" | "patch_embed.proj.bias", _, _) => {
                Want::Uniform(fan_in_bound(768))
            }
            ("pos_embed", _, _) => Want::Normal(0.02),
            ("cls_token", _, _) => Want::Normal(1e-6),
            (_, "bias" | "q_bias" | "v_bias", _) => Want::Const(0.0),
            (_, "weight", 2) => Want::Normal(0.02),
            (_, "weight", 1) => Want::Const(1.0),
            other => panic!("{name}: no reference rule for {other:?}"),
        };
        check(&name, &v, &want);
    }
}

/// The adapters: Point-BERT and VideoMAE build them after any init (PyTorch's default,
/// U(±1/√fan_in), no bias); the image ViT builds them before timm's init (trunc-normal 0.02).
#[test]
fn adapters_follow_where_each_reference_builds_them() {
    let up = VarInfo {
        name: "llm_adapter_up.weight",
        leaf: "weight",
        dims: &[4096, 384],
        weight_dims: None,
    };
    let down = VarInfo {
        name: "llm_adapter_down.weight",
        leaf: "weight",
        dims: &[384, 4096],
        weight_dims: None,
    };
    let u = |fan_in: f32| Rule::Uniform {
        lo: -1.0 / fan_in.sqrt(),
        hi: 1.0 / fan_in.sqrt(),
    };
    assert_eq!(point_bert(&up), u(384.0));
    assert_eq!(point_bert(&down), u(4096.0));
    let v = videomae(VIDEOMAE_INIT_SCALE);
    assert_eq!(v(&up), u(384.0));
    assert_eq!(v(&down), u(4096.0));
    let t = Rule::Normal {
        std: 0.02,
        bound: 2.0,
    };
    assert_eq!(timm_vit(&up), t);
    assert_eq!(timm_vit(&down), t);
}
