//! `lm4ve bench-train`: one model's training step at the paper's sizes, timed (JSON out).
//! `lm4ve bench-resample`: Point-BERT's per-step resampling of a batch, timed (JSON out).

use crate::cli::{BenchAllreduceArgs, BenchResampleArgs, BenchTrainArgs};
use anyhow::Result;
use lm4ve_pipeline::UsageError;
use lm4ve_stages::train::bench::BenchSpec;
use lm4ve_stages::train::block::BlockMode;
use lm4ve_stages::train::ops::attention::AttnImpl;
use lm4ve_stages::train::ops::precision::Precision;
use lm4ve_stages::train::registry;
use std::process::ExitCode;

pub fn run(a: &BenchTrainArgs) -> Result<ExitCode> {
    let model = registry::bench_model(&a.model).ok_or_else(|| {
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
    let r = registry::run_bench(&spec, &device)?;
    println!("{r}");
    Ok(ExitCode::SUCCESS)
}

/// `lm4ve bench-allreduce`: one JSON line per model from rank 0.
pub fn allreduce(a: &BenchAllreduceArgs) -> Result<ExitCode> {
    let models = if a.model == "all" {
        registry::bench_models()
    } else {
        vec![registry::bench_model(&a.model).ok_or_else(|| {
            UsageError(format!(
                "--model {}: use pointbert, vit-s, vit-b, vectornet or all",
                a.model
            ))
        })?]
    };
    let mode: BlockMode = serde_json::from_value(serde_json::Value::String(a.mode.clone()))
        .map_err(|_| UsageError(format!("--mode {}: use frozen, trainable or none", a.mode)))?;
    let (_job, dp) = crate::job::join_job()?;
    if dp.is_none() {
        return Err(UsageError(
            "bench-allreduce times the job's collectives: launch it with torchrun, srun or mpirun, or set LM4VE_DATA_PARALLEL=1 for a job of one".into(),
        )
        .into());
    }
    let coll = lm4ve_stages::train::dist::current();
    let device = lm4ve_stages::train::device::device()?;
    for m in models {
        let r = lm4ve_stages::train::bench_allreduce::run(
            m, mode, a.tiny, a.iters, a.warmup, &*coll, &device,
        )?;
        if coll.rank() == 0 {
            println!("{r}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn resample(a: &BenchResampleArgs) -> Result<ExitCode> {
    use lm4ve_stages::pointcloud::h5::H5Clouds;
    use lm4ve_stages::pointcloud::resample::{train_view, ViewSpec};
    use rand::SeedableRng;
    use rayon::prelude::*;
    if a.batch == 0 || a.iters == 0 || a.num_points == 0 {
        return Err(UsageError("--batch, --iters and --num-points must be positive".into()).into());
    }
    let clouds = H5Clouds::open(&a.h5)?;
    let n = clouds.len().min(a.batch * (a.iters + 1));
    if n == 0 {
        return Err(UsageError(format!("{}: holds no clouds", a.h5.display())).into());
    }
    let clouds: Vec<Vec<[f32; 3]>> = clouds
        .read_range(0, n)?
        .into_iter()
        .map(|(_, c)| c)
        .collect();
    let spec = ViewSpec {
        pool: ViewSpec::reference_pool(a.num_points, clouds[0].len()),
        num_points: a.num_points.min(clouds[0].len()),
        num_groups: a.num_groups,
        group_size: a.group_size,
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(a.threads.unwrap_or(0))
        .build()?;
    let batch = |b: usize| {
        pool.install(|| {
            (0..a.batch)
                .into_par_iter()
                .map(|i| {
                    let c = &clouds[(b * a.batch + i) % clouds.len()];
                    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64((b * a.batch + i) as u64);
                    train_view(c, &spec, &mut rng).centers.len()
                })
                .sum::<usize>()
        })
    };
    batch(0);
    let mut ms = Vec::with_capacity(a.iters);
    for b in 1..=a.iters {
        let t0 = std::time::Instant::now();
        std::hint::black_box(batch(b));
        ms.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    ms.sort_by(f64::total_cmp);
    let median = ms[ms.len() / 2];
    println!(
        "{}",
        serde_json::json!({
            "impl": "lm4ve",
            "threads": pool.current_num_threads(),
            "batch": a.batch,
            "pool": spec.pool,
            "num_points": spec.num_points,
            "num_groups": spec.num_groups,
            "group_size": spec.group_size,
            "ms_per_batch_median": (median * 1000.0).round() / 1000.0,
            "clouds_per_s": (a.batch as f64 / median * 1e3).round(),
        })
    );
    Ok(ExitCode::SUCCESS)
}
