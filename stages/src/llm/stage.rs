//! Stage `llm.block`: cuts one layer out of a checkpoint into the cache as a canonical
//! `block.safetensors`, so the trainer depends on it like on any artifact. The key hashes the
//! files the layer is read from (for a sharded HF checkpoint only the shards holding it; for
//! Meta's model-parallel ranks all of them, each holding a slice of every layer).

use super::checkpoint::{extract_block, inspect, layer_files};
use anyhow::Result;
use lm4ve_pipeline::{
    ConfigError, InputSpec, PipelineConfig, Stage, StageConfig, StageCtx, UnitOutput, UnitPlan,
    UnitRecord,
};
use serde::Deserialize;
use std::path::PathBuf;

pub const KIND: &str = "llm.block";
pub const VERSION: u32 = 1;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlockParams {
    /// A .gguf, a .safetensors (with config.json beside it), an index.json, a model directory,
    /// or a Meta LLaMA directory (params.json + consolidated.NN.pth).
    pub checkpoint: PathBuf,
    /// Layer index; default the last (PAPER.md §2).
    pub layer: Option<usize>,
}

pub struct LlmBlockStage {
    checkpoint: PathBuf,
    layer: usize,
    inputs: Vec<InputSpec>,
}

pub fn build(config: &PipelineConfig, sc: &StageConfig) -> Result<Box<dyn Stage>, ConfigError> {
    let p: BlockParams = config.typed_params(sc)?;
    let checkpoint = config.resolve(&p.checkpoint);
    let info = inspect(&checkpoint).map_err(|e| {
        if checkpoint.exists() {
            config.param_error(&sc.name, Some("checkpoint"), e.to_string())
        } else {
            config.missing_input_error(&sc.name, Some("checkpoint"), &checkpoint, e.to_string())
        }
    })?;
    let layer = p.layer.unwrap_or(info.num_layers.saturating_sub(1));
    if layer >= info.num_layers {
        return Err(config.param_error(
            &sc.name,
            Some("layer"),
            format!(
                "layer {layer} out of range: the model has {} layers (0..={})",
                info.num_layers,
                info.num_layers.saturating_sub(1)
            ),
        ));
    }
    let inputs = layer_files(&checkpoint, layer)
        .map_err(|e| config.param_error(&sc.name, Some("checkpoint"), e.to_string()))?
        .into_iter()
        .map(|f| {
            let rel = f
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            InputSpec::file_as("checkpoint", f, rel)
        })
        .collect();
    Ok(Box::new(LlmBlockStage {
        checkpoint,
        layer,
        inputs,
    }))
}

impl Stage for LlmBlockStage {
    fn kind(&self) -> &str {
        KIND
    }
    fn version(&self) -> u32 {
        VERSION
    }
    fn key_params(&self) -> serde_json::Value {
        serde_json::json!({ "layer": self.layer })
    }
    fn inputs(&self) -> Vec<InputSpec> {
        self.inputs.clone()
    }
    fn plan(&self, _ctx: &StageCtx) -> Result<Vec<UnitPlan>> {
        Ok(vec![UnitPlan {
            id: "block".into(),
            work: 1,
        }])
    }
    fn run_unit(&self, _ctx: &StageCtx, _unit: &UnitPlan, out: &mut UnitOutput) -> Result<()> {
        let block = extract_block(&self.checkpoint, Some(self.layer))?;
        out.add_file("block.safetensors", &block.to_safetensors_bytes()?)?;
        out.set_meta(serde_json::json!({
            "config": block.config,
            "layer": block.layer,
            "num_layers": block.num_layers,
            "source": block.source,
        }));
        Ok(())
    }
    fn finish(&self, _ctx: &StageCtx, units: &[UnitRecord]) -> Result<serde_json::Value> {
        Ok(units.first().map(|u| u.meta.clone()).unwrap_or_default())
    }
}
