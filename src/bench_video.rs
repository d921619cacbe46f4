//! `lm4ve bench-video-frames`: the `frames` layout of ssv2.tokens on real clips — what it
//! stores (bytes per clip, JPEG PSNR against the exact RGB frames) and how fast the
//! training loader turns a stored clip into a sample (JSON out). BENCHMARKS.md has the
//! figures and the extrapolation to SSv2.

use crate::cli::BenchVideoFramesArgs;
use anyhow::{Context, Result};
use lm4ve_pipeline::UsageError;
use lm4ve_stages::ssv2::frames::{rgb_frames, FramesLayout};
use lm4ve_stages::ssv2::jpeg::{psnr, JpegDecoder};
use lm4ve_stages::train::data::video_frames::{FramesSource, StoredClip};
use lm4ve_stages::train::ops::video_aug::TrainAugment;
use rand::SeedableRng;
use std::process::ExitCode;
use std::time::Instant;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

pub fn run(a: &BenchVideoFramesArgs) -> Result<ExitCode> {
    if a.num_frames == 0
        || a.crop == 0
        || a.iters == 0
        || a.repeats == 0
        || !(2..=31).contains(&a.quantizer)
    {
        return Err(UsageError(
            "--num-frames, --crop, --iters and --repeats must be positive, --quantizer in 2..=31"
                .into(),
        )
        .into());
    }
    let layout = FramesLayout {
        short_side: a.frame_short_side,
        quantizer: a.quantizer,
        max_frames: 1024,
        max_clip_bytes: 256 << 20,
    };
    let source = FramesSource::new(a.num_frames, 2, 16, a.crop, a.crop);
    let augment = TrainAugment {
        crop: a.crop,
        ..TrainAugment::default()
    };
    let mut decoder = JpegDecoder::new().map_err(anyhow::Error::msg)?;
    let mut per_clip = Vec::new();
    let (mut train_ms, mut test_ms, mut write_ms) = (Vec::new(), Vec::new(), Vec::new());
    let mut ffmpeg_ms = Vec::new();
    for path in &a.clips {
        let t0 = Instant::now();
        let clip = layout
            .encode_clip(path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        write_ms.push(t0.elapsed().as_secs_f64() * 1e3);
        let stored = StoredClip::from_fields(clip.fields, 0)?;
        let jpeg_bytes = stored.jpeg_len();
        // PSNR of every stored frame against the exact RGB frame it was made from.
        let rgb = rgb_frames(path, a.frame_short_side)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let mut psnrs = Vec::new();
        for (k, exact) in rgb.iter().enumerate().take(stored.len()) {
            let jpeg = stored.jpeg(k).context("a stored frame is missing")?;
            let back = decoder.decode(jpeg).map_err(anyhow::Error::msg)?;
            psnrs.push(psnr(exact, &back.data));
        }
        // The loader: T random frames decoded + augmented + packed, one thread.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        source.train_samples(&stored, Some(&augment), a.repeats, &mut rng)?;
        for _ in 0..a.iters {
            let t = Instant::now();
            std::hint::black_box(source.train_samples(
                &stored,
                Some(&augment),
                a.repeats,
                &mut rng,
            )?);
            train_ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
        for _ in 0..a.iters.div_ceil(4) {
            let t = Instant::now();
            std::hint::black_box(source.test_samples(&stored, 2, 3)?);
            test_ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
        if a.ffmpeg {
            ffmpeg_ms.push(ffmpeg_cli_ms(path, a.frame_short_side, a.quantizer)?);
        }
        let mean_psnr = psnrs.iter().sum::<f64>() / psnrs.len().max(1) as f64;
        let min_psnr = psnrs.iter().copied().fold(f64::INFINITY, f64::min);
        per_clip.push(serde_json::json!({
            "clip": path.display().to_string(),
            "frames": stored.len(),
            "size": [stored.size.0, stored.size.1],
            "jpeg_bytes": jpeg_bytes,
            "bytes_per_frame": jpeg_bytes / stored.len().max(1),
            "psnr_mean_db": (mean_psnr * 100.0).round() / 100.0,
            "psnr_min_db": (min_psnr * 100.0).round() / 100.0,
        }));
    }
    let train = median(train_ms);
    let mut out = serde_json::json!({
        "impl": "lm4ve",
        "frame_short_side": a.frame_short_side,
        "quantizer": a.quantizer,
        "num_frames": a.num_frames,
        "crop": a.crop,
        "clips": per_clip,
        "write_ms_per_clip_median": median(write_ms),
        "repeats": a.repeats,
        "train_clip_ms_median": train,
        "train_sample_ms_median": train / a.repeats as f64,
        "train_clips_per_s_per_core": 1e3 / train,
        "test_2x3_views_ms_median": median(test_ms),
    });
    if a.ffmpeg {
        out["ffmpeg_cli_write_ms_per_clip_median"] = median(ffmpeg_ms).into();
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(ExitCode::SUCCESS)
}

/// The ffmpeg CLI writing the same JPEG files (one thread), in ms.
fn ffmpeg_cli_ms(path: &std::path::Path, short_side: usize, q: u32) -> Result<f64> {
    let dir = std::env::temp_dir().join(format!("lm4ve-bench-frames-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let vf = if short_side == 0 {
        "format=rgb24".to_string()
    } else {
        format!("scale='if(gt(iw,ih),-2,{short_side})':'if(gt(iw,ih),{short_side},-2)':flags=bilinear,format=rgb24")
    };
    let t = Instant::now();
    let status = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-threads", "1", "-i"])
        .arg(path)
        .args(["-vf", &vf, "-pix_fmt", "yuvj420p", "-q:v", &q.to_string()])
        .args(["-threads", "1"])
        .arg(dir.join("%05d.jpg"))
        .status()
        .context("running ffmpeg (is it on PATH?)")?;
    let ms = t.elapsed().as_secs_f64() * 1e3;
    let _ = std::fs::remove_dir_all(&dir);
    anyhow::ensure!(status.success(), "ffmpeg failed on {}", path.display());
    Ok(ms)
}
