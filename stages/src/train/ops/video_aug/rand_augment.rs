//! timm-style RandAugment for video, as the reference configures it (rand_augment.py
//! `rand_augment_transform`, `RandAugment`, `AugmentOp`; video_transforms.py
//! `create_random_augment`; ssv2.py `_aug_frame`):
//! - the config string `rand-m7-n4-mstd0.5-inc1` selects magnitude 7, 4 ops per clip,
//!   magnitude noise std 0.5 and the "increasing" op list;
//! - per clip, `n` ops are chosen uniformly *with* replacement (numpy `choice` without
//!   weights), or, with a `w0` section, by the reference's weights *without* replacement;
//! - each chosen op is applied with probability 0.5; if applied, its magnitude is drawn
//!   from N(m, mstd) (when mstd > 0), clipped to [0, 10], mapped to the op's argument (with
//!   a random sign for the signed ops), and that one argument is applied to every frame;
//! - geometric ops fill with (128, 128, 128) (`create_random_augment` passes no `img_mean`,
//!   so `AugmentOp` uses its `_FILL`) and resample with the training interpolation
//!   (`--train_interpolation`, default bicubic; "random" picks bilinear or bicubic anew for
//!   every frame, as `_interpolation` runs once per `aug_fn` call).

use rand::{Rng, RngExt};
use rand_distr::{Distribution, Normal};
use rayon::prelude::*;

use super::clip::Clip;
use super::pil_ops::{self, Interp};

/// The highest magnitude (`_MAX_LEVEL`).
pub const MAX_LEVEL: f64 = 10.0;
/// The fill of the geometric ops (`_FILL`).
pub const FILL: [u8; 3] = [128, 128, 128];
/// The probability each chosen op is applied with (`rand_augment_ops`' `prob=0.5`).
pub const OP_PROB: f64 = 0.5;

/// The ops of the reference's lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpName {
    AutoContrast,
    Equalize,
    Invert,
    Rotate,
    Posterize,
    PosterizeIncreasing,
    Solarize,
    SolarizeIncreasing,
    SolarizeAdd,
    Color,
    ColorIncreasing,
    Contrast,
    ContrastIncreasing,
    Brightness,
    BrightnessIncreasing,
    Sharpness,
    SharpnessIncreasing,
    ShearX,
    ShearY,
    TranslateXRel,
    TranslateYRel,
}

use OpName::*;

/// `_RAND_TRANSFORMS`.
pub const RAND_TRANSFORMS: [OpName; 15] = [
    AutoContrast,
    Equalize,
    Invert,
    Rotate,
    Posterize,
    Solarize,
    SolarizeAdd,
    Color,
    Contrast,
    Brightness,
    Sharpness,
    ShearX,
    ShearY,
    TranslateXRel,
    TranslateYRel,
];

/// `_RAND_INCREASING_TRANSFORMS` (the `inc` list).
pub const RAND_INCREASING_TRANSFORMS: [OpName; 15] = [
    AutoContrast,
    Equalize,
    Invert,
    Rotate,
    PosterizeIncreasing,
    SolarizeIncreasing,
    SolarizeAdd,
    ColorIncreasing,
    ContrastIncreasing,
    BrightnessIncreasing,
    SharpnessIncreasing,
    ShearX,
    ShearY,
    TranslateXRel,
    TranslateYRel,
];

/// `_RAND_CHOICE_WEIGHTS_0`, by position in either list (the reference looks the weights up
/// by the names of `_RAND_TRANSFORMS` whatever list is in use; the positions agree).
pub const CHOICE_WEIGHTS_0: [f64; 15] = [
    0.025, 0.005, 0.0, 0.3, 0.0, 0.005, 0.005, 0.025, 0.005, 0.005, 0.025, 0.2, 0.2, 0.1, 0.1,
];

/// A parsed RandAugment config string (read from and written as that string by serde).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RandAugmentSpec {
    /// `m`: the magnitude (default 10).
    pub magnitude: i64,
    /// `n`: ops per clip (default 2).
    pub num_layers: usize,
    /// `mstd`: std of the magnitude noise (default 0: none).
    pub magnitude_std: f64,
    /// `inc`: the increasing op list.
    pub increasing: bool,
    /// `w`: the index of the choice weights (only 0 exists); `None` = uniform with
    /// replacement.
    pub weight_idx: Option<usize>,
}

/// Why a RandAugment config string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error(
        "RandAugment config {0:?}: must start with \"rand\" (e.g. \"rand-m7-n4-mstd0.5-inc1\")"
    )]
    NotRand(String),
    #[error("RandAugment config {config:?}: section {section:?} has no value (expected m<int>, n<int>, mstd<float>, inc<int> or w<int>)")]
    NoValue { config: String, section: String },
    #[error("RandAugment config {config:?}: unknown key {key:?} in section {section:?} (known: m, n, mstd, inc, w)")]
    UnknownKey {
        config: String,
        key: String,
        section: String,
    },
    #[error("RandAugment config {config:?}: bad value {value:?} for {key:?}")]
    BadValue {
        config: String,
        key: String,
        value: String,
    },
    #[error("RandAugment config {config:?}: {why}")]
    Unsupported { config: String, why: String },
}

impl RandAugmentSpec {
    /// Parses `rand-<sections>` as `rand_augment_transform` does: each dash-separated
    /// section is a key followed by a value starting at its first digit. Departures, to
    /// fail loudly where the reference silently goes on: a section without a value or with
    /// an unknown key is an error (the reference skips it; its `assert NotImplementedError`
    /// never fires), and so is `w` other than 0 or `n` above the ops that have weight.
    /// Kept as the reference does: `inc` with any value (even `inc0`, since it tests
    /// `bool("0")`) selects the increasing list; the first `mstd` wins (`setdefault`).
    pub fn parse(config: &str) -> Result<Self, SpecError> {
        let mut parts = config.split('-');
        if parts.next() != Some("rand") {
            return Err(SpecError::NotRand(config.to_string()));
        }
        let mut spec = RandAugmentSpec {
            magnitude: MAX_LEVEL as i64,
            num_layers: 2,
            magnitude_std: 0.0,
            increasing: false,
            weight_idx: None,
        };
        let mut std_seen = false;
        for section in parts {
            let Some(at) = section.find(|c: char| c.is_ascii_digit()) else {
                return Err(SpecError::NoValue {
                    config: config.to_string(),
                    section: section.to_string(),
                });
            };
            let (key, value) = section.split_at(at);
            let bad = || SpecError::BadValue {
                config: config.to_string(),
                key: key.to_string(),
                value: value.to_string(),
            };
            match key {
                "m" => spec.magnitude = value.parse().map_err(|_| bad())?,
                "n" => spec.num_layers = value.parse().map_err(|_| bad())?,
                "mstd" => {
                    let v: f64 = value.parse().map_err(|_| bad())?;
                    if !v.is_finite() {
                        return Err(bad());
                    }
                    if !std_seen {
                        spec.magnitude_std = v;
                        std_seen = true;
                    }
                }
                "inc" => {
                    value.parse::<i64>().map_err(|_| bad())?;
                    spec.increasing = true;
                }
                "w" => spec.weight_idx = Some(value.parse().map_err(|_| bad())?),
                _ => {
                    return Err(SpecError::UnknownKey {
                        config: config.to_string(),
                        key: key.to_string(),
                        section: section.to_string(),
                    })
                }
            }
        }
        if let Some(w) = spec.weight_idx {
            if w != 0 {
                return Err(SpecError::Unsupported {
                    config: config.to_string(),
                    why: format!("only choice weights w0 exist, got w{w}"),
                });
            }
            let nonzero = CHOICE_WEIGHTS_0.iter().filter(|&&p| p > 0.0).count();
            if spec.num_layers > nonzero {
                return Err(SpecError::Unsupported {
                    config: config.to_string(),
                    why: format!(
                        "weighted choice is without replacement: n{} exceeds the {nonzero} weighted ops",
                        spec.num_layers
                    ),
                });
            }
        }
        Ok(spec)
    }

    /// The reference default `--aa rand-m7-n4-mstd0.5-inc1`.
    pub fn ssv2_default() -> Self {
        RandAugmentSpec {
            magnitude: 7,
            num_layers: 4,
            magnitude_std: 0.5,
            increasing: true,
            weight_idx: None,
        }
    }

    /// The op list in use.
    pub fn ops(&self) -> &'static [OpName; 15] {
        if self.increasing {
            &RAND_INCREASING_TRANSFORMS
        } else {
            &RAND_TRANSFORMS
        }
    }
}

impl TryFrom<String> for RandAugmentSpec {
    type Error = SpecError;
    fn try_from(s: String) -> Result<Self, SpecError> {
        RandAugmentSpec::parse(&s)
    }
}

impl std::fmt::Display for RandAugmentSpec {
    /// The config string that parses back to this spec.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "rand-m{}-n{}", self.magnitude, self.num_layers)?;
        if self.magnitude_std != 0.0 {
            write!(f, "-mstd{}", self.magnitude_std)?;
        }
        if self.increasing {
            write!(f, "-inc1")?;
        }
        if let Some(w) = self.weight_idx {
            write!(f, "-w{w}")?;
        }
        Ok(())
    }
}

impl From<RandAugmentSpec> for String {
    fn from(s: RandAugmentSpec) -> String {
        s.to_string()
    }
}

/// One op as it will be applied to every frame of a clip.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DrawnOp {
    pub op: OpName,
    /// The clipped magnitude it was drawn with.
    pub magnitude: f64,
    /// The op's argument (degrees, bits, threshold, factor, shear, fraction); `None` for
    /// the ops without one.
    pub arg: Option<f64>,
}

impl OpName {
    /// Whether the op resamples (and so takes an interpolation and the fill).
    pub fn is_geometric(self) -> bool {
        matches!(
            self,
            Rotate | ShearX | ShearY | TranslateXRel | TranslateYRel
        )
    }
}

/// `_randomly_negate`: negative when a uniform draw exceeds 0.5.
fn randomly_negate(v: f64, rng: &mut impl Rng) -> f64 {
    if rng.random::<f64>() > 0.5 {
        -v
    } else {
        v
    }
}

/// The op's argument at magnitude `level` (`LEVEL_TO_ARG`); draws a sign for signed ops.
pub fn level_to_arg(op: OpName, level: f64, rng: &mut impl Rng) -> Option<f64> {
    let frac = level / MAX_LEVEL;
    let enhance_inc = |rng: &mut _| 1.0 + randomly_negate(frac * 0.9, rng);
    Some(match op {
        AutoContrast | Equalize | Invert => return None,
        Rotate => randomly_negate(frac * 30.0, rng),
        Posterize => (frac * 4.0).trunc(),
        PosterizeIncreasing => 4.0 - (frac * 4.0).trunc(),
        Solarize => (frac * 256.0).trunc(),
        SolarizeIncreasing => 256.0 - (frac * 256.0).trunc(),
        SolarizeAdd => (frac * 110.0).trunc(),
        Color | Contrast | Brightness | Sharpness => frac * 1.8 + 0.1,
        ColorIncreasing | ContrastIncreasing | BrightnessIncreasing | SharpnessIncreasing => {
            enhance_inc(rng)
        }
        ShearX | ShearY => randomly_negate(frac * 0.3, rng),
        TranslateXRel | TranslateYRel => randomly_negate(frac * 0.45, rng),
    })
}

/// The ops chosen for one clip, in order (before their probability test).
pub fn choose_ops(spec: &RandAugmentSpec, rng: &mut impl Rng) -> Vec<OpName> {
    let list = spec.ops();
    match spec.weight_idx {
        None => (0..spec.num_layers)
            .map(|_| list[rng.random_range(0..list.len())])
            .collect(),
        Some(_) => {
            // Successive draws from the weights left, each pick removed: the same
            // distribution as numpy's `choice(replace=False, p=...)`.
            let mut w = CHOICE_WEIGHTS_0;
            let mut out = Vec::with_capacity(spec.num_layers);
            for _ in 0..spec.num_layers {
                let total: f64 = w.iter().sum();
                if total <= 0.0 {
                    break;
                }
                let mut u = rng.random::<f64>() * total;
                let mut pick = w.iter().rposition(|&p| p > 0.0).unwrap_or(0);
                for (i, &p) in w.iter().enumerate() {
                    if p > 0.0 && u < p {
                        pick = i;
                        break;
                    }
                    u -= p;
                }
                out.push(list[pick]);
                w[pick] = 0.0;
            }
            out
        }
    }
}

/// Everything random about one clip's RandAugment: the ops that pass their probability
/// test, each with its magnitude and argument, in the reference's order of draws.
pub fn draw_ops(spec: &RandAugmentSpec, rng: &mut impl Rng) -> Vec<DrawnOp> {
    let chosen = choose_ops(spec, rng);
    let mut out = Vec::with_capacity(chosen.len());
    for op in chosen {
        if OP_PROB < 1.0 && rng.random::<f64>() > OP_PROB {
            continue;
        }
        let mut magnitude = spec.magnitude as f64;
        if spec.magnitude_std > 0.0 {
            magnitude =
                Normal::new(magnitude, spec.magnitude_std).map_or(magnitude, |n| n.sample(rng));
        }
        let magnitude = magnitude.clamp(0.0, MAX_LEVEL);
        let arg = level_to_arg(op, magnitude, rng);
        out.push(DrawnOp { op, magnitude, arg });
    }
    out
}

/// Applies one drawn op to one `[H, W, 3]` frame in place.
pub fn apply_op(frame: &mut Vec<u8>, w: usize, h: usize, op: &DrawnOp, interp: Interp) {
    let a = op.arg.unwrap_or(0.0);
    match op.op {
        AutoContrast => pil_ops::autocontrast(frame),
        Equalize => pil_ops::equalize(frame),
        Invert => pil_ops::invert(frame),
        Posterize | PosterizeIncreasing => pil_ops::posterize(frame, a.max(0.0) as u32),
        Solarize | SolarizeIncreasing => pil_ops::solarize(frame, a as i32),
        SolarizeAdd => pil_ops::solarize_add(frame, a as i32, 128),
        Color | ColorIncreasing => pil_ops::color(frame, a),
        Contrast | ContrastIncreasing => pil_ops::contrast(frame, a),
        Brightness | BrightnessIncreasing => pil_ops::brightness(frame, a),
        Sharpness | SharpnessIncreasing => pil_ops::sharpness(frame, w, h, a),
        Rotate => *frame = pil_ops::rotate(frame, w, h, a, interp, FILL),
        ShearX => *frame = pil_ops::shear_x(frame, w, h, a, interp, FILL),
        ShearY => *frame = pil_ops::shear_y(frame, w, h, a, interp, FILL),
        TranslateXRel => *frame = pil_ops::translate_x_rel(frame, w, h, a, interp, FILL),
        TranslateYRel => *frame = pil_ops::translate_y_rel(frame, w, h, a, interp, FILL),
    }
}

/// The training interpolation (`--train_interpolation`): one filter, or a fresh choice
/// between bilinear and bicubic per frame and op.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrainInterpolation {
    Bilinear,
    Bicubic,
    Random,
}

/// Applies the drawn ops, in order, to every frame of the clip; a `Random` interpolation is
/// drawn per frame for each geometric op (sequentially, so the result does not depend on
/// the thread count).
pub fn apply_ops(
    clip: &Clip,
    ops: &[DrawnOp],
    interp: TrainInterpolation,
    rng: &mut impl Rng,
) -> Clip {
    let clip = clip.conformed();
    let plans: Vec<Vec<Interp>> = ops
        .iter()
        .map(|op| {
            (0..clip.frames)
                .map(|_| draw_interp(op, interp, rng))
                .collect()
        })
        .collect();
    let (w, h) = (clip.width, clip.height);
    let mut out = clip.into_owned();
    if ops.is_empty() || out.data.is_empty() {
        return out;
    }
    let n = out.frame_len();
    out.data.par_chunks_mut(n).enumerate().for_each(|(t, f)| {
        let mut frame = f.to_vec();
        for (op, plan) in ops.iter().zip(&plans) {
            apply_op(&mut frame, w, h, op, plan[t]);
        }
        f.copy_from_slice(&frame);
    });
    out
}

/// The filter a geometric op uses on one frame: `interp` itself, or for `Random` a fresh
/// draw between bilinear and bicubic (non-geometric ops draw nothing).
fn draw_interp(op: &DrawnOp, interp: TrainInterpolation, rng: &mut impl Rng) -> Interp {
    match interp {
        TrainInterpolation::Bilinear => Interp::Bilinear,
        TrainInterpolation::Bicubic => Interp::Bicubic,
        TrainInterpolation::Random if op.op.is_geometric() => {
            if rng.random_range(0..2) == 0 {
                Interp::Bilinear
            } else {
                Interp::Bicubic
            }
        }
        TrainInterpolation::Random => Interp::Bilinear,
    }
}

/// One image (`w × h` packed RGB, exactly `w · h · 3` bytes) through RandAugment in place:
/// the same draws, in the same order, and the same bytes as [`rand_augment_clip`] of a
/// one-frame clip, without the clip's copies (the image training view's path).
pub fn rand_augment_image(
    frame: &mut Vec<u8>,
    w: usize,
    h: usize,
    spec: &RandAugmentSpec,
    interp: TrainInterpolation,
    rng: &mut impl Rng,
) {
    let ops = draw_ops(spec, rng);
    let plans: Vec<Interp> = ops.iter().map(|op| draw_interp(op, interp, rng)).collect();
    if frame.len() != w * h * 3 {
        // The clip path conforms such a frame to zeros first (the view never has one).
        frame.clear();
        frame.resize(w * h * 3, 0);
    }
    if frame.is_empty() {
        return;
    }
    for (op, &p) in ops.iter().zip(&plans) {
        apply_op(frame, w, h, op, p);
    }
}

/// One clip through RandAugment: [`draw_ops`] then [`apply_ops`].
pub fn rand_augment_clip(
    clip: &Clip,
    spec: &RandAugmentSpec,
    interp: TrainInterpolation,
    rng: &mut impl Rng,
) -> Clip {
    let ops = draw_ops(spec, rng);
    apply_ops(clip, &ops, interp, rng)
}
