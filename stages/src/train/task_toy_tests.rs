//! The task seam, shown: a fourth task that exists only in this test — regression of a
//! number from a set of tokens, on a data stage of its own (`toy.tokens`) — joins through
//! `registry::register` and its task file alone, then trains, resumes its checkpoints,
//! evaluates and plans through the unchanged `train` and `eval` stages, dry run and engine.

use super::assemble::core_of;
use super::assemble::LayerWeights;
use super::block::{BlockAdapter, BlockCore, BlockMode};
use super::data::ShardSet;
use super::models::layers::Execution;
use super::params::{EvalParams, ParamIssue};
use super::plan::cost::{Cost, Exec};
use super::recipe::{TaskDefaults, TaskRecipe};
use super::registry;
use super::task::{Evaluation, Task, TaskInfo, Totals};
use anyhow::Result;
use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{Linear, VarBuilder};
use lm4ve_pipeline::shard::{encode_sample, Dtype, Field, Schema, ShardWriter};
use lm4ve_pipeline::{
    PipelineConfig, Progress, RunOptions, Stage, StageConfig, StageCtx, UnitOutput, UnitPlan,
    Upstream,
};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

const TOY_KIND: &str = "toy.tokens";
/// Tokens per sample and values per token.
const TOKENS: usize = 4;
const FEATURES: usize = 3;

// ---------------------------------------------------------------- its data stage

/// Writes `samples` per split of `x` [TOKENS, FEATURES] and `y` [1] = the mean of the
/// tokens' first feature minus their second.
struct ToyTokens {
    samples: usize,
}

fn toy_schema() -> Schema {
    vec![
        Field::new("x", Dtype::Float32, &[TOKENS, FEATURES]),
        Field::new("y", Dtype::Float32, &[1]),
    ]
}

impl Stage for ToyTokens {
    fn kind(&self) -> &str {
        TOY_KIND
    }
    fn version(&self) -> u32 {
        1
    }
    fn key_params(&self) -> serde_json::Value {
        serde_json::json!({ "samples": self.samples })
    }
    fn schema(&self) -> Option<Schema> {
        Some(toy_schema())
    }
    fn plan(&self, _ctx: &StageCtx) -> Result<Vec<UnitPlan>> {
        Ok(vec![UnitPlan {
            id: "all".into(),
            work: 1,
        }])
    }
    fn run_unit(&self, _ctx: &StageCtx, _unit: &UnitPlan, out: &mut UnitOutput) -> Result<()> {
        let schema = toy_schema();
        for (split, seed) in [("train", 1u64), ("val", 2)] {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let mut w = ShardWriter::new(schema.clone());
            for _ in 0..self.samples {
                let x: Vec<f32> = (0..TOKENS * FEATURES)
                    .map(|_| rng.random_range(-1.0f32..1.0))
                    .collect();
                let y = x.chunks(FEATURES).map(|t| t[0] - t[1]).sum::<f32>() / TOKENS as f32;
                let xb: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
                w.push_encoded(encode_sample(&schema, &[&xb, &y.to_le_bytes()], 1)?);
            }
            out.add_shard(split, self.samples as u64, &w.finish())?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- its task

struct ToyTask;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ToyConfig {
    #[serde(default = "default_width")]
    width: usize,
}

fn default_width() -> usize {
    16
}

struct ToyData {
    x: Vec<f32>,
    y: Vec<f32>,
}

struct ToyBatch {
    x: Tensor,
    y: Tensor,
}

struct ToyModel {
    embed: Linear,
    llm: Option<BlockAdapter>,
    head: Linear,
}

/// Squared errors, hits (|error| < 0.1) and samples.
struct ToyTotals {
    sse: f64,
    hits: u64,
    n: u64,
}

impl TaskRecipe for ToyTask {
    fn defaults(&self) -> TaskDefaults {
        TaskDefaults {
            epochs: 4,
            warmup_epochs: 1,
            batch_size: 16,
            lr: 1e-2,
            min_lr: 1e-4,
            weight_decay: 0.0,
            grad_clip: 0.0,
            label_smoothing: 0.0,
            adapter_lr_scale: 1.0,
            no_decay_lr_scale: 1.0,
            epochs_per_checkpoint: 2,
            layer_decay: None,
            mixup: 0.0,
            cutmix: 0.0,
        }
    }
}

impl TaskInfo for ToyTask {
    fn name(&self) -> &'static str {
        "toy"
    }
    fn title(&self) -> &'static str {
        "Toy"
    }
    fn data_kind(&self) -> &'static str {
        TOY_KIND
    }
    fn model_title(&self) -> &'static str {
        "toy regressor (toy.tokens)"
    }
    fn eval_split(&self) -> &'static str {
        "val"
    }
    fn is_classification(&self) -> bool {
        false
    }
    fn benchmark_classes(&self) -> (usize, &'static str) {
        (0, "toy")
    }
    fn check_eval(&self, p: &EvalParams) -> Result<(), ParamIssue> {
        p.refuse_vote()?;
        p.check_test_views(false)
    }
}

impl Totals for ToyTotals {
    fn to_sums(&self) -> Vec<f64> {
        vec![self.sse, self.hits as f64, self.n as f64]
    }
    fn set_from_sums(&mut self, s: &[f64]) {
        (self.sse, self.hits, self.n) = (s[0], s[1] as u64, s[2] as u64);
    }
    fn evaluation(&self) -> Evaluation {
        let n = self.n.max(1) as f64;
        Evaluation {
            score: self.hits as f64 / n,
            metrics: serde_json::json!({ "samples": self.n, "mse": self.sse / n }),
        }
    }
}

fn rows(data: &ToyData, idx: &[usize], device: &Device) -> Result<ToyBatch> {
    let per = TOKENS * FEATURES;
    let x: Vec<f32> = idx
        .iter()
        .flat_map(|&i| data.x[i * per..(i + 1) * per].iter().copied())
        .collect();
    let y: Vec<f32> = idx.iter().map(|&i| data.y[i]).collect();
    Ok(ToyBatch {
        x: Tensor::from_vec(x, (idx.len(), TOKENS, FEATURES), device)?,
        y: Tensor::from_vec(y, idx.len(), device)?,
    })
}

impl Task for ToyTask {
    type Config = ToyConfig;
    type Shape = ();
    type Data = ToyData;
    type Batch = ToyBatch;
    type Model = ToyModel;
    type Output = Tensor;
    type Totals = ToyTotals;

    fn load(&self, up: &Upstream, split: &str) -> Result<ToyData> {
        let set = ShardSet::open(up, split, "a toy.tokens stage")?;
        let (xi, yi) = (set.field("x", TOY_KIND)?, set.field("y", TOY_KIND)?);
        let mut d = ToyData {
            x: Vec::new(),
            y: Vec::new(),
        };
        for i in 0..set.len() {
            let s = set.read(i)?;
            d.x.extend(s.f32s(xi));
            d.y.extend(s.f32s(yi));
        }
        Ok(d)
    }
    fn len(&self, data: &ToyData) -> usize {
        data.y.len()
    }
    fn shape_of(&self, _data: &ToyData) {}
    fn train_batch(
        &self,
        data: &ToyData,
        idx: &[usize],
        r: std::ops::Range<usize>,
        _aug: &mut ChaCha8Rng,
        device: &Device,
    ) -> Result<ToyBatch> {
        rows(data, &idx[r], device)
    }
    fn eval_batch(
        &self,
        data: &ToyData,
        idx: &[usize],
        device: &Device,
    ) -> Result<(ToyBatch, usize)> {
        Ok((rows(data, idx, device)?, 1))
    }
    fn build_model(
        &self,
        cfg: &ToyConfig,
        _shape: (),
        _classes: usize,
        block: Option<(BlockCore, BlockMode)>,
        vb: VarBuilder,
    ) -> Result<ToyModel> {
        Ok(ToyModel {
            embed: candle_nn::linear(FEATURES, cfg.width, vb.pp("embed"))?,
            llm: BlockAdapter::maybe_new(cfg.width, block, &vb)?,
            head: candle_nn::linear(cfg.width, 1, vb.pp("head"))?,
        })
    }
    fn configure(&self, model: &mut ToyModel, exec: &Execution) {
        if let Some(l) = model.llm.as_mut() {
            l.configure(exec.attn, exec.precision);
        }
    }
    fn forward(&self, m: &ToyModel, b: &ToyBatch, _rng: Option<&mut ChaCha8Rng>) -> Result<Tensor> {
        let mut h = m.embed.forward(&b.x)?;
        if let Some(l) = &m.llm {
            h = (l.forward(&h, None)? + h)?;
        }
        Ok(m.head.forward(&h.mean(1)?)?.squeeze(D::Minus1)?)
    }
    fn loss(&self, out: &Tensor, b: &ToyBatch, _smoothing: f64) -> Result<(Tensor, u64)> {
        let err = (out - &b.y)?;
        let hits = err
            .abs()?
            .to_vec1::<f32>()?
            .iter()
            .filter(|e| **e < 0.1)
            .count() as u64;
        Ok((err.sqr()?.mean_all()?, hits))
    }
    fn new_totals(&self, _model: &ToyModel, _classes: usize) -> ToyTotals {
        ToyTotals {
            sse: 0.0,
            hits: 0,
            n: 0,
        }
    }
    fn score(&self, t: &mut ToyTotals, out: Tensor, b: ToyBatch, _views: usize) -> Result<()> {
        let err: Vec<f32> = (out - &b.y)?.to_dtype(DType::F32)?.to_vec1()?;
        for e in err {
            t.sse += (e as f64).powi(2);
            t.hits += u64::from(e.abs() < 0.1);
            t.n += 1;
        }
        Ok(())
    }
    fn shape_of_params(&self, _config: &PipelineConfig, _data: &StageConfig) -> Result<()> {
        Ok(())
    }
    fn tokens(&self, _cfg: &ToyConfig, _shape: ()) -> usize {
        TOKENS
    }
    fn width(&self, cfg: &ToyConfig) -> usize {
        cfg.width
    }
    fn encoder_cost(&self, cfg: &ToyConfig, _s: (), b: f64, _classes: f64, _exec: Exec) -> Cost {
        Cost {
            trained: 2.0 * b * (TOKENS * FEATURES * cfg.width + cfg.width) as f64,
            ..Cost::default()
        }
    }
}

static TOY: ToyTask = ToyTask;

fn factory(
    config: &PipelineConfig,
    sc: &StageConfig,
) -> Result<Box<dyn Stage>, lm4ve_pipeline::ConfigError> {
    if sc.kind == TOY_KIND {
        return Ok(Box::new(ToyTokens { samples: 256 }));
    }
    crate::build_stage(config, sc)
}

#[test]
fn a_task_registered_at_run_time_trains_evaluates_and_plans_through_the_generic_stages() {
    registry::register(&TOY);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("toy.toml");
    std::fs::write(
        &path,
        r#"[stages.toy]
kind = "toy.tokens"

[stages.train_toy]
kind = "train"
[stages.train_toy.params]
data = "toy"
mode = "none"
epochs = 8
epochs_per_checkpoint = 3
lr = 2e-2
seed = 3

[stages.eval_toy]
kind = "eval"
[stages.eval_toy.params]
train = "train_toy"
data = "toy"
"#,
    )
    .unwrap();
    let config = PipelineConfig::load(&path).unwrap();
    // The dry run plans it from the config alone.
    let plan =
        crate::train::dry_run::plan_train(&config, &config.stages["train_toy"], false).unwrap();
    assert_eq!((plan.task, plan.tokens, plan.units), ("toy", TOKENS, 3));
    assert!(plan.params.trainable > 0 && plan.flops.forward > 0.0);

    let mut p =
        lm4ve_pipeline::Pipeline::new(config, Some(dir.path().join("cache")), &factory).unwrap();
    p.run(&RunOptions::default(), &Progress::new(true)).unwrap();
    let show = |stage: &str| {
        let key = p.key(stage).unwrap().key.clone();
        let m = std::fs::read_to_string(
            dir.path()
                .join("cache/artifacts")
                .join(&key)
                .join("manifest.json"),
        )
        .unwrap();
        serde_json::from_str::<serde_json::Value>(&m).unwrap()["meta"].clone()
    };
    let train = show("train_toy");
    assert_eq!(train["task"], "toy");
    let eval = show("eval_toy");
    assert_eq!(eval["samples"], 256);
    assert_eq!(eval["split"], "val");
    let mse = eval["mse"].as_f64().unwrap();
    // The targets' variance is 1/6 (the mean of 4 differences of two U(-1, 1)): the model
    // must do much better than predicting the mean.
    assert!(mse < 0.05, "mse {mse}");
    assert_eq!(train["final"]["epoch"], 7);

    // With a block the toy model runs it (a random frozen layer between its adapters).
    let dev = Device::Cpu;
    let bcfg = crate::train::block::tests::llama_cfg();
    let core = core_of(
        BlockMode::Random,
        &bcfg,
        1,
        LayerWeights::Random,
        None,
        0,
        &dev,
    )
    .unwrap();
    let varmap = candle_nn::VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
    let m = TOY
        .build_model(
            &ToyConfig { width: 8 },
            (),
            0,
            Some((core, BlockMode::Random)),
            vb,
        )
        .unwrap();
    TOY.init_weights(&varmap, 0).unwrap();
    let data = ToyData {
        x: vec![0.5; 2 * TOKENS * FEATURES],
        y: vec![0.0; 2],
    };
    let b = rows(&data, &[0, 1], &dev).unwrap();
    assert_eq!(TOY.forward(&m, &b, None).unwrap().dims(), &[2]);
    assert!(varmap
        .data()
        .lock()
        .unwrap()
        .keys()
        .any(|k| k.starts_with("llm_adapter_up")));
}
