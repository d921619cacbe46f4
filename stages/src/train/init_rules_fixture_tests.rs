//! Each encoder's init rule against the official code's (issue 25): the fixture
//! `tests/fixtures/init_rules.json` was written by `scripts/fixtures/init_rules.py` from
//! LM4VisualEncoding's own model classes (the image and video `ViTLLaMA`, Point-BERT's
//! `PointTransformer` with its adapters), constructed at small sizes over three seeds: per
//! tensor its shape, whether it is all zeros / all ones, and per seed mean, std, min, max and
//! `tail2` (the fraction beyond 2 std: 4.55 % for a normal, 0 for a uniform). Here lm4ve's
//! models of the same sizes are built and initialised by their tasks' `init_weights` (three
//! seeds), the names mapped onto the reference's, and every tensor compared: the same
//! element count; zeros and ones exactly; otherwise the mean, the std, the distribution
//! family (`tail2`) and the bounds, each within a tolerance set by the tensor's size (see
//! [`compare`]). Every lm4ve variable must meet a reference tensor and every reference
//! tensor an lm4ve variable (or a stated reason why lm4ve has none).

use super::assemble::{core_of, LayerWeights};
use super::block::{BlockCore, BlockMode};
use super::models::pointbert::PointBertConfig;
use super::models::video_vit::VideoVitConfig;
use super::task::image::Image;
use super::task::pointcloud::{PcShape, PointCloud};
use super::task::video::{Video, VideoShape, VIDEOMAE_INIT_SCALE};
use super::task::Task;
use crate::llm::block_format::{Arch, BlockConfig};
use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use serde_json::Value;
use std::collections::BTreeMap;

const SEEDS: u64 = 3;

fn fixture() -> Value {
    let p =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/init_rules.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn size(v: &Value, k: &str) -> usize {
    v[k].as_u64().unwrap_or_else(|| panic!("size {k}")) as usize
}

/// A frozen LLaMA block of the fixture's width (4096: the references' adapters are built for
/// LLaMA-7B), shapes only: the adapters around it are what is initialised.
fn block(fx: &Value) -> Option<(BlockCore, BlockMode)> {
    let l = &fx["llama"];
    let (d, h) = (size(l, "dim"), size(l, "n_heads"));
    let cfg = BlockConfig {
        arch: Arch::Llama,
        hidden_size: d,
        num_heads: h,
        num_kv_heads: h,
        head_dim: d / h,
        intermediate_size: 11008,
        norm_eps: 1e-6,
        post_norm: false,
    };
    let core = core_of(
        BlockMode::Frozen,
        &cfg,
        1,
        LayerWeights::ShapeOnly,
        None,
        0,
        &Device::Cpu,
    )
    .unwrap();
    Some((core, BlockMode::Frozen))
}

/// lm4ve's variables after `init(varmap, seed)`, for seeds 0..SEEDS: name → values per seed.
fn draws(varmap: &VarMap, init: impl Fn(&VarMap, u64)) -> BTreeMap<String, Vec<Vec<f32>>> {
    let mut out: BTreeMap<String, Vec<Vec<f32>>> = BTreeMap::new();
    for seed in 0..SEEDS {
        init(varmap, seed);
        for (name, var) in varmap.data().lock().unwrap().iter() {
            let v = var
                .as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            out.entry(name.clone()).or_default().push(v);
        }
    }
    out
}

struct Stats {
    mean: f64,
    std: f64,
    absmax: f64,
    tail2: f64,
}

fn stats(v: &[f32]) -> Stats {
    let n = v.len() as f64;
    let mean = v.iter().map(|x| *x as f64).sum::<f64>() / n;
    let std = (v.iter().map(|x| (*x as f64 - mean).powi(2)).sum::<f64>() / n).sqrt();
    let absmax = v.iter().fold(0f64, |m, x| m.max((*x as f64).abs()));
    let tail2 = if std > 0.0 {
        v.iter()
            .filter(|x| (**x as f64 - mean).abs() > 2.0 * std)
            .count() as f64
            / n
    } else {
        0.0
    };
    Stats {
        mean,
        std,
        absmax,
        tail2,
    }
}

/// One lm4ve tensor (all seeds) against one reference entry. Tolerances, n = element count:
/// mean within 6 σ/√n; std within max(5 %, 5/√(2n)) relative (n ≥ 64); `tail2` within
/// 5·√(p(1−p)/n) + 0.5 % (p ≥ 1 %), which separates a normal (4.55 %) from a uniform or a
/// truncated normal (0) for n ≳ 1000; bounds: for a bounded reference (`tail2` 0 on every
/// seed) lm4ve's |max| lies in [0.95, 1 + 8/(seeds·n)] × the reference's over its seeds
/// (n ≥ 200; above only, for smaller n), for a normal one in [0.7, 1.4] × (n ≥ 200).
fn compare(what: &str, ours: &[Vec<f32>], re: &Value) -> Result<(), String> {
    let shape: Vec<usize> = re["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_u64().unwrap() as usize)
        .collect();
    let n: usize = shape.iter().product();
    if ours[0].len() != n {
        return Err(format!(
            "{what}: {} values, the reference's {shape:?} has {n}",
            ours[0].len()
        ));
    }
    let flag = |k: &str| re[k].as_bool().unwrap();
    for (seed, v) in ours.iter().enumerate() {
        if flag("zeros") || flag("ones") {
            let c = if flag("zeros") { 0.0 } else { 1.0 };
            if v.iter().any(|x| *x != c) {
                return Err(format!("{what} (seed {seed}): the reference's is all {c}"));
            }
            continue;
        }
        let seeds = re["seeds"].as_array().unwrap();
        let avg = |k: &str| {
            seeds.iter().map(|s| s[k].as_f64().unwrap()).sum::<f64>() / seeds.len() as f64
        };
        let (r_mean, r_std, r_tail) = (avg("mean"), avg("std"), avg("tail2"));
        let r_absmax = seeds
            .iter()
            .map(|s| {
                s["min"]
                    .as_f64()
                    .unwrap()
                    .abs()
                    .max(s["max"].as_f64().unwrap().abs())
            })
            .fold(0f64, f64::max);
        let bounded = seeds.iter().all(|s| s["tail2"].as_f64().unwrap() == 0.0);
        let s = stats(v);
        let nf = n as f64;
        let e = |m: String| Err(format!("{what} (seed {seed}): {m}"));
        if s.std == 0.0 {
            return e(format!(
                "constant {}, the reference's has std {r_std:.3e}",
                v[0]
            ));
        }
        if (s.mean - r_mean).abs() > 6.0 * r_std / nf.sqrt() {
            return e(format!(
                "mean {:.3e}, the reference's {r_mean:.3e} (std {r_std:.3e})",
                s.mean
            ));
        }
        let std_tol = (5.0 / (2.0 * nf).sqrt()).max(0.05);
        if n >= 64 && (s.std / r_std - 1.0).abs() > std_tol {
            return e(format!(
                "std {:.4e}, the reference's {r_std:.4e} (tolerance {:.1}%)",
                s.std,
                100.0 * std_tol
            ));
        }
        let p = r_tail.max(0.01);
        let tail_tol = 5.0 * (p * (1.0 - p) / nf).sqrt() + 0.005;
        if (s.tail2 - r_tail).abs() > tail_tol {
            return e(format!(
                "{:.2}% of values beyond 2 std, the reference {:.2}% (another distribution family)",
                100.0 * s.tail2,
                100.0 * r_tail
            ));
        }
        let ratio = s.absmax / r_absmax;
        let (lo, hi) = if bounded {
            (0.95, 1.0 + 8.0 / (seeds.len() as f64 * nf))
        } else {
            (0.7, 1.4)
        };
        if ratio > hi || (n >= 200 && ratio < lo) {
            return e(format!(
                "|max| {:.4e}, the reference's {r_absmax:.4e} ({} family)",
                s.absmax,
                if bounded { "bounded" } else { "normal" }
            ));
        }
    }
    Ok(())
}

/// Maps each reference tensor onto lm4ve's variables and compares them all; returns how many
/// were compared. `rename`: reference name → lm4ve names (a fused tensor may give several,
/// each compared against the reference's statistics, which are then required constant), or
/// an empty list with the reason lm4ve has no such variable.
fn check_model(
    model: &str,
    ours: &BTreeMap<String, Vec<Vec<f32>>>,
    rename: impl Fn(&str) -> Result<Vec<String>, &'static str>,
) -> usize {
    let fx = fixture();
    let tensors = fx["models"][model]["tensors"].as_object().unwrap();
    let mut met = std::collections::BTreeSet::new();
    let mut errors = Vec::new();
    let mut compared = 0;
    for (name, re) in tensors {
        let targets = match rename(name) {
            Ok(t) => t,
            Err(why) => {
                eprintln!("{model}: reference `{name}` not an lm4ve variable: {why}");
                continue;
            }
        };
        for t in &targets {
            let Some(v) = ours.get(t) else {
                errors.push(format!(
                    "{model}: reference `{name}` → lm4ve `{t}`, which does not exist"
                ));
                continue;
            };
            met.insert(t.clone());
            let re = if targets.len() > 1 {
                // A fused reference tensor split in lm4ve (timm's qkv bias: three pieces,
                // two kept): only constants can be compared piecewise, each piece a whole
                // fraction of the reference's.
                let mut r = re.clone();
                let total: u64 = r["shape"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d.as_u64().unwrap())
                    .product();
                let piece = v[0].len() as u64;
                assert!(
                    total.is_multiple_of(piece)
                        && (re["zeros"].as_bool().unwrap() || re["ones"].as_bool().unwrap()),
                    "{name}: a split tensor must be constant and split evenly"
                );
                r["shape"] = serde_json::json!([piece]);
                r
            } else {
                re.clone()
            };
            match compare(&format!("{model} `{t}` (reference `{name}`)"), v, &re) {
                Ok(()) => compared += 1,
                Err(e) => errors.push(e),
            }
        }
    }
    for name in ours.keys() {
        if !met.contains(name) {
            errors.push(format!("{model}: lm4ve `{name}` has no reference tensor"));
        }
    }
    assert!(errors.is_empty(), "{}", errors.join("\n"));
    compared
}

const FINAL_NORM: &str = "the LLaMA block's all-ones final RMSNorm: lm4ve's is a constant";

fn adapters(name: &str) -> Option<Result<Vec<String>, &'static str>> {
    match name {
        "llama_dim_mapper1.weight" => Some(Ok(vec!["llm_adapter_up.weight".into()])),
        "llama_dim_mapper2.weight" => Some(Ok(vec!["llm_adapter_down.weight".into()])),
        "llama.norm.weight" => Some(Err(FINAL_NORM)),
        _ => None,
    }
}

/// timm's fused qkv bias → lm4ve's q and v biases (k's is dropped: the softmax cancels it).
fn qkv_bias(name: &str) -> Option<Vec<String>> {
    let block = name.strip_suffix(".attn.qkv.bias")?;
    Some(vec![
        format!("{block}.attn.q_bias"),
        format!("{block}.attn.v_bias"),
    ])
}

#[test]
fn image_vit_init_matches_the_official_vit_llama() {
    let fx = fixture();
    let s = &fx["models"]["image"]["sizes"];
    let cfg = super::models::image_vit::ImageVitConfig {
        patch: size(s, "patch"),
        embed_dim: size(s, "embed_dim"),
        depth: size(s, "depth"),
        heads: size(s, "heads"),
        ..Default::default()
    };
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    Image
        .build_model(&cfg, size(s, "image"), size(s, "classes"), block(&fx), vb)
        .unwrap();
    let ours = draws(&varmap, |v, seed| Image.init_weights(v, seed).unwrap());
    let n = check_model("image", &ours, |name| {
        if let Some(r) = adapters(name) {
            return r;
        }
        Ok(qkv_bias(name).unwrap_or_else(|| vec![name.to_string()]))
    });
    assert!(n >= 35, "{n}");
}

#[test]
fn video_vit_init_matches_the_official_vit_llama() {
    let fx = fixture();
    let s = &fx["models"]["video"]["sizes"];
    assert_eq!(
        s["init_scale"].as_f64().unwrap() as f32,
        VIDEOMAE_INIT_SCALE
    );
    let cfg = VideoVitConfig {
        embed_dim: size(s, "embed_dim"),
        depth: size(s, "depth"),
        heads: size(s, "heads"),
        ..Default::default()
    };
    let (p, t) = (size(s, "patch"), size(s, "tubelet"));
    let shape = VideoShape {
        tokens: (size(s, "image") / p).pow(2) * size(s, "frames") / t,
        token_dim: t * p * p * 3,
    };
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    Video
        .build_model(&cfg, shape, size(s, "classes"), block(&fx), vb)
        .unwrap();
    let ours = draws(&varmap, |v, seed| Video.init_weights(v, seed).unwrap());
    let n = check_model("video", &ours, |name| {
        adapters(name).unwrap_or_else(|| Ok(vec![name.to_string()]))
    });
    assert!(n >= 33, "{n}");
}

#[test]
fn point_bert_init_matches_the_official_point_transformer() {
    let fx = fixture();
    let s = &fx["models"]["point"]["sizes"];
    let cfg = PointBertConfig {
        trans_dim: size(s, "trans_dim"),
        depth: size(s, "depth"),
        heads: size(s, "heads"),
        encoder_dims: size(s, "encoder_dims"),
        ..Default::default()
    };
    let shape = PcShape {
        groups: size(s, "num_group"),
        group_size: size(s, "group_size"),
    };
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    PointCloud
        .build_model(&cfg, shape, size(s, "classes"), block(&fx), vb)
        .unwrap();
    let ours = draws(&varmap, |v, seed| PointCloud.init_weights(v, seed).unwrap());
    let n = check_model("point", &ours, |name| {
        if let Some(r) = adapters(name) {
            return r;
        }
        if let Some(rest) = name.strip_prefix("blocks.blocks.") {
            return Ok(vec![format!("blocks.{rest}")]);
        }
        if let Some(rest) = name.strip_prefix("cls_head_finetune.") {
            // Linear, ReLU, Dropout, Linear: indices 0 and 3 (lm4ve's head: 0 and 4).
            return Ok(vec![match rest.split_once('.') {
                Some(("3", p)) => format!("cls_head.4.{p}"),
                _ => format!("cls_head.{rest}"),
            }]);
        }
        Ok(vec![name.to_string()])
    });
    assert!(n >= 50, "{n}");
}

/// The comparison is sharp enough to catch the mistakes an init rule can make: against the
/// reference's timm trunc-normal(0.02) `mlp.fc1.weight`, a uniform of the same std, a normal
/// truncated at 2σ (what `trunc_normal_` would do with bounds in σ), a normal of 0.88× the
/// std, and PyTorch's default U(±1/√fan_in) all fail; the rule lm4ve uses passes.
#[test]
fn the_comparison_tells_the_families_apart() {
    use super::models::init_rules::{values, Rule, TIMM_TRUNC_02};
    let fx = fixture();
    let re = &fx["models"]["image"]["tensors"]["blocks.0.mlp.fc1.weight"];
    let n = 768 * 192;
    let draw = |rule: Rule| -> Vec<Vec<f32>> {
        (0..SEEDS)
            .map(|s| values(rule, n, s, "blocks.0.mlp.fc1.weight"))
            .collect()
    };
    let b = 0.02 * 3f32.sqrt();
    let wrong = [
        ("uniform, same std", Rule::Uniform { lo: -b, hi: b }),
        (
            "normal truncated at 2σ",
            Rule::Normal {
                std: 0.02 / 0.88,
                bound: 0.04 / 0.88,
            },
        ),
        (
            "normal, 0.88× std",
            Rule::Normal {
                std: 0.0176,
                bound: 2.0,
            },
        ),
        (
            "PyTorch's default",
            Rule::Uniform {
                lo: -1.0 / 192f32.sqrt(),
                hi: 1.0 / 192f32.sqrt(),
            },
        ),
    ];
    for (what, rule) in wrong {
        assert!(compare(what, &draw(rule), re).is_err(), "{what} passed");
    }
    compare("timm", &draw(TIMM_TRUNC_02), re).unwrap();
}
