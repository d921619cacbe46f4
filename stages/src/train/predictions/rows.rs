//! A held-out batch's predictions as flat rows of numbers, one per sample, and back.
//!
//! Flat rows (a fixed width per run) are what the eval loop collects: a data-parallel job
//! adds the ranks' rows up with the same all-reduce it uses for the metric totals. Layouts:
//! - classification: `[label, class_0 … class_{k−1}, prob_0 … prob_{k−1}]`, k = min(5, C),
//!   most probable first;
//! - forecasting: `[prob_0 … prob_{K−1}, mode_0's P (x, y) pairs, …, truth's P (x, y)]`, modes
//!   ranked by probability (stable: ties keep the model's order), in the scene's frame.

use super::{ClassRow, ForecastRow, Mode};
use crate::train::models::vectornet::Forecast;
use crate::train::task::forecast::metrics::softmax;
use anyhow::{ensure, Result};
use candle_core::{DType, Tensor, D};

/// The classes and probabilities of each sample: the mean over its `views` of the softmax
/// (or, `by_logits`, the softmax of the mean logits) — what the accuracy ranks
/// (`classify::ClassTotals::add`).
pub fn classification(
    logits: &Tensor,
    labels: &Tensor,
    views: usize,
    by_logits: bool,
) -> Result<Vec<Vec<f64>>> {
    let c = logits.dim(1)?;
    let b = labels.dim(0)?;
    let logits = logits.to_dtype(DType::F32)?;
    let probs = if by_logits {
        let mean = logits.reshape((b, views, c))?.mean(1)?;
        candle_nn::ops::softmax(&mean, D::Minus1)?
    } else {
        candle_nn::ops::softmax(&logits, D::Minus1)?
            .reshape((b, views, c))?
            .mean(1)?
    };
    let probs: Vec<Vec<f32>> = probs.to_vec2()?;
    let labels: Vec<u32> = labels.to_vec1()?;
    let k = c.min(5);
    Ok(probs
        .iter()
        .zip(labels)
        .map(|(p, t)| {
            let mut order: Vec<usize> = (0..c).collect();
            // Highest first; ties to the lower class, as argmax.
            order.sort_by(|&a, &b| p[b].total_cmp(&p[a]).then(a.cmp(&b)));
            order.truncate(k);
            let mut row = vec![f64::from(t)];
            row.extend(order.iter().map(|&j| j as f64));
            row.extend(order.iter().map(|&j| f64::from(p[j])));
            row
        })
        .collect())
}

/// The AGENT's forecast `f` (modes [B, K, P, 2], confidence logits [B, K]) and its future
/// `truth` [B, P, 2], in the scene's frame.
pub fn forecast(f: &Forecast, truth: &Tensor) -> Result<Vec<Vec<f64>>> {
    let (b, k, p, _) = f.modes.dims4()?;
    let modes: Vec<f32> = f.modes.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    let conf: Vec<Vec<f32>> = f.confidence.to_dtype(DType::F32)?.to_vec2()?;
    let truth: Vec<f32> = truth.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    ensure!(
        truth.len() == b * p * 2,
        "the truth has {} numbers, expected {b}·{p}·2",
        truth.len()
    );
    Ok(conf
        .iter()
        .enumerate()
        .map(|(bi, c)| {
            let probs = softmax(c);
            let mut order: Vec<usize> = (0..k).collect();
            order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
            let mut row: Vec<f64> = order.iter().map(|&m| probs[m]).collect();
            for &m in &order {
                let at = (bi * k + m) * p * 2;
                row.extend(modes[at..at + p * 2].iter().map(|&v| f64::from(v)));
            }
            let at = bi * p * 2;
            row.extend(truth[at..at + p * 2].iter().map(|&v| f64::from(v)));
            row
        })
        .collect())
}

/// Classification rows as the file holds them; `samples` and `ids` per row (ids: None when
/// the data has no names).
pub fn class_rows(
    flat: &[Vec<f64>],
    samples: &[i64],
    ids: Option<&[String]>,
) -> Result<Vec<ClassRow>> {
    ensure!(
        flat.len() == samples.len(),
        "{} predictions for {} samples",
        flat.len(),
        samples.len()
    );
    flat.iter()
        .enumerate()
        .map(|(i, r)| {
            ensure!(
                r.len() % 2 == 1,
                "a classification prediction of {} numbers",
                r.len()
            );
            let k = (r.len() - 1) / 2;
            Ok(ClassRow {
                sample: samples[i],
                label: r[0] as i64,
                top5: (0..k)
                    .map(|j| (r[1 + j] as i64, r[1 + k + j] as f32))
                    .collect(),
                id: ids.and_then(|ids| ids.get(i).cloned()),
            })
        })
        .collect()
}

/// What a forecast scene needs beside its flat row: its identity and frame.
pub struct SceneInfo {
    pub sample: i64,
    pub scenario_id: String,
    pub track_id: String,
    pub frame: [f32; 3],
}

/// Forecast rows as the file holds them: positions turned to world coordinates; no truth
/// when `with_truth` is false.
pub fn forecast_rows(
    flat: &[Vec<f64>],
    scenes: &[SceneInfo],
    pred_steps: usize,
    with_truth: bool,
) -> Result<Vec<ForecastRow>> {
    ensure!(
        flat.len() == scenes.len(),
        "{} forecasts for {} scenes",
        flat.len(),
        scenes.len()
    );
    let p = pred_steps;
    flat.iter()
        .zip(scenes)
        .map(|(r, s)| {
            let w = r.len();
            ensure!(
                w >= 2 * p && (w - 2 * p).is_multiple_of(1 + 2 * p),
                "a forecast of {w} numbers does not fit {p} steps"
            );
            let k = (w - 2 * p) / (1 + 2 * p);
            let world = |pts: &[f64]| -> (Vec<f64>, Vec<f64>) {
                pts.chunks_exact(2)
                    .map(|q| {
                        let v = super::to_world(s.frame, [q[0], q[1]]);
                        (v[0], v[1])
                    })
                    .unzip()
            };
            let modes = (0..k)
                .map(|m| {
                    let at = k + m * 2 * p;
                    let (x, y) = world(&r[at..at + 2 * p]);
                    Mode {
                        probability: r[m],
                        x,
                        y,
                    }
                })
                .collect();
            Ok(ForecastRow {
                sample: s.sample,
                scenario_id: s.scenario_id.clone(),
                track_id: s.track_id.clone(),
                modes,
                truth: with_truth.then(|| world(&r[w - 2 * p..])),
            })
        })
        .collect()
}
