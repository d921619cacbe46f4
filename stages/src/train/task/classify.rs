//! What the classification tasks share: labels or soft (mixed) targets, the cross-entropy
//! loss, and top-1 / top-5 / mean-class accuracy over a held-out split with several views per
//! sample.

use super::{Evaluation, Totals};
use crate::train::models::layers::smoothed_cross_entropy;
use anyhow::Result;
use candle_core::{Tensor, D};
use lm4ve_pipeline::Upstream;

/// `pipeline show`'s line for classification metrics.
pub fn summary(m: &serde_json::Value) -> Option<String> {
    let oa = m.get("overall_accuracy").and_then(|v| v.as_f64())?;
    let macc = m
        .get("mean_class_accuracy")
        .and_then(|v| v.as_f64())
        .unwrap_or(0.0);
    let top5 = m
        .get("top5_accuracy")
        .and_then(|v| v.as_f64())
        .map(|t| format!(", top-5 {:.2}%", t * 100.0))
        .unwrap_or_default();
    Some(format!(
        "accuracy  overall (top-1) {:.2}%{top5}, mean class {:.2}% ({} samples)",
        oa * 100.0,
        macc * 100.0,
        m["samples"]
    ))
}

/// The predictions file of a classification split: each sample's number and name from the
/// shards, its label and top-5 from the flat rows (`train::predictions::rows`).
pub fn predictions_file(up: &Upstream, split: &str, rows: &[Vec<f64>]) -> Result<Option<Vec<u8>>> {
    use crate::train::predictions::{rows::class_rows, samples::class_ids, write_classification};
    let (samples, ids) = class_ids(up, split, rows.len())?;
    let rows = class_rows(rows, &samples, ids.as_deref())?;
    Ok(Some(write_classification(&rows)?))
}

/// What a classification batch is trained towards.
pub enum Target {
    /// u32 [B]
    Labels(Tensor),
    /// Mixed batches: the labels of the unmixed samples (u32 [B], for the training hits) and
    /// the soft targets the loss uses (f32 [B, C], smoothing included).
    Soft { labels: Tensor, soft: Tensor },
}

impl Target {
    /// The labels of the (unmixed) samples.
    pub fn labels(&self) -> &Tensor {
        match self {
            Target::Labels(l) => l,
            Target::Soft { labels, .. } => labels,
        }
    }
}

/// The training loss and how many samples' top-1 class is their label. Soft targets take
/// timm's SoftTargetCrossEntropy (the mean over the batch of −Σ soft · log_softmax); labels
/// the cross-entropy with `label_smoothing`.
pub fn loss(logits: &Tensor, y: &Target, label_smoothing: f64) -> Result<(Tensor, u64)> {
    let loss = match y {
        Target::Soft { soft, .. } => {
            let logp = candle_nn::ops::log_softmax(logits, D::Minus1)?;
            (soft * logp)?.sum(D::Minus1)?.neg()?.mean_all()?
        }
        Target::Labels(l) => smoothed_cross_entropy(logits, l, label_smoothing)?,
    };
    let pred: Vec<u32> = logits.argmax(1)?.to_vec1()?;
    let labels: Vec<u32> = y.labels().to_vec1()?;
    let right = pred.iter().zip(&labels).filter(|(a, b)| a == b).count() as u64;
    Ok((loss, right))
}

/// Top-1 / top-5 / mean class accuracy, accumulated over batches.
pub struct ClassTotals {
    /// (correct at top-1, total) per class.
    per_class: Vec<(u64, u64)>,
    top5_right: u64,
}

impl ClassTotals {
    pub fn new(classes: usize) -> Self {
        ClassTotals {
            per_class: vec![(0, 0); classes],
            top5_right: 0,
        }
    }

    /// With several views per sample, the prediction is the mean of the views' softmax
    /// probabilities, or of their logits when `by_logits`.
    pub fn add(
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
}

impl Totals for ClassTotals {
    /// (right, total) per class, then top-5 right.
    fn to_sums(&self) -> Vec<f64> {
        let mut v: Vec<f64> = self
            .per_class
            .iter()
            .flat_map(|&(r, t)| [r as f64, t as f64])
            .collect();
        v.push(self.top5_right as f64);
        v
    }

    fn set_from_sums(&mut self, v: &[f64]) {
        let Some((top5, pairs)) = v.split_last() else {
            return;
        };
        self.per_class = pairs
            .chunks(2)
            .map(|p| (p[0] as u64, p.get(1).copied().unwrap_or(0.0) as u64))
            .collect();
        self.top5_right = *top5 as u64;
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
