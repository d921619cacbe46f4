//! Splits without targets (AV2's `test`: no futures, samples carry zeros with mask 0): the
//! eval runs on them as on any split, counts their samples and scores none of them — the
//! zeros are placeholders, never errors against a truth. Their forecasts reach the challenge
//! through `lm4ve pipeline submit`.

use super::metrics::ForecastTotals;
use crate::train::models::vectornet::Forecast;
use crate::train::task::Evaluation;
use anyhow::Result;
use candle_core::Tensor;

/// Per sample of a batch, whether its AGENT has a future: row 0 of its future mask
/// [B, A, P] (the AGENT's) has an observed step.
pub fn agent_has_target(future_mask: &Tensor) -> Result<Vec<bool>> {
    let m: Vec<f32> = future_mask
        .narrow(1, 0, 1)?
        .flatten_from(1)?
        .max(1)?
        .to_vec1()?;
    Ok(m.iter().map(|v| *v > 0.0).collect())
}

/// Adds the AGENT's forecasts [B, K, P, 2] of the samples that have a target to `totals`
/// and counts the others; `has` None = every sample has one.
pub fn score(
    totals: &mut ForecastTotals,
    agent: &Forecast,
    target: &Tensor,
    has: Option<&[bool]>,
) -> Result<()> {
    let Some(has) = has else {
        return Ok(totals.add(agent, target)?);
    };
    let keep: Vec<u32> = (0..has.len() as u32).filter(|&i| has[i as usize]).collect();
    totals.no_target += (has.len() - keep.len()) as u64;
    if keep.len() == has.len() {
        return Ok(totals.add(agent, target)?);
    }
    if keep.is_empty() {
        return Ok(());
    }
    let idx = Tensor::new(keep.as_slice(), agent.modes.device())?;
    let pick = |t: &Tensor| t.index_select(&idx, 0);
    let scored = Forecast {
        modes: pick(&agent.modes)?,
        confidence: pick(&agent.confidence)?,
        single: pick(&agent.single)?,
    };
    Ok(totals.add(&scored, &pick(target)?)?)
}

/// The evaluation of a split where no sample had a target: its sample count and a note,
/// no displacement numbers (they would be against nothing).
pub fn without_targets(t: &ForecastTotals) -> Option<Evaluation> {
    (t.n == 0 && t.no_target > 0).then(|| Evaluation {
        score: 0.0,
        metrics: serde_json::json!({
            "samples": t.no_target,
            "modes": t.modes,
            "targets": false,
            "note": "this split has no targets (futures): nothing is scored; `lm4ve pipeline submit` writes its forecasts for the challenge server",
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    #[test]
    fn samples_without_a_target_are_counted_not_scored() {
        let dev = Device::Cpu;
        let (b, k, p) = (3, 2, 4);
        let agent = Forecast {
            modes: Tensor::ones((b, k, p, 2), DType::F32, &dev).unwrap(),
            confidence: Tensor::zeros((b, k), DType::F32, &dev).unwrap(),
            single: Tensor::zeros((b, p, 2), DType::F32, &dev).unwrap(),
        };
        // Sample 1 has no future (AV2 test): zeros with mask 0.
        let mut mask = vec![1f32; b * 2 * p];
        mask[2 * p..3 * p].iter_mut().for_each(|m| *m = 0.0);
        let mask = Tensor::from_vec(mask, (b, 2, p), &dev).unwrap();
        let has = agent_has_target(&mask).unwrap();
        assert_eq!(has, [true, false, true]);
        let target = Tensor::ones((b, p, 2), DType::F32, &dev).unwrap();
        let mut t = ForecastTotals::default();
        score(&mut t, &agent, &target, Some(&has)).unwrap();
        assert_eq!((t.n, t.no_target), (2, 1));
        assert_eq!(t.k_all.fde, 0.0, "the scored samples are exact");
        assert!(without_targets(&t).is_none());
        let mut none = ForecastTotals::default();
        score(&mut none, &agent, &target, Some(&[false; 3])).unwrap();
        let e = without_targets(&none).unwrap();
        assert_eq!(e.metrics["samples"], 3);
        assert_eq!(e.metrics["targets"], false);
        assert!(e.metrics.get("min_fde").is_none());
    }
}
