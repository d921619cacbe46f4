//! The tubelet layout of the `tubelets` field: what a VideoMAE `Conv3d(kernel = stride =
//! (t, p, p))` patch embedding reads, with channels last, so a trainer needs one reshape
//! and one matmul (no im2col) per clip.
//!
//! For T frames of C×C RGB24 pixels: token `(ti, row, col)` (row-major over T/t × C/p × C/p)
//! holds the t·p·p·3 bytes `frame[ti·t + dt][row·p + dy][col·p + dx][ch]` in
//! `(dt, dy, dx, ch)` row-major order. In numpy:
//! `x.reshape(T/t, t, C/p, p, C/p, p, 3).transpose(0, 2, 4, 1, 3, 5, 6).reshape(N, t·p·p·3)`
//! with `x` of shape [T, C, C, 3].

/// Shape of one view: (tokens, bytes per token).
pub fn view_shape(
    num_frames: usize,
    tubelet_frames: usize,
    patch: usize,
    crop: usize,
) -> (usize, usize) {
    let g = crop / patch;
    (
        (num_frames / tubelet_frames) * g * g,
        tubelet_frames * patch * patch * 3,
    )
}

/// A C×C RGB24 window of a larger strided image: rows start at `y0·stride + x0·3`.
#[derive(Clone, Copy)]
pub struct Window<'a> {
    pub data: &'a [u8],
    pub stride: usize,
    pub x0: usize,
    pub y0: usize,
}

impl<'a> Window<'a> {
    /// A tightly packed C×C×3 frame.
    pub fn packed(frame: &'a [u8], crop: usize) -> Self {
        Window {
            data: frame,
            stride: crop * 3,
            x0: 0,
            y0: 0,
        }
    }
    /// Whether a `crop`×`crop` window fits in `data`.
    pub fn fits(&self, crop: usize) -> bool {
        crop == 0 || (self.y0 + crop - 1) * self.stride + (self.x0 + crop) * 3 <= self.data.len()
    }
}

/// Writes frame `k` (0-based time index within the view) of one view's tubelets, taking
/// its pixels from `src`. `view` is the view's `[tokens, t·p·p·3]` bytes; every byte of it is
/// written once all T frames have been.
pub fn pack_frame(
    view: &mut [u8],
    k: usize,
    src: Window,
    tubelet_frames: usize,
    patch: usize,
    crop: usize,
) {
    let (t, p, c) = (tubelet_frames, patch, crop);
    let g = c / p;
    let token = t * p * p * 3;
    let (ti, dt) = (k / t, k % t);
    for r in 0..g {
        for col in 0..g {
            let base = ((ti * g + r) * g + col) * token + dt * p * p * 3;
            for dy in 0..p {
                let s = (src.y0 + r * p + dy) * src.stride + (src.x0 + col * p) * 3;
                let d = base + dy * p * 3;
                view[d..d + p * 3].copy_from_slice(&src.data[s..s + p * 3]);
            }
        }
    }
}

/// Appends the tubelets of `frames` (each `crop`×`crop`×3 bytes) to `out`.
pub fn pack(frames: &[&[u8]], tubelet_frames: usize, patch: usize, crop: usize, out: &mut Vec<u8>) {
    let start = out.len();
    out.resize(start + frames.len() * crop * crop * 3, 0);
    for (k, f) in frames.iter().enumerate() {
        pack_frame(
            &mut out[start..],
            k,
            Window::packed(f, crop),
            tubelet_frames,
            patch,
            crop,
        );
    }
}

/// The tubelet tokens of T frames of values (any element type; the loader packs normalized
/// f32), `frames` laid out [T, crop, crop, 3]: [tokens, t·p·p·3] in the order of the module
/// doc. Frames past the end of `frames` (a short buffer) read as the default value.
pub fn pack_values<T: Copy + Default>(
    frames: &[T],
    num_frames: usize,
    tubelet_frames: usize,
    patch: usize,
    crop: usize,
) -> Vec<T> {
    let (t, p, c) = (tubelet_frames, patch, crop);
    let g = c / p.max(1);
    let token = t * p * p * 3;
    let mut out = vec![T::default(); (num_frames / t.max(1)) * g * g * token];
    for k in 0..(num_frames / t.max(1)) * t {
        let (ti, dt) = (k / t, k % t);
        for r in 0..g {
            for col in 0..g {
                let base = ((ti * g + r) * g + col) * token + dt * p * p * 3;
                for dy in 0..p {
                    let s = ((k * c + r * p + dy) * c + col * p) * 3;
                    let d = base + dy * p * 3;
                    if let Some(src) = frames.get(s..s + p * 3) {
                        out[d..d + p * 3].copy_from_slice(src);
                    }
                }
            }
        }
    }
    out
}

/// The inverse of [`pack`] for one view: T frames of `crop`×`crop`×3 bytes.
pub fn unpack(
    tokens: &[u8],
    num_frames: usize,
    tubelet_frames: usize,
    patch: usize,
    crop: usize,
) -> Vec<Vec<u8>> {
    let (t, p, c) = (tubelet_frames, patch, crop);
    let g = c / p;
    let mut frames = vec![vec![0u8; c * c * 3]; num_frames];
    let mut pos = 0;
    for ti in 0..num_frames / t {
        for r in 0..g {
            for col in 0..g {
                for dt in 0..t {
                    for dy in 0..p {
                        let start = (r * p + dy) * c * 3 + col * p * 3;
                        frames[ti * t + dt][start..start + p * 3]
                            .copy_from_slice(&tokens[pos..pos + p * 3]);
                        pos += p * 3;
                    }
                }
            }
        }
    }
    frames
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_values_matches_the_u8_packing() {
        let (t_frames, t, p, c) = (4, 2, 4, 8);
        let frames: Vec<Vec<u8>> = (0..t_frames)
            .map(|k| (0..c * c * 3).map(|i| (i * 7 + k * 31) as u8).collect())
            .collect();
        let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
        let mut packed = Vec::new();
        pack(&refs, t, p, c, &mut packed);
        let flat: Vec<u8> = frames.concat();
        assert_eq!(pack_values(&flat, t_frames, t, p, c), packed);
        let f: Vec<f32> = flat.iter().map(|&v| v as f32).collect();
        let pf: Vec<f32> = packed.iter().map(|&v| v as f32).collect();
        assert_eq!(pack_values(&f, t_frames, t, p, c), pf);
    }

    #[test]
    fn matches_the_conv3d_patch_order_by_hand() {
        // T = 4 frames of 4×4, t = 2, p = 2: 2·2·2 = 8 tokens of 2·2·2·3 = 24 bytes.
        let (t, p, c, n) = (2, 2, 4, 4);
        let px = |f: usize, y: usize, x: usize, ch: usize| (f * 64 + y * 16 + x * 3 + ch) as u8;
        let frames: Vec<Vec<u8>> = (0..n)
            .map(|f| {
                (0..c * c * 3)
                    .map(|i| px(f, i / (c * 3), (i / 3) % c, i % 3))
                    .collect()
            })
            .collect();
        let refs: Vec<&[u8]> = frames.iter().map(|f| f.as_slice()).collect();
        let mut out = Vec::new();
        pack(&refs, t, p, c, &mut out);
        assert_eq!((out.len() / 24, 24), view_shape(n, t, p, c));
        for ti in 0..2 {
            for r in 0..2 {
                for col in 0..2 {
                    let token = (ti * 2 + r) * 2 + col;
                    for dt in 0..2 {
                        for dy in 0..2 {
                            for dx in 0..2 {
                                for ch in 0..3 {
                                    let inner = ((dt * 2 + dy) * 2 + dx) * 3 + ch;
                                    assert_eq!(
                                        out[token * 24 + inner],
                                        px(ti * 2 + dt, r * 2 + dy, col * 2 + dx, ch)
                                    );
                                }
                            }
                        }
                    }
                }
            }
        }
        assert_eq!(unpack(&out, n, t, p, c), frames);
    }
}
