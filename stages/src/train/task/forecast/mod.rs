//! Motion forecasting (PAPER.md §5): VectorNet with the frozen block on `av.tokens`
//! (Argoverse 1.1, 30 future steps) or `av2.tokens` (Argoverse 2, 60), its reference's recipe
//! (the first author's StreamingForecasting), its loss (`loss.rs`) and the official Argoverse
//! displacement metrics (`metrics.rs`). One task per data kind ([`AV1`], [`AV2`]), the same
//! code: the shapes (steps, feature counts) come from the shards.

mod bench;
mod cost;
pub mod loss;
pub mod metrics;
mod targets;

use self::loss::forecast_loss;
use self::metrics::{ForecastTotals, MISS_THRESHOLD_M};
use super::{
    BenchSetup, BenchSize, Checkpoint, EpochMetrics, Evaluation, Reported, Task, TaskInfo, Totals,
};
use crate::plot::{curves_png_axes, Series};
use crate::train::block::{BlockCore, BlockMode};
use crate::train::data::argoverse::AvSet;
use crate::train::models::layers::{init_vars_xavier, Execution};
use crate::train::models::vectornet::{Forecast, VectorNet, VectorNetConfig};
use crate::train::params::{EvalParams, ParamIssue, TrainParams};
use crate::train::plan::cost::{Cost, Exec};
use crate::train::recipe::{SchedulePreset, TaskDefaults, TaskRecipe, WarmupSteps};
use crate::train::schedule::LrSteps;
use anyhow::Result;
use candle_core::{Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use lm4ve_pipeline::{PipelineConfig, StageConfig, Upstream};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// The motion-forecasting task on one Argoverse release.
pub struct Forecasting {
    pub data: Release,
}

/// Which Argoverse the task trains on (its data kind and its metrics' reference code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// Argoverse 1.1, `av.tokens`.
    Av1,
    /// Argoverse 2, `av2.tokens`.
    Av2,
}

/// Forecasting on Argoverse 1.1 (`av.tokens`).
pub const AV1: Forecasting = Forecasting { data: Release::Av1 };
/// Forecasting on Argoverse 2 (`av2.tokens`).
pub const AV2: Forecasting = Forecasting { data: Release::Av2 };
/// The AV1 task under the name it had before AV2 existed (a braced struct's name is only a
/// type, so the value `Forecasting` can be this constant): callers and tests that say
/// `&Forecasting` keep meaning AV1.
#[allow(non_upper_case_globals)]
pub const Forecasting: Forecasting = AV1;

/// The polylines of a scene and the steps to predict.
#[derive(Debug, Clone, Copy)]
pub struct AvShape {
    pub actors: usize,
    pub actor_vectors: usize,
    pub actor_features: usize,
    pub lanes: usize,
    pub lane_vectors: usize,
    pub lane_features: usize,
    pub pred_steps: usize,
}

/// A batch of scenes.
pub struct AvBatch {
    pub actors: Tensor,
    pub actor_mask: Tensor,
    pub lanes: Tensor,
    pub lane_mask: Tensor,
    /// [B, A, 2] each actor's current position.
    pub actor_ctrs: Tensor,
    /// The AGENT's future [B, P, 2] in its frame (what the metrics score).
    pub agent: Tensor,
    /// Every actor's future [B, A, P, 2] with its mask [B, A, P] (what the loss supervises).
    pub futures: Tensor,
    pub future_mask: Tensor,
    /// Eval batches: per sample, whether its AGENT has a future to score (AV2's `test`
    /// carries none: zeros with mask 0). None in training batches (every sample has one).
    pub has_target: Option<Vec<bool>>,
}

/// The held-out forecast of an epoch, kept in its record.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ForecastEpoch {
    min_ade: f64,
    min_fde: f64,
    miss_rate: f64,
}

/// StreamingForecasting's VectorNet schedule (×0.25 at epochs 16 and 20 of 24) scaled to
/// `epochs`: at 2/3 and 5/6 of the run.
pub fn vectornet_reference_steps(epochs: usize) -> LrSteps {
    let at = |f: f64| (epochs as f64 * f).round() as usize;
    LrSteps {
        epochs: vec![at(2.0 / 3.0), at(5.0 / 6.0)],
        rate: 0.25,
    }
}

impl TaskRecipe for Forecasting {
    // VectorNet: 60 epochs (PAPER.md §5); the first author's StreamingForecasting
    // `configs/forecaster/optim/VectorNet.yaml`: AdamW lr 5e-4, wd 1e-4, grad-norm clip 0.1;
    // its step decay (×0.25 at epochs 16 and 20 of 24) is `lr_steps`, scaled to the run's
    // epochs.
    fn defaults(&self) -> TaskDefaults {
        TaskDefaults {
            epochs: 60,
            warmup_epochs: 1,
            batch_size: 32,
            lr: 5e-4,
            min_lr: 1e-6,
            weight_decay: 1e-4,
            grad_clip: 0.1,
            label_smoothing: 0.0,
            adapter_lr_scale: 1.0,
            no_decay_lr_scale: 1.0,
            epochs_per_checkpoint: 10,
            layer_decay: None,
            mixup: 0.0,
            cutmix: 0.0,
        }
    }

    fn reference_lr_steps(&self, epochs: usize) -> Option<LrSteps> {
        Some(vectornet_reference_steps(epochs))
    }

    fn schedule_names(&self) -> &'static [&'static str] {
        &[SCHEDULE_PAPER, SCHEDULE_STREAMING]
    }

    /// `paper`: the paper's 60 epochs (PAPER.md §5), one warm-up epoch, then the cosine to
    /// `min_lr` (the paper states no decay). `streaming-forecasting`: the first author's
    /// VectorNet recipe as `configs/forecaster/optim/VectorNet.yaml` and
    /// `tools/pretrain/train_forecaster_vectornet.py` run it: 24 epochs, a 1000-iteration
    /// warm-up from `lr × 1e-3` (`warmup_iters`, `warmup_ratio`), ×0.25 at epochs 16 and 20.
    fn schedule(&self, name: &str) -> Option<SchedulePreset> {
        match name {
            SCHEDULE_PAPER => Some(SchedulePreset {
                name: SCHEDULE_PAPER,
                epochs: 60,
                warmup_epochs: 1,
                warmup_steps: None,
                lr_steps: None,
            }),
            SCHEDULE_STREAMING => Some(SchedulePreset {
                name: SCHEDULE_STREAMING,
                epochs: 24,
                warmup_epochs: 0,
                warmup_steps: Some(WarmupSteps {
                    steps: 1000,
                    start_ratio: 1e-3,
                    pass: true,
                }),
                lr_steps: Some(LrSteps {
                    epochs: vec![16, 20],
                    rate: 0.25,
                }),
            }),
            _ => None,
        }
    }

    fn default_schedule(&self) -> Option<&'static str> {
        Some(SCHEDULE_PAPER)
    }
}

/// The paper's VectorNet schedule (60 epochs, cosine).
pub const SCHEDULE_PAPER: &str = "paper";
/// StreamingForecasting's VectorNet schedule (24 epochs, iteration warm-up, step decay).
pub const SCHEDULE_STREAMING: &str = "streaming-forecasting";

impl TaskInfo for Forecasting {
    fn name(&self) -> &'static str {
        match self.data {
            Release::Av1 => "forecast",
            Release::Av2 => "forecast_av2",
        }
    }
    fn title(&self) -> &'static str {
        "Forecast"
    }
    fn data_kind(&self) -> &'static str {
        match self.data {
            Release::Av1 => crate::argoverse::stage::KIND,
            Release::Av2 => crate::argoverse::av2::stage::KIND,
        }
    }
    fn model_title(&self) -> &'static str {
        match self.data {
            Release::Av1 => "VectorNet (av.tokens)",
            Release::Av2 => "VectorNet (av2.tokens)",
        }
    }
    /// StreamingForecasting saves every epoch (`{epoch}.ckpt`) and evaluates the one it is
    /// given: the last of the schedule; nothing selects on validation.
    fn reported(&self) -> Reported {
        Reported {
            checkpoint: Checkpoint::Last,
            why: "StreamingForecasting evaluates the last epoch's checkpoint",
        }
    }
    fn eval_split(&self) -> &'static str {
        "val"
    }
    fn is_classification(&self) -> bool {
        false
    }
    fn benchmark_classes(&self) -> (usize, &'static str) {
        (0, "Argoverse")
    }
    fn check_eval(&self, p: &EvalParams) -> Result<(), ParamIssue> {
        p.refuse_vote()?;
        // A split without futures (AV2's `test`) is evaluated too: nothing is scored (the
        // metrics say so), its forecasts go to a submission (`lm4ve pipeline submit`).
        p.check_test_views(false)
    }
    fn metrics_summary(&self, m: &serde_json::Value) -> Option<String> {
        if m.get("targets").and_then(|t| t.as_bool()) == Some(false) {
            return Some(format!(
                "forecast  K={}: {} samples without targets (nothing scored: `lm4ve pipeline submit` writes their forecasts for the challenge server)",
                m["modes"], m["samples"]
            ));
        }
        let fde = m.get("min_fde").and_then(|v| v.as_f64())?;
        let g = |k: &str| m.get(k).and_then(|v| v.as_f64()).unwrap_or(f64::NAN);
        Some(format!(
            "forecast  K={}: minADE {:.3} m, minFDE {fde:.3} m, miss rate {:.2}%, brier-minFDE {:.3}; K=1: minADE {:.3} m, minFDE {:.3} m, miss rate {:.2}% ({} samples)",
            m["modes"],
            g("min_ade"),
            g("miss_rate") * 100.0,
            g("brier_min_fde"),
            g("min_ade_k1"),
            g("min_fde_k1"),
            g("miss_rate_k1") * 100.0,
            m["samples"]
        ))
    }
}

impl Task for Forecasting {
    type Config = VectorNetConfig;
    type Shape = AvShape;
    type Data = AvSet;
    type Batch = AvBatch;
    type Model = VectorNet;
    type Output = Forecast;
    type Totals = ForecastTotals;

    fn load(&self, up: &Upstream, split: &str) -> Result<AvSet> {
        AvSet::load(up, split)
    }
    fn len(&self, data: &AvSet) -> usize {
        data.len()
    }
    fn shape_of(&self, s: &AvSet) -> AvShape {
        AvShape {
            actors: s.max_actors,
            actor_vectors: s.actor_vectors,
            actor_features: s.actor_features,
            lanes: s.max_lanes,
            lane_vectors: s.lane_vectors,
            lane_features: s.lane_features,
            pred_steps: s.pred_steps,
        }
    }
    fn prepare_train(
        &self,
        data: &mut AvSet,
        _p: &TrainParams,
        cfg: &VectorNetConfig,
    ) -> Result<()> {
        data.agent_only_loss = cfg.agent_only_loss;
        Ok(())
    }
    fn train_batch(
        &self,
        data: &AvSet,
        idx: &[usize],
        rows: std::ops::Range<usize>,
        _aug: &mut ChaCha8Rng,
        device: &Device,
    ) -> Result<AvBatch> {
        batch(data, &idx[rows], device)
    }
    fn eval_batch(&self, data: &AvSet, idx: &[usize], device: &Device) -> Result<(AvBatch, usize)> {
        let mut b = batch(data, idx, device)?;
        b.has_target = Some(targets::agent_has_target(&b.future_mask)?);
        Ok((b, 1))
    }

    fn build_model(
        &self,
        cfg: &VectorNetConfig,
        s: AvShape,
        _classes: usize,
        block: Option<(BlockCore, BlockMode)>,
        vb: VarBuilder,
    ) -> Result<VectorNet> {
        Ok(VectorNet::new(
            cfg,
            s.actor_features,
            s.lane_features,
            s.pred_steps,
            block,
            vb,
        )?)
    }
    /// VectorNet's reference initialises its own way (xavier, biases U(0, 1)).
    fn init_weights(&self, varmap: &VarMap, seed: u64) -> Result<()> {
        Ok(init_vars_xavier(varmap, seed)?)
    }
    fn configure(&self, model: &mut VectorNet, exec: &Execution) {
        model.configure(exec)
    }
    fn forward(
        &self,
        m: &VectorNet,
        b: &AvBatch,
        _rng: Option<&mut ChaCha8Rng>,
    ) -> Result<Forecast> {
        Ok(m.forward(
            &b.actors,
            &b.actor_mask,
            &b.lanes,
            &b.lane_mask,
            &b.actor_ctrs,
        )?)
    }

    /// The joint loss, and how many AGENTs' best-of-K final error is within 2 m (a hit).
    fn loss(&self, f: &Forecast, b: &AvBatch, _label_smoothing: f64) -> Result<(Tensor, u64)> {
        let loss = forecast_loss(f, &b.futures, &b.future_mask)?;
        let mut totals = ForecastTotals::default();
        totals.add(&f.agent()?, &b.agent)?;
        Ok((loss, totals.hits()))
    }
    fn new_totals(&self, model: &VectorNet, _classes: usize) -> ForecastTotals {
        ForecastTotals {
            modes: model.modes(),
            ..ForecastTotals::default()
        }
    }
    fn score(
        &self,
        totals: &mut ForecastTotals,
        f: Forecast,
        b: AvBatch,
        _views: usize,
    ) -> Result<()> {
        targets::score(totals, &f.agent()?, &b.agent, b.has_target.as_deref())
    }
    fn prediction_rows(&self, f: &Forecast, b: &AvBatch, _views: usize) -> Result<Vec<Vec<f64>>> {
        crate::train::predictions::rows::forecast(&f.agent()?, &b.agent)
    }
    /// The K modes of each scene in world coordinates (`train::predictions`).
    fn predictions_file(
        &self,
        up: &Upstream,
        split: &str,
        data: &AvSet,
        rows: &[Vec<f64>],
    ) -> Result<Option<Vec<u8>>> {
        use crate::train::predictions::{rows, samples, write_forecast};
        let scenes = samples::scenes(up, split, rows.len())?;
        let with_truth = samples::has_targets(up, split);
        let rows = rows::forecast_rows(rows, &scenes, data.pred_steps, with_truth)?;
        Ok(Some(write_forecast(&rows)?))
    }

    fn epoch_detail(&self, held: &Evaluation) -> Option<serde_json::Value> {
        let f = |k: &str| held.metrics[k].as_f64().unwrap_or(f64::NAN);
        serde_json::to_value(ForecastEpoch {
            min_ade: f("min_ade"),
            min_fde: f("min_fde"),
            miss_rate: f("miss_rate"),
        })
        .ok()
    }
    fn epoch_log(&self, stage: &str, m: &EpochMetrics) -> String {
        let f = |k: &str| {
            m.detail
                .as_ref()
                .and_then(|d| d[k].as_f64())
                .unwrap_or(f64::NAN)
        };
        format!(
            "{stage}: epoch {} loss {:.4} train hits {:.3} held-out minADE {:.3} m minFDE {:.3} m miss rate {:.3} ({:.1} s)",
            m.epoch + 1,
            m.loss,
            m.train_acc,
            f("min_ade"),
            f("min_fde"),
            f("miss_rate"),
            m.seconds
        )
    }
    fn curve_names(&self) -> (&'static str, &'static str) {
        ("train hits (final error < 2 m)", "held-out 1 − miss rate")
    }
    fn extra_files(&self) -> &'static [&'static str] {
        &["forecast.png"]
    }
    fn extra_plots(
        &self,
        stage: &str,
        history: &[EpochMetrics],
    ) -> Result<Vec<(&'static str, Vec<u8>)>> {
        let of = |k: &str| {
            history
                .iter()
                .filter_map(|m| {
                    let d = m.detail.as_ref()?;
                    Some((m.epoch as f64 + 1.0, d[k].as_f64().unwrap_or(f64::NAN)))
                })
                .collect::<Vec<_>>()
        };
        let png = curves_png_axes(
            &format!("{stage}: held-out forecasts of the AGENT"),
            "metres",
            &[
                Series {
                    name: "minADE, best of K modes (m)",
                    points: of("min_ade"),
                    held_out: true,
                },
                Series {
                    name: "minFDE, best of K modes (m)",
                    points: of("min_fde"),
                    held_out: true,
                },
            ],
            "miss rate (final error > 2 m)",
            &[Series {
                name: "miss rate (right axis)",
                points: of("miss_rate"),
                held_out: true,
            }],
        )?;
        Ok(vec![("forecast.png", png)])
    }

    fn shape_of_params(&self, config: &PipelineConfig, sc: &StageConfig) -> Result<AvShape> {
        if self.data == Release::Av2 {
            use crate::argoverse::av2::{stage::Av2Params, vectorize as v2};
            let p: Av2Params = config.typed_params(sc)?;
            return Ok(AvShape {
                actors: p.max_actors,
                actor_vectors: p.obs_steps.saturating_sub(1),
                actor_features: v2::ACTOR_FEATURES,
                lanes: p.max_lanes,
                lane_vectors: p.lane_points.saturating_sub(1),
                lane_features: v2::LANE_FEATURES,
                pred_steps: p.pred_steps,
            });
        }
        let p: crate::argoverse::stage::AvParams = config.typed_params(sc)?;
        Ok(AvShape {
            actors: p.max_actors,
            actor_vectors: p.obs_steps.saturating_sub(1),
            actor_features: crate::argoverse::vectorize::ACTOR_FEATURES,
            lanes: p.max_lanes,
            lane_vectors: p.lane_points.saturating_sub(1),
            lane_features: crate::argoverse::vectorize::LANE_FEATURES,
            pred_steps: p.pred_steps,
        })
    }
    fn tokens(&self, _cfg: &VectorNetConfig, s: AvShape) -> usize {
        s.actors + s.lanes
    }
    fn width(&self, cfg: &VectorNetConfig) -> usize {
        cfg.width()
    }
    fn encoder_cost(
        &self,
        c: &VectorNetConfig,
        s: AvShape,
        b: f64,
        _classes: f64,
        _exec: Exec,
    ) -> Cost {
        cost::vectornet(c, s, b)
    }

    fn bench_models(&self) -> &'static [BenchSize] {
        // One VectorNet bench model (its name is unique): AV1's sizes.
        if self.data == Release::Av2 {
            return &[];
        }
        // VectorNet on Argoverse: 64 actors × 19 vectors, 128 lanes × 9 vectors, 6 modes ×
        // 30 steps; the bench does not clip.
        &[BenchSize {
            name: "vectornet",
            default_batch: 32,
            grad_clip: 0.0,
        }]
    }
    fn bench_setup(
        &self,
        _name: &str,
        tiny: bool,
        b: usize,
        device: &Device,
    ) -> Result<BenchSetup<Self>> {
        bench::setup(tiny, b, device)
    }
}

fn batch(s: &AvSet, idx: &[usize], device: &Device) -> Result<AvBatch> {
    let b = s.batch(idx, device)?;
    Ok(AvBatch {
        actors: b.actors,
        actor_mask: b.actor_mask,
        lanes: b.lanes,
        lane_mask: b.lane_mask,
        actor_ctrs: b.actor_ctrs,
        agent: b.target,
        futures: b.futures,
        future_mask: b.future_mask,
        has_target: None,
    })
}

impl Totals for ForecastTotals {
    fn to_sums(&self) -> Vec<f64> {
        ForecastTotals::to_sums(self)
    }
    fn set_from_sums(&mut self, sums: &[f64]) {
        let modes = self.modes;
        *self = ForecastTotals::from_sums(sums);
        self.modes = modes;
    }
    fn evaluation(&self) -> Evaluation {
        if let Some(e) = targets::without_targets(self) {
            return e;
        }
        let (ade, fde, mr, brier) = self.k_all.mean(self.n);
        let (ade1, fde1, mr1, brier1) = self.k1.mean(self.n);
        let mut e = Evaluation {
            score: 1.0 - mr,
            metrics: serde_json::json!({
                "samples": self.n,
                "modes": self.modes,
                "min_ade": ade,
                "min_fde": fde,
                "miss_rate": mr,
                "brier_min_fde": brier,
                "min_ade_k1": ade1,
                "min_fde_k1": fde1,
                "miss_rate_k1": mr1,
                "brier_min_fde_k1": brier1,
                "metric_rules": "argoverse-api get_displacement_errors_and_miss_rate = av2 compute_ade/fde/is_missed_prediction/brier_fde on the min-FDE mode (metrics.rs)",
                "miss_threshold_m": MISS_THRESHOLD_M,
            }),
        };
        if self.no_target > 0 {
            e.metrics["samples_without_targets"] = self.no_target.into();
        }
        e
    }
}
