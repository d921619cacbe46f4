//! VectorNet's training loss as its reference computes it (StreamingForecasting's
//! `JointLoss`): the winner mode's trajectory and the confidences, over every actor with a
//! future.

use crate::train::models::vectornet::{smooth_l1_each, Forecast};
use candle_core::{DType, Result, Tensor, D};

/// SmoothL1, mean over all elements.
pub fn smooth_l1(pred: &Tensor, target: &Tensor) -> Result<Tensor> {
    smooth_l1_each(pred, target)?.mean_all()
}

/// The reference's `JointLoss`, over every actor with a future (as there, "with a future" means
/// an observed position after the first future step: `max(mask + 0.1·step/P) > 1`): the winner is the mode with
/// the smallest error at the actor's last observed future step; cross-entropy of the
/// confidences to the winner, plus SmoothL1 summed over the observed future positions of the
/// winner's trajectory and of the single-mode one, each divided by the number of actors.
/// `futures` [B, A, P, 2], `future_mask` [B, A, P] (f32, 1 = observed).
pub fn forecast_loss(f: &Forecast, futures: &Tensor, future_mask: &Tensor) -> Result<Tensor> {
    let t = forecast_loss_terms(f, futures, future_mask)?;
    ((t.cls + t.reg)? + t.single)? / t.count
}

/// The sums [`forecast_loss`] adds up, before the division by the number of actors with a
/// future (`count`, at least 1).
pub struct LossTerms {
    /// Cross-entropy of the confidences to the winners, summed over actors.
    pub cls: Tensor,
    /// SmoothL1 of the winners' trajectories, summed over observed positions.
    pub reg: Tensor,
    /// SmoothL1 of the single-mode trajectories, summed over observed positions.
    pub single: Tensor,
    pub count: f64,
}

/// The terms of [`forecast_loss`].
pub fn forecast_loss_terms(
    f: &Forecast,
    futures: &Tensor,
    future_mask: &Tensor,
) -> Result<LossTerms> {
    let (b, na, k, p, _) = f.modes.dims5()?;
    let n = b * na;
    let dev = f.modes.device();
    let modes = f.modes.reshape((n, k, p, 2))?;
    let gt = futures.reshape((n, p, 2))?;
    let fm = future_mask.reshape((n, p))?.to_dtype(DType::F32)?.detach();
    // The last observed future step: argmax of mask + 0.1·step/P (the reference's trick).
    let ramp = (Tensor::arange(0u32, p as u32, dev)?.to_dtype(DType::F32)? * (0.1 / p as f64))?;
    let last = fm.broadcast_add(&ramp)?;
    let has = last.max(1)?.gt(1.0)?.to_dtype(DType::F32)?; // [N]
    let count = has.sum_all()?.to_scalar::<f32>()?.max(1.0) as f64;
    let last_idx = last.argmax(1)?; // [N]
    let at_last = |t: &Tensor, rows: usize| -> Result<Tensor> {
        // t [N, rows, P, 2] → [N, rows, 2] at each actor's last step.
        let idx = last_idx
            .reshape((n, 1, 1, 1))?
            .broadcast_as((n, rows, 1, 2))?
            .contiguous()?;
        t.gather(&idx, 2)?.squeeze(2)
    };
    let pred_final = at_last(&modes, k)?; // [N, K, 2]
    let gt_final = at_last(&gt.unsqueeze(1)?, 1)?; // [N, 1, 2]
    let dist = pred_final
        .broadcast_sub(&gt_final)?
        .sqr()?
        .sum(D::Minus1)?
        .detach();
    let winner = dist.argmin(1)?; // [N]
    let logp = candle_nn::ops::log_softmax(&f.confidence.reshape((n, k))?, D::Minus1)?;
    let nll = logp.gather(&winner.unsqueeze(1)?, 1)?.squeeze(1)?.neg()?;
    let cls = (nll * &has)?.sum_all()?;
    let idx = winner
        .reshape((n, 1, 1))?
        .broadcast_as((n, 1, p * 2))?
        .contiguous()?;
    let best = modes
        .reshape((n, k, p * 2))?
        .gather(&idx, 1)?
        .reshape((n, p, 2))?;
    // Only the actors with a future count, in every term (the reference's `[mask]` rows).
    let w = fm
        .broadcast_mul(&has.unsqueeze(1)?)?
        .unsqueeze(2)?
        .broadcast_as((n, p, 2))?;
    let reg = (smooth_l1_each(&best, &gt)? * &w)?.sum_all()?;
    let single = f.single.reshape((n, p, 2))?;
    let reg_single = (smooth_l1_each(&single, &gt)? * &w)?.sum_all()?;
    Ok(LossTerms {
        cls,
        reg,
        single: reg_single,
        count,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::models::vectornet::{VectorNet, VectorNetConfig};
    use candle_core::Device;
    use candle_nn::{VarBuilder, VarMap};

    /// The reference's JointLoss by hand: winners at each actor's last observed future step,
    /// sums over observed positions, divided by the actors with a future.
    #[test]
    fn loss_is_the_references_joint_loss() {
        let dev = Device::Cpu;
        // 1 scene, 3 actor slots, K = 2, P = 2.
        #[rustfmt::skip]
        let modes = Tensor::from_vec(
            vec![
                0f32, 0.0, 1.0, 0.0, /* mode 1 */ 0.0, 0.0, 0.0, 3.0,
                9.0, 9.0, 5.0, 5.0, /* mode 1 */ 9.0, 9.0, 0.0, 0.0,
                50.0, 50.0, 50.0, 50.0, /* mode 1 */ -50.0, 9.0, 9.0, 9.0,
            ],
            (1, 3, 2, 2, 2),
            &dev,
        )
        .unwrap();
        let f = Forecast {
            modes,
            confidence: Tensor::new(&[[[0f32, 0.0], [1.0, 0.0], [9.0, -9.0]]], &dev).unwrap(),
            single: Tensor::zeros((1, 3, 2, 2), DType::F32, &dev).unwrap(),
        };
        let futures = Tensor::new(
            &[[
                [[0f32, 1.0], [0.0, 2.0]],
                [[100.0, 100.0], [0.0, 0.5]],
                [[7.0, 7.0], [7.0, 7.0]],
            ]],
            &dev,
        )
        .unwrap();
        let fm = Tensor::new(&[[[1f32, 1.0], [0.0, 1.0], [0.0, 0.0]]], &dev).unwrap();
        let got = forecast_loss(&f, &futures, &fm)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap() as f64;
        // Actor 0: winner mode 1 (final error 1 vs 5): CE ln 2, winner SmoothL1 0.5 + 0.5,
        // single (zeros) 0.5 + 1.5. Actor 1: only step 1 observed, winner mode 1: CE
        // ln(1 + e), winner 0.125, single 0.125. Actor 2: no future, not counted.
        let want = (2f64.ln() + 1.0 + 2.0 + (1.0 + 1f64.exp()).ln() + 0.125 + 0.125) / 2.0;
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
    }

    #[test]
    fn smooth_l1_is_quadratic_then_linear() {
        let dev = Device::Cpu;
        let p = Tensor::new(&[0.5f32, 3.0], &dev).unwrap();
        let t = Tensor::new(&[0f32, 0.0], &dev).unwrap();
        let l = smooth_l1(&p, &t).unwrap().to_scalar::<f32>().unwrap();
        assert!((l - (0.125 + 2.5) / 2.0).abs() < 1e-6);
    }

    #[test]
    fn loss_trains_the_winner_and_ignores_padding() {
        let dev = Device::Cpu;
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
        let cfg = VectorNetConfig {
            subgraph_widths: vec![8, 16],
            modes: 3,
            agent_only_loss: false,
        };
        let net = VectorNet::new(&cfg, 6, 7, 4, None, vb).unwrap();
        crate::train::models::layers::init_vars_xavier(&varmap, 0).unwrap();
        let actors = Tensor::randn(0f32, 1.0, (2, 3, 5, 6), &dev).unwrap();
        let lanes = Tensor::randn(0f32, 1.0, (2, 4, 9, 7), &dev).unwrap();
        let am = Tensor::new(&[[1f32, 1.0, 0.0], [1.0, 0.0, 0.0]], &dev).unwrap();
        let lm = Tensor::new(&[[1f32, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0]], &dev).unwrap();
        let ctrs = Tensor::randn(0f32, 1.0, (2, 3, 2), &dev).unwrap();
        let f = net.forward(&actors, &am, &lanes, &lm, &ctrs).unwrap();
        assert_eq!(f.modes.dims(), &[2, 3, 3, 4, 2]);
        assert_eq!(f.confidence.dims(), &[2, 3, 3]);
        assert_eq!(f.single.dims(), &[2, 3, 4, 2]);
        // Changing a padded polyline changes nothing.
        let mut a2: Vec<f32> = actors.flatten_all().unwrap().to_vec1().unwrap();
        let pad_start = (3 * 5 * 6) + 5 * 6; // scenario 1, actor 1 (padded)
        for v in &mut a2[pad_start..pad_start + 5 * 6] {
            *v += 7.0;
        }
        let actors2 = Tensor::from_vec(a2, (2, 3, 5, 6), &dev).unwrap();
        // And a padded lane (scenario 0, lane 3).
        let mut l2: Vec<f32> = lanes.flatten_all().unwrap().to_vec1().unwrap();
        for v in &mut l2[3 * 9 * 7..4 * 9 * 7] {
            *v -= 5.0;
        }
        let lanes2 = Tensor::from_vec(l2, (2, 4, 9, 7), &dev).unwrap();
        let f2 = net.forward(&actors2, &am, &lanes2, &lm, &ctrs).unwrap();
        // Real actors' forecasts (slots 0-1 of scenario 0, slot 0 of scenario 1).
        let real = |f: &Forecast| {
            Tensor::cat(
                &[
                    f.modes
                        .narrow(0, 0, 1)
                        .unwrap()
                        .narrow(1, 0, 2)
                        .unwrap()
                        .flatten_all()
                        .unwrap(),
                    f.modes
                        .narrow(0, 1, 1)
                        .unwrap()
                        .narrow(1, 0, 1)
                        .unwrap()
                        .flatten_all()
                        .unwrap(),
                    f.confidence.narrow(1, 0, 1).unwrap().flatten_all().unwrap(),
                ],
                0,
            )
            .unwrap()
        };
        let d = crate::test_util::max_abs_diff(&real(&f), &real(&f2));
        assert!(
            d < 1e-5,
            "a padded actor or lane leaked into the output: {d}"
        );
        let f = net.forward(&actors, &am, &lanes, &lm, &ctrs).unwrap();
        let futures = Tensor::randn(0f32, 1.0, (2, 3, 4, 2), &dev).unwrap();
        // Actor (0, 1) has only its first two future steps; padded slots have none.
        let fm = Tensor::new(
            &[
                [[1f32, 1.0, 1.0, 1.0], [1.0, 1.0, 0.0, 0.0], [0.0; 4]],
                [[1.0, 1.0, 1.0, 1.0], [0.0; 4], [0.0; 4]],
            ],
            &dev,
        )
        .unwrap();
        let loss = forecast_loss(&f, &futures, &fm).unwrap();
        assert!(loss.to_scalar::<f32>().unwrap().is_finite());
        let grads = loss.backward().unwrap();
        let data = varmap.data().lock().unwrap();
        for name in [
            "mode_heads.0.out.weight",
            "actor_subgraph.layers.0.l1.weight",
            "confidence.out.bias",
            "fusion.delta1.weight",
            "global_graph.skip.weight",
            "global_graph.attn_out.weight",
            "single.out.weight",
        ] {
            assert!(
                grads.get(data[name].as_tensor()).is_some(),
                "no gradient for {name}"
            );
        }
    }
}
