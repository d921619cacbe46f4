//! Challenge submissions from an eval's forecasts: the `predictions-<checkpoint>.parquet` an
//! `eval` artifact holds (one row per sample and mode, world coordinates; [`predictions`])
//! → Argoverse 1.1's h5 ([`av1_h5`], argoverse-api's `generate_forecasting_h5` layout) or
//! Argoverse 2's parquet ([`av2_parquet`], av2's `ChallengeSubmission.to_parquet` columns).
//!
//! Why here and not in the eval: a submission is a view of the predictions in a format a
//! server reads; the eval writes one file whatever the challenge, `lm4ve pipeline submit`
//! converts it. Each writer checks, before it writes a byte, the rules the official reader
//! enforces (shapes, probabilities summing to 1), and names the scenario that breaks one.

pub mod av1_h5;
pub mod av2_parquet;
pub mod fixture;
pub mod predictions;

pub use predictions::{predictions_file, read_predictions, ScenarioForecast};

/// The challenge a submission is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Challenge {
    /// Argoverse 1.1 motion forecasting: an h5 file, 30 steps.
    Av1,
    /// Argoverse 2 motion forecasting: a parquet file, 60 steps.
    Av2,
}

impl Challenge {
    /// The challenge of an eval's data stage kind (`av.tokens` / `av2.tokens`).
    pub fn of_data_kind(kind: &str) -> Option<Challenge> {
        match kind {
            k if k == crate::argoverse::stage::KIND => Some(Challenge::Av1),
            k if k == crate::argoverse::av2::stage::KIND => Some(Challenge::Av2),
            _ => None,
        }
    }
    /// The challenge a file name asks for (`.h5` → AV1, `.parquet` → AV2).
    pub fn of_file(path: &std::path::Path) -> Option<Challenge> {
        match path.extension().and_then(|e| e.to_str()) {
            Some("h5" | "hdf5") => Some(Challenge::Av1),
            Some("parquet") => Some(Challenge::Av2),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Challenge::Av1 => "Argoverse 1.1",
            Challenge::Av2 => "Argoverse 2",
        }
    }
    /// Future steps a trajectory must have.
    pub fn steps(self) -> usize {
        match self {
            Challenge::Av1 => av1_h5::PRED_STEPS,
            Challenge::Av2 => av2_parquet::PRED_STEPS,
        }
    }
    /// Checks the forecasts against the challenge's rules, then writes the file.
    pub fn write(self, path: &std::path::Path, f: &[ScenarioForecast]) -> anyhow::Result<()> {
        match self {
            Challenge::Av1 => av1_h5::write(path, f),
            Challenge::Av2 => av2_parquet::write(path, f),
        }
    }
}

/// numpy's `isclose(1, s)` with its default tolerances (rtol 1e-5, atol 1e-8): the check
/// av2's `ChallengeSubmission` applies to a scenario's probabilities.
pub fn sums_to_one(s: f64) -> bool {
    (1.0 - s).abs() <= 1e-8 + 1e-5 * s.abs()
}

/// The rules both challenges share: at least one mode, as many probabilities as
/// trajectories, `steps` finite points each, finite probabilities in [0, 1] summing to 1,
/// each scenario once. `what` names the challenge in the messages.
pub fn check_common(f: &[ScenarioForecast], steps: usize, what: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        !f.is_empty(),
        "no forecasts: the predictions file has no rows, so there is nothing to submit"
    );
    let mut seen = std::collections::HashMap::new();
    for s in f {
        let name = format!("scenario {} (sample {})", s.scenario_id, s.sample);
        if let Some(first) = seen.insert(s.scenario_id.as_str(), s.sample) {
            anyhow::bail!(
                "{name}: the scenario is forecast twice (also sample {first}); a {what} submission holds each scenario once"
            );
        }
        anyhow::ensure!(
            !s.trajectories.is_empty(),
            "{name}: no modes; a {what} submission needs at least one trajectory"
        );
        anyhow::ensure!(
            s.probabilities.len() == s.trajectories.len(),
            "{name}: {} trajectories but {} probabilities",
            s.trajectories.len(),
            s.probabilities.len()
        );
        for (k, t) in s.trajectories.iter().enumerate() {
            anyhow::ensure!(
                t.len() == steps,
                "{name}: mode {k} has {} points; {what} expects {steps} future steps (was the model trained on the other release?)",
                t.len()
            );
            if let Some(i) = t
                .iter()
                .position(|p| !(p[0].is_finite() && p[1].is_finite()))
            {
                anyhow::bail!(
                    "{name}: mode {k} step {i} is not a finite number ({:?})",
                    t[i]
                );
            }
        }
        if let Some(k) = s
            .probabilities
            .iter()
            .position(|p| !(p.is_finite() && (0.0..=1.0).contains(p)))
        {
            anyhow::bail!(
                "{name}: mode {k}'s probability {} is not in [0, 1]",
                s.probabilities[k]
            );
        }
        let sum: f64 = s.probabilities.iter().sum();
        anyhow::ensure!(
            sums_to_one(sum),
            "{name}: the probabilities sum to {sum}, not 1 (within numpy's isclose tolerance, which av2's loader applies; {what})"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests;
