//! Held-out displacement metrics of forecasts, as the official Argoverse code computes them:
//! minADE, minFDE, miss rate (2 m) and brier-minFDE of the AGENT / focal track at K = all
//! modes (6) and K = 1.
//!
//! The rules, read from argoverse-api's `get_displacement_errors_and_miss_rate` (AV1) and
//! av2's `compute_ade` / `compute_fde` / `compute_is_missed_prediction` /
//! `compute_brier_fde` (AV2), which agree on every step:
//! - the modes are ranked by probability, highest first (a stable sort: ties keep the model's
//!   mode order), and the first K kept; their probabilities are renormalized to sum to 1;
//! - the best mode is the one with the smallest final error (FDE); on a tie, the first in
//!   that ranking (argoverse-api's strict `<`, numpy's `argmin`);
//! - minADE is the best mode's average error (not the smallest ADE of any mode), a miss is
//!   its FDE over 2 m, brier-minFDE is its FDE + (1 − p)², p its renormalized probability
//!   (so at K = 1 brier-minFDE equals minFDE).
//!
//! The model's mode confidences are logits; their softmax is the probability. A fixture made
//! by the official code (`scripts/fixtures/forecast_metrics.py`) holds the numbers equal.

use crate::train::models::vectornet::Forecast;
use candle_core::{DType, Result, Tensor};

/// A miss: the chosen mode's final error is over 2 m.
pub const MISS_THRESHOLD_M: f64 = 2.0;

/// One sample's scores at one K.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scored {
    pub ade: f64,
    pub fde: f64,
    pub missed: bool,
    pub brier_fde: f64,
}

/// Scores one forecast: `modes[k]` the k-th mode's points, `probs` their probabilities (any
/// non-negative weights: they are renormalized over the kept modes), `gt` the truth, at most
/// `max_guesses` modes. None when there are no modes or no steps.
pub fn score(
    modes: &[Vec<[f64; 2]>],
    probs: &[f64],
    gt: &[[f64; 2]],
    max_guesses: usize,
) -> Option<Scored> {
    let n = gt.len();
    if n == 0 || modes.is_empty() || probs.len() != modes.len() {
        return None;
    }
    let mut order: Vec<usize> = (0..modes.len()).collect();
    // Highest probability first; `sort_by` is stable, as numpy's `kind="stable"`.
    order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
    order.truncate(max_guesses.max(1));
    let total: f64 = order.iter().map(|&k| probs[k]).sum();
    let err = |k: usize, i: usize| -> f64 {
        let (p, g) = (modes[k][i], gt[i]);
        ((p[0] - g[0]).powi(2) + (p[1] - g[1]).powi(2)).sqrt()
    };
    let mut best = 0;
    let mut best_fde = f64::INFINITY;
    for (j, &k) in order.iter().enumerate() {
        let fde = err(k, n - 1);
        if fde < best_fde {
            best = j;
            best_fde = fde;
        }
    }
    let k = order[best];
    if !best_fde.is_finite() {
        best_fde = err(k, n - 1);
    }
    let ade = (0..n).map(|i| err(k, i)).sum::<f64>() / n as f64;
    let p = probs[k] / total;
    Some(Scored {
        ade,
        fde: best_fde,
        missed: best_fde > MISS_THRESHOLD_M,
        brier_fde: (1.0 - p).powi(2) + best_fde,
    })
}

/// Softmax of mode logits (f64, max-shifted).
pub fn softmax(logits: &[f32]) -> Vec<f64> {
    let m = logits
        .iter()
        .fold(f64::NEG_INFINITY, |m, &l| m.max(f64::from(l)));
    let e: Vec<f64> = logits.iter().map(|&l| (f64::from(l) - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|x| x / s).collect()
}

/// Sums of one K's scores.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Acc {
    pub ade: f64,
    pub fde: f64,
    pub misses: u64,
    pub brier_fde: f64,
}

impl Acc {
    fn add(&mut self, s: Scored) {
        self.ade += s.ade;
        self.fde += s.fde;
        self.misses += u64::from(s.missed);
        self.brier_fde += s.brier_fde;
    }
    fn sums(&self) -> [f64; 4] {
        [self.ade, self.fde, self.misses as f64, self.brier_fde]
    }
    fn from_sums(v: [f64; 4]) -> Self {
        Acc {
            ade: v[0],
            fde: v[1],
            misses: v[2] as u64,
            brier_fde: v[3],
        }
    }
    /// (minADE, minFDE, miss rate, brier-minFDE) averages over `n` samples.
    pub fn mean(&self, n: u64) -> (f64, f64, f64, f64) {
        let n = n.max(1) as f64;
        (
            self.ade / n,
            self.fde / n,
            self.misses as f64 / n,
            self.brier_fde / n,
        )
    }
}

/// The metrics summed over batches (and ranks).
#[derive(Debug, Clone, Default)]
pub struct ForecastTotals {
    /// The model's modes (K), reported beside the metrics.
    pub modes: usize,
    pub n: u64,
    /// K = all modes and K = 1.
    pub k_all: Acc,
    pub k1: Acc,
    /// Samples without a future to score (a split without targets), counted, not scored.
    pub no_target: u64,
}

impl ForecastTotals {
    /// The totals as numbers to sum over ranks.
    pub fn to_sums(&self) -> Vec<f64> {
        let mut v = vec![self.n as f64];
        v.extend(self.k_all.sums());
        v.extend(self.k1.sums());
        v.push(self.no_target as f64);
        v
    }

    /// Totals from `to_sums`' numbers (`modes` is not among them: 0).
    pub fn from_sums(v: &[f64]) -> Self {
        let at = |i: usize| v.get(i).copied().unwrap_or(0.0);
        ForecastTotals {
            modes: 0,
            n: at(0) as u64,
            k_all: Acc::from_sums([at(1), at(2), at(3), at(4)]),
            k1: Acc::from_sums([at(5), at(6), at(7), at(8)]),
            no_target: at(9) as u64,
        }
    }

    /// Samples whose best-of-K final error is within the miss threshold.
    pub fn hits(&self) -> u64 {
        self.n - self.k_all.misses
    }

    /// Adds a batch of the AGENT's forecasts ([B, K, P, 2] modes, [B, K] logits) against
    /// its future [B, P, 2].
    pub fn add(&mut self, f: &Forecast, target: &Tensor) -> Result<()> {
        let (b, k, p, _) = f.modes.dims4()?;
        let modes: Vec<f32> = f.modes.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        let conf: Vec<Vec<f32>> = f.confidence.to_dtype(DType::F32)?.to_vec2()?;
        let target: Vec<f32> = target.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        let pt = |v: &[f32], o: usize| [f64::from(v[o]), f64::from(v[o + 1])];
        for (bi, c) in conf.iter().enumerate().take(b) {
            let ms: Vec<Vec<[f64; 2]>> = (0..k)
                .map(|ki| {
                    (0..p)
                        .map(|i| pt(&modes, ((bi * k + ki) * p + i) * 2))
                        .collect()
                })
                .collect();
            let gt: Vec<[f64; 2]> = (0..p).map(|i| pt(&target, (bi * p + i) * 2)).collect();
            let probs = softmax(c);
            if let (Some(all), Some(one)) = (score(&ms, &probs, &gt, k), score(&ms, &probs, &gt, 1))
            {
                self.k_all.add(all);
                self.k1.add(one);
                self.n += 1;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn forecast(modes: Vec<f32>, conf: Vec<f32>, b: usize, k: usize, p: usize) -> Forecast {
        let dev = Device::Cpu;
        Forecast {
            modes: Tensor::from_vec(modes, (b, k, p, 2), &dev).unwrap(),
            confidence: Tensor::from_vec(conf, (b, k), &dev).unwrap(),
            single: Tensor::zeros((b, p, 2), DType::F32, &dev).unwrap(),
        }
    }

    #[test]
    fn metrics_pick_the_best_final_mode_and_the_most_confident_one() {
        // One scenario, 2 modes, 2 steps; target (0,1) → (0,2).
        // Mode 0 ends 3 m off (miss), mode 1 ends 1 m off; mode 0 is the confident one.
        let f = forecast(
            vec![0.0, 1.0, 3.0, 2.0, /* mode 1 */ 0.0, 0.0, 0.0, 3.0],
            vec![2.0, 1.0],
            1,
            2,
            2,
        );
        let target = Tensor::new(&[[[0f32, 1.0], [0.0, 2.0]]], &Device::Cpu).unwrap();
        let mut t = ForecastTotals::default();
        t.add(&f, &target).unwrap();
        let (ade, fde, mr, brier) = t.k_all.mean(t.n);
        assert!((fde - 1.0).abs() < 1e-6 && (ade - 1.0).abs() < 1e-6 && mr == 0.0);
        // Mode 1's probability is softmax([2, 1])[1].
        let p1 = 1.0 / (1.0 + 1f64.exp());
        assert!((brier - (1.0 + (1.0 - p1).powi(2))).abs() < 1e-9);
        let (ade1, fde1, mr1, brier1) = t.k1.mean(t.n);
        assert!((fde1 - 3.0).abs() < 1e-6 && (ade1 - 1.5).abs() < 1e-6 && mr1 == 1.0);
        assert_eq!(brier1, fde1, "at K = 1 the kept mode's probability is 1");
        t.no_target = 3;
        let back = ForecastTotals::from_sums(&t.to_sums());
        assert_eq!(
            (back.n, back.k_all, back.k1, back.no_target),
            (t.n, t.k_all, t.k1, 3)
        );
    }

    /// The numbers of argoverse-api's `get_displacement_errors_and_miss_rate` and av2's
    /// `compute_*` functions on fixed forecasts (tests/fixtures/forecast_metrics.json, made by
    /// scripts/fixtures/forecast_metrics.py with the official code).
    #[test]
    fn metrics_equal_the_official_code() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/forecast_metrics.json"
        );
        let text = std::fs::read_to_string(path).unwrap();
        let fx: serde_json::Value = serde_json::from_str(&text).unwrap();
        let pts = |v: &serde_json::Value| -> Vec<[f64; 2]> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|p| [p[0].as_f64().unwrap(), p[1].as_f64().unwrap()])
                .collect()
        };
        let close = |a: f64, b: f64, what: &str| {
            assert!(
                (a - b).abs() <= 1e-12 * b.abs().max(1.0),
                "{what}: lm4ve {a} official {b}"
            );
        };
        for dataset in ["av1", "av2"] {
            let d = &fx[dataset];
            let cases = d["cases"].as_array().unwrap();
            for k in [1usize, 6] {
                let mut acc = Acc::default();
                for (c, case) in cases.iter().enumerate() {
                    let modes: Vec<Vec<[f64; 2]>> =
                        case["pred"].as_array().unwrap().iter().map(pts).collect();
                    let probs: Vec<f64> = case["prob"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|p| p.as_f64().unwrap())
                        .collect();
                    let s = score(&modes, &probs, &pts(&case["gt"]), k).unwrap();
                    if let Some(want) = case.get(format!("K{k}")) {
                        let what = format!("{dataset} case {c} K={k}");
                        close(s.ade, want["ade"].as_f64().unwrap(), &format!("{what} ADE"));
                        close(s.fde, want["fde"].as_f64().unwrap(), &format!("{what} FDE"));
                        assert_eq!(s.missed, want["missed"].as_bool().unwrap(), "{what}");
                        close(
                            s.brier_fde,
                            want["brier_fde"].as_f64().unwrap(),
                            &format!("{what} brier"),
                        );
                    }
                    acc.add(s);
                }
                let (ade, fde, mr, brier) = acc.mean(cases.len() as u64);
                let want = &d[format!("K{k}")];
                let what = format!("{dataset} K={k}");
                close(
                    ade,
                    want["minADE"].as_f64().unwrap(),
                    &format!("{what} minADE"),
                );
                close(
                    fde,
                    want["minFDE"].as_f64().unwrap(),
                    &format!("{what} minFDE"),
                );
                close(mr, want["MR"].as_f64().unwrap(), &format!("{what} MR"));
                close(
                    brier,
                    want["brier-minFDE"].as_f64().unwrap(),
                    &format!("{what} brier-minFDE"),
                );
            }
        }
    }
}
