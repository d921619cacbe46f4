//! The `frames` layout of `ssv2.tokens`: every decoded frame of a clip, uncropped, stored as
//! a JPEG file, so that a loader can do what VideoMAE's SSv2 loader does from the video
//! itself — draw a fresh random frame per segment every epoch, RandomResizedCrop from the
//! whole frame, and take the 2 temporal × 3 spatial test views.
//!
//! Per sample (SHARDS.md): `jpeg` u8 [max_clip_bytes] (the clip's JPEG files back to back,
//! zero padding after the last: zstd stores the padding in a few bytes), `jpeg_ends` i64
//! [max_frames] (where frame k's file ends; frame k starts where k − 1 ended; 0 past the
//! last), `frames` i64 [1] (frames stored), `decoded_frames` i64 [1] (frames the clip
//! decoded to), `size` i64 [2] (height, width of the stored frames), `label`, `video_id`.
//!
//! A clip longer than `max_frames` keeps frames `floor(k · N / max_frames)` (counted in the
//! stage meta, `frames_subsampled`): SSv2's clips are 2–6 s at 12 fps, so at the default 128
//! none is. A clip whose JPEG files do not fit in `max_clip_bytes` is a reject naming the
//! bytes it needed and the key to raise.

use super::decode::{decode, Keep, Resizer};
use super::jpeg::JpegEncoder;
use lm4ve_pipeline::shard::{Dtype, Field, Schema};
use std::cell::RefCell;
use std::ops::Range;
use std::path::Path;

/// The field names of the layout (the loader finds them by name).
pub const JPEG: &str = "jpeg";
pub const JPEG_ENDS: &str = "jpeg_ends";
pub const FRAMES: &str = "frames";
pub const DECODED_FRAMES: &str = "decoded_frames";
pub const SIZE: &str = "size";

/// How clips are stored in the `frames` layout (the stage's params).
#[derive(Debug, Clone, Copy)]
pub struct FramesLayout {
    /// Short side of the stored frames; 0 keeps the decoded size (the reference reads
    /// SSv2's 240-pixel-high frames as they are).
    pub short_side: usize,
    /// JPEG quantizer, the CLI's `-q:v` (2 best … 31 smallest).
    pub quantizer: u32,
    pub max_frames: usize,
    pub max_clip_bytes: usize,
}

/// One clip, encoded: the sample's field bytes, frames decoded, and whether it was
/// subsampled to `max_frames`.
pub struct EncodedClip {
    pub fields: Vec<Vec<u8>>,
    pub decoded: usize,
    pub subsampled: bool,
}

thread_local! {
    static ENCODER: RefCell<Option<(u32, JpegEncoder)>> = const { RefCell::new(None) };
}

impl FramesLayout {
    /// The sample schema, label and video id last (as the tubelet layout has them).
    pub fn schema(&self) -> Schema {
        vec![
            Field::new(JPEG, Dtype::Uint8, &[self.max_clip_bytes]),
            Field::new(JPEG_ENDS, Dtype::Int64, &[self.max_frames]),
            Field::new(FRAMES, Dtype::Int64, &[1]),
            Field::new(DECODED_FRAMES, Dtype::Int64, &[1]),
            Field::new(SIZE, Dtype::Int64, &[2]),
            Field::new("label", Dtype::Int64, &[1]),
            Field::new("video_id", Dtype::Int64, &[1]),
        ]
    }

    /// Decodes `path` and encodes its frames; the field bytes of the schema but the last two
    /// (label and video id, which the caller appends).
    pub fn encode_clip(&self, path: &Path) -> Result<EncodedClip, String> {
        ENCODER.with(|cell| {
            let mut slot = cell.borrow_mut();
            if !matches!(&*slot, Some((q, _)) if *q == self.quantizer) {
                *slot = Some((self.quantizer, JpegEncoder::new(self.quantizer)));
            }
            let Some((_, encoder)) = slot.as_mut() else {
                return Err("internal: no JPEG encoder".to_string());
            };
            self.encode_with(path, encoder)
        })
    }

    fn encode_with(&self, path: &Path, encoder: &mut JpegEncoder) -> Result<EncodedClip, String> {
        let mut resizer = Resizer::new(self.short_side as u32);
        let mut files: Vec<Vec<u8>> = Vec::new();
        let mut size: Option<(usize, usize)> = None;
        let mut visit = |i: usize, frame: &ffmpeg_next::frame::Video| -> Result<(), String> {
            let rgb = resizer
                .scale(frame)
                .map_err(|e| format!("frame {i}: {e}"))?;
            let (packed, w, h) = packed(rgb);
            match size {
                None => size = Some((h, w)),
                Some(s) if s != (h, w) => {
                    return Err(format!(
                        "frame {i} is {w}x{h} after resizing, earlier frames {}x{}: clips that \
                         change shape mid-stream need `short_side` set (not 0)",
                        s.1, s.0
                    ))
                }
                Some(_) => {}
            }
            files.push(
                encoder
                    .encode(&packed, w, h)
                    .map_err(|e| format!("frame {i}: {e}"))?,
            );
            Ok(())
        };
        let decoded = decode(path, Keep::Each(&mut visit))?.count;
        let (h, w) = size.ok_or("no frames could be decoded")?;
        let keep = kept_frames(decoded, self.max_frames);
        let subsampled = keep.len() < decoded;
        let mut jpeg = Vec::new();
        let mut ends = vec![0i64; self.max_frames];
        for (k, &i) in keep.iter().enumerate() {
            jpeg.extend_from_slice(&files[i]);
            ends[k] = jpeg.len() as i64;
        }
        if jpeg.len() > self.max_clip_bytes {
            return Err(format!(
                "the clip's {} JPEG frames take {} bytes, over max_clip_bytes = {}; raise \
                 max_clip_bytes (or the quantizer) in the stage's params",
                keep.len(),
                jpeg.len(),
                self.max_clip_bytes
            ));
        }
        jpeg.resize(self.max_clip_bytes, 0);
        let i64s = |v: &[i64]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        Ok(EncodedClip {
            fields: vec![
                jpeg,
                i64s(&ends),
                i64s(&[keep.len() as i64]),
                i64s(&[decoded as i64]),
                i64s(&[h as i64, w as i64]),
            ],
            decoded,
            subsampled,
        })
    }
}

/// An RGB24 frame's pixels without row padding, and its width and height.
fn packed(rgb: &ffmpeg_next::frame::Video) -> (Vec<u8>, usize, usize) {
    let (w, h) = (rgb.width() as usize, rgb.height() as usize);
    (super::jpeg::packed_rgb(rgb), w, h)
}

/// Every frame of `path` as packed RGB24 at the stored size (`short_side`, 0 = as
/// decoded): what the JPEG files are made from (benchmarks and tests measure their PSNR).
pub fn rgb_frames(path: &Path, short_side: usize) -> Result<Vec<Vec<u8>>, String> {
    let mut resizer = Resizer::new(short_side as u32);
    let mut frames = Vec::new();
    let mut visit = |_: usize, f: &ffmpeg_next::frame::Video| -> Result<(), String> {
        frames.push(packed(resizer.scale(f)?).0);
        Ok(())
    };
    decode(path, Keep::Each(&mut visit))?;
    Ok(frames)
}

/// The frames a clip of `n` keeps under a cap of `max`: all, or `floor(k · n / max)`.
pub fn kept_frames(n: usize, max: usize) -> Vec<usize> {
    if n <= max {
        (0..n).collect()
    } else {
        (0..max).map(|k| k * n / max).collect()
    }
}

/// The byte ranges of the stored JPEG files, checked against the field's size (a damaged
/// or foreign shard gives an error, not a panic).
pub fn jpeg_ranges(
    ends: &[i64],
    frames: i64,
    capacity: usize,
) -> Result<Vec<Range<usize>>, String> {
    let n = usize::try_from(frames)
        .ok()
        .filter(|n| *n > 0 && *n <= ends.len())
        .ok_or_else(|| {
            format!(
                "a clip with {frames} stored frames (at most {})",
                ends.len()
            )
        })?;
    let mut start = 0usize;
    let mut out = Vec::with_capacity(n);
    for (k, &end) in ends[..n].iter().enumerate() {
        let end = usize::try_from(end)
            .ok()
            .filter(|e| *e > start && *e <= capacity)
            .ok_or_else(|| format!("frame {k}: JPEG end offset {end} is out of order or range"))?;
        out.push(start..end);
        start = end;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_clips_keep_evenly_spaced_frames() {
        assert_eq!(kept_frames(3, 8), vec![0, 1, 2]);
        assert_eq!(kept_frames(10, 4), vec![0, 2, 5, 7]);
    }

    #[test]
    fn jpeg_ranges_are_checked() {
        assert_eq!(jpeg_ranges(&[3, 7, 0], 2, 10).unwrap(), vec![0..3, 3..7]);
        assert!(jpeg_ranges(&[3, 7, 0], 3, 10).is_err(), "an empty frame");
        assert!(jpeg_ranges(&[3, 11], 2, 10).is_err(), "past the field");
        assert!(jpeg_ranges(&[3, 7], 0, 10).is_err());
        assert!(jpeg_ranges(&[3, 7], 5, 10).is_err());
        assert!(jpeg_ranges(&[-1, 7], 2, 10).is_err());
    }
}
