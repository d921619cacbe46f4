//! Tests of the dry run: counts from configs alone, the paper's FLOPs, the activation
//! estimate against candle's autograd graph.

use super::*;
use crate::train::assemble::{core_of, LayerWeights};
use crate::train::block::tests::llama_cfg;
use crate::train::block::{LlmBlock, MlpBlock, MlpConfig};
use crate::train::models::layers::{init_vars, step_rng};
use crate::train::models::pointbert::PointBert;
use crate::train::models::pointbert::PointBertConfig;
use crate::train::models::vectornet::VectorNetConfig;
use crate::train::models::video_vit::VideoVitConfig;
use crate::train::ops::attention::AttnImpl;
use crate::train::task::forecast::{AvShape, Forecasting};
use crate::train::task::pointcloud::{PcShape, PointCloud};
use crate::train::task::video::{Video, VideoShape};
use candle_core::Tensor;
use std::path::Path;

/// LLaMA-7B's config.json as Hugging Face ships it (the weights are not needed).
const LLAMA7B_CONFIG: &str = r#"{"architectures": ["LlamaForCausalLM"], "hidden_act": "silu", "hidden_size": 4096, "intermediate_size": 11008, "max_position_embeddings": 2048, "model_type": "llama", "num_attention_heads": 32, "num_hidden_layers": 32, "rms_norm_eps": 1e-06, "torch_dtype": "float16", "vocab_size": 32000}"#;

/// The paper's point-cloud stage (configs/pipeline.toml's train_pc_hardest: every
/// hyper-parameter at the task's default) with `extra` train params and block params.
fn paper_config(dir: &Path, extra: &str, block_extra: &str) -> PipelineConfig {
    let m = dir.join("llama-7b-hf");
    std::fs::create_dir_all(&m).unwrap();
    std::fs::write(m.join("config.json"), LLAMA7B_CONFIG).unwrap();
    PipelineConfig::parse(
        &dir.join("p.toml"),
        &format!(
            r#"[stages.llm_block]
kind = "llm.block"
[stages.llm_block.params]
checkpoint = "llama-7b-hf"
{block_extra}
[stages.pc]
kind = "pc.tokens"
[stages.pc.params]
train = "absent/train.h5"
test = "absent/test.h5"
num_points = 1024
num_groups = 64
group_size = 32
[stages.ssv2]
kind = "ssv2.tokens"
[stages.ssv2.params]
root = "absent"
num_frames = 16
tubelet_frames = 2
patch = 16
crop = 224
[stages.train_pc]
kind = "train"
[stages.train_pc.params]
data = "pc"
block = "llm_block"
precision = "f32"
{extra}
[stages.train_video]
kind = "train"
[stages.train_video.params]
data = "ssv2"
block = "llm_block"
{extra}
"#
        ),
    )
    .unwrap()
}

fn plan(c: &PipelineConfig, stage: &str) -> TrainPlan {
    crate::train::dry_run::plan_train(c, &c.stages[stage], false).unwrap()
}

/// PointBERT + the LLaMA-7B block from a config.json alone: the reference's sizes
/// (Point-BERT ~22.1M; the LLaMA-7B layer 4·4096² + 3·4096·11008 + 2·4096, frozen;
/// adapters 2·384·4096), and what each ablation changes.
#[test]
fn paper_pointbert_llama7b_counts_from_config_json_alone() {
    let dir = tempfile::tempdir().unwrap();
    let c = paper_config(dir.path(), "", "");
    let p = plan(&c, "train_pc");
    println!("{}", p.render());
    let n = &p.params;
    assert!(
        (22_000_000..22_200_000).contains(&n.encoder),
        "PointBERT encoder + head: {}",
        n.encoder
    );
    assert_eq!(n.block, 202_383_360);
    assert_eq!(n.adapters, 2 * 384 * 4096);
    assert_eq!(n.frozen, n.block);
    assert_eq!(n.trainable, n.encoder + n.adapters);
    assert_eq!(n.total, n.trainable + n.frozen);
    assert_eq!(p.tokens, 65);
    let b = p.block.as_ref().unwrap();
    assert_eq!((b.first_layer, b.layers, b.num_layers), (31, 1, 32));
    // Memory: f32 weights of everything, grads and AdamW for the trainable part.
    assert_eq!(p.memory.weights, 4.0 * (n.total + n.buffers) as f64);
    assert_eq!(p.memory.grads, 4.0 * n.trainable as f64);
    assert_eq!(p.memory.optimizer, 8.0 * n.trainable as f64);
    assert!(p.memory.activations > 1e9, "{}", p.memory.activations);
    // FLOPs: the block's forward is 404.8 MFLOPs per token plus attention.
    let per_token = 2.0 * 202_375_168.0; // the layer's matrices, without its 2 norms
    let want = 32.0 * (65.0 * per_token + 4.0 * 65.0 * 65.0 * 4096.0);
    assert!(
        (p.flops.block_forward - want).abs() < 1.0,
        "{}",
        p.flops.block_forward
    );
    assert!(p.flops.backward > p.flops.forward);

    // The ablations.
    let with =
        |extra: &str, block: &str| plan(&paper_config(dir.path(), extra, block), "train_pc").params;
    let t = with("mode = \"trainable\"", "");
    assert_eq!((t.trainable, t.frozen), (t.total, 0));
    let r = with("mode = \"random\"", "");
    assert_eq!((r.frozen, r.block), (n.block, n.block));
    let m = with("mode = \"mlp\"", "");
    assert_eq!((m.block, m.frozen), (135_270_400, 0));
    assert_eq!(m.trainable, n.encoder + n.adapters + 135_270_400);
    let m2 = with("mode = \"mlp\"\nmlp_hidden = 16470", "");
    assert_eq!(m2.block, 202_387_456);
    let none = with("mode = \"none\"", "");
    assert_eq!((none.adapters, none.block, none.total), (0, 0, n.encoder));
    let two = with("", "blocks = 2");
    assert_eq!((two.block, two.frozen), (2 * n.block, 2 * n.block));
    let two_plan = plan(&paper_config(dir.path(), "", "blocks = 2"), "train_pc");
    assert_eq!(two_plan.block.unwrap().first_layer, 30);
    assert!((two_plan.flops.block_forward - 2.0 * want).abs() < 1.0);
}

/// Meta's release gives the same shape from its params.json alone, and an `init`
/// checkpoint that is not there yet does not stop a plan (it changes no shape).
#[test]
fn meta_params_json_alone_and_missing_init() {
    let dir = tempfile::tempdir().unwrap();
    let c = paper_config(dir.path(), "init = \"absent/Point-BERT.pth\"", "");
    let hf = plan(&c, "train_pc");
    assert!(hf
        .notes
        .iter()
        .any(|n| n.contains("Point-BERT.pth") && n.contains("not there")));
    let meta = dir.path().join("llama-7b-meta");
    std::fs::create_dir_all(&meta).unwrap();
    std::fs::write(
        meta.join("params.json"),
        r#"{"dim": 4096, "multiple_of": 256, "n_heads": 32, "n_layers": 32, "norm_eps": 1e-06, "vocab_size": -1}"#,
    )
    .unwrap();
    let mut c = paper_config(dir.path(), "", "");
    c.stages
        .get_mut("llm_block")
        .unwrap()
        .params
        .insert("checkpoint".into(), meta.display().to_string().into());
    let p = plan(&c, "train_pc");
    assert_eq!(p.block.unwrap().config.intermediate_size, 11008);
    assert_eq!(p.params, hf.params);
}

/// The FLOPs formula against the paper's own numbers (PAPER.md §2): the LLaMA-7B block
/// costs ~80 GFLOPs per 197-token image and ~675 GFLOPs per 1568-token clip.
#[test]
fn block_flops_match_the_papers_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let c = paper_config(dir.path(), "batch_size = 1", "");
    let p = plan(&c, "train_video");
    assert_eq!(p.tokens, 1568);
    let g = p.flops.block_forward / 1e9;
    assert!((g - 675.0).abs() < 5.0, "{g} GFLOPs per clip");
    println!("{}", p.render());
    // 196 tokens ≈ an image's 197: one 2-frame tubelet layer of 14 × 14 patches.
    let mut c = paper_config(dir.path(), "batch_size = 1", "");
    c.stages
        .get_mut("ssv2")
        .unwrap()
        .params
        .insert("num_frames".into(), 2.into());
    let p = plan(&c, "train_video");
    assert_eq!(p.tokens, 196);
    let g = p.flops.block_forward / 1e9;
    assert!((g - 80.0).abs() < 1.0, "{g} GFLOPs per image-sized input");
}

/// The plan's count is the built model's: with real random weights instead of the
/// shape-only ones, at a small size, for every mode and a stack.
#[test]
fn shape_only_counts_equal_the_built_model() {
    let bcfg = llama_cfg();
    let src = BlockSource {
        stage: "b".into(),
        config: bcfg.clone(),
        first_layer: 0,
        layers: 2,
        num_layers: 2,
    };
    let pc = PointBertConfig {
        trans_dim: 16,
        depth: 1,
        heads: 2,
        pointnet_dims: [8, 16, 16],
        encoder_dims: 16,
        ..Default::default()
    };
    let shape = PcShape {
        groups: 8,
        group_size: 4,
    };
    for mode in [BlockMode::Frozen, BlockMode::Trainable, BlockMode::Mlp] {
        let core = core_of(
            mode,
            &src.config,
            src.layers,
            LayerWeights::ShapeOnly,
            None,
            0,
            &Device::Cpu,
        )
        .unwrap();
        let planned = count_params(&PointCloud, &pc, shape, 5, Some((core, mode))).unwrap();
        let dev = Device::Cpu;
        let real = match mode {
            BlockMode::Mlp => BlockCore::Mlp(
                MlpBlock::random(&MlpConfig::of_block(&bcfg, None), 0, &dev).unwrap(),
            ),
            _ => BlockCore::stack(vec![
                LlmBlock::random(&bcfg, 0, &dev).unwrap(),
                LlmBlock::random(&bcfg, 1, &dev).unwrap(),
            ])
            .unwrap(),
        };
        let weights: usize = match &real {
            BlockCore::Llm(ls) => ls
                .iter()
                .flat_map(|l| l.tensors())
                .map(|(_, t)| t.elem_count())
                .sum(),
            BlockCore::Mlp(m) => m.tensors().iter().map(|(_, t)| t.elem_count()).sum(),
        };
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
        PointBert::new(&pc, 5, Some((real, mode)), vb).unwrap();
        let vars: usize = varmap.all_vars().iter().map(|v| v.elem_count()).sum();
        assert_eq!(planned.block, weights, "{mode}");
        assert_eq!(planned.total + planned.buffers, vars + weights, "{mode}");
    }
}

use crate::test_util::graph_bytes;

/// The block core of `mode` at the test size (one random layer, made trainable when the mode
/// trains it), and what the frozen node keeps besides its output (the graph sees the
/// output) on `b` × `t` tokens.
fn test_core(
    mode: BlockMode,
    attn: AttnImpl,
    b: usize,
    t: usize,
) -> (Option<(BlockCore, BlockMode)>, usize) {
    let dev = Device::Cpu;
    let bcfg = llama_cfg();
    let mut core = match mode {
        BlockMode::None => None,
        BlockMode::Mlp => Some(BlockCore::Mlp(
            MlpBlock::random(&MlpConfig::of_block(&bcfg, None), 0, &dev).unwrap(),
        )),
        _ => Some(BlockCore::from(LlmBlock::random(&bcfg, 0, &dev).unwrap())),
    };
    if mode.is_trainable() {
        match core.as_mut().unwrap() {
            BlockCore::Llm(ls) => {
                ls[0].make_trainable().unwrap();
            }
            BlockCore::Mlp(m) => {
                m.make_trainable().unwrap();
            }
        }
    }
    let frozen_inside = match (&core, mode) {
        (Some(BlockCore::Llm(ls)), BlockMode::Frozen) => {
            let x = Tensor::zeros((b, t, bcfg.hidden_size), DType::F32, &dev).unwrap();
            ls[0]
                .clone()
                .with_attention(attn)
                .frozen_saved_bytes(&x)
                .unwrap()
                - b * t * bcfg.hidden_size * 4
        }
        _ => 0,
    };
    (core.map(|c| (c, mode)), frozen_inside)
}

/// The estimate of `task`'s model against its autograd graph, for every mode (and both
/// attentions when `chunked` too): `out` runs a training forward to one tensor.
fn check_activations<T: Task>(
    task: &T,
    what: &str,
    cfg: &T::Config,
    shape: T::Shape,
    attns: &[AttnImpl],
    out: impl Fn(&T::Model) -> Tensor,
) {
    let (b, classes) = (4usize, 5usize);
    let src = BlockSource {
        stage: "b".into(),
        config: llama_cfg(),
        first_layer: 0,
        layers: 1,
        num_layers: 1,
    };
    for &attn in attns {
        for mode in [
            BlockMode::None,
            BlockMode::Frozen,
            BlockMode::Trainable,
            BlockMode::Mlp,
        ] {
            let exec = Exec {
                attn,
                checkpoint: false,
            };
            let t = task.tokens(cfg, shape);
            let (core, frozen_inside) = test_core(mode, attn, b, t);
            let varmap = VarMap::new();
            let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
            let mut m = task.build_model(cfg, shape, classes, core, vb).unwrap();
            init_vars(&varmap, 0).unwrap();
            task.configure(
                &mut m,
                &crate::train::models::layers::Execution {
                    attn,
                    checkpoint: None,
                    precision: None,
                },
            );
            let measured = (graph_bytes(&out(&m)) + frozen_inside) as f64;
            let mut est = task.encoder_cost(cfg, shape, b as f64, classes as f64, exec);
            if mode != BlockMode::None {
                let (c, _) = block_cost(
                    b as f64,
                    t as f64,
                    task.width(cfg) as f64,
                    mode,
                    &src.config,
                    src.layers,
                    None,
                    Precision::F32,
                    attn,
                );
                est.add(c);
            }
            let ratio = est.act_bytes / measured;
            println!(
                "{what} {mode} {attn:?}: estimate {:.0} vs graph {measured:.0} ({ratio:.3})",
                est.act_bytes
            );
            assert!(
                (0.9..1.1).contains(&ratio),
                "{what} {mode} {attn:?}: estimate {} vs graph {measured} bytes",
                est.act_bytes
            );
        }
    }
}

/// The activation estimate against what candle's autograd graph keeps (plus what the
/// frozen nodes keep inside themselves), at small sizes, for each model and mode.
#[test]
fn activation_estimate_matches_the_autograd_graph() {
    let dev = Device::Cpu;
    let b = 4usize;
    let pc = PcShape {
        groups: 16,
        group_size: 16,
    };
    check_activations(
        &PointCloud,
        "pointbert",
        &PointBertConfig {
            trans_dim: 32,
            depth: 2,
            heads: 4,
            pointnet_dims: [32, 64, 64],
            encoder_dims: 64,
            ..Default::default()
        },
        pc,
        &[AttnImpl::Full],
        |m| {
            let mut rng = step_rng(0, "t", 0);
            let ce = Tensor::randn(0f32, 0.5, (b, pc.groups, 3), &dev).unwrap();
            let nb = Tensor::randn(0f32, 0.05, (b, pc.groups, pc.group_size, 3), &dev).unwrap();
            m.forward(&ce, &nb, Some(&mut rng)).unwrap()
        },
    );
    let vs = VideoShape {
        tokens: 32,
        token_dim: 24,
    };
    // Chunked attention (no [B, H, T, T] kept) on the model that uses it.
    check_activations(
        &Video,
        "video",
        &VideoVitConfig {
            embed_dim: 32,
            depth: 2,
            heads: 4,
            ..Default::default()
        },
        vs,
        &[AttnImpl::Full, AttnImpl::Chunked],
        |m| {
            let mut rng = step_rng(0, "t", 0);
            let x = Tensor::randn(0f32, 1.0, (b, vs.tokens, vs.token_dim), &dev).unwrap();
            m.forward(&x, Some(&mut rng)).unwrap()
        },
    );
    let av = AvShape {
        actors: 8,
        actor_vectors: 9,
        actor_features: 6,
        lanes: 12,
        lane_vectors: 9,
        lane_features: 7,
        pred_steps: 10,
    };
    check_activations(
        &Forecasting,
        "vectornet",
        &VectorNetConfig {
            subgraph_widths: vec![16, 32],
            modes: 3,
            agent_only_loss: false,
        },
        av,
        &[AttnImpl::Full],
        |m| {
            let a = Tensor::randn(
                0f32,
                1.0,
                (b, av.actors, av.actor_vectors, av.actor_features),
                &dev,
            )
            .unwrap();
            let l = Tensor::randn(
                0f32,
                1.0,
                (b, av.lanes, av.lane_vectors, av.lane_features),
                &dev,
            )
            .unwrap();
            let am = Tensor::ones((b, av.actors), DType::F32, &dev).unwrap();
            let lm = Tensor::ones((b, av.lanes), DType::F32, &dev).unwrap();
            let ctrs = Tensor::randn(0f32, 1.0, (b, av.actors, 2), &dev).unwrap();
            let f = m.forward(&a, &am, &l, &lm, &ctrs).unwrap();
            // One node that depends on every output.
            (f.modes.sum_all().unwrap()
                + f.confidence.sum_all().unwrap()
                + f.single.sum_all().unwrap())
            .unwrap()
        },
    );
}
