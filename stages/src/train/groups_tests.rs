//! The optimizer groups of each reference, and what each block mode trains.

use super::*;
use crate::train::assemble::{core_of, trainable_vars, LayerWeights};
use crate::train::block::{BlockCore, BlockMode, MlpConfig};
use crate::train::models::layers::{init_vars, step_rng};
use crate::train::task::pointcloud::PointCloud;
use crate::train::task::video::Video;
use candle_core::{DType, Device};
use candle_nn::VarBuilder;

/// VideoMAE's layer decay (`optim_factory.py`: `LayerDecayValueAssigner` with values
/// `decay^(L + 1 − i)` for i in 0..L+2, `get_num_layer_for_vit`, `get_parameter_groups`).
#[test]
fn layer_decay_groups_follow_videomae() {
    let dev = Device::Cpu;
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
    for (name, shape) in [
        ("patch_embed.proj.weight", vec![8, 4]),
        ("patch_embed.proj.bias", vec![8]),
        ("blocks.0.attn.qkv.weight", vec![12, 4]),
        ("blocks.0.norm1.weight", vec![4]),
        ("blocks.11.mlp.fc1.weight", vec![16, 4]),
        ("fc_norm.weight", vec![4]),
        ("head.weight", vec![5, 4]),
        ("llm_adapter_up.weight", vec![8, 4]),
    ] {
        vb.get_with_hints(shape, name, candle_nn::Init::Const(0.0))
            .unwrap();
    }
    let mut p = crate::train::params::tests::resolved_defaults(&Video);
    assert_eq!(p.layer_decay, Some(0.7), "the reference's ViT-S script");
    p.weight_decay = 0.05;
    let groups: Vec<(String, f64, f64)> = params_for(&p, &varmap, &[], Some(12))
        .unwrap()
        .into_iter()
        .map(|(n, _, lr, wd)| (n, lr, wd))
        .collect();
    // lr scales to 1e-12 (powi may fold differently at compile time), decays exactly.
    let of = |n: &str| {
        groups
            .iter()
            .find(|g| g.0 == n)
            .map(|g| ((g.1 * 1e12).round() / 1e12, g.2))
            .unwrap()
    };
    let d = |k: i32| (0.7f64.powi(k) * 1e12).round() / 1e12;
    assert_eq!(of("patch_embed.proj.weight"), (d(13), 0.05));
    assert_eq!(of("patch_embed.proj.bias"), (d(13), 0.0));
    assert_eq!(of("blocks.0.attn.qkv.weight"), (d(12), 0.05));
    assert_eq!(of("blocks.0.norm1.weight"), (d(12), 0.0));
    assert_eq!(of("blocks.11.mlp.fc1.weight"), (d(1), 0.05));
    assert_eq!(of("fc_norm.weight"), (1.0, 0.0));
    assert_eq!(of("head.weight"), (1.0, 0.05));
    assert_eq!(
        of("llm_adapter_up.weight"),
        (1.0, 0.05),
        "the video reference decays its llama_dim_mappers, in the last group"
    );
    assert_eq!(vit_layer_id("pos_embed", 12), 0);
    assert_eq!(vit_layer_id("cls_token", 12), 0);
    assert_eq!(vit_layer_id("llm_block.mlp.up_proj.weight", 12), 13);
}

/// The reference's optimizer groups (LM4VisualEncoding tools/builder.py).
#[test]
fn optimizer_groups_follow_the_reference() {
    let dev = Device::Cpu;
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
    for (name, shape) in [
        ("llm_adapter_up.weight", vec![8, 4]),
        ("cls_token", vec![1, 1, 4]),
        ("cls_pos", vec![1, 1, 4]),
        ("blocks.0.attn.qkv.weight", vec![12, 4]),
        ("blocks.0.attn.proj.bias", vec![4]),
        ("blocks.0.norm1.weight", vec![4]),
        ("encoder.first_conv.1.running_mean", vec![4]),
    ] {
        vb.get_with_hints(shape, name, candle_nn::Init::Const(0.0))
            .unwrap();
    }
    let p = crate::train::params::tests::resolved_defaults(&PointCloud);
    let groups: Vec<(String, f64, f64)> = params_for(&p, &varmap, &[], None)
        .unwrap()
        .into_iter()
        .map(|(n, _, lr, wd)| (n, lr, wd))
        .collect();
    let of = |n: &str| groups.iter().find(|g| g.0 == n).map(|g| (g.1, g.2));
    assert_eq!(of("llm_adapter_up.weight"), Some((0.5, 0.0)));
    assert_eq!(of("cls_token"), Some((0.1, 0.0)));
    assert_eq!(
        of("cls_pos"),
        Some((1.0, 0.05)),
        "the reference decays cls_pos"
    );
    assert_eq!(of("blocks.0.attn.qkv.weight"), Some((1.0, 0.05)));
    assert_eq!(of("blocks.0.attn.proj.bias"), Some((0.1, 0.0)));
    assert_eq!(of("blocks.0.norm1.weight"), Some((0.1, 0.0)));
    assert_eq!(
        of("encoder.first_conv.1.running_mean"),
        None,
        "BN statistics are not trained"
    );
}

/// Every ablation on a tiny PointBERT, with one layer and with a stack of two: which
/// weights exist, which enter the optimizer (and in which group), which get gradients in
/// a step, and that frozen LLM weights get none.
#[test]
fn every_mode_trains_what_it_should() {
    use crate::train::block::tests::{llama_cfg, random_tensors};
    use crate::train::models::pointbert::{PointBert, PointBertConfig};
    let dev = Device::Cpu;
    let bcfg = llama_cfg();
    let p = crate::train::params::tests::resolved_defaults(&PointCloud);
    let pcfg = PointBertConfig {
        trans_dim: 16,
        depth: 1,
        heads: 2,
        pointnet_dims: [8, 16, 16],
        encoder_dims: 16,
        drop_path: 0.0,
        head_dropout: 0.0,
        ..Default::default()
    };
    let layer_params: usize = bcfg
        .tensor_shapes()
        .iter()
        .map(|(_, s)| s.iter().product::<usize>())
        .sum();
    let mut encoder_count = None;
    for n in [1usize, 2] {
        for mode in [
            BlockMode::Frozen,
            BlockMode::Random,
            BlockMode::RandomTrained,
            BlockMode::Trainable,
            BlockMode::Mlp,
            BlockMode::None,
        ] {
            let what = format!("{mode}, {n} layer(s)");
            let read = || {
                Ok((0..n)
                    .map(|i| random_tensors(&bcfg, 80 + i as u64))
                    .collect())
            };
            let mut core = (mode != BlockMode::None).then(|| {
                core_of(mode, &bcfg, n, LayerWeights::File(&read), None, 5, &dev).unwrap()
            });
            let block_vars = match core.as_mut() {
                Some(c) if mode.is_trainable() => trainable_vars(c).unwrap(),
                _ => Vec::new(),
            };
            // The frozen LLM weights, to check they get no gradient.
            let frozen: Vec<candle_core::Tensor> = match &core {
                Some(BlockCore::Llm(ls)) if !mode.is_trainable() => ls
                    .iter()
                    .flat_map(|l| l.tensors().into_iter().map(|(_, t)| t))
                    .collect(),
                _ => Vec::new(),
            };
            let core_params = core.as_ref().map_or(0, |c| c.num_params());
            let varmap = VarMap::new();
            let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
            let model = PointBert::new(&pcfg, 4, core.map(|c| (c, mode)), vb).unwrap();
            init_vars(&varmap, 0).unwrap();
            let params = params_for(&p, &varmap, &block_vars, None).unwrap();
            let names: Vec<&str> = params.iter().map(|(n, ..)| n.as_str()).collect();
            let has = |prefix: &str| names.iter().any(|n| n.starts_with(prefix));
            assert_eq!(has("llm_adapter_up"), mode != BlockMode::None, "{what}");
            assert_eq!(has("llm_adapter_down"), mode != BlockMode::None, "{what}");
            let llm_trains = matches!(mode, BlockMode::Trainable | BlockMode::RandomTrained);
            if n == 1 {
                assert_eq!(
                    has("llm_block.self_attn.q_proj.weight"),
                    llm_trains,
                    "{what}"
                );
            } else {
                for i in 0..n {
                    assert_eq!(
                        has(&format!("llm_block.{i}.mlp.up_proj.weight")),
                        llm_trains,
                        "{what}"
                    );
                }
            }
            assert_eq!(has("llm_block"), llm_trains, "{what}");
            assert_eq!(has("llm_mlp."), mode == BlockMode::Mlp, "{what}");
            if mode == BlockMode::Mlp {
                // The MLP's matrices decay like a trainable block's, its norm does not.
                let g = |name: &str| params.iter().find(|q| q.0 == name).map(|q| (q.2, q.3));
                assert_eq!(g("llm_mlp.gate_proj.weight"), Some((1.0, p.weight_decay)));
                assert_eq!(g("llm_mlp.norm.weight"), Some((1.0, 0.0)));
            }
            // Counts: what enters the optimizer is the encoder (+ adapters) plus the
            // block's weights exactly when they train.
            let trainable: usize = params.iter().map(|(_, v, ..)| v.elem_count()).sum();
            let adapters = if mode == BlockMode::None {
                0
            } else {
                2 * 16 * bcfg.hidden_size
            };
            let encoder = trainable - adapters - if mode.is_trainable() { core_params } else { 0 };
            assert_eq!(*encoder_count.get_or_insert(encoder), encoder, "{what}");
            let want_core = match mode {
                BlockMode::None => 0,
                BlockMode::Mlp => MlpConfig::of_block(&bcfg, None).num_params(),
                _ => n * layer_params,
            };
            assert_eq!(core_params, want_core, "{what}");
            // One step: every optimizer parameter that the forward reaches gets a
            // gradient, the frozen block's weights none.
            let c = candle_core::Tensor::randn(0f32, 0.5, (2, 8, 3), &dev).unwrap();
            let nb = candle_core::Tensor::randn(0f32, 0.05, (2, 8, 4, 3), &dev).unwrap();
            let mut rng = step_rng(0, "t", 0);
            let logits = model.forward(&c, &nb, Some(&mut rng)).unwrap();
            let grads = logits.sqr().unwrap().sum_all().unwrap().backward().unwrap();
            for (name, var, ..) in &params {
                assert!(
                    grads.get(var.as_tensor()).is_some(),
                    "{what}: no grad for {name}"
                );
            }
            for t in &frozen {
                assert!(
                    grads.get(t).is_none(),
                    "{what}: a frozen LLM weight got a gradient"
                );
            }
        }
    }
}

/// DeiT's groups (timm `add_weight_decay` with `no_weight_decay() = {pos_embed, cls_token}`,
/// every lr scale 1) and its lr, `lr × batch / 512` with `min_lr` as it is.
#[test]
fn image_groups_and_lr_follow_deit() {
    use crate::train::task::image::Image;
    let dev = Device::Cpu;
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
    for (name, shape) in [
        ("pos_embed", vec![1, 5, 4]),
        ("cls_token", vec![1, 1, 4]),
        ("patch_embed.proj.weight", vec![4, 12]),
        ("blocks.0.attn.qkv.bias", vec![12]),
        ("llm_adapter_up.weight", vec![8, 4]),
        ("head.weight", vec![3, 4]),
    ] {
        vb.get_with_hints(shape, name, candle_nn::Init::Const(0.0))
            .unwrap();
    }
    let p = crate::train::params::tests::resolved_defaults(&Image);
    let groups = params_for(&p, &varmap, &[], None).unwrap();
    let of = |n: &str| {
        groups
            .iter()
            .find(|g| g.0 == n)
            .map(|g| (g.2, g.3))
            .unwrap()
    };
    assert_eq!(of("pos_embed"), (1.0, 0.0));
    assert_eq!(of("cls_token"), (1.0, 0.0));
    assert_eq!(of("blocks.0.attn.qkv.bias"), (1.0, 0.0));
    assert_eq!(of("patch_embed.proj.weight"), (1.0, 0.05));
    assert_eq!(
        of("llm_adapter_up.weight"),
        (1.0, 0.05),
        "DeiT decays the mappers"
    );
    assert_eq!(of("head.weight"), (1.0, 0.05));
    assert_eq!(p.batch_size, 1024);
    assert_eq!(p.schedule_lrs(), (5e-4 * 2.0, 1e-5));
    assert!(p.epoch_schedule && p.warmup_epochs == 20);
    let aug = p.augment.unwrap();
    assert_eq!(
        aug.rand_augment.map(|r| r.to_string()).as_deref(),
        Some("rand-m9-n2-mstd0.5-inc1")
    );
}
