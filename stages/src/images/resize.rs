//! Pillow's bicubic resampling of 8-bit RGB (`Image.resize(size, Image.BICUBIC)`, which
//! antialiases when shrinking), and torchvision's `Resize(int)` / `CenterCrop` arithmetic on
//! PIL images — DeiT's evaluation transform, `build_transform(is_train=False)`.
//!
//! The resampler follows Pillow's `Resample.c` algorithm: separable, horizontal pass first
//! (only over the rows the vertical pass reads), support `2·max(1, scale)`, weights from the
//! a = −0.5 cubic in f64, normalised, then 22-bit fixed point (rounded away from zero), pixel
//! sums rounded by adding 2²¹ and clipped to 0..=255 after each pass.

use super::decode::Rgb;
use super::transpose::transpose_rows;

const PRECISION_BITS: u32 = 32 - 8 - 2;

fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// Per output pixel: first input pixel, count, and the fixed-point weights.
struct Coeffs {
    ksize: usize,
    bounds: Vec<(usize, usize)>,
    kk: Vec<i32>,
}

fn coeffs(in_size: usize, out_size: usize) -> Coeffs {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = 2.0 * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let inv = 1.0 / filterscale;
    let mut bounds = Vec::with_capacity(out_size);
    let mut kk = vec![0i32; out_size * ksize];
    let mut w = vec![0f64; ksize];
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        // C's (int) truncates toward zero.
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize - xmin;
        let mut ww = 0.0;
        for (x, wx) in w.iter_mut().enumerate().take(xmax) {
            *wx = bicubic(((x + xmin) as f64 - center + 0.5) * inv);
            ww += *wx;
        }
        let k = &mut kk[xx * ksize..(xx + 1) * ksize];
        for x in 0..xmax {
            let v = if ww != 0.0 { w[x] / ww } else { w[x] };
            let f = v * (1u32 << PRECISION_BITS) as f64;
            k[x] = if v < 0.0 {
                (f - 0.5) as i32
            } else {
                (f + 0.5) as i32
            };
        }
        bounds.push((xmin, xmax));
    }
    Coeffs { ksize, bounds, kk }
}

fn clip8(ss: i32) -> u8 {
    (ss >> PRECISION_BITS).clamp(0, 255) as u8
}

/// A window on packed RGB rows: `height` rows `stride` pixels apart, each `width` pixels
/// from column `x` on (a crop, without copying it out).
#[derive(Debug, Clone, Copy)]
pub struct RgbWindow<'a> {
    pub data: &'a [u8],
    pub stride: usize,
    pub x: usize,
    pub width: usize,
    pub height: usize,
}

impl<'a> RgbWindow<'a> {
    /// The whole image.
    pub fn whole(img: &'a Rgb) -> Self {
        RgbWindow {
            data: &img.data,
            stride: img.width,
            x: 0,
            width: img.width,
            height: img.height,
        }
    }

    /// Rows `y..y+h`, columns `x..x+w` of `img`; None unless the box lies inside it and the
    /// data is `width · height · 3` bytes.
    pub fn of_box(img: &'a Rgb, y: usize, x: usize, h: usize, w: usize) -> Option<Self> {
        let whole = img
            .height
            .checked_mul(img.width)
            .and_then(|n| n.checked_mul(3));
        (whole == Some(img.data.len()) && y + h <= img.height && x + w <= img.width).then(|| {
            RgbWindow {
                data: &img.data[y * img.width * 3..],
                stride: img.width,
                x,
                width: w,
                height: h,
            }
        })
    }

    fn row(&self, r: usize) -> &'a [u8] {
        let s = (r * self.stride + self.x) * 3;
        &self.data[s..s + self.width * 3]
    }

    /// The window's pixels, packed.
    pub fn to_rgb(&self) -> Rgb {
        let mut data = Vec::with_capacity(self.width * self.height * 3);
        for r in 0..self.height {
            data.extend_from_slice(self.row(r));
        }
        Rgb {
            width: self.width,
            height: self.height,
            data,
        }
    }
}

/// `img.resize((width, height), Image.BICUBIC)` for an RGB image.
pub fn resize_bicubic(img: &Rgb, width: usize, height: usize) -> Rgb {
    resize_window(RgbWindow::whole(img), width, height)
}

/// [`resize_bicubic`] of a window.
///
/// Both passes are written as whole-line sums so the compiler vectorises them (AVX2 where
/// the CPU has it): the horizontal pass on the transposed rows (column `x` of the crop becomes
/// a contiguous line of `rows · 3` bytes), then transposed back. Every sum still starts at the
/// rounding constant and adds the same 22-bit products, so the integers, and the bytes, are
/// Pillow's (integer addition does not depend on the order).
pub fn resize_window(img: RgbWindow<'_>, width: usize, height: usize) -> Rgb {
    let (w0, h0) = (img.width, img.height);
    let vert = coeffs(h0, height);
    let first = vert.bounds.first().map_or(0, |b| b.0);
    let last = vert.bounds.last().map_or(0, |b| b.0 + b.1);
    let rows = last - first;
    SCRATCH.with(|cell| {
        let mut scratch = cell.borrow_mut();
        let [cols, out_t, tmp] = &mut *scratch;
        // Horizontal pass over rows first..last.
        let tw = if width != w0 {
            let hc = coeffs(w0, width);
            size_scratch(cols, rows * w0 * 3);
            transpose_rows(|r| img.row(first + r), rows, w0, cols);
            size_scratch(out_t, width * rows * 3);
            dispatch_sums(&hc, cols, rows * 3, 0, out_t);
            let lines = |c: usize| &out_t[c * rows * 3..(c + 1) * rows * 3];
            size_scratch(tmp, rows * width * 3);
            transpose_rows(lines, width, rows, tmp);
            width
        } else {
            tmp.clear();
            for r in first..last {
                tmp.extend_from_slice(img.row(r));
            }
            w0
        };
        if height == h0 {
            // No vertical pass: Pillow's bounds then cover every row (first = 0, last = h0).
            let mut data = tmp.clone();
            data.resize(tw * h0 * 3, 0);
            return Rgb {
                width: tw,
                height: h0,
                data,
            };
        }
        let stride = tw * 3;
        let mut out = vec![0u8; height * stride];
        dispatch_sums(&vert, tmp, stride, first, &mut out);
        Rgb {
            width: tw,
            height,
            data: out,
        }
    })
}

thread_local! {
    /// The resampler's intermediate buffers (transposed crop, horizontal result, and that
    /// transposed back), kept per thread: a fresh few hundred KB per image is a fresh mmap
    /// and its page faults, a measurable share of the training loader's time.
    static SCRATCH: std::cell::RefCell<[Vec<u8>; 3]> = const {
        std::cell::RefCell::new([Vec::new(), Vec::new(), Vec::new()])
    };
}

/// Output line `j` of `out` (lines of `len` bytes) = clip8(round + Σ_k kk[j][k] · line
/// `bounds[j].0 − line0 + k` of `src`): one pass of the resampler along the lines.
fn dispatch_sums(c: &Coeffs, src: &[u8], len: usize, line0: usize, out: &mut [u8]) {
    if len == 0 {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above).
        unsafe { line_sums_avx2(c, src, len, line0, out) };
        return;
    }
    line_sums(c, src, len, line0, out);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn line_sums_avx2(c: &Coeffs, src: &[u8], len: usize, line0: usize, out: &mut [u8]) {
    line_sums(c, src, len, line0, out)
}

/// Bytes of a line summed at once in registers: 32 i32 accumulators (four AVX2 registers)
/// stay in registers over all of an output line's taps, instead of an accumulator line
/// loaded and stored once per tap.
const CHUNK: usize = 32;

#[inline(always)]
fn line_sums(c: &Coeffs, src: &[u8], len: usize, line0: usize, out: &mut [u8]) {
    let round = 1i32 << (PRECISION_BITS - 1);
    let whole = len / CHUNK * CHUNK;
    for (j, (&(min, n), dst)) in c.bounds.iter().zip(out.chunks_exact_mut(len)).enumerate() {
        let k = &c.kk[j * c.ksize..j * c.ksize + n];
        let lines = &src[(min - line0) * len..(min - line0 + n) * len];
        for s in (0..whole).step_by(CHUNK) {
            let mut acc = [round; CHUNK];
            for (i, &kj) in k.iter().enumerate() {
                let v: &[u8; CHUNK] = lines[i * len + s..i * len + s + CHUNK]
                    .try_into()
                    .expect("a CHUNK-byte slice");
                for (a, &b) in acc.iter_mut().zip(v) {
                    *a += b as i32 * kj;
                }
            }
            for (d, &a) in dst[s..s + CHUNK].iter_mut().zip(&acc) {
                *d = clip8(a);
            }
        }
        for (x, d) in dst.iter_mut().enumerate().skip(whole) {
            let mut a = round;
            for (i, &kj) in k.iter().enumerate() {
                a += lines[i * len + x] as i32 * kj;
            }
            *d = clip8(a);
        }
    }
}

/// `buf` holding `n` bytes, reusing its allocation; the bytes are left as they were (the
/// callers overwrite every one).
fn size_scratch(buf: &mut Vec<u8>, n: usize) {
    if buf.len() < n {
        buf.resize(n, 0);
    }
    buf.truncate(n);
}

/// torchvision `Resize(size)` (an int: the shorter side) on a PIL image: the output size
/// (width, height), `int(size · long / short)` for the longer side.
pub fn resize_shorter_to(width: usize, height: usize, size: usize) -> (usize, usize) {
    let (short, long) = if width <= height {
        (width, height)
    } else {
        (height, width)
    };
    let new_long = (size as f64 * long as f64 / short as f64) as usize;
    if width <= height {
        (size, new_long)
    } else {
        (new_long, size)
    }
}

/// DeiT's evaluation resize: `int((256 / 224) · input_size)` (256 for 224).
pub fn eval_resize_size(input_size: usize) -> usize {
    ((256.0f64 / 224.0) * input_size as f64) as usize
}

/// torchvision `CenterCrop(size)`: offsets `int(round((H − size) / 2))` with Python's
/// round-half-to-even; zero padding when the image is smaller (torchvision pads then crops).
pub fn center_crop(img: &Rgb, size: usize) -> Vec<u8> {
    let mut out = vec![0u8; size * size * 3];
    let off = |have: usize| -> i64 { ((have as f64 - size as f64) / 2.0).round_ties_even() as i64 };
    let (top, left) = (off(img.height), off(img.width));
    for y in 0..size {
        let sy = y as i64 + top;
        if sy < 0 || sy >= img.height as i64 {
            continue;
        }
        for x in 0..size {
            let sx = x as i64 + left;
            if sx < 0 || sx >= img.width as i64 {
                continue;
            }
            let s = (sy as usize * img.width + sx as usize) * 3;
            out[(y * size + x) * 3..(y * size + x) * 3 + 3].copy_from_slice(&img.data[s..s + 3]);
        }
    }
    out
}

/// The evaluation view: `Resize(int(256/224·S), BICUBIC)` then `CenterCrop(S)`, [S, S, 3].
pub fn eval_view(img: &Rgb, s: usize) -> Vec<u8> {
    let (w, h) = resize_shorter_to(img.width, img.height, eval_resize_size(s));
    if (w, h) == (img.width, img.height) {
        return center_crop(img, s);
    }
    center_crop(&resize_bicubic(img, w, h), s)
}

/// The training image's size: longer side at most `max_side` (`round(short · max_side /
/// long)`, at least 1, for the shorter side); unchanged when it already fits.
pub fn fit_longer_side(width: usize, height: usize, max_side: usize) -> (usize, usize) {
    let long = width.max(height);
    if long <= max_side {
        return (width, height);
    }
    let scale = |v: usize| ((v as f64 * max_side as f64 / long as f64).round() as usize).max(1);
    if width >= height {
        (max_side, scale(height))
    } else {
        (scale(width), max_side)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngExt, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Pillow's loops as `Resample.c` writes them, one pixel and one channel at a time (the
    /// resampler before it was vectorised): the reference the fast one must equal.
    fn resize_per_pixel(img: &Rgb, width: usize, height: usize) -> Rgb {
        let (w0, h0) = (img.width, img.height);
        let round = 1i32 << (PRECISION_BITS - 1);
        let vert = coeffs(h0, height);
        let first = vert.bounds.first().map_or(0, |b| b.0);
        let last = vert.bounds.last().map_or(0, |b| b.0 + b.1);
        let (tmp, tw, row0) = if width != w0 {
            let hc = coeffs(w0, width);
            let mut out = vec![0u8; (last - first) * width * 3];
            for y in first..last {
                for (xx, &(xmin, n)) in hc.bounds.iter().enumerate() {
                    for c in 0..3 {
                        let mut ss = round;
                        for x in 0..n {
                            let v = img.data[(y * w0 + xmin + x) * 3 + c] as i32;
                            ss += v * hc.kk[xx * hc.ksize + x];
                        }
                        out[((y - first) * width + xx) * 3 + c] = clip8(ss);
                    }
                }
            }
            (out, width, first)
        } else {
            (img.data.clone(), w0, 0)
        };
        if height == h0 {
            return Rgb {
                width: tw,
                height: h0,
                data: tmp[..tw * h0 * 3].to_vec(),
            };
        }
        let mut out = vec![0u8; height * tw * 3];
        for (yy, &(ymin, n)) in vert.bounds.iter().enumerate() {
            for i in 0..tw * 3 {
                let mut ss = round;
                for y in 0..n {
                    ss += tmp[(ymin - row0 + y) * tw * 3 + i] as i32 * vert.kk[yy * vert.ksize + y];
                }
                out[yy * tw * 3 + i] = clip8(ss);
            }
        }
        Rgb {
            width: tw,
            height,
            data: out,
        }
    }

    #[test]
    fn the_vectorised_resize_is_pillows_per_pixel_loop_byte_for_byte() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let sizes = [
            (500, 375, 224, 224),
            (97, 61, 224, 224),
            (224, 300, 224, 224),
            (300, 224, 224, 224),
            (1, 1, 5, 3),
            (33, 47, 1, 1),
            (640, 20, 37, 91),
            (13, 200, 40, 40),
        ];
        for (w0, h0, w, h) in sizes {
            // Noise plus hard edges: overshoot past 0 and 255 exercises the clipping.
            let data = (0..w0 * h0 * 3)
                .map(|i| {
                    if (i / 3 / 7) % 2 == 0 {
                        rng.random::<u8>()
                    } else {
                        (i % 2 * 255) as u8
                    }
                })
                .collect();
            let img = Rgb {
                width: w0,
                height: h0,
                data,
            };
            assert_eq!(
                resize_bicubic(&img, w, h),
                resize_per_pixel(&img, w, h),
                "{w0}x{h0} -> {w}x{h}"
            );
        }
    }
}
