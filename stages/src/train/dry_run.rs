//! `lm4ve pipeline run --stage S --dry-run`: the plan of a `train` stage (parameter counts,
//! memory, FLOPs) from its config alone. The stage is parsed and checked as a run would,
//! then its task plans it (`plan/`).

use super::plan::TrainPlan;
use super::stage::parse_train;
use anyhow::Result;
use lm4ve_pipeline::{PipelineConfig, StageConfig};

/// The plan of the `train` stage `sc`. `cuda`: whether the run would use CUDA (the default
/// precision of a frozen block depends on it).
pub fn plan_train(config: &PipelineConfig, sc: &StageConfig, cuda: bool) -> Result<TrainPlan> {
    let (p, task, model) = parse_train(config, sc, false)?;
    task.plan(&sc.name, &p, &model, config, cuda)
}
