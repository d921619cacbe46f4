//! `lm4ve llm inspect | extract | apply`: checkpoints and blocks outside the pipeline, so a
//! user can check their weights against PyTorch/transformers.

use crate::cli::LlmCmd;
use anyhow::{Context, Result};
use lm4ve_pipeline::UsageError;
use lm4ve_stages::llm;
use lm4ve_stages::train::block::LlmBlock;
use lm4ve_stages::train::ops::precision::Precision;
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
            crate::guard::refuse_overlap("--out", out, &[("the checkpoint", path)])?;
            let block = llm::extract_block(path, *layer).map_err(usage)?;
            llm::save_block(&block, out)?;
            println!(
                "wrote {}: layer {} of {} ({}, hidden {})",
                out.display(),
                block.layer,
                block.num_layers,
                block.config.arch,
                block.config.hidden_size
            );
        }
        LlmCmd::BenchStep {
            hidden,
            heads,
            kv_heads,
            ffn,
            batch,
            tokens,
            iters,
            mode,
            autocast,
        } => bench_step(
            *hidden,
            *heads,
            kv_heads.unwrap_or(*heads),
            *ffn,
            *batch,
            *tokens,
            *iters,
            mode,
            *autocast,
        )?,
        LlmCmd::Apply {
            block,
            input,
            output,
        } => {
            crate::guard::refuse_overlap(
                "--output",
                output,
                &[("the block", block), ("the input", input)],
            )?;
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
            let y = module.forward(&x, None).context("running the block")?;
            let out = HashMap::from([("y".to_string(), y.to_device(&candle_core::Device::Cpu)?)]);
            candle_core::safetensors::save(&out, output)
                .with_context(|| format!("writing {}", output.display()))?;
            println!("wrote {}: y {:?}", output.display(), dims);
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[allow(clippy::too_many_arguments)] // one per command-line flag
fn bench_step(
    hidden: usize,
    heads: usize,
    kv_heads: usize,
    ffn: usize,
    batch: usize,
    tokens: usize,
    iters: usize,
    mode: &str,
    autocast: bool,
) -> Result<()> {
    use candle_core::{DType, Tensor, Var};
    use lm4ve_stages::llm::block_format::{Arch, BlockConfig};
    let device = lm4ve_stages::train::device::device()?;
    if heads == 0
        || !hidden.is_multiple_of(heads)
        || kv_heads == 0
        || !heads.is_multiple_of(kv_heads)
    {
        return Err(usage(
            "--hidden must be a multiple of --heads, and --heads of --kv-heads",
        ));
    }
    let cfg = BlockConfig {
        arch: Arch::Llama,
        hidden_size: hidden,
        num_heads: heads,
        num_kv_heads: kv_heads,
        head_dim: hidden / heads,
        intermediate_size: ffn,
        norm_eps: 1e-5,
        post_norm: false,
    };
    let mut block = LlmBlock::random(&cfg, 0, &device)?;
    let naive = match mode {
        "frozen" => false,
        "naive" => {
            block.make_trainable()?;
            true
        }
        m => return Err(usage(format!("--mode {m}: use frozen or naive"))),
    };
    // bf16 autocast applies on CUDA only (CPU bf16 matmuls are slower than f32 ones).
    let frozen = if autocast && device.is_cuda() {
        block.clone().with_precision(Precision::Bf16)
    } else {
        block.clone()
    };
    let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (batch, tokens, hidden), &device)?)?;
    let r = Tensor::randn(0f32, 1.0, (batch, tokens, hidden), &device)?;
    lm4ve_stages::train::bench::reset_peak_memory(&device);
    let mut times = Vec::new();
    for i in 0..iters + 1 {
        let t0 = std::time::Instant::now();
        let y = if naive {
            block.forward(x.as_tensor(), None)?
        } else {
            frozen.forward(x.as_tensor(), None)?
        };
        let loss = (y * &r)?.sum_all()?;
        let grads = loss.backward()?;
        // Reading a value synchronises the device, so GPU timings are complete.
        let g = grads.get(x.as_tensor()).map(|g| g.sum_all()).transpose()?;
        if let Some(g) = g {
            g.to_dtype(DType::F32)?.to_scalar::<f32>()?;
        }
        if i > 0 {
            times.push(t0.elapsed().as_secs_f64() * 1e3);
        }
    }
    times.sort_by(|a, b| a.total_cmp(b));
    let median = times.get(times.len() / 2).copied().unwrap_or(0.0);
    let (peak, reserved) = lm4ve_stages::train::bench::peak_memory(&device).unwrap_or((0, 0));
    println!(
        "{}",
        serde_json::json!({
            "impl": "lm4ve", "mode": mode, "autocast": autocast, "device": format!("{device:?}"),
            "hidden": hidden, "heads": heads, "kv_heads": kv_heads, "ffn": ffn,
            "batch": batch, "tokens": tokens, "threads": rayon::current_num_threads(),
            "ms_per_step_median": median, "ms_per_step": times,
            "peak_mem_mib": peak as f64 / 1048576.0, "peak_reserved_mib": reserved as f64 / 1048576.0,
        })
    );
    Ok(())
}
