//! `lm4ve bench-image-loader`: the image task's training loader on one core — a JPEG read,
//! decoded as PIL decodes it, then DeiT's training view (bicubic RandomResizedCrop, flip,
//! RandAugment `rand-m9-mstd0.5-inc1`, normalize, RandomErasing 0.25 pixel mode:
//! `train::ops::image_aug`) — over an ImageNet-layout folder (JSON out).
//! `benches/image_loader.sh` runs it beside torchvision's `ImageFolder` + timm's
//! `create_transform` (the reference's loader) and a simplejpeg/OpenCV loader.

use crate::cli::BenchImageLoaderArgs;
use anyhow::{Context, Result};
use lm4ve_pipeline::UsageError;
use lm4ve_stages::train::ops::image_aug::deit_train_view_file;
use lm4ve_stages::train::recipe::TaskRecipe;
use lm4ve_stages::train::task::image::Image;
use rand::SeedableRng;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

/// The JPEG files under `root` (class folders, as `ImageFolder` reads them), sorted.
fn jpegs(root: &std::path::Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let p = e?.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p
                .extension()
                .and_then(|x| x.to_str())
                .is_some_and(|x| x.eq_ignore_ascii_case("jpg") || x.eq_ignore_ascii_case("jpeg"))
            {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// CPU seconds this process has used, user + system (wall time is unreliable on a shared
/// machine). From /proc/self/stat (clock ticks, 100 a second); NaN where it is absent.
fn process_cpu_s() -> f64 {
    let Ok(s) = std::fs::read_to_string("/proc/self/stat") else {
        return f64::NAN;
    };
    // Fields after the parenthesised command name: utime and stime are the 12th and 13th.
    let rest = s.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|x| x.parse().ok())
        .collect();
    if f.len() == 2 {
        (f[0] + f[1]) / 100.0
    } else {
        f64::NAN
    }
}

pub fn run(a: &BenchImageLoaderArgs) -> Result<ExitCode> {
    if a.crop == 0 || a.passes == 0 {
        return Err(UsageError("--crop and --passes must be positive".into()).into());
    }
    let files = jpegs(&a.dir)?;
    if files.is_empty() {
        return Err(UsageError(format!("{}: no .jpg/.jpeg files", a.dir.display())).into());
    }
    let files = &files[..files.len().min(a.limit.unwrap_or(usize::MAX))];
    let mut spec = Image.default_augment();
    spec.crop = a.crop;
    let hflip = 0.5;
    // One untimed pass warms the page cache and the allocator, as the Python side's first
    // epoch does.
    let pass = |p: usize| -> Result<f64> {
        let mut sum = 0f64;
        for (i, f) in files.iter().enumerate() {
            let bytes = std::fs::read(f).with_context(|| format!("reading {}", f.display()))?;
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64((p * files.len() + i) as u64);
            let v = deit_train_view_file(&bytes, 1 << 28, &spec, hflip, &mut rng)
                .map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?;
            sum += v[0] as f64;
        }
        Ok(sum)
    };
    // One core: the view's per-frame parallelism runs in a pool of one thread.
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build()?;
    let (wall, cpu) = pool.install(|| -> Result<(f64, f64)> {
        std::hint::black_box(pass(0)?);
        let (t0, c0) = (Instant::now(), process_cpu_s());
        for p in 1..=a.passes {
            std::hint::black_box(pass(p)?);
        }
        Ok((t0.elapsed().as_secs_f64(), process_cpu_s() - c0))
    })?;
    let n = (files.len() * a.passes) as f64;
    let r3 = |x: f64| (x * 1000.0).round() / 1000.0;
    println!(
        "{}",
        serde_json::json!({
            "impl": "lm4ve",
            "images": files.len(),
            "passes": a.passes,
            "crop": a.crop,
            "wall_s": r3(wall),
            "cpu_s": r3(cpu),
            "images_per_s_wall": r3(n / wall),
            "images_per_cpu_s": r3(n / cpu),
        })
    );
    Ok(ExitCode::SUCCESS)
}
