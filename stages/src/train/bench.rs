//! One training step of each model at the paper's sizes (or a tiny size for smoke tests),
//! with random weights of the real shapes: what `lm4ve bench-train` times. A step is what the
//! `train` stage does per batch: forward with dropout, loss, backward, gradient-norm clipping,
//! AdamW. Inputs are random tensors already on the device, so data loading is not timed
//! (the PyTorch side, `benches/gpu_step.py`, does the same).

use super::block::{BlockCore, BlockMode, LlmBlock, MlpBlock, MlpConfig};
use super::models::layers::Execution;
use super::models::layers::{init_vars, step_rng};
use super::models::pointbert::{PointBert, PointBertConfig};
use super::models::vectornet::{VectorNet, VectorNetConfig};
use super::models::video_vit::{VideoVit, VideoVitConfig};
use super::ops::attention::AttnImpl;
use super::ops::precision::{LossScaler, Precision};
use super::ops::recompute::GradSink;
use super::optim::AdamW;
use super::task::{train_loss, Input, Model, Target};
use crate::llm::block_format::{Arch, BlockConfig};
use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use std::time::Instant;

/// Which model a benchmark steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BenchModel {
    /// PointBERT on ScanObjectNN: 64 groups × 32 points, 12 × 384, 15 classes.
    PointBert,
    /// VideoMAE ViT-S on SSv2: 16×224×224 as 1568 tubelets of 2×16×16×3, 174 classes.
    VitS,
    /// VideoMAE ViT-B, same input.
    VitB,
    /// VectorNet on Argoverse: 64 actors × 19 vectors, 128 lanes × 9 vectors, 6 modes × 30 steps.
    VectorNet,
}

impl BenchModel {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pointbert" => BenchModel::PointBert,
            "vit-s" => BenchModel::VitS,
            "vit-b" => BenchModel::VitB,
            "vectornet" => BenchModel::VectorNet,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            BenchModel::PointBert => "pointbert",
            BenchModel::VitS => "vit-s",
            BenchModel::VitB => "vit-b",
            BenchModel::VectorNet => "vectornet",
        }
    }

    /// The per-GPU batch the benchmarks use by default (the paper-scale sizes).
    pub fn default_batch(self) -> usize {
        match self {
            BenchModel::PointBert | BenchModel::VectorNet => 32,
            BenchModel::VitS | BenchModel::VitB => 8,
        }
    }

    /// The trainer's gradient clipping for the task (PointBERT's reference clips at 10;
    /// VideoMAE and the VectorNet trainer here do not clip).
    fn grad_clip(self) -> f64 {
        match self {
            BenchModel::PointBert => 10.0,
            _ => 0.0,
        }
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

/// The model, one batch of inputs and targets, and a description of the sizes.
struct Setup {
    model: Model,
    input: Input,
    target: Target,
    sizes: serde_json::Value,
}

fn randn(shape: &[usize], device: &Device) -> Result<Tensor> {
    Ok(Tensor::randn(0f32, 1.0, shape, device)?)
}

fn labels(b: usize, classes: usize, device: &Device) -> Result<Tensor> {
    let v: Vec<u32> = (0..b).map(|i| (i * 7 % classes) as u32).collect();
    Ok(Tensor::from_vec(v, b, device)?)
}

/// A key mask [b, n] with the first `real` entries of each row set (the rest padding).
fn mask(b: usize, n: usize, real: usize, device: &Device) -> Result<Tensor> {
    let v: Vec<f32> = (0..b * n)
        .map(|i| f32::from(u8::from(i % n < real)))
        .collect();
    Ok(Tensor::from_vec(v, (b, n), device)?)
}

fn setup(
    spec: &BenchSpec,
    block: Option<(BlockCore, BlockMode)>,
    vb: VarBuilder,
    device: &Device,
) -> Result<Setup> {
    let b = spec.batch;
    Ok(match spec.model {
        BenchModel::PointBert => {
            let (cfg, groups, k) = if spec.tiny {
                let c = PointBertConfig {
                    trans_dim: 32,
                    depth: 2,
                    heads: 4,
                    pointnet_dims: [16, 32, 64],
                    encoder_dims: 32,
                    ..Default::default()
                };
                (c, 8, 4)
            } else {
                (PointBertConfig::default(), 64, 32)
            };
            let classes = 15;
            let model = PointBert::new(&cfg, classes, block, vb)?;
            Setup {
                model: Model::PointBert(Box::new(model)),
                input: Input::Pc {
                    centers: randn(&[b, groups, 3], device)?,
                    neighborhoods: (randn(&[b, groups, k, 3], device)? * 0.1)?,
                },
                target: Target::Labels(labels(b, classes, device)?),
                sizes: serde_json::json!({
                    "groups": groups, "group_size": k, "trans_dim": cfg.trans_dim,
                    "depth": cfg.depth, "heads": cfg.heads, "classes": classes,
                }),
            }
        }
        BenchModel::VitS | BenchModel::VitB => {
            let (cfg, tokens, token_dim) = if spec.tiny {
                let c = VideoVitConfig {
                    embed_dim: 32,
                    depth: 2,
                    heads: 4,
                    ..Default::default()
                };
                (c, 16, 24)
            } else {
                let c = match spec.model {
                    BenchModel::VitB => VideoVitConfig {
                        embed_dim: 768,
                        heads: 12,
                        ..Default::default()
                    },
                    _ => VideoVitConfig::default(),
                };
                // 16 frames of 224×224 in tubelets of 2×16×16: 8·14·14 tokens of 2·16·16·3.
                (c, 8 * 14 * 14, 2 * 16 * 16 * 3)
            };
            let classes = 174;
            let model = VideoVit::new(&cfg, tokens, token_dim, classes, block, vb)?;
            Setup {
                model: Model::Video(Box::new(model)),
                input: Input::Video(randn(&[b, tokens, token_dim], device)?),
                target: Target::Labels(labels(b, classes, device)?),
                sizes: serde_json::json!({
                    "tokens": tokens, "token_dim": token_dim, "embed_dim": cfg.embed_dim,
                    "depth": cfg.depth, "heads": cfg.heads, "classes": classes,
                }),
            }
        }
        BenchModel::VectorNet => {
            let cfg = VectorNetConfig::default();
            let (actors, lanes) = if spec.tiny { (8, 12) } else { (64, 128) };
            let (actor_vectors, lane_vectors, pred) = (19, 9, 30);
            let (af, lf) = (
                crate::argoverse::vectorize::ACTOR_FEATURES,
                crate::argoverse::vectorize::LANE_FEATURES,
            );
            let model = VectorNet::new(&cfg, af, lf, pred, block, vb)?;
            Setup {
                model: Model::VectorNet(Box::new(model)),
                input: Input::Av {
                    actors: randn(&[b, actors, actor_vectors, af], device)?,
                    // Real scenes are padded: about 3/4 of the slots hold an actor or a lane.
                    actor_mask: mask(b, actors, actors * 3 / 4, device)?,
                    lanes: randn(&[b, lanes, lane_vectors, lf], device)?,
                    lane_mask: mask(b, lanes, lanes * 3 / 4, device)?,
                    actor_ctrs: randn(&[b, actors, 2], device)?,
                },
                target: Target::Trajectory {
                    agent: randn(&[b, pred, 2], device)?,
                    futures: randn(&[b, actors, pred, 2], device)?,
                    future_mask: Tensor::ones((b, actors, pred), DType::F32, device)?,
                },
                sizes: serde_json::json!({
                    "actors": actors, "actor_vectors": actor_vectors,
                    "lanes": lanes, "lane_vectors": lane_vectors,
                    "width": cfg.width(), "modes": cfg.modes, "pred_steps": pred,
                }),
            }
        }
    })
}

/// A benchmark's model at its size, with random weights, and its inputs.
struct Built {
    setup: Setup,
    varmap: VarMap,
    /// The block's weights when they train.
    block_vars: Vec<candle_core::Var>,
    block_params: usize,
}

fn build(spec: &BenchSpec, device: &Device) -> Result<Built> {
    let block_cfg = if spec.tiny {
        tiny_block()
    } else {
        llama7b_block()
    };
    let (block, block_vars) = match spec.mode {
        BlockMode::None => (None, Vec::new()),
        BlockMode::Mlp => {
            let mut mlp = MlpBlock::random(&MlpConfig::of_block(&block_cfg, None), 0, device)?;
            let vars = mlp.make_trainable()?.into_iter().map(|(_, v)| v).collect();
            (Some((BlockCore::Mlp(mlp), BlockMode::Mlp)), vars)
        }
        mode => {
            let mut blk = LlmBlock::random(&block_cfg, 0, device)?;
            let vars = if mode.is_trainable() {
                blk.make_trainable()?
            } else {
                Vec::new()
            };
            (Some((BlockCore::from(blk), mode)), vars)
        }
    };
    let block_params = block.as_ref().map_or(0, |(b, _)| b.num_params());
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
    let setup = setup(spec, block, vb, device)?;
    init_vars(&varmap, 0)?;
    Ok(Built {
        setup,
        varmap,
        block_vars,
        block_params,
    })
}

/// The trainable parameters of a benchmark's model (encoder, adapters, and the block's weights
/// when they train), in the trainer's order: what a data-parallel step averages.
pub fn trainable_vars(spec: &BenchSpec, device: &Device) -> Result<Vec<candle_core::Var>> {
    let b = build(spec, device)?;
    let data = b
        .varmap
        .data()
        .lock()
        .map_err(|_| anyhow::anyhow!("varmap lock poisoned"))?;
    let mut named: Vec<_> = data
        .iter()
        .filter(|(n, _)| !n.ends_with("running_mean") && !n.ends_with("running_var"))
        .collect();
    named.sort_by(|a, b| a.0.cmp(b.0));
    let mut vars: Vec<candle_core::Var> = named.into_iter().map(|(_, v)| v.clone()).collect();
    vars.extend(b.block_vars);
    Ok(vars)
}

/// Runs the benchmark and returns one JSON object: sizes, parameter counts, median step time,
/// samples/s and, on CUDA, the peak memory of the device's allocation pool.
pub fn run(spec: &BenchSpec, device: &Device) -> Result<serde_json::Value> {
    if spec.batch == 0 || spec.iters == 0 {
        bail!("batch and iters must be positive");
    }
    let Built {
        setup: mut s,
        varmap,
        block_vars,
        block_params,
    } = build(spec, device)?;
    let sink = GradSink::default();
    s.model.configure(&Execution {
        attn: spec.attn,
        checkpoint: spec.checkpoint.then(|| sink.clone()),
        precision: spec.precision,
    });
    let mut scaler = spec
        .precision
        .filter(|p| p.needs_loss_scaling())
        .map(|_| LossScaler::default());
    let mut params: Vec<_> = {
        let data = varmap
            .data()
            .lock()
            .map_err(|_| anyhow::anyhow!("varmap lock poisoned"))?;
        let mut v: Vec<_> = data
            .iter()
            .filter(|(n, _)| !n.ends_with("running_mean") && !n.ends_with("running_var"))
            .map(|(n, v)| {
                let wd = if v.rank() <= 1 { 0.0 } else { 0.05 };
                (n.clone(), v.clone(), 1.0, wd)
            })
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    let encoder_params: usize = params.iter().map(|p| p.1.elem_count()).sum();
    for (i, v) in block_vars.into_iter().enumerate() {
        let wd = if v.rank() <= 1 { 0.0 } else { 0.05 };
        params.push((format!("llm_block.{i}"), v, 1.0, wd));
    }
    let trainable: usize = params.iter().map(|p| p.1.elem_count()).sum();
    let mut opt = AdamW::new(params)?;
    reset_peak_memory(device);
    let mut times = Vec::with_capacity(spec.iters);
    for i in 0..spec.warmup + spec.iters {
        let t0 = Instant::now();
        let mut drop = step_rng(0, "dropout", i as u64);
        let out = s.model.forward(&s.input, Some(&mut drop))?;
        let (loss, _) = train_loss(&out, &s.target, 0.0)?;
        super::trainer::backward_and_step(
            &loss,
            &mut opt,
            scaler.as_mut(),
            &sink,
            &super::dist::collective::Single,
            spec.model.grad_clip(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_model_steps_at_tiny_size() {
        for model in [
            BenchModel::PointBert,
            BenchModel::VitS,
            BenchModel::VectorNet,
        ] {
            for mode in [
                BlockMode::Frozen,
                BlockMode::None,
                BlockMode::Trainable,
                BlockMode::RandomTrained,
                BlockMode::Mlp,
            ] {
                let spec = BenchSpec {
                    model,
                    batch: 2,
                    iters: 1,
                    warmup: 0,
                    mode,
                    tiny: true,
                    attn: AttnImpl::Chunked,
                    checkpoint: true,
                    precision: (mode == BlockMode::Frozen).then_some(Precision::F16),
                };
                let r = run(&spec, &Device::Cpu).unwrap();
                assert!(r["ms_per_step_median"].as_f64().unwrap() > 0.0);
                let p = &r["params"];
                let (enc, blk, tr) = (
                    p["encoder"].as_u64().unwrap(),
                    p["block"].as_u64().unwrap(),
                    p["trainable"].as_u64().unwrap(),
                );
                match mode {
                    BlockMode::Trainable | BlockMode::RandomTrained | BlockMode::Mlp => {
                        assert_eq!(tr, enc + blk, "{model:?}")
                    }
                    BlockMode::None => assert_eq!(blk, 0),
                    _ => assert_eq!(tr, enc, "{model:?}: the frozen block is not trained"),
                }
            }
        }
    }
}
