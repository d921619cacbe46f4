//! A synthetic Something-Something-v2 look-alike for the demo and the tests: VP9 webm clips
//! written through libvpx (ffmpeg-next encoder + webm muxer), 12 fps, 2–4 s, 320×240 by
//! default, with the release's folder layout and JSON schema:
//! `ssv2/20bn-something-something-v2/<id>.webm`, `ssv2/labels/labels.json`,
//! `ssv2/labels/something-something-v2-{train,validation}.json`.
//!
//! Every clip shows "something" (a striped shape on a textured static background) doing one
//! of nine motions that only temporal order tells apart: left→right vs right→left, up vs
//! down, approaching (grows) vs moving away (shrinks), spinning clockwise vs anticlockwise,
//! and holding (still, with hand jitter). Start position, size, colours, speed and length
//! are random, so a single frame says little about the class.
//!
//! Determinism: each clip draws from its own ChaCha8 stream seeded by (seed, clip index);
//! libvpx runs single-threaded in realtime mode and the muxer in bitexact mode, so the same
//! seed gives the same bytes for any thread count. Clips are encoded in parallel (rayon).

use super::decode::init;
use anyhow::{anyhow, Context, Result};
use ffmpeg_next as ff;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use std::path::Path;

/// The demo's classes as SSv2 templates, in labels.json order (sorted by class name, as the
/// release's labels.json is).
pub const DEMO_TEMPLATES: &[&str] = &[
    "Approaching [something] with your camera",
    "Holding [something]",
    "Moving away from [something] with your camera",
    "Moving [something] down",
    "Moving [something] from left to right",
    "Moving [something] from right to left",
    "Moving [something] up",
    "Spinning [something] anticlockwise",
    "Spinning [something] clockwise",
];

pub use super::stage::{LABELS_DIR, LABELS_JSON, TRAIN_JSON, VALIDATION_JSON, VIDEO_DIR};

const THINGS: &[&str] = &[
    "cup", "book", "ball", "box", "pen", "phone", "remote", "bottle", "spoon", "shoe", "toy car",
    "apple", "wallet", "mug", "stapler",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Motion {
    Approach,
    Hold,
    Recede,
    Down,
    LeftToRight,
    RightToLeft,
    Up,
    SpinAnticlockwise,
    SpinClockwise,
}

/// Motion of class `i` (the index into [`DEMO_TEMPLATES`]).
pub const MOTIONS: [Motion; 9] = [
    Motion::Approach,
    Motion::Hold,
    Motion::Recede,
    Motion::Down,
    Motion::LeftToRight,
    Motion::RightToLeft,
    Motion::Up,
    Motion::SpinAnticlockwise,
    Motion::SpinClockwise,
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoSsv2Config {
    pub seed: u64,
    pub train_per_class: usize,
    pub validation_per_class: usize,
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    /// Clip length range in frames (inclusive): 2–4 s at 12 fps.
    pub min_frames: usize,
    pub max_frames: usize,
}

impl Default for DemoSsv2Config {
    fn default() -> Self {
        DemoSsv2Config {
            seed: 0,
            train_per_class: 100,
            validation_per_class: 10,
            width: 320,
            height: 240,
            fps: 12,
            min_frames: 24,
            max_frames: 48,
        }
    }
}

/// What [`write_demo_ssv2`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoSsv2Summary {
    pub train: usize,
    pub validation: usize,
    pub frames: usize,
    pub bytes: u64,
}

fn mix(seed: u64, a: u64) -> u64 {
    let mut h = blake3::Hasher::new();
    h.update(b"lm4ve demo ssv2\0");
    h.update(&seed.to_le_bytes());
    h.update(&a.to_le_bytes());
    let b = h.finalize();
    let mut x = [0u8; 8];
    x.copy_from_slice(&b.as_bytes()[..8]);
    u64::from_le_bytes(x)
}

/// Writes the demo dataset under `root` (created). Annotations are in a seeded random
/// order; ids are a seeded permutation of 1..=N (strings, as in the release).
pub fn write_demo_ssv2(root: &Path, cfg: &DemoSsv2Config) -> Result<DemoSsv2Summary> {
    init();
    let videos = root.join(VIDEO_DIR);
    let labels_dir = root.join(LABELS_DIR);
    for d in [&videos, &labels_dir] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let k = DEMO_TEMPLATES.len();
    let n_train = cfg.train_per_class * k;
    let n_val = cfg.validation_per_class * k;
    let total = n_train + n_val;
    // Clip j: class j % k; split by position; order and ids shuffled.
    let mut rng = ChaCha8Rng::seed_from_u64(mix(cfg.seed, u64::MAX));
    let mut ids: Vec<u64> = (1..=total as u64).collect();
    shuffle(&mut ids, &mut rng);
    let mut train_order: Vec<usize> = (0..n_train).collect();
    let mut val_order: Vec<usize> = (n_train..total).collect();
    shuffle(&mut train_order, &mut rng);
    shuffle(&mut val_order, &mut rng);
    let class_of = |j: usize| {
        if j < n_train {
            j % k
        } else {
            (j - n_train) % k
        }
    };

    let results: Vec<Result<(usize, u64, String)>> = (0..total)
        .into_par_iter()
        .map(|j| {
            let mut rng = ChaCha8Rng::seed_from_u64(mix(cfg.seed, j as u64));
            let nframes = rng.random_range(cfg.min_frames..=cfg.max_frames.max(cfg.min_frames));
            let thing = THINGS[rng.random_range(0..THINGS.len())].to_string();
            let clip_seed = rng.random::<u64>();
            let frames = synth_clip(
                MOTIONS[class_of(j)],
                cfg.width,
                cfg.height,
                nframes,
                clip_seed,
            );
            let path = videos.join(format!("{}.webm", ids[j]));
            write_webm(&path, cfg.width, cfg.height, cfg.fps, &frames, None)?;
            let bytes = std::fs::metadata(&path)?.len();
            Ok((nframes, bytes, thing))
        })
        .collect();
    let mut frames = 0;
    let mut bytes = 0;
    let mut things = Vec::with_capacity(total);
    for r in results {
        let (f, b, t) = r?;
        frames += f;
        bytes += b;
        things.push(t);
    }
    let entry = |j: usize| {
        let template = DEMO_TEMPLATES[class_of(j)];
        let thing = &things[j];
        let label = lower_first(&template.replace("[something]", thing));
        serde_json::json!({
            "id": ids[j].to_string(),
            "label": label,
            "template": template,
            "placeholders": [thing],
        })
    };
    let train: Vec<_> = train_order.iter().map(|&j| entry(j)).collect();
    let val: Vec<_> = val_order.iter().map(|&j| entry(j)).collect();
    let labels: serde_json::Map<String, serde_json::Value> = DEMO_TEMPLATES
        .iter()
        .enumerate()
        .map(|(i, t)| {
            (
                t.replace(['[', ']'], ""),
                serde_json::Value::String(i.to_string()),
            )
        })
        .collect();
    for (name, value) in [
        (TRAIN_JSON, serde_json::Value::Array(train)),
        (VALIDATION_JSON, serde_json::Value::Array(val)),
        (LABELS_JSON, serde_json::Value::Object(labels)),
    ] {
        let p = labels_dir.join(name);
        std::fs::write(&p, serde_json::to_vec_pretty(&value)?)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(DemoSsv2Summary {
        train: n_train,
        validation: n_val,
        frames,
        bytes,
    })
}

fn lower_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}

fn shuffle<T>(v: &mut [T], rng: &mut ChaCha8Rng) {
    for i in (1..v.len()).rev() {
        let j = rng.random_range(0..=i);
        v.swap(i, j);
    }
}

fn uniform(rng: &mut ChaCha8Rng, lo: f32, hi: f32) -> f32 {
    if hi <= lo {
        lo
    } else {
        rng.random_range(lo..hi)
    }
}

fn color(rng: &mut ChaCha8Rng) -> [f32; 3] {
    [
        uniform(rng, 0.0, 255.0),
        uniform(rng, 0.0, 255.0),
        uniform(rng, 0.0, 255.0),
    ]
}

/// Per-pixel static noise in [-1, 1] from a hash of the position (no RNG state).
fn noise(x: u32, y: u32, salt: u32) -> f32 {
    let mut h = x.wrapping_mul(0x9E37_79B1) ^ y.wrapping_mul(0x85EB_CA77) ^ salt;
    h ^= h >> 15;
    h = h.wrapping_mul(0x2C1B_3C6D);
    h ^= h >> 12;
    (h & 0xFFFF) as f32 / 32767.5 - 1.0
}

#[derive(Clone, Copy)]
enum ShapeKind {
    Rect,
    Ellipse,
    Triangle,
    Diamond,
}

/// One clip's RGB24 frames (`width`×`height`×3 bytes each) showing `motion`; everything
/// random comes from `seed`.
pub fn synth_clip(
    motion: Motion,
    width: u32,
    height: u32,
    frames: usize,
    seed: u64,
) -> Vec<Vec<u8>> {
    let rng = &mut ChaCha8Rng::seed_from_u64(seed);
    let (w, h) = (width as f32, height as f32);
    let unit = w.min(h) / 240.0;
    // Background: two colours mixed by two random plane waves, plus static grain.
    let (c0, c1) = (color(rng), color(rng));
    let (f1x, f1y, p1) = (
        uniform(rng, -0.08, 0.08),
        uniform(rng, -0.08, 0.08),
        uniform(rng, 0.0, std::f32::consts::TAU),
    );
    let (f2x, f2y, p2) = (
        uniform(rng, -0.03, 0.03),
        uniform(rng, -0.03, 0.03),
        uniform(rng, 0.0, std::f32::consts::TAU),
    );
    let salt = rng.random::<u32>();
    let mut bg = vec![0u8; (width * height * 3) as usize];
    for y in 0..height {
        for x in 0..width {
            let (xf, yf) = (x as f32, y as f32);
            // A gentle background: strong waves would be the most visible thing in a 64-px
            // demo crop and bury the motion the labels are about.
            let m = 0.5
                + 0.12 * (xf * f1x + yf * f1y + p1).sin()
                + 0.08 * (xf * f2x + yf * f2y + p2).sin();
            let n = 8.0 * noise(x, y, salt);
            let i = ((y * width + x) * 3) as usize;
            for ch in 0..3 {
                bg[i + ch] = (c0[ch] * (1.0 - m) + c1[ch] * m + n).clamp(0.0, 255.0) as u8;
            }
        }
    }
    // The thing: a striped shape.
    let kind = match rng.random_range(0..4u32) {
        0 => ShapeKind::Rect,
        1 => ShapeKind::Ellipse,
        2 => ShapeKind::Triangle,
        _ => ShapeKind::Diamond,
    };
    let aspect = uniform(rng, 0.55, 1.0);
    let (s1, s2) = (color(rng), color(rng));
    // Large shapes with coarse stripes: the demo trains on 64-px crops (4×4 patches of 16 px),
    // where a small shape or fine stripes (and so its spin) would vanish.
    let mut size = uniform(rng, 36.0, 56.0) * unit;
    let period = size * uniform(rng, 0.45, 0.7);
    let angle0 = uniform(rng, 0.0, std::f32::consts::TAU);
    let last = (frames.max(2) - 1) as f32;
    // Track: centre, half-size and angle per frame.
    let margin = 40.0 * unit;
    let (mut cx, mut cy) = (
        uniform(rng, margin, w - margin),
        uniform(rng, margin, h - margin),
    );
    let (mut dx, mut dy, mut grow, mut spin) = (0.0f32, 0.0f32, 1.0f32, 0.0f32);
    match motion {
        Motion::LeftToRight | Motion::RightToLeft => {
            let d = uniform(rng, 0.35, 0.6) * w;
            let x0 = uniform(rng, margin, (w - margin - d).max(margin));
            let forward = motion == Motion::LeftToRight;
            cx = if forward { x0 } else { x0 + d };
            dx = if forward { d } else { -d };
        }
        Motion::Up | Motion::Down => {
            let d = uniform(rng, 0.3, 0.5) * h;
            let y0 = uniform(rng, margin, (h - margin - d).max(margin));
            let down = motion == Motion::Down;
            cy = if down { y0 } else { y0 + d };
            dy = if down { d } else { -d };
        }
        Motion::Approach | Motion::Recede => {
            let k = uniform(rng, 2.0, 2.8);
            size = uniform(rng, 22.0, 32.0) * unit;
            if motion == Motion::Approach {
                grow = k;
            } else {
                size *= k;
                grow = 1.0 / k;
            }
            cx = uniform(rng, 0.35 * w, 0.65 * w);
            cy = uniform(rng, 0.35 * h, 0.65 * h);
        }
        // Image y points down, so a growing angle turns the shape clockwise on screen.
        Motion::SpinClockwise => spin = uniform(rng, 0.2, 0.5),
        Motion::SpinAnticlockwise => spin = -uniform(rng, 0.2, 0.5),
        Motion::Hold => {}
    }
    let jitter = if motion == Motion::Hold { 2.0 } else { 0.8 } * unit;
    let mut out = Vec::with_capacity(frames);
    for i in 0..frames {
        let tau = i as f32 / last;
        let x = cx + dx * tau + uniform(rng, -jitter, jitter);
        let y = cy + dy * tau + uniform(rng, -jitter, jitter);
        let s = size * grow.powf(tau);
        let a = angle0 + spin * i as f32 + uniform(rng, -0.02, 0.02);
        let mut f = bg.clone();
        draw(
            &mut f,
            width,
            height,
            kind,
            aspect,
            (x, y, s, a),
            (s1, s2, period),
        );
        out.push(f);
    }
    out
}

fn draw(
    f: &mut [u8],
    width: u32,
    height: u32,
    kind: ShapeKind,
    aspect: f32,
    (cx, cy, s, a): (f32, f32, f32, f32),
    (c1, c2, period): ([f32; 3], [f32; 3], f32),
) {
    let r = 1.5 * s;
    let x0 = (cx - r).floor().max(0.0) as u32;
    let y0 = (cy - r).floor().max(0.0) as u32;
    let x1 = ((cx + r).ceil().max(0.0) as u32).min(width);
    let y1 = ((cy + r).ceil().max(0.0) as u32).min(height);
    let (sin, cos) = a.sin_cos();
    for y in y0..y1 {
        for x in x0..x1 {
            let (px, py) = (x as f32 + 0.5 - cx, y as f32 + 0.5 - cy);
            let u = (px * cos + py * sin) / s;
            let v = (-px * sin + py * cos) / s;
            let inside = match kind {
                ShapeKind::Rect => u.abs() <= 1.0 && v.abs() <= aspect,
                ShapeKind::Ellipse => u * u + (v / aspect) * (v / aspect) <= 1.0,
                ShapeKind::Triangle => v.abs() <= 1.0 && u.abs() <= (v + 1.0) * 0.5 * aspect + 0.1,
                ShapeKind::Diamond => u.abs() + v.abs() / aspect <= 1.0,
            };
            if !inside {
                continue;
            }
            let stripe = ((u * s) / period).floor() as i32 & 1 == 0;
            let c = if stripe { c1 } else { c2 };
            let shade = 0.8 + 0.2 * (1.0 - v.abs().min(1.0));
            let i = ((y * width + x) * 3) as usize;
            for ch in 0..3 {
                f[i + ch] = (c[ch] * shade).clamp(0.0, 255.0) as u8;
            }
        }
    }
}

/// BT.601 limited-range RGB → Y'CbCr 4:2:0 into `frame` (chroma: mean of each 2×2 block;
/// at odd edges the last row/column counts twice).
fn rgb_to_yuv420(rgb: &[u8], width: usize, frame: &mut ff::frame::Video) {
    let ys = frame.stride(0);
    let y_plane = frame.data_mut(0);
    for (src, dst) in rgb.chunks_exact(width * 3).zip(y_plane.chunks_mut(ys)) {
        for (d, px) in dst[..width].iter_mut().zip(src.chunks_exact(3)) {
            let (r, g, b) = (px[0] as i32, px[1] as i32, px[2] as i32);
            *d = (((66 * r + 129 * g + 25 * b + 128) >> 8) + 16) as u8;
        }
    }
    let cw = width.div_ceil(2);
    let (us, vs) = (frame.stride(1), frame.stride(2));
    let mut u = vec![0u8; cw];
    let mut v = vec![0u8; cw];
    for (cy, rows) in rgb.chunks(2 * width * 3).enumerate() {
        let (top, bottom) = rows.split_at(width * 3);
        let bottom = if bottom.is_empty() { top } else { bottom };
        for cx in 0..cw {
            let (x0, x1) = (2 * cx, (2 * cx + 1).min(width - 1));
            let mut sum = [0i32; 3];
            for row in [top, bottom] {
                for x in [x0, x1] {
                    for (c, s) in sum.iter_mut().enumerate() {
                        *s += row[x * 3 + c] as i32;
                    }
                }
            }
            // Odd edges repeat their last pixel: always a mean of four samples.
            let [r, g, b] = sum.map(|s| (s + 2) >> 2);
            u[cx] = (((-38 * r - 74 * g + 112 * b + 128) >> 8) + 128) as u8;
            v[cx] = (((112 * r - 94 * g - 18 * b + 128) >> 8) + 128) as u8;
        }
        frame.data_mut(1)[cy * us..cy * us + cw].copy_from_slice(&u);
        frame.data_mut(2)[cy * vs..cy * vs + cw].copy_from_slice(&v);
    }
}

/// Encodes RGB24 frames to a VP9 webm with libvpx (realtime, single thread, bitexact mux).
/// `pts_ms`: per-frame presentation times in milliseconds for variable frame rate clips;
/// `None` gives a constant `fps`.
pub fn write_webm(
    path: &Path,
    width: u32,
    height: u32,
    fps: u32,
    frames: &[Vec<u8>],
    pts_ms: Option<&[i64]>,
) -> Result<()> {
    init();
    let frame_bytes = (width * height * 3) as usize;
    if frames.iter().any(|f| f.len() != frame_bytes) {
        return Err(anyhow!(
            "write_webm: every frame must be {width}x{height}x3 bytes"
        ));
    }
    if let Some(p) = pts_ms {
        if p.len() != frames.len() || p.windows(2).any(|w| w[1] <= w[0]) {
            return Err(anyhow!(
                "write_webm: pts_ms must be one increasing time per frame"
            ));
        }
    }
    let ctx_err = |what: &str| format!("{what} for {}", path.display());
    let codec = ff::encoder::find_by_name("libvpx-vp9").ok_or_else(|| {
        anyhow!("this FFmpeg has no libvpx-vp9 encoder (install libavcodec with libvpx)")
    })?;
    let mut octx =
        ff::format::output_as(path, "webm").with_context(|| ctx_err("opening the webm muxer"))?;
    // SAFETY: plain field write on a valid, not yet started muxer context.
    unsafe { (*octx.as_mut_ptr()).flags |= ff::ffi::AVFMT_FLAG_BITEXACT };
    let global_header = octx
        .format()
        .flags()
        .contains(ff::format::Flags::GLOBAL_HEADER);
    let time_base = if pts_ms.is_some() {
        ff::Rational(1, 1000)
    } else {
        ff::Rational(1, fps as i32)
    };
    let mut enc = ff::codec::context::Context::new_with_codec(codec)
        .encoder()
        .video()
        .with_context(|| ctx_err("creating the VP9 encoder"))?;
    enc.set_width(width);
    enc.set_height(height);
    enc.set_format(ff::format::Pixel::YUV420P);
    enc.set_time_base(time_base);
    enc.set_frame_rate(Some(ff::Rational(fps as i32, 1)));
    enc.set_bit_rate(0);
    let mut flags = ff::codec::Flags::BITEXACT;
    if global_header {
        flags |= ff::codec::Flags::GLOBAL_HEADER;
    }
    enc.set_flags(flags);
    enc.set_threading(ff::codec::threading::Config {
        kind: ff::codec::threading::Type::None,
        count: 1,
        ..Default::default()
    });
    let mut opts = ff::Dictionary::new();
    for (k, v) in [
        ("deadline", "realtime"),
        ("cpu-used", "8"),
        ("lag-in-frames", "0"),
        ("crf", "34"),
        ("row-mt", "0"),
    ] {
        opts.set(k, v);
    }
    let mut enc = enc
        .open_with(opts)
        .with_context(|| ctx_err("opening libvpx-vp9"))?;
    {
        let mut ost = octx
            .add_stream(codec)
            .with_context(|| ctx_err("adding the stream"))?;
        ost.set_parameters(&enc);
        ost.set_time_base(time_base);
        if pts_ms.is_none() {
            // Written as the track's default duration; a VFR clip must not claim one.
            ost.set_avg_frame_rate(ff::Rational(fps as i32, 1));
        }
    }
    octx.write_header()
        .with_context(|| ctx_err("writing the webm header"))?;
    let stream_tb = octx
        .stream(0)
        .map(|s| s.time_base())
        .ok_or_else(|| anyhow!("webm muxer lost its stream"))?;
    let mut frame = ff::frame::Video::new(ff::format::Pixel::YUV420P, width, height);
    let mut packet = ff::Packet::empty();
    let mut write_packets =
        |enc: &mut ff::encoder::Video, octx: &mut ff::format::context::Output| -> Result<()> {
            while enc.receive_packet(&mut packet).is_ok() {
                packet.set_stream(0);
                packet.rescale_ts(time_base, stream_tb);
                packet
                    .write_interleaved(octx)
                    .with_context(|| ctx_err("writing a packet"))?;
            }
            Ok(())
        };
    for (i, rgb) in frames.iter().enumerate() {
        rgb_to_yuv420(rgb, width as usize, &mut frame);
        frame.set_pts(Some(pts_ms.map_or(i as i64, |p| p[i])));
        enc.send_frame(&frame)
            .with_context(|| ctx_err("encoding a frame"))?;
        write_packets(&mut enc, &mut octx)?;
    }
    enc.send_eof()
        .with_context(|| ctx_err("flushing the encoder"))?;
    write_packets(&mut enc, &mut octx)?;
    octx.write_trailer()
        .with_context(|| ctx_err("writing the webm trailer"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_are_in_labels_json_order() {
        let names: Vec<String> = DEMO_TEMPLATES
            .iter()
            .map(|t| t.replace(['[', ']'], ""))
            .collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        assert_eq!(MOTIONS.len(), DEMO_TEMPLATES.len());
    }

    #[test]
    fn clips_are_deterministic_and_decode_back() {
        let dir = tempfile::tempdir().unwrap();
        let fa = synth_clip(Motion::LeftToRight, 64, 48, 6, 3);
        assert_eq!(fa, synth_clip(Motion::LeftToRight, 64, 48, 6, 3));
        assert_ne!(fa, synth_clip(Motion::LeftToRight, 64, 48, 6, 4));
        let (p1, p2) = (dir.path().join("1.webm"), dir.path().join("2.webm"));
        write_webm(&p1, 64, 48, 12, &fa, None).unwrap();
        write_webm(&p2, 64, 48, 12, &fa, None).unwrap();
        assert_eq!(std::fs::read(&p1).unwrap(), std::fs::read(&p2).unwrap());
        let frames = super::super::decode::decode_all(&p1).unwrap();
        assert_eq!(frames.len(), 6);
        assert_eq!((frames[0].width(), frames[0].height()), (64, 48));
    }
}
