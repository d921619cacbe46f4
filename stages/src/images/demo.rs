//! A small synthetic ImageNet in the ImageFolder layout (`lm4ve demo-data`):
//! `<out>/{train,val}/<wnid>/*.JPEG`, a few classes that a ViT can tell apart (each class
//! its own shape and hue, on noise, at random sizes, positions and image sizes), written as
//! real JPEG (libjpeg-turbo) and PNG files, plus what real ImageNet holds: a grayscale JPEG,
//! a CMYK JPEG, a PNG named `.JPEG`, and one truncated file (a named reject of
//! `image.tokens`).

use super::turbo::Encoder;
use anyhow::{Context, Result};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::Path;

/// The demo's classes (real ImageNet wnids, sorted as ImageFolder sorts them).
pub const DEMO_WNIDS: [&str; 5] = [
    "n01440764",
    "n02102040",
    "n02979186",
    "n03000684",
    "n03028079",
];

#[derive(Debug, Clone)]
pub struct DemoImagesConfig {
    pub seed: u64,
    pub train_per_class: usize,
    pub val_per_class: usize,
}

impl Default for DemoImagesConfig {
    fn default() -> Self {
        DemoImagesConfig {
            seed: 0,
            train_per_class: 40,
            val_per_class: 10,
        }
    }
}

/// What was written: images per split and bytes.
#[derive(Debug, Default)]
pub struct DemoImages {
    pub train: usize,
    pub val: usize,
    pub bytes: u64,
}

/// One synthetic image of class `class`: RGB, `w`×`h`.
pub fn synth_image(class: usize, rng: &mut ChaCha8Rng, w: usize, h: usize) -> Vec<u8> {
    let hue = [
        [220.0, 60.0, 50.0],
        [60.0, 180.0, 70.0],
        [50.0, 90.0, 220.0],
        [220.0, 200.0, 40.0],
        [170.0, 60.0, 200.0],
    ][class % 5];
    let bg: [f64; 3] = [
        rng.random_range(40.0..200.0),
        rng.random_range(40.0..200.0),
        rng.random_range(40.0..200.0),
    ];
    let (cx, cy) = (
        rng.random_range(0.35..0.65) * w as f64,
        rng.random_range(0.35..0.65) * h as f64,
    );
    let r = rng.random_range(0.2..0.35) * w.min(h) as f64;
    let mut out = vec![0u8; w * h * 3];
    for y in 0..h {
        for x in 0..w {
            let (dx, dy) = (x as f64 - cx, y as f64 - cy);
            let inside = match class % 5 {
                0 => dx * dx + dy * dy < r * r,
                1 => dx.abs() < r && dy.abs() < r,
                2 => dy.abs() < r && ((y / 6) % 2 == 0),
                3 => dx.abs() < r && ((x / 6) % 2 == 0),
                _ => (dx.abs() < r / 3.0 && dy.abs() < r) || (dy.abs() < r / 3.0 && dx.abs() < r),
            };
            let base = if inside { hue } else { bg };
            for c in 0..3 {
                let n: f64 = rng.random_range(-20.0..20.0);
                out[(y * w + x) * 3 + c] = (base[c] + n).clamp(0.0, 255.0) as u8;
            }
        }
    }
    out
}

/// Writes an 8-bit PNG (1 = gray, 3 = RGB channels).
pub fn write_png(path: &Path, w: usize, h: usize, channels: usize, data: &[u8]) -> Result<()> {
    let f = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut enc = png::Encoder::new(std::io::BufWriter::new(f), w as u32, h as u32);
    enc.set_color(if channels == 1 {
        png::ColorType::Grayscale
    } else {
        png::ColorType::Rgb
    });
    enc.set_depth(png::BitDepth::Eight);
    let mut wr = enc.write_header()?;
    wr.write_image_data(data)?;
    wr.finish()?;
    Ok(())
}

/// Writes the demo tree under `out` (`train/`, `val/`).
pub fn write_demo_imagenet(out: &Path, cfg: &DemoImagesConfig) -> Result<DemoImages> {
    let mut enc = Encoder::new().map_err(anyhow::Error::msg)?;
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x1a6e);
    let mut stats = DemoImages::default();
    for (split, per) in [("train", cfg.train_per_class), ("val", cfg.val_per_class)] {
        for (c, wnid) in DEMO_WNIDS.iter().enumerate() {
            let dir = out.join(split).join(wnid);
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            for i in 0..per {
                let w = rng.random_range(72..140usize);
                let h = rng.random_range(72..140usize);
                let rgb = synth_image(c, &mut rng, w, h);
                let stem = if split == "train" {
                    format!("{wnid}_{i}")
                } else {
                    format!("ILSVRC2012_val_{:08}", c * per + i + 1)
                };
                let path = dir.join(format!("{stem}.JPEG"));
                // A few of what ImageNet holds: grayscale, CMYK, a PNG named .JPEG, PNGs.
                match (split, c, i) {
                    ("train", 0, 1) => {
                        let gray: Vec<u8> = rgb
                            .chunks_exact(3)
                            .map(|p| {
                                ((p[0] as u32 * 299 + p[1] as u32 * 587 + p[2] as u32 * 114) / 1000)
                                    as u8
                            })
                            .collect();
                        let j = enc.encode(&gray, w, h, 1, 90).map_err(anyhow::Error::msg)?;
                        std::fs::write(&path, j)?;
                    }
                    ("train", 1, 2) => {
                        // Adobe convention (what PIL assumes): stored bytes inverted.
                        let cmyk: Vec<u8> = rgb
                            .chunks_exact(3)
                            .flat_map(|p| [p[0], p[1], p[2], 255])
                            .collect();
                        let j = enc.encode(&cmyk, w, h, 4, 90).map_err(anyhow::Error::msg)?;
                        std::fs::write(&path, j)?;
                    }
                    ("train", 2, 3) => write_png(&path, w, h, 3, &rgb)?,
                    (_, _, i) if i % 9 == 5 => {
                        write_png(&dir.join(format!("{stem}.png")), w, h, 3, &rgb)?
                    }
                    _ => {
                        let j = enc.encode_rgb(&rgb, w, h, 90).map_err(anyhow::Error::msg)?;
                        std::fs::write(&path, j)?;
                    }
                }
                match split {
                    "train" => stats.train += 1,
                    _ => stats.val += 1,
                }
            }
        }
    }
    // One truncated file: the first half of a JPEG (a named reject).
    let rgb = synth_image(3, &mut rng, 96, 96);
    let j = enc
        .encode_rgb(&rgb, 96, 96, 90)
        .map_err(anyhow::Error::msg)?;
    let bad = out
        .join("train")
        .join(DEMO_WNIDS[3])
        .join(format!("{}_truncated.JPEG", DEMO_WNIDS[3]));
    std::fs::write(&bad, &j[..j.len() / 2])?;
    stats.train += 1;
    for e in walk(out) {
        stats.bytes += std::fs::metadata(&e).map(|m| m.len()).unwrap_or(0);
    }
    Ok(stats)
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}
