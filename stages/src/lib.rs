//! lm4ve-stages: the domain — one module per stage family (images, point clouds, video, Argoverse,
//! LLM blocks, training), and the registry mapping a config's `kind`
//! to the stage that implements it.

pub mod argoverse;
pub mod images;
pub mod keyed;
pub mod llm;
pub mod plot;
pub mod pointcloud;
pub mod pth;
pub mod shard_params;
pub mod ssv2;
#[cfg(test)]
pub(crate) mod test_util;
pub mod train;

use lm4ve_pipeline::{ConfigError, PipelineConfig, Stage, StageConfig};

/// Every stage kind this build knows.
pub const KINDS: &[&str] = &[
    pointcloud::stage::KIND,
    llm::stage::KIND,
    train::stage::TRAIN_KIND,
    train::stage::EVAL_KIND,
    ssv2::stage::KIND,
    argoverse::stage::KIND,
    argoverse::av2::stage::KIND,
    images::stage::KIND,
];

/// Builds the stage for one `[stages.NAME]` table (the engine's [`lm4ve_pipeline::StageFactory`]).
pub fn build_stage(
    config: &PipelineConfig,
    sc: &StageConfig,
) -> Result<Box<dyn Stage>, ConfigError> {
    check_upstream_kinds(config, sc)?;
    match sc.kind.as_str() {
        pointcloud::stage::KIND => pointcloud::stage::build(config, sc),
        argoverse::stage::KIND => argoverse::stage::build(config, sc),
        argoverse::av2::stage::KIND => argoverse::av2::stage::build(config, sc),
        llm::stage::KIND => llm::stage::build(config, sc),
        train::stage::TRAIN_KIND => train::stage::build_train(config, sc),
        train::stage::EVAL_KIND => train::stage::build_eval(config, sc),
        ssv2::stage::KIND => ssv2::stage::build(config, sc),
        images::stage::KIND => images::stage::build(config, sc),
        other => Err(ConfigError {
            file: config.path.display().to_string(),
            line: None,
            message: format!(
                "[stages.{}]: unknown kind `{other}`; known kinds: {}",
                sc.name,
                KINDS.join(", ")
            ),
            missing_input: None,
        }),
    }
}

/// The kinds of stage a training or eval param may name (`block = "pc_tokens"` is a
/// wrong kind, said as such, not a cycle or a missing file later).
fn check_upstream_kinds(config: &PipelineConfig, sc: &StageConfig) -> Result<(), ConfigError> {
    if sc.kind != train::stage::TRAIN_KIND && sc.kind != train::stage::EVAL_KIND {
        return Ok(());
    }
    // The data kinds are the registered tasks' (a new task needs no edit here).
    let data: Vec<&str> = train::registry::data_kinds();
    let data_what = format!(
        "a data stage ({})",
        data.iter()
            .map(|k| format!("`{k}`"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    // (`init_stage` is checked by the train stage itself.)
    let rules: [(&str, &[&str], &str); 3] = [
        ("data", &data, &data_what),
        ("block", &[llm::stage::KIND], "an `llm.block` stage"),
        ("train", &[train::stage::TRAIN_KIND], "a `train` stage"),
    ];
    for (param, kinds, what) in rules {
        let Some(name) = sc.params.get(param).and_then(|v| v.as_str()) else {
            continue;
        };
        let Some(up) = config.stages.get(name) else {
            continue;
        };
        if !kinds.contains(&up.kind.as_str()) {
            return Err(config.param_error(
                &sc.name,
                Some(param),
                format!(
                    "{param} = \"{name}\" names a stage of kind {}; it must name {what}",
                    up.kind
                ),
            ));
        }
    }
    Ok(())
}
