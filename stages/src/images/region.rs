//! A rectangle of a JPEG decoded without decoding the rest (libjpeg's `jpeg_skip_scanlines`
//! and `jpeg_crop_scanline`, through the C wrapper `jpeg_region.c`). The training view's
//! random crop needs only the image's size to place its box, so the pixels outside the box
//! never have to be made (issue 24: the training loader). The pixels are exactly those of
//! [`super::decode::decode`] (the same libjpeg-turbo, the same settings; `tests` checks it
//! over sizes, gray and colour, and boxes), handed over where libjpeg wrote them (a window
//! of wider rows) rather than copied.

use super::resize::RgbWindow;
use std::ffi::{c_char, c_int, c_uchar, c_uint, c_ulong};

extern "C" {
    fn lm4ve_jpeg_header(
        buf: *const c_uchar,
        len: c_ulong,
        width: *mut c_uint,
        height: *mut c_uint,
        color: *mut c_int,
        err: *mut c_char,
        errlen: usize,
    ) -> c_int;
    #[allow(clippy::too_many_arguments)]
    fn lm4ve_jpeg_region(
        buf: *const c_uchar,
        len: c_ulong,
        x: c_uint,
        y: c_uint,
        w: c_uint,
        h: c_uint,
        out: *mut c_uchar,
        out_cap: usize,
        stride: *mut c_uint,
        x_in_row: *mut c_uint,
        err: *mut c_char,
        errlen: usize,
    ) -> c_int;
}

const ERR_LEN: usize = 256;

fn err_text(buf: &[u8]) -> String {
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// A JPEG's size, from its header alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JpegSize {
    pub width: usize,
    pub height: usize,
}

/// The size the header gives; an error for a file libjpeg cannot read a header from.
pub fn jpeg_size(jpeg: &[u8]) -> Result<JpegSize, String> {
    let (mut w, mut h, mut color) = (0, 0, 0);
    let mut err = [0u8; ERR_LEN];
    // SAFETY: the buffer and its length are valid for the call; the outputs are plain
    // integers and an ERR_LEN-byte buffer the C side writes a NUL-terminated string into.
    let rc = unsafe {
        lm4ve_jpeg_header(
            jpeg.as_ptr(),
            jpeg.len() as c_ulong,
            &mut w,
            &mut h,
            &mut color,
            err.as_mut_ptr().cast(),
            ERR_LEN,
        )
    };
    if rc != 0 {
        return Err(format!("JPEG header: {}", err_text(&err)));
    }
    if w == 0 || h == 0 {
        return Err(format!("JPEG header says {w}x{h} pixels"));
    }
    Ok(JpegSize {
        width: w as usize,
        height: h as usize,
    })
}

/// A decoded rectangle: `height` rows of `stride` pixels, the rectangle's `width` pixels
/// starting at column `x` of each.
#[derive(Debug)]
pub struct Region {
    pub data: Vec<u8>,
    pub stride: usize,
    pub x: usize,
    pub width: usize,
    pub height: usize,
}

impl Region {
    pub fn window(&self) -> RgbWindow<'_> {
        RgbWindow {
            data: &self.data,
            stride: self.stride,
            x: self.x,
            width: self.width,
            height: self.height,
        }
    }
}

/// libjpeg's margin around the rectangle (`MARGIN` in the C file) plus the widening to iMCU
/// boundaries (at most 2 × 16 pixels): how much wider than the rectangle its rows can be.
const SLACK: usize = 16 * 2 + 32;

/// Columns `x..x+w` of rows `y..y+h` of the JPEG (whose width is `image_width`), as packed
/// RGB. `Ok(None)` where this path does not apply (CMYK/YCCK files, a box outside the
/// image): decode the whole image instead. A truncated file is an error only if the rows
/// read reach the missing data (the data stage checked every stored JPEG whole).
pub fn decode_region(
    jpeg: &[u8],
    image_width: usize,
    x: usize,
    y: usize,
    w: usize,
    h: usize,
) -> Result<Option<Region>, String> {
    let fits = |v: usize| c_uint::try_from(v).is_ok();
    if w == 0 || h == 0 || !(fits(x) && fits(y) && fits(w) && fits(h)) {
        return Ok(None);
    }
    let cap = (w + SLACK)
        .min(image_width.max(w))
        .checked_mul(h)
        .and_then(|n| n.checked_mul(3))
        .ok_or("crop too large")?;
    // Not zeroed: libjpeg writes every byte that is kept (the length is set below, after it
    // reports success), so zeroing it first was a wasted pass over up to ~0.5 MB per image.
    let mut out: Vec<u8> = Vec::with_capacity(cap);
    let (mut stride, mut x_in_row) = (0, 0);
    let mut err = [0u8; ERR_LEN];
    // SAFETY: `out` has room for `cap` bytes and the C side writes only stride·h·3 ≤ cap of
    // them (it checks before decoding); the outputs are plain integers; the error buffer is
    // ERR_LEN bytes.
    let rc = unsafe {
        lm4ve_jpeg_region(
            jpeg.as_ptr(),
            jpeg.len() as c_ulong,
            x as c_uint,
            y as c_uint,
            w as c_uint,
            h as c_uint,
            out.as_mut_ptr(),
            cap,
            &mut stride,
            &mut x_in_row,
            err.as_mut_ptr().cast(),
            ERR_LEN,
        )
    };
    match rc {
        0 => {
            let (stride, x) = (stride as usize, x_in_row as usize);
            if x + w > stride || stride * h * 3 > cap {
                return Err(format!(
                    "internal: region of stride {stride} for {w} pixels"
                ));
            }
            // SAFETY: on success the C side has read all h rows of the rectangle, each one
            // stride·3 bytes written by `jpeg_read_scanlines` (a short read is error 1), so
            // the first stride·h·3 ≤ cap bytes are initialized.
            unsafe { out.set_len(stride * h * 3) };
            Ok(Some(Region {
                data: out,
                stride,
                x,
                width: w,
                height: h,
            }))
        }
        2 => Ok(None),
        _ => {
            let msg = err_text(&err);
            Err(if msg.contains("Premature end") {
                msg
            } else {
                format!("corrupt JPEG: {msg}")
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::images::decode::decode;
    use crate::images::turbo::Encoder;
    use rand::{RngExt, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// A textured image (gradients plus noise), so every chroma sample differs from its
    /// neighbours and an upsampling difference at a region's edge would show.
    fn picture(w: usize, h: usize, channels: usize, seed: u64) -> Vec<u8> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut px = Vec::with_capacity(w * h * channels);
        for y in 0..h {
            for x in 0..w {
                for c in 0..channels {
                    let base = (x * (3 + c) + y * (5 - c)) % 256;
                    px.push((base as i32 + rng.random_range(-40..40)).clamp(0, 255) as u8);
                }
            }
        }
        px
    }

    fn cut(img: &crate::images::decode::Rgb, x: usize, y: usize, w: usize, h: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(w * h * 3);
        for r in y..y + h {
            let s = (r * img.width + x) * 3;
            out.extend_from_slice(&img.data[s..s + w * 3]);
        }
        out
    }

    #[test]
    fn a_region_is_the_same_pixels_as_the_whole_decode() {
        let mut enc = Encoder::new().unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        // 4:2:0 colour (the stored training JPEGs) and gray, odd sizes (partial iMCUs).
        for (w, h, ch) in [(500, 375, 3), (333, 221, 3), (97, 131, 3), (211, 157, 1)] {
            let jpeg = enc
                .encode(&picture(w, h, ch, w as u64), w, h, ch, 90)
                .unwrap();
            let full = decode(&jpeg, 1 << 28).unwrap().rgb;
            assert_eq!(
                jpeg_size(&jpeg).unwrap(),
                JpegSize {
                    width: w,
                    height: h
                }
            );
            let mut boxes = vec![(0, 0, w, h), (0, 0, 1, 1), (w - 1, h - 1, 1, 1)];
            for _ in 0..40 {
                let (bw, bh) = (rng.random_range(1..=w), rng.random_range(1..=h));
                boxes.push((
                    rng.random_range(0..=w - bw),
                    rng.random_range(0..=h - bh),
                    bw,
                    bh,
                ));
            }
            for (x, y, bw, bh) in boxes {
                let got = decode_region(&jpeg, w, x, y, bw, bh).unwrap().unwrap();
                assert_eq!((got.width, got.height), (bw, bh));
                assert!(
                    got.window().to_rgb().data == cut(&full, x, y, bw, bh),
                    "{w}x{h}x{ch}: box x={x} y={y} {bw}x{bh} differs from the full decode"
                );
            }
        }
    }

    #[test]
    fn bad_input_is_an_error_or_a_fallback_not_a_crash() {
        let mut enc = Encoder::new().unwrap();
        let jpeg = enc.encode(&picture(64, 48, 3, 2), 64, 48, 3, 90).unwrap();
        // A box past the image: not this path's job.
        assert!(decode_region(&jpeg, 64, 60, 0, 10, 10).unwrap().is_none());
        // CMYK: decoded whole by the caller (Pillow's CMYK;I conversion lives there).
        let cmyk = enc.encode(&picture(32, 32, 4, 3), 32, 32, 4, 90).unwrap();
        assert!(decode_region(&cmyk, 32, 0, 0, 8, 8).unwrap().is_none());
        // Garbage and a truncated file.
        assert!(jpeg_size(b"\xff\xd8\xffnot a jpeg").is_err());
        let cut_short = &jpeg[..jpeg.len() / 2];
        let e = decode_region(cut_short, 64, 0, 0, 64, 48).unwrap_err();
        assert!(e.contains("Premature end"), "{e}");
    }
}
