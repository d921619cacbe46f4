//! `lm4ve bench-allreduce`: what data-parallel training adds to each step, per model: the
//! averaging of the trainable parameters' gradients (`dist::grads`, 25 MB buckets) through the
//! job's collective, timed, beside the analytic time of a ring all-reduce of the same buckets
//! at 4 and 8 GPUs over NVLink and over 100 Gb/s links.

use super::bench::{BenchModel, BenchSpec};
use super::block::BlockMode;
use super::dist::collective::Collective;
use super::dist::grads::{average_gradients, buckets, BUCKET_BYTES};
use super::ops::attention::AttnImpl;
use anyhow::Result;
use candle_core::{Device, Tensor, Var};
use std::time::Instant;

/// A link for the analytic ring all-reduce.
pub struct Link {
    pub name: &'static str,
    /// Bytes/s one GPU sends (and receives) at once on the ring.
    pub bandwidth: f64,
    /// Seconds per ring step (launch + hop latency).
    pub latency: f64,
}

/// NVLink 4 (H100 SXM): 450 GB/s each way, of which NCCL's ring reaches ~360 GB/s (its own
/// all_reduce_perf on 8 × H100); 100 Gb/s Ethernet / InfiniBand between nodes: 12.5 GB/s,
/// ~90% of it in practice. Latencies are NCCL's typical per-step figures.
pub const LINKS: [Link; 2] = [
    Link {
        name: "NVLink (H100 SXM, ~360 GB/s ring bandwidth)",
        bandwidth: 360e9,
        latency: 5e-6,
    },
    Link {
        name: "100 Gb/s network (~11.25 GB/s)",
        bandwidth: 11.25e9,
        latency: 20e-6,
    },
];

/// Seconds a ring all-reduce of `bucket_bytes` (one call per bucket) takes on `ranks` GPUs:
/// each bucket goes around the ring twice (reduce-scatter, all-gather), 2 (N − 1) steps of
/// 1/N of it each.
pub fn ring_seconds(bucket_bytes: &[usize], ranks: usize, link: &Link) -> f64 {
    if ranks < 2 {
        return 0.0;
    }
    let n = ranks as f64;
    bucket_bytes
        .iter()
        .map(|&b| 2.0 * (n - 1.0) / n * b as f64 / link.bandwidth + 2.0 * (n - 1.0) * link.latency)
        .sum()
}

/// Times the gradient averaging of `model`'s trainable parameters over `coll` (`iters` timed
/// calls after `warmup`), and reports the analytic ring times beside it.
pub fn run(
    model: BenchModel,
    mode: BlockMode,
    tiny: bool,
    iters: usize,
    warmup: usize,
    coll: &dyn Collective,
    device: &Device,
) -> Result<serde_json::Value> {
    anyhow::ensure!(iters > 0, "iters must be positive");
    let spec = BenchSpec {
        model,
        batch: 1,
        iters: 1,
        warmup: 0,
        mode,
        tiny,
        attn: AttnImpl::Full,
        checkpoint: false,
        precision: None,
    };
    let vars = super::registry::bench_vars(&spec, device)?;
    let refs: Vec<&Var> = vars.iter().collect();
    // A GradStore holding a gradient for every parameter: d(Σ v)/dv = 1.
    let total = vars
        .iter()
        .map(|v| v.as_tensor().sum_all())
        .collect::<candle_core::Result<Vec<Tensor>>>()?;
    let mut grads = Tensor::stack(&total, 0)?.sum_all()?.backward()?;
    let sizes: Vec<usize> = vars.iter().map(|v| v.elem_count()).collect();
    let params: usize = sizes.iter().sum();
    let bucket_bytes: Vec<usize> = buckets(&sizes, BUCKET_BYTES / 4)
        .into_iter()
        .map(|r| sizes[r].iter().sum::<usize>() * 4)
        .collect();
    let mut times = Vec::with_capacity(iters);
    for i in 0..warmup + iters {
        let t0 = Instant::now();
        average_gradients(coll, &refs, &mut grads)?;
        device.synchronize()?;
        if i >= warmup {
            times.push(t0.elapsed().as_secs_f64() * 1e3);
        }
    }
    times.sort_by(|a, b| a.total_cmp(b));
    let median = times[times.len() / 2];
    let bytes = params * 4;
    let n = coll.world_size() as f64;
    let algbw = bytes as f64 / (median / 1e3) / 1e9;
    let analytic: Vec<serde_json::Value> = LINKS
        .iter()
        .map(|l| {
            serde_json::json!({
                "link": l.name,
                "ms_at_4": ring_seconds(&bucket_bytes, 4, l) * 1e3,
                "ms_at_8": ring_seconds(&bucket_bytes, 8, l) * 1e3,
            })
        })
        .collect();
    Ok(serde_json::json!({
        "model": model.name(),
        "mode": mode.to_string(),
        "tiny": tiny,
        "backend": coll.backend(),
        "ranks": coll.world_size(),
        "device": format!("{device:?}"),
        "trainable_params": params,
        "bytes": bytes,
        "buckets": bucket_bytes.len(),
        "bucket_bytes": bucket_bytes,
        "ms_median": median,
        "ms": times,
        "algbw_gb_s": algbw,
        // NCCL's convention: what each link carried, comparable across rank counts.
        "busbw_gb_s": if n > 1.0 { algbw * 2.0 * (n - 1.0) / n } else { 0.0 },
        "analytic_ring": analytic,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_time_is_twice_n_minus_one_over_n_of_the_bytes() {
        let link = Link {
            name: "t",
            bandwidth: 1e9,
            latency: 0.0,
        };
        // 1 GB at 8 ranks: 2 · 7/8 s.
        assert!((ring_seconds(&[1_000_000_000], 8, &link) - 1.75).abs() < 1e-12);
        assert_eq!(ring_seconds(&[1_000_000_000], 1, &link), 0.0);
        let lat = Link {
            name: "t",
            bandwidth: f64::INFINITY,
            latency: 1e-6,
        };
        // Two buckets, 2 · 3 steps each at 4 ranks.
        assert!((ring_seconds(&[1, 1], 4, &lat) - 12e-6).abs() < 1e-15);
    }

    #[test]
    fn the_job_of_one_times_a_tiny_model() {
        let r = run(
            crate::train::registry::bench_model("vectornet").unwrap(),
            BlockMode::Frozen,
            true,
            2,
            0,
            &crate::train::dist::collective::Single,
            &Device::Cpu,
        )
        .unwrap();
        assert!(r["trainable_params"].as_u64().unwrap() > 0);
        assert_eq!(r["ranks"], 1);
    }
}
