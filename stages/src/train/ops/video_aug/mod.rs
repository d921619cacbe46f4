//! VideoMAE's SSv2 fine-tuning augmentations (LM4VisualEncoding `video_understanding/`,
//! ssv2.py `SSVideoClsDataset._aug_frame` and its test path), as pure functions of a u8
//! clip and a seeded RNG:
//!
//! - training ([`augment_train_clip`]): RandAugment on the whole decoded frames
//!   ([`rand_augment`]) → `/255`, ImageNet mean/std normalization → one random resized crop
//!   box for the clip, resized to `crop`² bilinearly ([`resized_crop`]; the reference
//!   interpolates the *normalized* values, and so does this) → random erasing of one box
//!   through every frame ([`erasing`]). No flip: ssv2.py turns it off for SSv2.
//! - testing ([`test_crops`]): the short side resized to `short_side`, then `crops` square
//!   windows spaced evenly along the long side.
//!
//! Everything random comes from the `ChaCha8Rng` passed in, drawn sequentially; per-frame
//! work may run on rayon's pool and does not change the result.

pub mod affine;
#[cfg(target_arch = "x86_64")]
mod affine_avx2;
pub mod clip;
pub mod erasing;
pub mod pil_ops;
pub mod rand_augment;
mod resize;
pub mod resized_crop;

#[cfg(all(test, target_arch = "x86_64"))]
mod affine_avx2_tests;
#[cfg(test)]
mod fixture_tests;
#[cfg(test)]
mod pil_ops_tests;
#[cfg(test)]
mod tests;

use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

pub use clip::{Clip, IMAGENET_MEAN, IMAGENET_STD};
pub use rand_augment::{RandAugmentSpec, SpecError, TrainInterpolation};

/// The training augmentation, with the reference's defaults (run_class_finetuning.py
/// arguments and ssv2.py constants).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainAugment {
    /// `--aa`, parsed when the config is read (a bad string fails there); `None` = off,
    /// written `"none"` (TOML has no null).
    #[serde(with = "rand_augment_or_none")]
    pub rand_augment: Option<RandAugmentSpec>,
    /// `--train_interpolation` for RandAugment's geometric ops (bicubic).
    pub interpolation: TrainInterpolation,
    /// Area fraction range of the resized crop ([0.08, 1.0]).
    pub scale: [f64; 2],
    /// Aspect ratio (w/h) range of the resized crop ([0.75, 1.3333]).
    pub ratio: [f64; 2],
    /// `--reprob` (0.25); 0 turns erasing off.
    pub erase_prob: f64,
    /// `--recount` (1): erasing's `max_count` and `num_splits`.
    pub erase_count: usize,
    /// `--input_size` (224): the output side.
    pub crop: usize,
}

impl Default for TrainAugment {
    fn default() -> Self {
        TrainAugment {
            rand_augment: Some(RandAugmentSpec::ssv2_default()),
            interpolation: TrainInterpolation::Bicubic,
            scale: [0.08, 1.0],
            ratio: [0.75, 1.3333],
            erase_prob: 0.25,
            erase_count: 1,
            crop: 224,
        }
    }
}

/// `rand_augment` as a string: a timm config string, or `"none"` for off.
mod rand_augment_or_none {
    use super::RandAugmentSpec;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<RandAugmentSpec>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(spec) => s.serialize_str(&spec.to_string()),
            None => s.serialize_str("none"),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<RandAugmentSpec>, D::Error> {
        let text = String::deserialize(d)?;
        if text == "none" {
            return Ok(None);
        }
        RandAugmentSpec::parse(&text)
            .map(Some)
            .map_err(serde::de::Error::custom)
    }
}

impl TrainAugment {
    /// Range checks of the numbers (the functions never panic on bad values, but their
    /// output would not mean much).
    pub fn validate(&self) -> Result<(), String> {
        let [s0, s1] = self.scale;
        if !(s0 > 0.0 && s0 <= s1 && s1.is_finite()) {
            return Err(format!("scale {:?}: want 0 < lo <= hi", self.scale));
        }
        let [r0, r1] = self.ratio;
        if !(r0 > 0.0 && r0 <= r1 && r1.is_finite()) {
            return Err(format!("ratio {:?}: want 0 < lo <= hi", self.ratio));
        }
        if !(0.0..=1.0).contains(&self.erase_prob) {
            return Err(format!("erase_prob {}: want 0..=1", self.erase_prob));
        }
        if self.crop == 0 {
            return Err("crop must be positive".into());
        }
        Ok(())
    }
}

/// One training clip, as ssv2.py `_aug_frame` makes it: returns normalized f32
/// `[T, crop, crop, 3]`. A clip with empty frames gives zeros (before erasing); a clip
/// whose `data` disagrees with its dimensions is cut or padded with black first.
pub fn augment_train_clip(clip: &Clip, spec: &TrainAugment, rng: &mut ChaCha8Rng) -> Vec<f32> {
    let clip = clip.conformed();
    let clip = match &spec.rand_augment {
        Some(ra) => std::borrow::Cow::Owned(rand_augment::rand_augment_clip(
            &clip,
            ra,
            spec.interpolation,
            rng,
        )),
        None => clip,
    };
    let b = resized_crop::draw_box(clip.height, clip.width, spec.scale, spec.ratio, rng);
    let mut out =
        resized_crop::resized_crop_normalized(&clip, b, spec.crop, IMAGENET_MEAN, IMAGENET_STD);
    if spec.erase_prob > 0.0 {
        let es = erasing::EraseSpec::ssv2(spec.erase_prob, spec.erase_count);
        erasing::random_erase(&mut out, clip.frames, spec.crop, spec.crop, &es, rng);
    }
    out
}

/// The test-time views of ssv2.py (`mode == 'test'`): every frame resized so its short side
/// is `short_side` ([`clip::resize_short_side`]), then `crops` windows of `short_side` ×
/// `short_side` along the long side (rows if `H ≥ W`, else columns), window `k` starting at
/// `int(k · (long − short_side) / (crops − 1))`. `crops == 1` gives the centred window
/// (the reference divides by zero there); `crops == 0` gives none. The temporal part of the
/// test path (every other frame from `chunk_nb`) is the loader's.
pub fn test_crops(clip: &Clip, short_side: usize, crops: usize) -> Vec<Clip> {
    let resized = clip::resize_short_side(clip, short_side);
    let (h, w) = (resized.height, resized.width);
    let long = h.max(w);
    let room = long.saturating_sub(short_side);
    (0..crops)
        .map(|k| {
            let start = if crops == 1 {
                room / 2
            } else {
                (k as f64 * (room as f64 / (crops - 1) as f64)) as usize
            };
            if h >= w {
                clip::crop(&resized, start, 0, short_side, w)
            } else {
                clip::crop(&resized, 0, start, h, short_side)
            }
        })
        .collect()
}

/// A deterministic synthetic clip (smooth gradients plus texture) for benchmarks and tests.
pub fn synthetic_clip(frames: usize, height: usize, width: usize, seed: u64) -> Clip {
    let mut data = Vec::with_capacity(frames * height * width * 3);
    let s = seed as usize;
    for t in 0..frames {
        for y in 0..height {
            for x in 0..width {
                let n = (x * 31 + y * 17 + t * 7 + s * 13) ^ (x * y + s);
                data.push(((x * 255) / width.max(1) + t) as u8 ^ (n as u8 & 0x1f));
                data.push(((y * 255) / height.max(1)) as u8 ^ ((n >> 3) as u8 & 0x1f));
                data.push((((x + y + t * 3) * 3) % 256) as u8);
            }
        }
    }
    Clip {
        frames,
        height,
        width,
        data,
    }
}

/// Times [`augment_train_clip`] over `iters` clips (seeds `seed..seed+iters`) of a
/// synthetic `frames` × `height` × `width` clip; returns the mean milliseconds per clip.
/// Run it inside a 1-thread rayon pool to measure one core.
pub fn bench_augment_train_clip(
    frames: usize,
    height: usize,
    width: usize,
    spec: &TrainAugment,
    iters: usize,
    seed: u64,
) -> f64 {
    use rand::SeedableRng;
    let clip = synthetic_clip(frames, height, width, seed);
    let start = std::time::Instant::now();
    let mut sink = 0f32;
    for i in 0..iters {
        let mut rng = ChaCha8Rng::seed_from_u64(seed + i as u64);
        let out = augment_train_clip(&clip, spec, &mut rng);
        sink += out.first().copied().unwrap_or(0.0);
    }
    std::hint::black_box(sink);
    start.elapsed().as_secs_f64() * 1e3 / iters.max(1) as f64
}
