//! Learning-rate schedules, behind one trait: a linear warm-up from `min_lr` to `lr`, then
//! either the cosine down to `min_lr` ([`WarmupCosine`], every task's default) or a step
//! decay by epoch ([`WarmupStepDecay`], `lr_steps`). The trainer asks a schedule for the lr
//! of each step; nothing else knows which one it is.

use serde::{Deserialize, Serialize};

/// The lr of a training step.
pub trait Schedule {
    /// The lr of step `step` (0-based, global), which falls in epoch `epoch`.
    fn lr(&self, step: u64, epoch: usize) -> f64;
}

/// Linear warm-up from `min_lr` to `lr` over `warmup` steps, then cosine down to `min_lr` at
/// step `total`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WarmupCosine {
    pub total: u64,
    pub warmup: u64,
    pub lr: f64,
    pub min_lr: f64,
}

impl Schedule for WarmupCosine {
    fn lr(&self, step: u64, _epoch: usize) -> f64 {
        cosine_lr(step, self.total, self.warmup, self.lr, self.min_lr)
    }
}

/// Linear warm-up from `min_lr` to `lr` over `warmup` steps, then the step decay `steps`.
#[derive(Debug, Clone, PartialEq)]
pub struct WarmupStepDecay {
    pub warmup: u64,
    pub lr: f64,
    pub min_lr: f64,
    pub steps: LrSteps,
}

impl Schedule for WarmupStepDecay {
    fn lr(&self, step: u64, epoch: usize) -> f64 {
        if step < self.warmup {
            warmup_lr(step, self.warmup, self.lr, self.min_lr)
        } else {
            self.steps.lr(epoch, self.lr)
        }
    }
}

/// StreamingForecasting's warm-up (`tools/pretrain/train_forecaster_vectornet.py`,
/// `warmup()`), a pass of its own before epoch 0: iteration `i` trains at
/// `start + (lr − start)·i / warmup` (`start = lr · warmup_ratio`), and the loop stops after
/// iteration `i = warmup` — `warmup + 1` steps, the last at `lr` — or at the end of one pass
/// over the loader, whichever comes first. The epochs then run at the lr the pass left.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WarmupPass {
    /// The steps the pass takes: `min(warmup + 1, batches per epoch)`.
    pub steps: u64,
    /// `warmup_iters`, the ramp's denominator.
    pub warmup: u64,
    pub start: f64,
    pub lr: f64,
}

impl WarmupPass {
    /// The pass of `warmup` iterations from `lr · start_ratio` to peak lr `lr`, over a
    /// loader of `per_epoch` batches.
    pub fn new(warmup: u64, start_ratio: f64, lr: f64, per_epoch: usize) -> Self {
        WarmupPass {
            steps: (warmup + 1).min(per_epoch.max(1) as u64),
            warmup: warmup.max(1),
            start: lr * start_ratio,
            lr,
        }
    }

    /// The lr of the pass's step `i` (the run's first steps: step `i` is iteration `i`).
    pub fn lr(&self, i: u64) -> f64 {
        self.start + (self.lr - self.start) * i as f64 / self.warmup as f64
    }

    /// The lr the pass leaves in the optimizer (its last step's), where the epochs start.
    pub fn final_lr(&self) -> f64 {
        self.lr(self.steps.saturating_sub(1))
    }
}

/// `then`, for the steps after the first `steps` (a warm-up pass's), counted from 0.
pub struct AfterSteps {
    pub steps: u64,
    pub then: Box<dyn Schedule>,
}

impl Schedule for AfterSteps {
    fn lr(&self, step: u64, epoch: usize) -> f64 {
        self.then.lr(step.saturating_sub(self.steps), epoch)
    }
}

/// timm's `CosineLRScheduler` as DeiT uses it: the lr is set once per epoch — linearly from
/// `warmup_lr` over `warmup` epochs, then `min_lr + ½(lr − min_lr)(1 + cos(π·e/epochs))` —
/// and DeiT's loop calls `step(epoch)` after training epoch `epoch`, so epoch `e ≥ 1` trains
/// at the scheduler's value for `e − 1` and epoch 0 at `warmup_lr` (`main.py`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EpochCosine {
    pub epochs: usize,
    pub warmup: usize,
    pub warmup_lr: f64,
    pub lr: f64,
    pub min_lr: f64,
}

/// DeiT's `--warmup-lr`.
pub const DEIT_WARMUP_LR: f64 = 1e-6;

impl EpochCosine {
    /// timm's value for epoch `t`.
    fn at(&self, t: usize) -> f64 {
        if t < self.warmup {
            self.warmup_lr + t as f64 * (self.lr - self.warmup_lr) / self.warmup as f64
        } else if t >= self.epochs {
            self.min_lr
        } else {
            let c = (std::f64::consts::PI * t as f64 / self.epochs.max(1) as f64).cos();
            self.min_lr + 0.5 * (self.lr - self.min_lr) * (1.0 + c)
        }
    }
}

impl Schedule for EpochCosine {
    fn lr(&self, _step: u64, epoch: usize) -> f64 {
        match epoch.checked_sub(1) {
            // Before the first `step`: the scheduler's initial value.
            None if self.warmup > 0 => self.warmup_lr,
            None => self.at(0),
            Some(prev) => self.at(prev),
        }
    }
}

/// The warm-up's lr at `step` (< `warmup`): from `min_lr` up to `lr`, reached at the last
/// warm-up step.
fn warmup_lr(step: u64, warmup: u64, lr: f64, min_lr: f64) -> f64 {
    min_lr + (lr - min_lr) * (step as f64 + 1.0) / warmup as f64
}

/// Linear warmup from `min_lr` to `lr`, then cosine down to `min_lr`.
pub fn cosine_lr(step: u64, total: u64, warmup: u64, lr: f64, min_lr: f64) -> f64 {
    if step < warmup {
        return warmup_lr(step, warmup, lr, min_lr);
    }
    let span = (total.saturating_sub(warmup)).max(1) as f64;
    let t = ((step - warmup) as f64 / span).min(1.0);
    min_lr + 0.5 * (lr - min_lr) * (1.0 + (std::f64::consts::PI * t).cos())
}

/// A step-decay learning-rate schedule instead of the cosine: after the warm-up, `lr` until
/// the first of `epochs`, then times `rate` at each (StreamingForecasting's VectorNet:
/// `lr_decay_epoch = [16, 20]`, `lr_decay_rate = 0.25` over 24 epochs).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LrSteps {
    pub epochs: Vec<usize>,
    pub rate: f64,
}

impl LrSteps {
    /// The lr of `epoch` (0-based) after the warm-up: `lr · rate^(decay epochs ≤ epoch)`.
    pub fn lr(&self, epoch: usize, lr: f64) -> f64 {
        let n = self.epochs.iter().filter(|&&e| e <= epoch).count();
        lr * self.rate.powi(n as i32)
    }
}

/// The schedule a run uses: the step decay when `steps` is set, else the cosine; both warm
/// up over `warmup` steps from `min_lr`.
pub fn schedule_for(
    steps: Option<&LrSteps>,
    total: u64,
    warmup: u64,
    lr: f64,
    min_lr: f64,
) -> Box<dyn Schedule> {
    match steps {
        Some(s) => Box::new(WarmupStepDecay {
            warmup,
            lr,
            min_lr,
            steps: s.clone(),
        }),
        None => Box::new(WarmupCosine {
            total,
            warmup,
            lr,
            min_lr,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// StreamingForecasting's VectorNet schedule, as its training script computes it: the
    /// warm-up loop's `g['lr'] = lr_min + (lr_max - lr_min) * i / warmup_iter` with
    /// `lr_min = lr * warmup_ratio`, then per epoch `if epoch in lr_decay_epoch: lr *= rate`
    /// (multiplying the current lr). Returns the lr of each epoch after the warm-up.
    fn reference_epoch_lrs(lr: f64, decay: &[usize], rate: f64, epochs: usize) -> Vec<f64> {
        let mut cur = lr; // the warm-up's last iteration sets lr_max
        (0..epochs)
            .map(|e| {
                if decay.contains(&e) {
                    cur *= rate;
                }
                cur
            })
            .collect()
    }

    #[test]
    fn streaming_forecasting_schedule_is_the_references_arithmetic() {
        let (lr, ratio, warm) = (5e-4, 1e-3, 1000u64);
        let steps = LrSteps {
            epochs: vec![16, 20],
            rate: 0.25,
        };
        let pass = WarmupPass::new(warm, ratio, lr, 500);
        // The loop `for i, data in enumerate(loader)` breaks after `i >= warmup_iter`.
        let per_epoch = 500u64;
        assert_eq!(pass.steps, per_epoch.min(warm + 1));
        let lr_min = lr * ratio;
        for i in [0u64, 1, 10, 250, 499] {
            let want = lr_min + (lr - lr_min) * i as f64 / warm as f64;
            assert!((pass.lr(i) - want).abs() < 1e-18, "warm-up step {i}");
        }
        assert_eq!(pass.lr(0), 5e-7);
        // 500 batches < 1001 iterations: the pass ends at the end of the loader, below `lr`,
        // and the epochs start from there (the reference never sets the lr back up).
        let base = lr_min + (lr - lr_min) * 499.0 / warm as f64;
        assert_eq!(pass.final_lr(), base);
        let s = AfterSteps {
            steps: pass.steps,
            then: schedule_for(Some(&steps), 24 * per_epoch, 0, pass.final_lr(), 1e-6),
        };
        let want = reference_epoch_lrs(base, &[16, 20], 0.25, 24);
        for (e, w) in want.iter().enumerate() {
            let step = pass.steps + e as u64 * per_epoch;
            assert!(
                (s.lr(step, e) - w).abs() < 1e-18,
                "epoch {e}: {} vs {w}",
                s.lr(step, e)
            );
        }
        // A loader of at least 1001 batches: 1001 steps, the last at `lr` exactly.
        let long = WarmupPass::new(warm, ratio, lr, 5000);
        assert_eq!((long.steps, long.final_lr()), (1001, lr));
        let want = reference_epoch_lrs(lr, &[16, 20], 0.25, 24);
        assert_eq!(want[15], 5e-4);
        assert_eq!(want[16], 1.25e-4);
        assert_eq!(want[23], 3.125e-5);
    }

    #[test]
    fn epoch_cosine_is_timms_stepped_after_each_epoch() {
        let s = EpochCosine {
            epochs: 10,
            warmup: 2,
            warmup_lr: 1e-6,
            lr: 1e-3,
            min_lr: 1e-5,
        };
        // Epochs 0 and 1 train at the warm-up start; epoch 2 at timm's value for epoch 1.
        assert_eq!(s.lr(0, 0), 1e-6);
        assert_eq!(s.lr(99, 1), 1e-6);
        assert!((s.lr(0, 2) - (1e-6 + (1e-3 - 1e-6) / 2.0)).abs() < 1e-15);
        let c = 1e-5 + 0.5 * (1e-3 - 1e-5) * (1.0 + (std::f64::consts::PI * 0.5).cos());
        assert!((s.lr(0, 6) - c).abs() < 1e-15);
        assert_eq!(s.lr(0, 11), 1e-5);
    }

    #[test]
    fn cosine_warms_up_then_decays() {
        assert!(cosine_lr(0, 100, 10, 1.0, 0.0) < 0.2);
        assert!((cosine_lr(9, 100, 10, 1.0, 0.0) - 1.0).abs() < 1e-9);
        assert!(cosine_lr(55, 100, 10, 1.0, 0.0) < 0.6);
        assert!(cosine_lr(100, 100, 10, 1.0, 0.0) < 1e-9);
    }

    #[test]
    fn step_decay_warms_up_as_the_cosine_then_multiplies_at_each_listed_epoch() {
        let steps = LrSteps {
            epochs: vec![16, 20],
            rate: 0.25,
        };
        assert_eq!(steps.lr(0, 5e-4), 5e-4);
        assert_eq!(steps.lr(15, 5e-4), 5e-4);
        assert_eq!(steps.lr(16, 5e-4), 5e-4 * 0.25);
        assert_eq!(steps.lr(23, 5e-4), 5e-4 * 0.0625);
        let s = schedule_for(Some(&steps), 240, 10, 5e-4, 1e-6);
        let c = schedule_for(None, 240, 10, 5e-4, 1e-6);
        for step in 0..10 {
            assert_eq!(s.lr(step, 0), c.lr(step, 0), "the same warm-up");
        }
        assert_eq!(s.lr(10, 0), 5e-4);
        assert_eq!(s.lr(200, 20), 5e-4 * 0.0625);
    }
}
