//! What a `train` / `eval` stage trains, decided by the kind of the stage its `data` names:
//! `pc.tokens` → PointBERT (PAPER.md §3), `ssv2.tokens` → the VideoMAE ViT (§4),
//! `av.tokens` → VectorNet (§5). The trainer (checkpoints, AdamW, modes) is the same for all;
//! this module is the one place that knows the differences: the model and its config, the
//! data set and its batches, the loss, the held-out metrics, and which split is held out.

use super::block::{BlockCore, BlockMode};
use super::data::argoverse::AvSet;
use super::data::pointcloud::{PcSet, PcViews};
use super::data::video::VideoSet;
use super::dist::collective::Collective;
use super::models::layers::smoothed_cross_entropy;
use super::models::layers::Execution;
use super::models::pointbert::{PointBert, PointBertConfig};
use super::models::vectornet::{
    forecast_loss, Forecast, ForecastTotals, VectorNet, VectorNetConfig,
};
use super::models::video_vit::{VideoVit, VideoVitConfig};
use anyhow::Result;
use candle_core::{Device, Tensor, D};
use candle_nn::VarBuilder;
use lm4ve_pipeline::Upstream;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    PointCloud,
    Video,
    Forecast,
}

impl Task {
    /// The task whose data a stage of `kind` writes; None if it writes no training data.
    pub fn of_data_kind(kind: &str) -> Option<Task> {
        match kind {
            crate::pointcloud::stage::KIND => Some(Task::PointCloud),
            crate::ssv2::stage::KIND => Some(Task::Video),
            crate::argoverse::stage::KIND => Some(Task::Forecast),
            _ => None,
        }
    }

    /// The held-out split (ScanObjectNN `test`, SSv2 `validation`, Argoverse `val`).
    pub fn eval_split(self) -> &'static str {
        match self {
            Task::PointCloud => "test",
            Task::Video => "validation",
            Task::Forecast => "val",
        }
    }

    /// Classification tasks have labels and `num_classes`; forecasting has trajectories.
    pub fn is_classification(self) -> bool {
        !matches!(self, Task::Forecast)
    }

    /// The typed model config from the stage's `model` table (absent = all defaults).
    pub fn model_config(self, raw: &serde_json::Value) -> Result<ModelConfig, String> {
        let raw = if raw.is_null() {
            serde_json::json!({})
        } else {
            raw.clone()
        };
        match self {
            Task::PointCloud => serde_json::from_value(raw)
                .map(ModelConfig::PointBert)
                .map_err(|e| format!("[model] of a PointBERT (pc.tokens) model: {e}")),
            Task::Video => serde_json::from_value(raw)
                .map(ModelConfig::Video)
                .map_err(|e| format!("[model] of a video ViT (ssv2.tokens) model: {e}")),
            Task::Forecast => serde_json::from_value(raw)
                .map(ModelConfig::VectorNet)
                .map_err(|e| format!("[model] of a VectorNet (av.tokens) model: {e}")),
        }
    }
}

/// Serialized as the inner config alone, so a point-cloud stage's key is what it was before
/// video existed.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ModelConfig {
    PointBert(PointBertConfig),
    Video(VideoVitConfig),
    VectorNet(VectorNetConfig),
}

pub enum Dataset {
    Pc(PcSet),
    Video(VideoSet),
    Av(AvSet),
}

/// One batch of model inputs.
pub enum Input {
    Pc {
        centers: Tensor,
        neighborhoods: Tensor,
    },
    Video(Tensor),
    Av {
        actors: Tensor,
        actor_mask: Tensor,
        lanes: Tensor,
        lane_mask: Tensor,
        /// [B, A, 2] each actor's current position.
        actor_ctrs: Tensor,
    },
}

/// What a batch is trained towards.
pub enum Target {
    /// u32 [B]
    Labels(Tensor),
    /// Mixed batches: the labels of the unmixed samples (u32 [B], for the training hits) and
    /// the soft targets the loss uses (f32 [B, C], smoothing included).
    Soft { labels: Tensor, soft: Tensor },
    /// The AGENT's future [B, P, 2] in its frame (what the metrics score), and every actor's
    /// future [B, A, P, 2] with its mask [B, A, P] (what the loss supervises).
    Trajectory {
        agent: Tensor,
        futures: Tensor,
        future_mask: Tensor,
    },
}

/// What a model predicts.
pub enum Output {
    Logits(Tensor),
    Forecast(Forecast),
}

fn av_input(s: &AvSet, idx: &[usize], device: &Device) -> Result<(Input, Target)> {
    let b = s.batch(idx, device)?;
    Ok((
        Input::Av {
            actors: b.actors,
            actor_mask: b.actor_mask,
            lanes: b.lanes,
            lane_mask: b.lane_mask,
            actor_ctrs: b.actor_ctrs,
        },
        Target::Trajectory {
            agent: b.target,
            futures: b.futures,
            future_mask: b.future_mask,
        },
    ))
}

impl Dataset {
    pub fn load(task: Task, up: &Upstream, split: &str) -> Result<Self> {
        Ok(match task {
            Task::PointCloud => Dataset::Pc(PcSet::load(up, split)?),
            Task::Video => Dataset::Video(VideoSet::load(up, split)?),
            Task::Forecast => Dataset::Av(AvSet::load(up, split)?),
        })
    }

    pub fn len(&self) -> usize {
        match self {
            Dataset::Pc(s) => s.len(),
            Dataset::Video(s) => s.len(),
            Dataset::Av(s) => s.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The sample order of one epoch: a permutation drawn from `rng` only.
    pub fn epoch_order(&self, rng: &mut ChaCha8Rng) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.len()).collect();
        order.shuffle(rng);
        order
    }

    /// Augmented inputs and targets for the samples at positions `rows` of the batch `idx`
    /// (all of it in a job of one; a rank's share in a data-parallel job). A sample's
    /// augmentation depends on the step's generator and its place in the batch, not on
    /// `rows`.
    pub fn train_batch(
        &self,
        idx: &[usize],
        rows: std::ops::Range<usize>,
        aug: &mut ChaCha8Rng,
        device: &Device,
    ) -> Result<(Input, Target)> {
        Ok(match self {
            Dataset::Pc(s) => {
                let (centers, neighborhoods, l) = match s.views {
                    PcViews::Cached => s.batch_rows(idx, rows, Some(aug), device)?,
                    // Each cloud's view is keyed by its index: any subset draws the same.
                    PcViews::Resampled => s.resampled_batch(&idx[rows], aug, device)?,
                };
                (
                    Input::Pc {
                        centers,
                        neighborhoods,
                    },
                    Target::Labels(l),
                )
            }
            Dataset::Video(s) => {
                let (x, l, soft) = s.train_batch(idx, rows, aug, device)?;
                let target = match soft {
                    Some(soft) => Target::Soft { labels: l, soft },
                    None => Target::Labels(l),
                };
                (Input::Video(x), target)
            }
            Dataset::Av(s) => av_input(s, &idx[rows], device)?,
        })
    }

    /// Test inputs, targets, and the views per sample (inputs hold B · views rows,
    /// sample-major; a classifier averages their probabilities).
    pub fn eval_batch(&self, idx: &[usize], device: &Device) -> Result<(Input, Target, usize)> {
        Ok(match self {
            Dataset::Pc(s) => {
                let ((centers, neighborhoods, l), views) = if s.votes > 1 {
                    (s.vote_batch(idx, s.votes, s.vote_seed, device)?, s.votes)
                } else {
                    (s.batch(idx, None, device)?, 1)
                };
                (
                    Input::Pc {
                        centers,
                        neighborhoods,
                    },
                    Target::Labels(l),
                    views,
                )
            }
            Dataset::Video(s) => {
                let (x, l) = s.eval_batch(idx, device)?;
                (Input::Video(x), Target::Labels(l), s.views)
            }
            Dataset::Av(s) => {
                let (x, t) = av_input(s, idx, device)?;
                (x, t, 1)
            }
        })
    }
}

pub enum Model {
    PointBert(Box<PointBert>),
    Video(Box<VideoVit>),
    VectorNet(Box<VectorNet>),
}

impl Model {
    /// The model for `cfg`, with input sizes taken from the data set.
    pub fn build(
        cfg: &ModelConfig,
        data: &Dataset,
        num_classes: usize,
        block: Option<(BlockCore, BlockMode)>,
        vb: VarBuilder,
    ) -> Result<Model> {
        Ok(match (cfg, data) {
            (ModelConfig::PointBert(c), Dataset::Pc(_)) => {
                Model::PointBert(Box::new(PointBert::new(c, num_classes, block, vb)?))
            }
            (ModelConfig::Video(c), Dataset::Video(s)) => Model::Video(Box::new(VideoVit::new(
                c,
                s.tokens,
                s.token_dim,
                num_classes,
                block,
                vb,
            )?)),
            (ModelConfig::VectorNet(c), Dataset::Av(s)) => {
                Model::VectorNet(Box::new(VectorNet::new(
                    c,
                    s.actor_features,
                    s.lane_features,
                    s.pred_steps,
                    block,
                    vb,
                )?))
            }
            _ => anyhow::bail!("the model config does not match the data's kind"),
        })
    }

    /// Sets how attention and the encoder blocks run (values unchanged).
    pub fn configure(&mut self, exec: &Execution) {
        match self {
            Model::PointBert(m) => m.configure(exec),
            Model::Video(m) => m.configure(exec),
            Model::VectorNet(m) => m.configure(exec),
        }
    }

    /// Logits [rows, classes] or a forecast. `rng` Some = training.
    pub fn forward(&self, x: &Input, rng: Option<&mut ChaCha8Rng>) -> Result<Output> {
        Ok(match (self, x) {
            (
                Model::PointBert(m),
                Input::Pc {
                    centers,
                    neighborhoods,
                },
            ) => Output::Logits(m.forward(centers, neighborhoods, rng)?),
            (Model::Video(m), Input::Video(t)) => Output::Logits(m.forward(t, rng)?),
            (
                Model::VectorNet(m),
                Input::Av {
                    actors,
                    actor_mask,
                    lanes,
                    lane_mask,
                    actor_ctrs,
                },
            ) => Output::Forecast(m.forward(actors, actor_mask, lanes, lane_mask, actor_ctrs)?),
            _ => anyhow::bail!("model and input kinds differ"),
        })
    }
}

/// The training loss of a batch and how many of its samples the model got right (a correct
/// class; for forecasts, a best-of-K final error within 2 m: a hit, not a miss).
pub fn train_loss(out: &Output, y: &Target, label_smoothing: f64) -> Result<(Tensor, u64)> {
    Ok(match (out, y) {
        (Output::Logits(logits), Target::Soft { labels, soft }) => {
            // timm's SoftTargetCrossEntropy: mean over the batch of −Σ soft · log_softmax.
            let logp = candle_nn::ops::log_softmax(logits, D::Minus1)?;
            let loss = (soft * logp)?.sum(D::Minus1)?.neg()?.mean_all()?;
            let pred: Vec<u32> = logits.argmax(1)?.to_vec1()?;
            let l: Vec<u32> = labels.to_vec1()?;
            let right = pred.iter().zip(&l).filter(|(a, b)| a == b).count() as u64;
            (loss, right)
        }
        (Output::Logits(logits), Target::Labels(l)) => {
            let loss = smoothed_cross_entropy(logits, l, label_smoothing)?;
            let pred: Vec<u32> = logits.argmax(1)?.to_vec1()?;
            let labels: Vec<u32> = l.to_vec1()?;
            let right = pred.iter().zip(&labels).filter(|(a, b)| a == b).count() as u64;
            (loss, right)
        }
        (
            Output::Forecast(f),
            Target::Trajectory {
                agent,
                futures,
                future_mask,
            },
        ) => {
            let loss = forecast_loss(f, futures, future_mask)?;
            let mut totals = ForecastTotals::default();
            totals.add(&f.agent()?, agent)?;
            (loss, totals.n - totals.k_all.2)
        }
        _ => anyhow::bail!("model output and target kinds differ"),
    })
}

/// Held-out metrics: `score` is one number in [0, 1], higher is better (top-1 accuracy;
/// 1 − miss rate at K modes for forecasts), for logs and curves; `metrics` is everything, as
/// `eval` writes it to metrics.json.
#[derive(Debug, Clone)]
pub struct Evaluation {
    pub score: f64,
    pub metrics: serde_json::Value,
}

/// Evaluates `model` on every sample of `set`.
///
/// In a data-parallel job each rank scores every `world`-th batch and the totals are summed
/// over the ranks, so every rank returns the whole set's metrics.
pub fn evaluate(
    model: &Model,
    set: &Dataset,
    classes: usize,
    batch: usize,
    device: &Device,
    coll: &dyn Collective,
) -> Result<Evaluation> {
    let mut cls = ClassTotals::new(classes);
    let mut fc = ForecastTotals::default();
    let idx: Vec<usize> = (0..set.len()).collect();
    let (rank, world) = (coll.rank(), coll.world_size());
    for (c, chunk) in idx.chunks(batch.max(1)).enumerate() {
        if c % world != rank {
            continue;
        }
        let (x, y, views) = set.eval_batch(chunk, device)?;
        match (model.forward(&x, None)?, y) {
            (Output::Logits(logits), Target::Labels(l)) => {
                // Point-cloud votes average logits (the reference's `test_vote`); video
                // views average probabilities.
                let by_logits = matches!(set, Dataset::Pc(_));
                cls.add(&logits, &l, views, by_logits)?
            }
            (Output::Forecast(f), Target::Trajectory { agent, .. }) => {
                fc.add(&f.agent()?, &agent)?
            }
            _ => anyhow::bail!("model output and target kinds differ"),
        }
    }
    if coll.is_joined() {
        let mut sums = cls.to_sums();
        let n = sums.len();
        sums.extend(fc.to_sums());
        coll.all_reduce_sum_host(&mut sums)?;
        cls = ClassTotals::from_sums(&sums[..n]);
        fc = ForecastTotals::from_sums(&sums[n..]);
    }
    Ok(if let Dataset::Av(_) = set {
        let (ade, fde, mr) = ForecastTotals::mean(fc.k_all, fc.n);
        let (ade1, fde1, mr1) = ForecastTotals::mean(fc.k1, fc.n);
        let k = fc_modes(model);
        Evaluation {
            score: 1.0 - mr,
            metrics: serde_json::json!({
                "samples": fc.n,
                "modes": k,
                "min_ade": ade,
                "min_fde": fde,
                "miss_rate": mr,
                "min_ade_k1": ade1,
                "min_fde_k1": fde1,
                "miss_rate_k1": mr1,
                "miss_threshold_m": super::models::vectornet::MISS_THRESHOLD_M,
            }),
        }
    } else {
        cls.evaluation()
    })
}

fn fc_modes(model: &Model) -> usize {
    match model {
        Model::VectorNet(m) => m.modes(),
        _ => 0,
    }
}

/// Top-1 / top-5 / mean class accuracy, accumulated over batches.
struct ClassTotals {
    /// (correct at top-1, total) per class.
    per_class: Vec<(u64, u64)>,
    top5_right: u64,
}

impl ClassTotals {
    fn new(classes: usize) -> Self {
        ClassTotals {
            per_class: vec![(0, 0); classes],
            top5_right: 0,
        }
    }

    /// With several views per sample, the prediction is the mean of the views' softmax
    /// probabilities, or of their logits when `by_logits`.
    fn add(
        &mut self,
        logits: &Tensor,
        labels: &Tensor,
        views: usize,
        by_logits: bool,
    ) -> Result<()> {
        let c = logits.dim(1)?;
        let b = labels.dim(0)?;
        let scores = if by_logits {
            logits.clone()
        } else {
            candle_nn::ops::softmax(logits, D::Minus1)?
        };
        let probs = scores.reshape((b, views, c))?.mean(1)?;
        let probs: Vec<Vec<f32>> = probs.to_vec2()?;
        let labels: Vec<u32> = labels.to_vec1()?;
        for (p, t) in probs.iter().zip(labels) {
            // Rank of the true class: how many classes score higher (ties go to the lower
            // index, as argmax does).
            let pt = p.get(t as usize).copied().unwrap_or(f32::NEG_INFINITY);
            let rank = p
                .iter()
                .enumerate()
                .filter(|&(j, &v)| v > pt || (v == pt && j < t as usize))
                .count();
            if rank < 5 {
                self.top5_right += 1;
            }
            if let Some(e) = self.per_class.get_mut(t as usize) {
                e.1 += 1;
                if rank == 0 {
                    e.0 += 1;
                }
            }
        }
        Ok(())
    }

    /// The counts as numbers to sum over ranks: (right, total) per class, then top-5 right.
    fn to_sums(&self) -> Vec<f64> {
        let mut v: Vec<f64> = self
            .per_class
            .iter()
            .flat_map(|&(r, t)| [r as f64, t as f64])
            .collect();
        v.push(self.top5_right as f64);
        v
    }

    fn from_sums(v: &[f64]) -> Self {
        let (pairs, top5) = v.split_at(v.len() - 1);
        ClassTotals {
            per_class: pairs
                .chunks(2)
                .map(|p| (p[0] as u64, p[1] as u64))
                .collect(),
            top5_right: top5[0] as u64,
        }
    }

    fn evaluation(&self) -> Evaluation {
        let (right, total) = self
            .per_class
            .iter()
            .fold((0, 0), |a, e| (a.0 + e.0, a.1 + e.1));
        let present: Vec<f64> = self
            .per_class
            .iter()
            .filter(|e| e.1 > 0)
            .map(|e| e.0 as f64 / e.1 as f64)
            .collect();
        let top1 = right as f64 / total.max(1) as f64;
        Evaluation {
            score: top1,
            metrics: serde_json::json!({
                "samples": total,
                "overall_accuracy": top1,
                "top1_accuracy": top1,
                "top5_accuracy": self.top5_right as f64 / total.max(1) as f64,
                "mean_class_accuracy": present.iter().sum::<f64>() / present.len().max(1) as f64,
                "per_class": self.per_class.iter().map(|(r, t)| serde_json::json!({"correct": r, "total": t})).collect::<Vec<_>>(),
            }),
        }
    }
}
