//! Stage `llm.block`: cuts one layer (or `blocks = N` consecutive layers) out of a checkpoint
//! into the cache as a canonical `block.safetensors`, so the trainer depends on it like on any
//! artifact. The key hashes the files the layers are read from (for a sharded HF checkpoint
//! only the shards holding them; for Meta's model-parallel ranks all of them, each holding a
//! slice of every layer). With `blocks` left at 1, key, file and manifest are exactly what they
//! were before stacks existed.

use super::checkpoint::{
    default_first_layer, extract_block, extract_blocks, identity, inspect, layers_files,
    stack_to_safetensors_bytes,
};
use super::identity::{Expected, LlmIdentity};
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
    /// Layer index (the first of the stack); default the last (PAPER.md §2), or with
    /// `blocks = N` the last N layers (as the reference's `first_layer`).
    pub layer: Option<usize>,
    /// How many consecutive layers to stack (`layer`..`layer`+N-1; the paper's "two LLaMA
    /// blocks" ablation). Default 1.
    pub blocks: Option<usize>,
    /// The LLM this stage should read (`"llama-v1-7b"`, the paper's): a checkpoint whose
    /// config says otherwise (LLaMA 2's context 4096 and eps 1e-5, another size) is used, with
    /// a warning on every command that loads the config (`status`, `run`). A check, not an
    /// output: not in the key.
    pub expect: Option<Expected>,
}

pub struct LlmBlockStage {
    checkpoint: PathBuf,
    layer: usize,
    blocks: usize,
    inputs: Vec<InputSpec>,
    /// What the checkpoint's config says it is (None: unreadable; the extraction says why).
    identity: Option<LlmIdentity>,
}

impl LlmBlockStage {
    /// The first layer and the number of layers.
    pub fn layers(&self) -> (usize, usize) {
        (self.layer, self.blocks)
    }
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
    let blocks = p.blocks.unwrap_or(1);
    if blocks == 0 {
        return Err(config.param_error(
            &sc.name,
            Some("blocks"),
            "blocks must be at least 1".into(),
        ));
    }
    let layer = p
        .layer
        .unwrap_or(default_first_layer(info.num_layers, blocks));
    if layer + blocks > info.num_layers {
        let last = info.num_layers.saturating_sub(1);
        let what = if blocks == 1 {
            format!("layer {layer} out of range")
        } else {
            format!(
                "layers {layer}..={} (layer {layer}, blocks {blocks}) out of range",
                layer + blocks - 1
            )
        };
        return Err(config.param_error(
            &sc.name,
            Some(if p.layer.is_some() { "layer" } else { "blocks" }),
            format!(
                "{what}: the model has {} layers (0..={last})",
                info.num_layers
            ),
        ));
    }
    let inputs = layers_files(&checkpoint, layer, blocks)
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
    let identity = identity(&checkpoint).ok();
    if let (Some(expect), Some(id)) = (p.expect, &identity) {
        let diffs = expect.differences(id);
        if !diffs.is_empty() {
            tracing::warn!(
                "{}: `{}` is not {} (expect = \"llama-v1-7b\"), the LLM the paper used: {}; its block is used anyway, but results are not the paper's setting",
                sc.name,
                checkpoint.display(),
                expect.name(),
                diffs.join("; ")
            );
        }
    }
    Ok(Box::new(LlmBlockStage {
        checkpoint,
        layer,
        blocks,
        inputs,
        identity,
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
        // `blocks` enters only when stacking, so single-layer keys are unchanged.
        if self.blocks == 1 {
            serde_json::json!({ "layer": self.layer })
        } else {
            serde_json::json!({ "layer": self.layer, "blocks": self.blocks })
        }
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
        if self.blocks > 1 {
            let stack = extract_blocks(&self.checkpoint, Some(self.layer), self.blocks)?;
            out.add_file("block.safetensors", &stack_to_safetensors_bytes(&stack)?)?;
            let first = &stack[0];
            out.set_meta(serde_json::json!({
                "config": first.config,
                "layer": first.layer,
                "blocks": self.blocks,
                "num_layers": first.num_layers,
                "source": first.source,
                "identity": self.identity,
            }));
            return Ok(());
        }
        let block = extract_block(&self.checkpoint, Some(self.layer))?;
        out.add_file("block.safetensors", &block.to_safetensors_bytes()?)?;
        out.set_meta(serde_json::json!({
            "config": block.config,
            "layer": block.layer,
            "num_layers": block.num_layers,
            "source": block.source,
            "identity": self.identity,
        }));
        Ok(())
    }
    fn finish(&self, _ctx: &StageCtx, units: &[UnitRecord]) -> Result<serde_json::Value> {
        Ok(units.first().map(|u| u.meta.clone()).unwrap_or_default())
    }
}
