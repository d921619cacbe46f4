//! `lm4ve llm inspect | extract | apply`: checkpoints and blocks outside the pipeline, so a
//! user can check their weights against PyTorch/transformers.

use crate::cli::LlmCmd;
use anyhow::{Context, Result};
use lm4ve_pipeline::UsageError;
use lm4ve_stages::llm;
use lm4ve_stages::train::block::LlmBlock;
use std::collections::HashMap;
use std::process::ExitCode;

/// A problem with what the user pointed us at (exit 2), keeping the reader's message.
fn usage(e: impl std::fmt::Display) -> anyhow::Error {
    UsageError(e.to_string()).into()
}

pub fn run(cmd: &LlmCmd) -> Result<ExitCode> {
    match cmd {
        LlmCmd::Inspect { path, json } => {
            let info = llm::inspect(path).map_err(usage)?;
            if *json {
                let v = serde_json::json!({
                    "path": info.path, "format": info.format, "architecture": info.arch,
                    "num_layers": info.num_layers, "config": info.config,
                    "dtypes": info.dtypes, "tensors": info.tensors, "bytes": info.bytes,
                });
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                let c = &info.config;
                println!("checkpoint    {} ({})", info.path.display(), info.format);
                println!("architecture  {}", info.arch);
                println!(
                    "layers        {} (block indices 0..={})",
                    info.num_layers,
                    info.num_layers.saturating_sub(1)
                );
                println!(
                    "dims          hidden {}, heads {} (kv {}), head_dim {}, ffn {}, norm eps {}",
                    c.hidden_size,
                    c.num_heads,
                    c.num_kv_heads,
                    c.head_dim,
                    c.intermediate_size,
                    c.norm_eps
                );
                let dt: Vec<String> = info
                    .dtypes
                    .iter()
                    .map(|(k, v)| format!("{k} x{v}"))
                    .collect();
                println!(
                    "tensors       {} ({}), {:.1} MB",
                    info.tensors,
                    dt.join(", "),
                    info.bytes as f64 / 1e6
                );
            }
        }
        LlmCmd::Extract { path, layer, out } => {
            let block = llm::extract_block(path, *layer).map_err(usage)?;
            llm::save_block(&block, out).map_err(|e| anyhow::anyhow!("{e}"))?;
            println!(
                "wrote {}: layer {} of {} ({}, hidden {})",
                out.display(),
                block.layer,
                block.num_layers,
                block.config.arch,
                block.config.hidden_size
            );
        }
        LlmCmd::Apply {
            block,
            input,
            output,
        } => {
            let device = lm4ve_stages::train::device::device()?;
            let (cfg, tensors, _) = llm::load_block_file(block).map_err(usage)?;
            let module = LlmBlock::from_tensors(&cfg, &tensors, &device).map_err(usage)?;
            let inputs = candle_core::safetensors::load(input, &device)
                .map_err(|e| usage(format!("{}: {e}; pass a safetensors file", input.display())))?;
            let x = inputs.get("x").ok_or_else(|| {
                usage(format!(
                    "{}: no tensor named `x`; save the input as x [B, T, D]",
                    input.display()
                ))
            })?;
            let dims = x.dims().to_vec();
            if dims.len() != 3 || dims[2] != cfg.hidden_size {
                return Err(usage(format!(
                    "{}: `x` has shape {dims:?}, the block needs [B, T, {}]",
                    input.display(),
                    cfg.hidden_size
                )));
            }
            let x = x.to_dtype(candle_core::DType::F32)?;
            let y = module.forward(&x).context("running the block")?;
            let out = HashMap::from([("y".to_string(), y.to_device(&candle_core::Device::Cpu)?)]);
            candle_core::safetensors::save(&out, output)
                .with_context(|| format!("writing {}", output.display()))?;
            println!("wrote {}: y {:?}", output.display(), dims);
        }
    }
    Ok(ExitCode::SUCCESS)
}
