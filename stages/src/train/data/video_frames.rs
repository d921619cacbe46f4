//! Clips of an `ssv2.tokens` artifact in the `frames` layout (`crate::ssv2::frames`): every
//! frame, uncropped, as JPEG. The loader does per clip what the reference's SSv2 loader
//! (LM4VisualEncoding `video_understanding/ssv2.py`) does from the video file:
//!
//! - training: a fresh random frame per segment on every visit (`N // T` segments, a random
//!   offset in each; `crate::ssv2::sampling::random_view_indices`), only those T frames
//!   decoded, then RandAugment → normalize → RandomResizedCrop → random erasing
//!   (`train::ops::video_aug`), `repeats` independently augmented copies per clip (VideoMAE's
//!   `--num_sample`, repeated augmentation);
//! - test: `temporal` views of T frames (`int(tick · v / V + tick · i)`, the reference's
//!   `chunk_nb` for V = 2) × `spatial` crops of the frames resized to `short_side`
//!   (`test_crops`), all decoded from one read of the sample.
//!
//! Outputs are tubelet tokens [tokens, t·p·p·3] of normalized f32, the layout the patch
//! embedding reads (`crate::ssv2::tubelets`).

use super::ShardSet;
use crate::ssv2::frames::{jpeg_ranges, DECODED_FRAMES, FRAMES, JPEG, JPEG_ENDS, SIZE};
use crate::ssv2::jpeg::JpegDecoder;
use crate::ssv2::sampling::{random_view_indices, test_view_indices};
use crate::ssv2::tubelets::pack_values;
use crate::train::ops::video_aug::{
    augment_train_clip, clip::normalize, test_crops, Clip, TrainAugment, IMAGENET_MEAN,
    IMAGENET_STD,
};
use anyhow::{Context, Result};
use rand_chacha::ChaCha8Rng;
use std::cell::RefCell;
use std::collections::BTreeMap;

const WHAT: &str = "an ssv2.tokens stage with layout = \"frames\"";
const LABEL: &str = "label";
/// The label's position in the layout's schema.
const LABEL_FIELD: usize = 5;

/// The clip geometry the model wants (the layout's fields are in `FramesLayout::schema`'s
/// order, checked when a shard set is opened).
pub struct FramesSource {
    /// T, frames per clip sample.
    pub num_frames: usize,
    pub tubelet_frames: usize,
    pub patch: usize,
    /// The model's input side (the training crop and the test crop).
    pub crop: usize,
    /// Test frames are resized to this short side before the spatial crops.
    pub short_side: usize,
}

/// One stored clip, read from its shard: the JPEG files and its label.
pub struct StoredClip {
    bytes: Vec<u8>,
    ranges: Vec<std::ops::Range<usize>>,
    /// (height, width) of the stored frames.
    pub size: (usize, usize),
    pub label: u32,
}

impl StoredClip {
    /// A clip from the layout's field bytes in schema order (`jpeg`, `jpeg_ends`, `frames`,
    /// `decoded_frames`, `size`, as `FramesLayout::encode_clip` returns them and a shard
    /// read gives them) and its label. Takes the fields so the JPEG bytes are not copied.
    pub fn from_fields(mut fields: Vec<Vec<u8>>, label: u32) -> Result<Self> {
        let i64s = |b: &[u8]| -> Vec<i64> {
            b.chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                .collect()
        };
        let [jpeg, ends, frames, _decoded, size, ..] = fields.as_mut_slice() else {
            anyhow::bail!("the frames layout has 5 fields before the label");
        };
        let frames = i64s(frames).first().copied().unwrap_or(0);
        let ranges = jpeg_ranges(&i64s(ends), frames, jpeg.len()).map_err(anyhow::Error::msg)?;
        let (h, w) = match i64s(size).as_slice() {
            [h, w] if *h > 0 && *w > 0 => (*h as usize, *w as usize),
            s => anyhow::bail!("frame size {s:?}"),
        };
        Ok(StoredClip {
            bytes: std::mem::take(jpeg),
            ranges,
            size: (h, w),
            label,
        })
    }

    /// The JPEG file of stored frame `k`.
    pub fn jpeg(&self, k: usize) -> Option<&[u8]> {
        self.ranges.get(k).map(|r| &self.bytes[r.clone()])
    }

    /// Bytes of all the clip's JPEG files (the field's padding left out).
    pub fn jpeg_len(&self) -> usize {
        self.ranges.last().map_or(0, |r| r.end)
    }

    /// Frames stored.
    pub fn len(&self) -> usize {
        self.ranges.len()
    }
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }
}

thread_local! {
    static DECODER: RefCell<Option<JpegDecoder>> = const { RefCell::new(None) };
}

/// Decodes one JPEG with this thread's decoder.
fn decode_jpeg(bytes: &[u8]) -> Result<crate::ssv2::jpeg::Rgb, String> {
    DECODER.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(JpegDecoder::new()?);
        }
        match slot.as_mut() {
            Some(d) => d.decode(bytes),
            None => Err("internal: no JPEG decoder".into()),
        }
    })
}

impl FramesSource {
    /// A source of the given geometry (benchmarks, tests; `open` reads it from the meta).
    pub fn new(
        num_frames: usize,
        tubelet_frames: usize,
        patch: usize,
        crop: usize,
        short_side: usize,
    ) -> Self {
        FramesSource {
            num_frames,
            tubelet_frames,
            patch,
            crop,
            short_side,
        }
    }

    /// The layout's fields in `shards`, and the geometry from the data stage's meta.
    pub fn open(shards: &ShardSet, meta: &serde_json::Value) -> Result<Self> {
        let get = |k: &str| {
            meta.get(k)
                .and_then(|v| v.as_u64())
                .map(|v| v as usize)
                .with_context(|| {
                    format!("the data stage's meta lacks `{k}`; `data` must name {WHAT}")
                })
        };
        let names: Vec<&str> = shards.schema().iter().map(|f| f.name.as_str()).collect();
        anyhow::ensure!(
            names.starts_with(&[JPEG, JPEG_ENDS, FRAMES, DECODED_FRAMES, SIZE, LABEL]),
            "upstream shards have fields {names:?}; `data` must name {WHAT}"
        );
        let src = FramesSource {
            num_frames: get("num_frames")?,
            tubelet_frames: get("tubelet_frames")?,
            patch: get("patch")?,
            crop: get("crop")?,
            short_side: get("short_side")?,
        };
        anyhow::ensure!(
            src.num_frames > 0
                && src.tubelet_frames > 0
                && src.num_frames.is_multiple_of(src.tubelet_frames)
                && src.patch > 0
                && src.crop.is_multiple_of(src.patch)
                && src.crop > 0
                && src.short_side >= src.crop,
            "the data stage's meta has an impossible clip geometry (num_frames {}, tubelet_frames \
             {}, patch {}, crop {}, short_side {})",
            src.num_frames,
            src.tubelet_frames,
            src.patch,
            src.crop,
            src.short_side
        );
        Ok(src)
    }

    /// (tokens, values per token) of one clip sample.
    pub fn token_shape(&self) -> (usize, usize) {
        crate::ssv2::tubelets::view_shape(
            self.num_frames,
            self.tubelet_frames,
            self.patch,
            self.crop,
        )
    }

    /// Clip `i` of the split, its JPEG files located and checked.
    pub fn read(&self, shards: &ShardSet, i: usize) -> Result<StoredClip> {
        let s = shards.read(i)?;
        let label = s
            .i64s(LABEL_FIELD)
            .first()
            .copied()
            .context("a sample without a label")?;
        let label = u32::try_from(label).context("negative or huge label")?;
        StoredClip::from_fields(s.fields, label)
            .with_context(|| format!("sample {i}: the shard is damaged or foreign"))
    }

    /// The clip of frames `indices` (repeats decoded once), RGB u8 [T, H, W, 3].
    pub fn clip(&self, stored: &StoredClip, indices: &[usize]) -> Result<Clip> {
        let (h, w) = stored.size;
        let mut decoded: BTreeMap<usize, Vec<u8>> = BTreeMap::new();
        for &k in indices {
            if decoded.contains_key(&k) {
                continue;
            }
            let jpeg = stored
                .jpeg(k)
                .with_context(|| format!("frame {k} of {} requested", stored.len()))?;
            let rgb = decode_jpeg(jpeg).map_err(|e| anyhow::anyhow!("frame {k}: {e}"))?;
            anyhow::ensure!(
                (rgb.height, rgb.width) == (h, w),
                "frame {k} is {}x{}, the sample says {w}x{h}",
                rgb.width,
                rgb.height
            );
            decoded.insert(k, rgb.data);
        }
        let mut data = Vec::with_capacity(indices.len() * h * w * 3);
        for k in indices {
            data.extend_from_slice(&decoded[k]);
        }
        Ok(Clip::new(indices.len(), h, w, data)?)
    }

    /// `repeats` training samples of one clip (tokens of normalized f32 each): one random
    /// temporal draw, decoded once, augmented `repeats` times on its own (ssv2.py loads the
    /// video once and calls `_aug_frame` `num_sample` times). `None`: the test path's centre
    /// crop of the frames resized to `short_side` (the temporal draw still random).
    pub fn train_samples(
        &self,
        stored: &StoredClip,
        augment: Option<&TrainAugment>,
        repeats: usize,
        rng: &mut ChaCha8Rng,
    ) -> Result<Vec<Vec<f32>>> {
        let idx = random_view_indices(stored.len(), self.num_frames, rng);
        let clip = self.clip(stored, &idx)?;
        (0..repeats)
            .map(|_| {
                let values = match augment {
                    Some(a) => augment_train_clip(&clip, a, rng),
                    None => {
                        let centre_crop = test_crops(&clip, self.short_side, 1);
                        let c = centre_crop.first().context("no centre crop of the clip")?;
                        normalize(&centre(c, self.crop), IMAGENET_MEAN, IMAGENET_STD)
                    }
                };
                Ok(self.pack(&values))
            })
            .collect()
    }

    /// The test views of one clip, temporal-major: `temporal × spatial` token sets.
    pub fn test_samples(
        &self,
        stored: &StoredClip,
        temporal: usize,
        spatial: usize,
    ) -> Result<Vec<Vec<f32>>> {
        let mut out = Vec::with_capacity(temporal * spatial);
        for v in 0..temporal {
            let idx = test_view_indices(stored.len(), self.num_frames, v, temporal);
            let clip = self.clip(stored, &idx)?;
            let crops = test_crops(&clip, self.short_side, spatial);
            for c in &crops {
                // A crop of `short_side` rows/columns; the model wants `crop`² (equal in the
                // reference, where crop = short_side = 224): the centre of it otherwise.
                let c = centre(c, self.crop);
                out.push(self.pack(&normalize(&c, IMAGENET_MEAN, IMAGENET_STD)));
            }
        }
        Ok(out)
    }

    /// Normalized [T, crop, crop, 3] values → tubelet tokens.
    fn pack(&self, values: &[f32]) -> Vec<f32> {
        pack_values(
            values,
            self.num_frames,
            self.tubelet_frames,
            self.patch,
            self.crop,
        )
    }
}

/// The centred `side`×`side` window of a clip (itself when it is that size).
fn centre(clip: &Clip, side: usize) -> Clip {
    if clip.height == side && clip.width == side {
        return clip.clone();
    }
    let y = clip.height.saturating_sub(side) / 2;
    let x = clip.width.saturating_sub(side) / 2;
    crate::train::ops::video_aug::clip::crop(clip, y, x, side, side)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ssv2::demo::{synth_clip, write_webm, Motion};
    use crate::ssv2::frames::{rgb_frames, FramesLayout};
    use crate::ssv2::jpeg::psnr;
    use rand::SeedableRng;

    /// A real VP9 clip (libvpx) stored in the frames layout: (fields, the exact RGB frames).
    fn stored_clip(frames: usize, w: u32, h: u32) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.webm");
        let rgb = synth_clip(Motion::SpinClockwise, w, h, frames, 3);
        write_webm(&path, w, h, 12, &rgb, None).unwrap();
        let layout = FramesLayout {
            short_side: 0,
            quantizer: 3,
            max_frames: 64,
            max_clip_bytes: 1 << 20,
        };
        let clip = layout.encode_clip(&path).unwrap();
        assert_eq!(clip.decoded, frames);
        (clip.fields, rgb_frames(&path, 0).unwrap())
    }

    #[test]
    fn stored_frames_decode_within_the_psnr_bound() {
        let (fields, exact) = stored_clip(10, 96, 72);
        let stored = StoredClip::from_fields(fields.clone(), 4).unwrap();
        assert_eq!((stored.len(), stored.size, stored.label), (10, (72, 96), 4));
        let src = FramesSource::new(4, 2, 16, 48, 64);
        let all: Vec<usize> = (0..10).collect();
        let clip = src.clip(&stored, &all).unwrap();
        for (k, frame) in exact.iter().enumerate() {
            let p = psnr(frame, clip.frame(k));
            // Hard synthetic edges at 96×72 are JPEG's worst case (real 240p footage: ≥ 39 dB
            // at this quantizer, BENCHMARKS.md).
            assert!(p > 30.0, "frame {k}: PSNR {p:.1} dB");
        }
    }

    #[test]
    fn training_samples_are_repeats_of_one_draw_and_deterministic() {
        let (fields, _) = stored_clip(12, 96, 72);
        let stored = StoredClip::from_fields(fields.clone(), 0).unwrap();
        let src = FramesSource::new(4, 2, 16, 48, 64);
        let aug = TrainAugment {
            crop: 48,
            ..TrainAugment::default()
        };
        let (tokens, dim) = src.token_shape();
        let run = |seed| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            src.train_samples(&stored, Some(&aug), 2, &mut rng).unwrap()
        };
        let a = run(1);
        assert_eq!(a.len(), 2);
        assert!(a.iter().all(|s| s.len() == tokens * dim));
        assert_ne!(a[0], a[1], "each copy is augmented on its own");
        assert_eq!(a, run(1), "same seed, same samples");
        assert_ne!(a, run(2));
        // Without augmentation: the centre crop, a function of the temporal draw only.
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let plain = src.train_samples(&stored, None, 2, &mut rng).unwrap();
        assert_eq!(plain[0], plain[1]);
    }

    #[test]
    fn the_test_views_are_temporal_times_spatial() {
        let (fields, _) = stored_clip(12, 96, 72);
        let stored = StoredClip::from_fields(fields.clone(), 0).unwrap();
        let src = FramesSource::new(4, 2, 16, 48, 48);
        let views = src.test_samples(&stored, 2, 3).unwrap();
        assert_eq!(views.len(), 6);
        // Landscape frames: the three crops run left → right and differ; the two temporal
        // views take different frames.
        assert_ne!(views[0], views[2]);
        assert_ne!(views[0], views[3]);
        let (tokens, dim) = src.token_shape();
        assert!(views.iter().all(|v| v.len() == tokens * dim));
    }

    #[test]
    fn damaged_samples_are_errors_not_panics() {
        let (mut fields, _) = stored_clip(6, 64, 48);
        // An end offset past the field.
        let mut bad = fields.clone();
        bad[1][..8].copy_from_slice(&(i64::MAX).to_le_bytes());
        assert!(StoredClip::from_fields(bad, 0).is_err());
        // The first frame's JPEG bytes overwritten (no markers left): decoding it fails with
        // a message. (Shards are blake3-checked by the cache; this is the loader's own guard.)
        let first_end = i64::from_le_bytes(fields[1][..8].try_into().unwrap()) as usize;
        fields[0][..first_end].fill(0x55);
        let stored = StoredClip::from_fields(fields.clone(), 0).unwrap();
        let src = FramesSource::new(4, 2, 16, 48, 48);
        let err = src.clip(&stored, &[0]).err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("frame 0")));
        assert!(StoredClip::from_fields(fields[..2].to_vec(), 0).is_err());
    }
}
