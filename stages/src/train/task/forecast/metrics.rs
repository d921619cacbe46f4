//! Held-out displacement metrics of forecasts (minADE, minFDE, miss rate at K modes and at
//! K = 1), as the Argoverse evaluation computes them.

use crate::train::models::vectornet::Forecast;
use candle_core::{DType, Result, Tensor};

/// Displacement metrics as the Argoverse evaluation computes them, summed over a batch.
#[derive(Debug, Clone, Default)]
pub struct ForecastTotals {
    /// The model's modes (K), reported beside the metrics.
    pub modes: usize,
    pub n: u64,
    /// (sum minADE, sum minFDE, misses) for K = all modes and K = 1.
    pub k_all: (f64, f64, u64),
    pub k1: (f64, f64, u64),
}

/// A miss: the chosen mode's final error is over 2 m.
pub const MISS_THRESHOLD_M: f64 = 2.0;

impl ForecastTotals {
    /// The totals as numbers to sum over ranks.
    pub fn to_sums(&self) -> Vec<f64> {
        let (a, b) = (self.k_all, self.k1);
        vec![self.n as f64, a.0, a.1, a.2 as f64, b.0, b.1, b.2 as f64]
    }

    /// Totals from `to_sums`' numbers (`modes` is not among them: 0).
    pub fn from_sums(v: &[f64]) -> Self {
        let at = |i: usize| v.get(i).copied().unwrap_or(0.0);
        ForecastTotals {
            modes: 0,
            n: at(0) as u64,
            k_all: (at(1), at(2), at(3) as u64),
            k1: (at(4), at(5), at(6) as u64),
        }
    }

    /// Adds a batch: K = all modes picks the mode with the smallest final error (minFDE), and
    /// minADE is that same mode's average error; K = 1 takes the most confident mode.
    pub fn add(&mut self, f: &Forecast, target: &Tensor) -> Result<()> {
        let (b, k, p, _) = f.modes.dims4()?;
        let modes: Vec<f32> = f.modes.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        let conf: Vec<Vec<f32>> = f.confidence.to_dtype(DType::F32)?.to_vec2()?;
        let target: Vec<f32> = target.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        for (bi, c) in conf.iter().enumerate().take(b) {
            // Error of mode `ki` at step `i`, in metres.
            let err = |ki: usize, i: usize| -> f64 {
                let o = ((bi * k + ki) * p + i) * 2;
                let t = (bi * p + i) * 2;
                let dx = (modes[o] - target[t]) as f64;
                let dy = (modes[o + 1] - target[t + 1]) as f64;
                (dx * dx + dy * dy).sqrt()
            };
            let ade = |ki: usize| (0..p).map(|i| err(ki, i)).sum::<f64>() / p as f64;
            let best = (0..k)
                .min_by(|&x, &y| err(x, p - 1).total_cmp(&err(y, p - 1)))
                .unwrap_or(0);
            // Most confident; ties go to the lower index.
            let top = (0..k)
                .max_by(|&x, &y| c[x].total_cmp(&c[y]).then(y.cmp(&x)))
                .unwrap_or(0);
            for (acc, ki) in [(&mut self.k_all, best), (&mut self.k1, top)] {
                let fde = err(ki, p - 1);
                acc.0 += ade(ki);
                acc.1 += fde;
                acc.2 += u64::from(fde > MISS_THRESHOLD_M);
            }
            self.n += 1;
        }
        Ok(())
    }

    /// (minADE, minFDE, miss rate) averages.
    pub fn mean(acc: (f64, f64, u64), n: u64) -> (f64, f64, f64) {
        let n = n.max(1) as f64;
        (acc.0 / n, acc.1 / n, acc.2 as f64 / n)
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
        let (ade, fde, mr) = ForecastTotals::mean(t.k_all, t.n);
        assert!((fde - 1.0).abs() < 1e-6 && (ade - 1.0).abs() < 1e-6 && mr == 0.0);
        let (ade1, fde1, mr1) = ForecastTotals::mean(t.k1, t.n);
        assert!((fde1 - 3.0).abs() < 1e-6 && (ade1 - 1.5).abs() < 1e-6 && mr1 == 1.0);
    }
}
