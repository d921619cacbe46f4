//! Pillow's bicubic resampling of 8-bit RGB (`Image.resize(size, Image.BICUBIC)`, which
//! antialiases when shrinking), and torchvision's `Resize(int)` / `CenterCrop` arithmetic on
//! PIL images — DeiT's evaluation transform, `build_transform(is_train=False)`.
//!
//! The resampler follows Pillow's `Resample.c` algorithm: separable, horizontal pass first
//! (only over the rows the vertical pass reads), support `2·max(1, scale)`, weights from the
//! a = −0.5 cubic in f64, normalised, then 22-bit fixed point (rounded away from zero), pixel
//! sums rounded by adding 2²¹ and clipped to 0..=255 after each pass.

use super::decode::Rgb;

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

/// `img.resize((width, height), Image.BICUBIC)` for an RGB image.
pub fn resize_bicubic(img: &Rgb, width: usize, height: usize) -> Rgb {
    let (w0, h0) = (img.width, img.height);
    let vert = coeffs(h0, height);
    let first = vert.bounds.first().map_or(0, |b| b.0);
    let last = vert.bounds.last().map_or(0, |b| b.0 + b.1);
    let round = 1i32 << (PRECISION_BITS - 1);
    // Horizontal pass over rows first..last.
    let (tmp, tw, row0) = if width != w0 {
        let hc = coeffs(w0, width);
        let rows = last - first;
        let mut out = vec![0u8; rows * width * 3];
        for y in 0..rows {
            let src = &img.data[(y + first) * w0 * 3..(y + first + 1) * w0 * 3];
            let dst = &mut out[y * width * 3..(y + 1) * width * 3];
            for (xx, &(xmin, n)) in hc.bounds.iter().enumerate() {
                let k = &hc.kk[xx * hc.ksize..xx * hc.ksize + n];
                let mut ss = [round; 3];
                // The window's pixels as 3-byte chunks: no bounds check per tap.
                let win = &src[xmin * 3..(xmin + n) * 3];
                for (p, &kx) in win.chunks_exact(3).zip(k) {
                    ss[0] += p[0] as i32 * kx;
                    ss[1] += p[1] as i32 * kx;
                    ss[2] += p[2] as i32 * kx;
                }
                dst[xx * 3] = clip8(ss[0]);
                dst[xx * 3 + 1] = clip8(ss[1]);
                dst[xx * 3 + 2] = clip8(ss[2]);
            }
        }
        (std::borrow::Cow::Owned(out), width, first)
    } else {
        (std::borrow::Cow::Borrowed(&img.data[..]), w0, 0)
    };
    if height == h0 {
        let data = if row0 == 0 && tmp.len() == tw * h0 * 3 {
            tmp.into_owned()
        } else {
            tmp[..tw * h0 * 3].to_vec()
        };
        return Rgb {
            width: tw,
            height: h0,
            data,
        };
    }
    let stride = tw * 3;
    let mut out = vec![0u8; height * stride];
    // Whole rows at a time (contiguous, so the compiler vectorises it); each sum still adds
    // round, then the taps in order: the same integers as Pillow's per-pixel loop.
    let mut acc = vec![0i32; stride];
    for (yy, &(ymin, n)) in vert.bounds.iter().enumerate() {
        let k = &vert.kk[yy * vert.ksize..yy * vert.ksize + n];
        acc.fill(round);
        for (y, &ky) in k.iter().enumerate() {
            let r = (ymin - row0 + y) * stride;
            for (a, &v) in acc.iter_mut().zip(&tmp[r..r + stride]) {
                *a += v as i32 * ky;
            }
        }
        for (d, &a) in out[yy * stride..(yy + 1) * stride].iter_mut().zip(&acc) {
            *d = clip8(a);
        }
    }
    Rgb {
        width: tw,
        height,
        data: out,
    }
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
