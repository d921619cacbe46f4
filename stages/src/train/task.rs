//! What a `train` / `eval` stage trains, decided by the kind of the stage its `data` names:
//! `pc.tokens` → PointBERT (PAPER.md §3), `ssv2.tokens` → the VideoMAE ViT (§4). The trainer
//! (checkpoints, AdamW, modes, metrics) is the same for both; this module is the one place
//! that knows the differences: the model, its config, the data set and its batches, and
//! which split is held out.

use super::block::{BlockMode, LlmBlock};
use super::data::PcSet;
use super::pointbert::{PointBert, PointBertConfig};
use super::video_data::VideoSet;
use super::video_vit::{VideoVit, VideoVitConfig};
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
}

impl Task {
    /// The task whose data a stage of `kind` writes; None if it writes no training data.
    pub fn of_data_kind(kind: &str) -> Option<Task> {
        match kind {
            crate::pointcloud::stage::KIND => Some(Task::PointCloud),
            "ssv2.tokens" => Some(Task::Video),
            _ => None,
        }
    }

    /// The held-out split (ScanObjectNN `test`, SSv2 `validation`).
    pub fn eval_split(self) -> &'static str {
        match self {
            Task::PointCloud => "test",
            Task::Video => "validation",
        }
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
}

pub enum Dataset {
    Pc(PcSet),
    Video(VideoSet),
}

/// One batch of model inputs.
pub enum Input {
    Pc {
        centers: Tensor,
        neighborhoods: Tensor,
    },
    Video(Tensor),
}

impl Dataset {
    pub fn load(task: Task, up: &Upstream, split: &str) -> Result<Self> {
        Ok(match task {
            Task::PointCloud => Dataset::Pc(PcSet::load(up, split)?),
            Task::Video => Dataset::Video(VideoSet::load(up, split)?),
        })
    }

    pub fn len(&self) -> usize {
        match self {
            Dataset::Pc(s) => s.len(),
            Dataset::Video(s) => s.len(),
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

    /// Augmented inputs and labels (u32 [B]) for samples `idx`.
    pub fn train_batch(
        &self,
        idx: &[usize],
        aug: &mut ChaCha8Rng,
        device: &Device,
    ) -> Result<(Input, Tensor)> {
        Ok(match self {
            Dataset::Pc(s) => {
                let (centers, neighborhoods, l) = s.batch(idx, Some(aug), device)?;
                (
                    Input::Pc {
                        centers,
                        neighborhoods,
                    },
                    l,
                )
            }
            Dataset::Video(s) => {
                let (x, l) = s.train_batch(idx, aug, device)?;
                (Input::Video(x), l)
            }
        })
    }

    /// Test inputs, labels [B], and the views per sample (inputs hold B · views rows,
    /// sample-major; the prediction averages their probabilities).
    pub fn eval_batch(&self, idx: &[usize], device: &Device) -> Result<(Input, Tensor, usize)> {
        Ok(match self {
            Dataset::Pc(s) => {
                let (centers, neighborhoods, l) = s.batch(idx, None, device)?;
                (
                    Input::Pc {
                        centers,
                        neighborhoods,
                    },
                    l,
                    1,
                )
            }
            Dataset::Video(s) => {
                let (x, l) = s.eval_batch(idx, device)?;
                (Input::Video(x), l, s.views)
            }
        })
    }
}

pub enum Model {
    PointBert(Box<PointBert>),
    Video(Box<VideoVit>),
}

impl Model {
    /// The model for `cfg`, with input sizes taken from the data set.
    pub fn build(
        cfg: &ModelConfig,
        data: &Dataset,
        num_classes: usize,
        block: Option<(LlmBlock, BlockMode)>,
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
            _ => anyhow::bail!("the model config does not match the data (point clouds vs video)"),
        })
    }

    /// Logits [rows, classes]. `rng` Some = training.
    pub fn forward(&self, x: &Input, rng: Option<&mut ChaCha8Rng>) -> Result<Tensor> {
        Ok(match (self, x) {
            (
                Model::PointBert(m),
                Input::Pc {
                    centers,
                    neighborhoods,
                },
            ) => m.forward(centers, neighborhoods, rng)?,
            (Model::Video(m), Input::Video(t)) => m.forward(t, rng)?,
            _ => anyhow::bail!("model and input kinds differ"),
        })
    }
}

/// Held-out metrics of a classifier.
#[derive(Debug, Clone)]
pub struct Accuracy {
    /// Top-1 accuracy over all samples (ScanObjectNN's "overall accuracy").
    pub top1: f64,
    pub top5: f64,
    pub mean_class: f64,
    /// (correct at top-1, total) per class.
    pub per_class: Vec<(u64, u64)>,
}

/// Top-1 / top-5 / mean class accuracy of `model` on `set`; with several views per sample,
/// the prediction is the mean of the views' softmax probabilities.
pub fn evaluate(
    model: &Model,
    set: &Dataset,
    classes: usize,
    batch: usize,
    device: &Device,
) -> Result<Accuracy> {
    let mut per_class = vec![(0u64, 0u64); classes];
    let mut top5_right = 0u64;
    let idx: Vec<usize> = (0..set.len()).collect();
    for chunk in idx.chunks(batch.max(1)) {
        let (x, l, views) = set.eval_batch(chunk, device)?;
        let logits = model.forward(&x, None)?;
        let c = logits.dim(1)?;
        let probs = candle_nn::ops::softmax(&logits, D::Minus1)?
            .reshape((chunk.len(), views, c))?
            .mean(1)?;
        let probs: Vec<Vec<f32>> = probs.to_vec2()?;
        let labels: Vec<u32> = l.to_vec1()?;
        for (p, t) in probs.iter().zip(labels) {
            // Rank of the true class: how many classes score strictly higher (ties go to
            // the lower index, as argmax does).
            let pt = p.get(t as usize).copied().unwrap_or(f32::NEG_INFINITY);
            let rank = p
                .iter()
                .enumerate()
                .filter(|&(j, &v)| v > pt || (v == pt && j < t as usize))
                .count();
            if rank < 5 {
                top5_right += 1;
            }
            if let Some(e) = per_class.get_mut(t as usize) {
                e.1 += 1;
                if rank == 0 {
                    e.0 += 1;
                }
            }
        }
    }
    let (right, total) = per_class.iter().fold((0, 0), |a, e| (a.0 + e.0, a.1 + e.1));
    let present: Vec<f64> = per_class
        .iter()
        .filter(|e| e.1 > 0)
        .map(|e| e.0 as f64 / e.1 as f64)
        .collect();
    Ok(Accuracy {
        top1: right as f64 / total.max(1) as f64,
        top5: top5_right as f64 / total.max(1) as f64,
        mean_class: present.iter().sum::<f64>() / present.len().max(1) as f64,
        per_class,
    })
}
