//! Point clouds (PAPER.md §3): PointBERT with the frozen block on `pc.tokens`, ScanObjectNN's
//! recipe (LM4VisualEncoding `pointcloud_classification`), test-time voting.

use super::classify::{self, ClassTotals, Target};
use super::{BenchSetup, BenchSize, Checkpoint, Reported, Task, TaskInfo};
use crate::train::block::{BlockCore, BlockMode};
use crate::train::data::pointcloud::{PcSet, PcViews};
use crate::train::init::{Family, POINT_BERT};
use crate::train::models::init_rules::{init_by, point_bert};
use crate::train::models::layers::{drop_path_rate, Execution};
use crate::train::models::pointbert::{PointBert, PointBertConfig};
use crate::train::params::{EvalParams, ParamIssue, TrainParams};
use crate::train::plan::cost::{vit_block, Cost, Exec, F32};
use crate::train::recipe::{Features, TaskDefaults, TaskRecipe};
use anyhow::Result;
use candle_core::{Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use lm4ve_pipeline::{PipelineConfig, StageConfig, Upstream};
use rand_chacha::ChaCha8Rng;

/// The point-cloud classification task.
pub struct PointCloud;

/// The groups of a cloud the encoder sees.
#[derive(Debug, Clone, Copy)]
pub struct PcShape {
    pub groups: usize,
    pub group_size: usize,
}

/// A batch: group centers [B, G, 3], neighbourhoods [B, G, K, 3], labels.
pub struct PcBatch {
    pub centers: Tensor,
    pub neighborhoods: Tensor,
    pub target: Target,
}

impl TaskRecipe for PointCloud {
    // LM4VisualEncoding `pointcloud_classification`: PointLLaMa_*.yaml (AdamW lr 5e-4, wd
    // 0.05, CosLR 300 epochs with 10 warm-up, batch 32, grad_norm_clip 10) and builder.py's
    // groups (no-decay ×0.1 lr, the LLaMA adapters ×0.5 lr and no decay); `--label_smoothing`
    // is off unless passed: plain cross-entropy.
    fn defaults(&self) -> TaskDefaults {
        TaskDefaults {
            epochs: 300,
            warmup_epochs: 10,
            batch_size: 32,
            lr: 5e-4,
            min_lr: 1e-6,
            weight_decay: 0.05,
            grad_clip: 10.0,
            label_smoothing: 0.0,
            adapter_lr_scale: 0.5,
            no_decay_lr_scale: 0.1,
            epochs_per_checkpoint: 10,
            layer_decay: None,
            mixup: 0.0,
            cutmix: 0.0,
        }
    }

    fn features(&self) -> Features {
        Features {
            resample: true,
            ..Features::default()
        }
    }
}

impl TaskInfo for PointCloud {
    fn name(&self) -> &'static str {
        "pointcloud"
    }
    fn title(&self) -> &'static str {
        "PointCloud"
    }
    fn data_kind(&self) -> &'static str {
        crate::pointcloud::stage::KIND
    }
    fn model_title(&self) -> &'static str {
        "PointBERT (pc.tokens)"
    }
    /// The reference keeps `ckpt-best`, the epoch of best single-view test accuracy
    /// (`tools/runner_BERT_finetune.py`: `metrics.better_than(best_metrics)`, strictly
    /// better, so the first of equal epochs), and its ScanObjectNN numbers are that one.
    fn reported(&self) -> Reported {
        Reported {
            checkpoint: Checkpoint::Best,
            why: "Point-BERT's ckpt-best: the epoch of best single-view test accuracy (runner_BERT_finetune.py)",
        }
    }
    fn eval_split(&self) -> &'static str {
        "test"
    }
    fn is_classification(&self) -> bool {
        true
    }
    fn benchmark_classes(&self) -> (usize, &'static str) {
        (15, "ScanObjectNN")
    }
    fn init_family(&self) -> Option<&'static Family> {
        Some(&POINT_BERT)
    }
    fn check_eval(&self, p: &EvalParams) -> Result<(), ParamIssue> {
        p.check_test_views(false)?;
        p.check_vote_runs()
    }
    fn metrics_summary(&self, m: &serde_json::Value) -> Option<String> {
        classify::summary(m)
    }
    fn eval_key_params(&self, p: &EvalParams, key: &mut serde_json::Value) {
        if let Some(v) = p.vote {
            key["vote"] = v.into();
        }
        // Only when set: eval keys without it stay what they were.
        if let Some(r) = p.vote_runs {
            key["vote_runs"] = r.into();
        }
    }
}

impl Task for PointCloud {
    type Config = PointBertConfig;
    type Shape = PcShape;
    type Data = PcSet;
    type Batch = PcBatch;
    type Model = PointBert;
    type Output = Tensor;
    type Totals = ClassTotals;

    fn load(&self, up: &Upstream, split: &str) -> Result<PcSet> {
        PcSet::load(up, split)
    }
    fn len(&self, data: &PcSet) -> usize {
        data.len()
    }
    fn shape_of(&self, data: &PcSet) -> PcShape {
        PcShape {
            groups: data.groups,
            group_size: data.group_size,
        }
    }
    fn prepare_train(
        &self,
        data: &mut PcSet,
        p: &TrainParams,
        _cfg: &PointBertConfig,
    ) -> Result<()> {
        if p.resample {
            anyhow::ensure!(
                data.kept > 0,
                "resample = true (Point-BERT's recipe, the default) needs the clouds' raw points, and `{}` kept none: set `keep_points = 2048` in its params, or resample = false in this stage to train on the cached tokens",
                p.data
            );
            data.views = PcViews::Resampled;
        }
        Ok(())
    }
    fn train_batch(
        &self,
        data: &PcSet,
        idx: &[usize],
        rows: std::ops::Range<usize>,
        aug: &mut ChaCha8Rng,
        device: &Device,
    ) -> Result<PcBatch> {
        let (centers, neighborhoods, l) = match data.views {
            PcViews::Cached => data.batch_rows(idx, rows, Some(aug), device)?,
            // Each cloud's view is keyed by its index: any subset draws the same.
            PcViews::Resampled => data.resampled_batch(&idx[rows], aug, device)?,
        };
        Ok(PcBatch {
            centers,
            neighborhoods,
            target: Target::Labels(l),
        })
    }
    fn eval_batch(&self, data: &PcSet, idx: &[usize], device: &Device) -> Result<(PcBatch, usize)> {
        let ((centers, neighborhoods, l), views) = if data.votes > 1 {
            (
                data.vote_batch(idx, data.votes, data.vote_seed, device)?,
                data.votes,
            )
        } else {
            (data.batch(idx, None, device)?, 1)
        };
        Ok((
            PcBatch {
                centers,
                neighborhoods,
                target: Target::Labels(l),
            },
            views,
        ))
    }

    /// LM4VisualEncoding's `PointTransformer` runs no init: PyTorch's defaults, a zero class
    /// token, a standard-normal class position (`models::init_rules::point_bert`).
    fn init_weights(&self, varmap: &VarMap, seed: u64) -> Result<()> {
        Ok(init_by(varmap, seed, point_bert)?)
    }

    fn build_model(
        &self,
        cfg: &PointBertConfig,
        _shape: PcShape,
        classes: usize,
        block: Option<(BlockCore, BlockMode)>,
        vb: VarBuilder,
    ) -> Result<PointBert> {
        Ok(PointBert::new(cfg, classes, block, vb)?)
    }
    fn configure(&self, model: &mut PointBert, exec: &Execution) {
        model.configure(exec)
    }
    fn forward(
        &self,
        model: &PointBert,
        b: &PcBatch,
        rng: Option<&mut ChaCha8Rng>,
    ) -> Result<Tensor> {
        Ok(model.forward(&b.centers, &b.neighborhoods, rng)?)
    }

    fn loss(&self, out: &Tensor, b: &PcBatch, label_smoothing: f64) -> Result<(Tensor, u64)> {
        classify::loss(out, &b.target, label_smoothing)
    }
    fn new_totals(&self, _model: &PointBert, classes: usize) -> ClassTotals {
        ClassTotals::new(classes)
    }
    fn score(&self, totals: &mut ClassTotals, out: Tensor, b: PcBatch, views: usize) -> Result<()> {
        // Votes average logits (the reference's `test_vote`).
        totals.add(&out, b.target.labels(), views, true)
    }
    fn prediction_rows(&self, out: &Tensor, b: &PcBatch, views: usize) -> Result<Vec<Vec<f64>>> {
        crate::train::predictions::rows::classification(out, b.target.labels(), views, true)
    }
    fn predictions_file(
        &self,
        up: &Upstream,
        split: &str,
        _data: &PcSet,
        rows: &[Vec<f64>],
    ) -> Result<Option<Vec<u8>>> {
        classify::predictions_file(up, split, rows)
    }
    fn begin_vote(&self, data: &mut PcSet, p: &EvalParams, seed: u64) -> Option<usize> {
        let votes = p.vote.filter(|v| *v > 1)?;
        data.votes = votes;
        data.vote_seed = seed;
        Some(votes)
    }

    fn shape_of_params(&self, config: &PipelineConfig, sc: &StageConfig) -> Result<PcShape> {
        let p: crate::pointcloud::stage::PcParams = config.typed_params(sc)?;
        Ok(PcShape {
            groups: p.num_groups,
            group_size: p.group_size,
        })
    }
    fn tokens(&self, _cfg: &PointBertConfig, shape: PcShape) -> usize {
        shape.groups + 1
    }
    fn width(&self, cfg: &PointBertConfig) -> usize {
        cfg.trans_dim
    }
    fn encoder_cost(
        &self,
        c: &PointBertConfig,
        shape: PcShape,
        b: f64,
        classes: f64,
        exec: Exec,
    ) -> Cost {
        let mut cost = Cost::default();
        let (groups, group_size) = (shape.groups, shape.group_size);
        let [c1, c2, c3] = c.pointnet_dims.map(|v| v as f64);
        let (enc, d) = (c.encoder_dims as f64, c.trans_dim as f64);
        let points = b * (groups * group_size) as f64;
        let n = b * groups as f64;
        let t = (groups + 1) as f64;
        // Mini-PointNet per point (measured: 9 floats per c1 and c3 channel, 6 per c2,
        // 2 per output channel), center embedding, the head.
        cost.trained += 2.0 * points * (3.0 * c1 + c1 * c2 + 2.0 * c2 * c3 + c3 * enc)
            + 2.0 * n * enc * d
            + 2.0 * n * (3.0 * 128.0 + 128.0 * d)
            + 2.0 * b * (2.0 * d * 256.0 + 256.0 * classes);
        cost.act_bytes += F32
            * (points * (9.0 * c1 + 6.0 * c2 + 9.0 * c3 + 2.0 * enc)
                + n * (c2 + enc + 128.0)
                + 7.0 * b * t * d
                + b * (4.0 * 256.0 + 2.0 * d));
        for i in 0..c.depth {
            let drop = drop_path_rate(c.drop_path, i, c.depth) > 0.0;
            cost.add(vit_block(b, t, d, c.heads as f64, c.mlp_ratio, drop, exec));
            // The center embedding is added before every block.
            cost.act_bytes += F32 * b * t * d;
        }
        cost
    }

    fn bench_models(&self) -> &'static [BenchSize] {
        // PointBERT on ScanObjectNN: 64 groups × 32 points, 12 × 384, 15 classes; the
        // reference clips gradients at 10.
        &[BenchSize {
            name: "pointbert",
            default_batch: 32,
            grad_clip: 10.0,
        }]
    }
    fn bench_setup(
        &self,
        _name: &str,
        tiny: bool,
        b: usize,
        device: &Device,
    ) -> Result<BenchSetup<Self>> {
        let (cfg, groups, k) = if tiny {
            let c = PointBertConfig {
                trans_dim: 32,
                depth: 2,
                heads: 4,
                pointnet_dims: [16, 32, 64],
                encoder_dims: 32,
                ..Default::default()
            };
            (c, 8, 4)
        } else {
            (PointBertConfig::default(), 64, 32)
        };
        let classes = 15;
        use crate::train::bench_inputs::{labels, randn};
        Ok(BenchSetup {
            sizes: serde_json::json!({
                "groups": groups, "group_size": k, "trans_dim": cfg.trans_dim,
                "depth": cfg.depth, "heads": cfg.heads, "classes": classes,
            }),
            batch: PcBatch {
                centers: randn(&[b, groups, 3], device)?,
                neighborhoods: (randn(&[b, groups, k, 3], device)? * 0.1)?,
                target: Target::Labels(labels(b, classes, device)?),
            },
            shape: PcShape {
                groups,
                group_size: k,
            },
            classes,
            config: cfg,
        })
    }
}
