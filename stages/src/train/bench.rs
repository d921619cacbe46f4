//! One training step of each model at the paper's sizes (or a tiny size for smoke tests),
//! with random weights of the real shapes: what `lm4ve bench-train` times. A step is what the
//! `train` stage does per batch: forward with dropout, loss, backward, gradient-norm clipping,
//! AdamW. Inputs are random tensors already on the device, so data loading is not timed
//! (the PyTorch side, `benches/gpu_step.py`, does the same).

use super::assemble::{core_of, sorted_vars, trainable_vars as block_trainable_vars, LayerWeights};
use super::block::BlockMode;
use super::groups::is_running_stat;
use super::models::layers::Execution;
use super::models::layers::{init_vars, step_rng};
use super::ops::attention::AttnImpl;
use super::ops::precision::{LossScaler, Precision};
use super::ops::recompute::GradSink;
use super::optim::AdamW;
use super::step::backward_and_step;
use super::task::{BenchSetup, BenchSize, Task};
use crate::llm::block_format::{Arch, BlockConfig};
use anyhow::{bail, Result};
use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use std::time::Instant;

/// A model a benchmark steps: one of a task's [`BenchSize`]s, and the data kind of its task
/// (`train::registry` finds the task by it).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BenchModel {
    pub data_kind: &'static str,
    pub size: BenchSize,
}

impl BenchModel {
    pub fn name(self) -> &'static str {
        self.size.name
    }

    /// The per-GPU batch the benchmarks use by default (the paper-scale sizes).
    pub fn default_batch(self) -> usize {
        self.size.default_batch
    }
}

/// What to benchmark.
#[derive(Debug, Clone)]
pub struct BenchSpec {
    pub model: BenchModel,
    pub batch: usize,
    /// Timed steps (after `warmup` untimed ones).
    pub iters: usize,
    pub warmup: usize,
    /// `Frozen` (the paper's method), `Trainable`, `Random` or `None` (no block).
    pub mode: BlockMode,
    /// Tiny widths and token counts instead of the paper's (for smoke tests on a CPU).
    pub tiny: bool,
    /// Full or chunked attention.
    pub attn: AttnImpl,
    /// Activation checkpointing of the encoder blocks.
    pub checkpoint: bool,
    /// Matmul precision (None: encoder f32, frozen block bf16 on CUDA).
    pub precision: Option<Precision>,
}

/// The LLaMA-7B decoder layer's shapes (the block every paper model carries).
pub fn llama7b_block() -> BlockConfig {
    BlockConfig {
        arch: Arch::Llama,
        hidden_size: 4096,
        num_heads: 32,
        num_kv_heads: 32,
        head_dim: 128,
        intermediate_size: 11008,
        norm_eps: 1e-6,
        post_norm: false,
    }
}

fn tiny_block() -> BlockConfig {
    BlockConfig {
        arch: Arch::Llama,
        hidden_size: 64,
        num_heads: 4,
        num_kv_heads: 2,
        head_dim: 16,
        intermediate_size: 96,
        norm_eps: 1e-6,
        post_norm: false,
    }
}

/// A benchmark's model at its size, with random weights, and its inputs.
struct Built<T: Task> {
    setup: BenchSetup<T>,
    model: T::Model,
    varmap: VarMap,
    /// The block's weights when they train.
    block_vars: Vec<(String, candle_core::Var)>,
    block_params: usize,
}

fn build<T: Task>(task: &T, spec: &BenchSpec, device: &Device) -> Result<Built<T>> {
    let block_cfg = if spec.tiny {
        tiny_block()
    } else {
        llama7b_block()
    };
    let mut block = match spec.mode {
        BlockMode::None => None,
        // Random weights of the real shapes: the bench times shapes, not values.
        mode => Some((
            core_of(mode, &block_cfg, 1, LayerWeights::Random, None, 0, device)?,
            mode,
        )),
    };
    let block_vars = match block.as_mut() {
        Some((core, mode)) if mode.is_trainable() => block_trainable_vars(core)?,
        _ => Vec::new(),
    };
    let block_params = block.as_ref().map_or(0, |(b, _)| b.num_params());
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
    let setup = task.bench_setup(spec.model.name(), spec.tiny, spec.batch, device)?;
    let model = task.build_model(&setup.config, setup.shape, setup.classes, block, vb)?;
    init_vars(&varmap, 0)?;
    Ok(Built {
        setup,
        model,
        varmap,
        block_vars,
        block_params,
    })
}

/// The trainable parameters of a benchmark's model (encoder, adapters, and the block's weights
/// when they train), in the trainer's order: what a data-parallel step averages.
pub fn trainable_vars<T: Task>(
    task: &T,
    spec: &BenchSpec,
    device: &Device,
) -> Result<Vec<candle_core::Var>> {
    let b = build(task, spec, device)?;
    let mut vars: Vec<candle_core::Var> = sorted_vars(&b.varmap)?
        .into_iter()
        .filter(|(n, _)| !is_running_stat(n))
        .map(|(_, v)| v)
        .collect();
    vars.extend(b.block_vars.into_iter().map(|(_, v)| v));
    Ok(vars)
}

/// Runs the benchmark and returns one JSON object: sizes, parameter counts, median step time,
/// samples/s and, on CUDA, the peak memory of the device's allocation pool.
pub fn run<T: Task>(task: &T, spec: &BenchSpec, device: &Device) -> Result<serde_json::Value> {
    // As training runs: freed tensors stay in the heap (heap.rs).
    super::heap::keep_freed_memory();
    if spec.batch == 0 || spec.iters == 0 {
        bail!("batch and iters must be positive");
    }
    let Built {
        setup: s,
        mut model,
        varmap,
        block_vars,
        block_params,
    } = build(task, spec, device)?;
    let sink = GradSink::default();
    task.configure(
        &mut model,
        &Execution {
            attn: spec.attn,
            checkpoint: spec.checkpoint.then(|| sink.clone()),
            precision: spec.precision,
        },
    );
    let mut scaler = spec
        .precision
        .filter(|p| p.needs_loss_scaling())
        .map(|_| LossScaler::default());
    let mut params: Vec<_> = sorted_vars(&varmap)?
        .into_iter()
        .filter(|(n, _)| !is_running_stat(n))
        .map(|(n, v)| {
            let wd = if v.rank() <= 1 { 0.0 } else { 0.05 };
            (n, v, 1.0, wd)
        })
        .collect();
    let encoder_params: usize = params.iter().map(|p| p.1.elem_count()).sum();
    for (n, v) in block_vars {
        let wd = if v.rank() <= 1 { 0.0 } else { 0.05 };
        params.push((n, v, 1.0, wd));
    }
    let trainable: usize = params.iter().map(|p| p.1.elem_count()).sum();
    let mut opt = AdamW::new(params)?;
    reset_peak_memory(device);
    let mut times = Vec::with_capacity(spec.iters);
    for i in 0..spec.warmup + spec.iters {
        let t0 = Instant::now();
        let mut drop = step_rng(0, "dropout", i as u64);
        let out = task.forward(&model, &s.batch, Some(&mut drop))?;
        let (loss, _) = task.loss(&out, &s.batch, 0.0)?;
        backward_and_step(
            &loss,
            &mut opt,
            scaler.as_mut(),
            &sink,
            &super::dist::collective::Single,
            spec.model.size.grad_clip,
            1e-4,
        )?;
        // Reading the loss waits for the device, so the time covers the whole step.
        let lv = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        if !lv.is_finite() {
            bail!("loss became {lv} at step {i}");
        }
        if i >= spec.warmup {
            times.push(t0.elapsed().as_secs_f64() * 1e3);
        }
    }
    let mut sorted = times.clone();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let median = sorted[sorted.len() / 2];
    let (used_peak, reserved_peak) = peak_memory(device).unwrap_or((0, 0));
    Ok(serde_json::json!({
        "impl": "lm4ve",
        "model": spec.model.name(),
        "mode": spec.mode.to_string(),
        "tiny": spec.tiny,
        "device": format!("{device:?}"),
        "batch": spec.batch,
        "sizes": s.sizes,
        "params": {
            "encoder": encoder_params,
            "block": block_params,
            "trainable": trainable,
        },
        "precision": spec.precision.map_or("default".to_string(), |p| format!("{p:?}").to_lowercase()),
        "attention": spec.attn,
        "checkpoint_blocks": spec.checkpoint,
        "threads": rayon::current_num_threads(),
        "ms_per_step_median": median,
        "samples_per_s": spec.batch as f64 * 1e3 / median,
        "ms_per_step": times,
        "peak_mem_mib": used_peak as f64 / (1 << 20) as f64,
        "peak_reserved_mib": reserved_peak as f64 / (1 << 20) as f64,
    }))
}

/// Resets the high-water marks of the device's default allocation pool (candle allocates
/// through cudarc's `cuMemAllocAsync`, i.e. from that pool). No-op off CUDA.
pub fn reset_peak_memory(device: &Device) {
    #[cfg(feature = "cuda")]
    if let Ok(d) = device.as_cuda_device() {
        let _ = cuda_pool::reset(d);
    }
    let _ = device;
}

/// (bytes in use at the peak, bytes reserved at the peak) of the default pool since the last
/// reset — what PyTorch calls max_memory_allocated / max_memory_reserved. None off CUDA.
pub fn peak_memory(device: &Device) -> Option<(u64, u64)> {
    #[cfg(feature = "cuda")]
    if let Ok(d) = device.as_cuda_device() {
        return cuda_pool::peaks(d).ok();
    }
    let _ = device;
    None
}

#[cfg(feature = "cuda")]
mod cuda_pool {
    use candle_core::cuda_backend::cudarc::driver::{result, sys};
    use candle_core::CudaDevice;

    fn pool(d: &CudaDevice) -> Result<sys::CUmemoryPool, String> {
        let stream = d.cuda_stream();
        let ctx = stream.context();
        ctx.bind_to_thread().map_err(|e| e.to_string())?;
        // SAFETY: the device handle comes from a live context.
        unsafe { result::device::get_mem_pool(ctx.cu_device()) }.map_err(|e| e.to_string())
    }

    fn get(pool: sys::CUmemoryPool, attr: sys::CUmemPool_attribute) -> Result<u64, String> {
        let mut v: u64 = 0;
        // SAFETY: these attributes are cuuint64_t, written into `v`.
        unsafe {
            result::mem_pool::get_attribute(pool, attr, (&mut v as *mut u64).cast())
                .map_err(|e| e.to_string())?;
        }
        Ok(v)
    }

    pub fn peaks(d: &CudaDevice) -> Result<(u64, u64), String> {
        d.cuda_stream().synchronize().map_err(|e| e.to_string())?;
        let p = pool(d)?;
        Ok((
            get(p, sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_HIGH)?,
            get(
                p,
                sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RESERVED_MEM_HIGH,
            )?,
        ))
    }

    pub fn reset(d: &CudaDevice) -> Result<(), String> {
        d.cuda_stream().synchronize().map_err(|e| e.to_string())?;
        let p = pool(d)?;
        for attr in [
            sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_HIGH,
            sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RESERVED_MEM_HIGH,
        ] {
            let mut zero: u64 = 0;
            // SAFETY: setting a high-water mark takes a cuuint64_t 0.
            unsafe {
                result::mem_pool::set_attribute(p, attr, (&mut zero as *mut u64).cast())
                    .map_err(|e| e.to_string())?;
            }
        }
        Ok(())
    }
}
