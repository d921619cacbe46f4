//! `lm4ve bench-train`: one model's training step at the paper's sizes, timed (JSON out).

use crate::cli::BenchTrainArgs;
use anyhow::Result;
use lm4ve_pipeline::UsageError;
use lm4ve_stages::train::bench::{self, BenchModel, BenchSpec};
use lm4ve_stages::train::block::BlockMode;
use lm4ve_stages::train::ops::attention::AttnImpl;
use lm4ve_stages::train::ops::precision::Precision;
use std::process::ExitCode;

pub fn run(a: &BenchTrainArgs) -> Result<ExitCode> {
    let model = BenchModel::parse(&a.model).ok_or_else(|| {
        UsageError(format!(
            "--model {}: use pointbert, vit-s, vit-b or vectornet",
            a.model
        ))
    })?;
    let mode: BlockMode = serde_json::from_value(serde_json::Value::String(a.mode.clone()))
        .map_err(|_| {
            UsageError(format!(
                "--mode {}: use frozen, random, random-trained, trainable, mlp or none",
                a.mode
            ))
        })?;
    let attn: AttnImpl = serde_json::from_value(serde_json::Value::String(a.attention.clone()))
        .map_err(|_| UsageError(format!("--attention {}: use full or chunked", a.attention)))?;
    let precision = match &a.precision {
        None => None,
        Some(p) => Some(
            serde_json::from_value::<Precision>(serde_json::Value::String(p.clone()))
                .map_err(|_| UsageError(format!("--precision {p}: use f32, bf16 or f16")))?,
        ),
    };
    let batch = a.batch.unwrap_or_else(|| model.default_batch());
    if batch == 0 || a.iters == 0 {
        return Err(UsageError("--batch and --iters must be positive".into()).into());
    }
    let device = lm4ve_stages::train::device::device()?;
    let spec = BenchSpec {
        model,
        batch,
        iters: a.iters,
        warmup: a.warmup,
        mode,
        tiny: a.tiny,
        attn,
        checkpoint: a.checkpoint_blocks,
        precision,
    };
    let r = bench::run(&spec, &device)?;
    println!("{r}");
    Ok(ExitCode::SUCCESS)
}
