//! A decoded clip of RGB frames and the plain (random-free) operations on it: resizing the
//! short side (the reference's test path), cropping a window, and normalizing to f32.

use super::resize::{bilinear_plan, resize_plane_u8};

/// `frames` RGB frames of `height` × `width` pixels, u8, laid out `[T, H, W, 3]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clip {
    pub frames: usize,
    pub height: usize,
    pub width: usize,
    pub data: Vec<u8>,
}

/// The ImageNet mean and std the reference normalizes with (ssv2.py `tensor_normalize`).
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// A clip whose `data` length disagrees with its dimensions.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("clip of {frames}x{height}x{width}x3 needs {expected} bytes, has {actual}")]
pub struct ClipSizeError {
    pub frames: usize,
    pub height: usize,
    pub width: usize,
    pub expected: usize,
    pub actual: usize,
}

impl Clip {
    /// A clip over `data`, checked to hold exactly `frames · height · width · 3` bytes.
    pub fn new(
        frames: usize,
        height: usize,
        width: usize,
        data: Vec<u8>,
    ) -> Result<Self, ClipSizeError> {
        let clip = Clip {
            frames,
            height,
            width,
            data,
        };
        clip.validate()?;
        Ok(clip)
    }

    /// An all-black clip.
    pub fn zeros(frames: usize, height: usize, width: usize) -> Self {
        Clip {
            frames,
            height,
            width,
            data: vec![0; frames * height * width * 3],
        }
    }

    /// Bytes per frame (`H · W · 3`).
    pub fn frame_len(&self) -> usize {
        self.height * self.width * 3
    }

    /// The expected byte count against the actual one.
    pub fn validate(&self) -> Result<(), ClipSizeError> {
        let expected = self
            .height
            .saturating_mul(self.width)
            .saturating_mul(3)
            .saturating_mul(self.frames);
        if self.data.len() == expected {
            Ok(())
        } else {
            Err(ClipSizeError {
                frames: self.frames,
                height: self.height,
                width: self.width,
                expected,
                actual: self.data.len(),
            })
        }
    }

    /// This clip with `data` cut or padded with black to match its dimensions, so the
    /// functions of this module never index out of bounds on a hand-built clip.
    pub(crate) fn conformed(&self) -> std::borrow::Cow<'_, Clip> {
        if self.validate().is_ok() {
            return std::borrow::Cow::Borrowed(self);
        }
        let mut c = Clip::zeros(self.frames, self.height, self.width);
        let n = c.data.len().min(self.data.len());
        c.data[..n].copy_from_slice(&self.data[..n]);
        std::borrow::Cow::Owned(c)
    }

    /// Frame `t` as `[H, W, 3]` bytes.
    pub fn frame(&self, t: usize) -> &[u8] {
        let n = self.frame_len();
        &self.data[t * n..(t + 1) * n]
    }
}

/// The size the reference resizes a frame of `h` × `w` to for a short side of `short`
/// (functional.py `get_resize_sizes`: the long side is `int(short · long / short_in)`).
pub fn short_side_size(h: usize, w: usize, short: usize) -> (usize, usize) {
    if h == 0 || w == 0 {
        return (h, w);
    }
    if w < h {
        (((short as f64) * h as f64 / w as f64) as usize, short)
    } else {
        (short, ((short as f64) * w as f64 / h as f64) as usize)
    }
}

/// Resizes every frame so its short side is `short`, bilinear with half-pixel centres and
/// no antialiasing, as the reference's test path does with `cv2.resize(INTER_LINEAR)`
/// (functional.py `resize_clip`). A clip whose short side already is `short` is returned
/// unchanged, as there. cv2 uses 11-bit fixed-point weights; this uses f32 and rounds, so
/// values may differ from cv2 by ±1.
pub fn resize_short_side(clip: &Clip, short: usize) -> Clip {
    let clip = clip.conformed();
    let (h, w) = (clip.height, clip.width);
    if h.min(w) == short || h == 0 || w == 0 {
        return clip.into_owned();
    }
    let (oh, ow) = short_side_size(h, w, short);
    resize_bilinear(&clip, oh, ow)
}

/// Resizes every frame to `oh` × `ow`, bilinear, half-pixel centres, no antialiasing
/// (`align_corners=False`), rounded to the nearest u8.
pub fn resize_bilinear(clip: &Clip, oh: usize, ow: usize) -> Clip {
    let clip = clip.conformed();
    let mut out = Clip::zeros(clip.frames, oh, ow);
    if clip.height == 0 || clip.width == 0 || out.data.is_empty() {
        return out;
    }
    let ys = bilinear_plan(clip.height, oh);
    let xs = bilinear_plan(clip.width, ow);
    let (in_len, out_len) = (clip.frame_len(), out.frame_len());
    for (src, dst) in clip
        .data
        .chunks_exact(in_len)
        .zip(out.data.chunks_exact_mut(out_len))
    {
        resize_plane_u8(src, clip.width, &ys, &xs, dst);
    }
    out
}

/// The window of rows `y..y+h` and columns `x..x+w` of every frame, clipped to the frame
/// (a window reaching past the edge is cut there, so the result may be smaller).
pub fn crop(clip: &Clip, y: usize, x: usize, h: usize, w: usize) -> Clip {
    let clip = clip.conformed();
    let y0 = y.min(clip.height);
    let x0 = x.min(clip.width);
    let h = h.min(clip.height - y0);
    let w = w.min(clip.width - x0);
    let mut out = Clip::zeros(clip.frames, h, w);
    if out.data.is_empty() {
        return out;
    }
    let row = w * 3;
    for t in 0..clip.frames {
        let src = clip.frame(t);
        let dst = &mut out.data[t * h * row..(t + 1) * h * row];
        for r in 0..h {
            let s = ((y0 + r) * clip.width + x0) * 3;
            dst[r * row..(r + 1) * row].copy_from_slice(&src[s..s + row]);
        }
    }
    out
}

/// `(v / 255 − mean[c]) / std[c]` for every byte, keeping the `[T, H, W, 3]` layout (the
/// reference's `ToTensor` then `tensor_normalize`).
pub fn normalize(clip: &Clip, mean: [f32; 3], std: [f32; 3]) -> Vec<f32> {
    let clip = clip.conformed();
    let mut out = Vec::with_capacity(clip.data.len());
    for px in clip.data.chunks_exact(3) {
        for c in 0..3 {
            out.push(normalize_value(px[c], mean[c], std[c]));
        }
    }
    out
}

/// One value as [`normalize`] computes it.
#[inline]
pub(crate) fn normalize_value(v: u8, mean: f32, std: f32) -> f32 {
    (v as f32 / 255.0 - mean) / std
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(t: usize, h: usize, w: usize) -> Clip {
        let data = (0..t * h * w * 3).map(|i| (i * 7 % 251) as u8).collect();
        Clip::new(t, h, w, data).unwrap()
    }

    #[test]
    fn new_checks_the_length() {
        assert!(Clip::new(2, 3, 4, vec![0; 72]).is_ok());
        let e = Clip::new(2, 3, 4, vec![0; 71]).unwrap_err();
        assert_eq!((e.expected, e.actual), (72, 71));
    }

    #[test]
    fn short_side_sizes_as_the_reference() {
        // int(224 * 427 / 240) = 398; portrait: int(224 * 320 / 180) = 398.
        assert_eq!(short_side_size(240, 427, 224), (224, 398));
        assert_eq!(short_side_size(320, 180, 224), (398, 224));
        assert_eq!(short_side_size(100, 100, 50), (50, 50));
    }

    #[test]
    fn resize_of_a_constant_clip_stays_constant() {
        let c = Clip::new(2, 7, 11, vec![93; 2 * 7 * 11 * 3]).unwrap();
        for (oh, ow) in [(3, 5), (16, 9), (7, 11), (1, 1)] {
            let r = resize_bilinear(&c, oh, ow);
            assert_eq!((r.frames, r.height, r.width), (2, oh, ow));
            assert!(r.data.iter().all(|&v| v == 93));
        }
    }

    #[test]
    fn resize_to_the_same_size_is_the_identity() {
        let c = ramp(2, 5, 6);
        assert_eq!(resize_bilinear(&c, 5, 6), c);
        // Already at the short side: returned unchanged, as the reference does.
        assert_eq!(resize_short_side(&c, 5), c);
    }

    #[test]
    fn resize_upsamples_by_two_with_half_pixel_centres() {
        // One row 0, 100 → 4 columns: sources −0.25 (clamped 0), 0.25, 0.75, 1.25 (clamped).
        let c = Clip::new(1, 1, 2, vec![0, 0, 0, 100, 100, 100]).unwrap();
        let r = resize_bilinear(&c, 1, 4);
        let got: Vec<u8> = r.data.chunks(3).map(|p| p[0]).collect();
        assert_eq!(got, vec![0, 25, 75, 100]);
    }

    #[test]
    fn crop_picks_the_window_and_clips_at_the_edge() {
        let c = ramp(2, 4, 5);
        let k = crop(&c, 1, 2, 2, 2);
        assert_eq!((k.frames, k.height, k.width), (2, 2, 2));
        for t in 0..2 {
            for r in 0..2 {
                for x in 0..2 {
                    for ch in 0..3 {
                        let want = c.data[((t * 4 + 1 + r) * 5 + 2 + x) * 3 + ch];
                        assert_eq!(k.data[((t * 2 + r) * 2 + x) * 3 + ch], want);
                    }
                }
            }
        }
        let k = crop(&c, 3, 4, 10, 10);
        assert_eq!((k.height, k.width), (1, 1));
        let k = crop(&c, 9, 9, 2, 2);
        assert_eq!((k.height, k.width, k.data.len()), (0, 0, 0));
    }

    #[test]
    fn normalize_matches_the_formula() {
        let c = Clip::new(1, 1, 1, vec![0, 128, 255]).unwrap();
        let n = normalize(&c, IMAGENET_MEAN, IMAGENET_STD);
        for ch in 0..3 {
            let want = ([0.0, 128.0, 255.0][ch] / 255.0 - IMAGENET_MEAN[ch]) / IMAGENET_STD[ch];
            assert!((n[ch] - want).abs() < 1e-6);
        }
    }

    #[test]
    fn a_malformed_clip_does_not_panic() {
        let bad = Clip {
            frames: 2,
            height: 3,
            width: 3,
            data: vec![1; 10],
        };
        assert_eq!(normalize(&bad, IMAGENET_MEAN, IMAGENET_STD).len(), 54);
        assert_eq!(resize_bilinear(&bad, 2, 2).data.len(), 24);
        assert_eq!(crop(&bad, 0, 0, 2, 2).data.len(), 24);
    }
}
