//! Frames stored as JPEG, written and read by libavcodec's MJPEG encoder and decoder (the
//! ones `ffmpeg -i clip.webm -q:v Q %05d.jpg` and `ffmpeg -i x.jpg` use), for the `frames`
//! layout of `ssv2.tokens`: the whole uncropped clip a VideoMAE-style loader needs (a fresh
//! random frame per segment every epoch, RandomResizedCrop from the whole frame, three test
//! crops), at a size a lab can store (SSv2's 169k clips; BENCHMARKS.md has the figures).
//!
//! Colour path: RGB24 (what the CLI's `scale` filter would give us, see `decode`) →
//! JFIF's full-range BT.601 YUV 4:2:0 → MJPEG at a fixed quantizer (`-q:v`) → back to RGB24
//! the same way. Both ends run with `AV_CODEC_FLAG_BITEXACT` (no encoder version string in
//! the file, a bit-exact IDCT on decode), so the bytes depend on the libavcodec version only
//! (which the stage keys) and not on the CPU. Lossy: the stage's tests bound the PSNR.

use ff::format::Pixel;
use ff::software::scaling;
use ffmpeg_next as ff;

/// libavcodec's FF_QP2LAMBDA: a quantizer in lambda units.
const QP2LAMBDA: i32 = 118;

/// The pixel format JPEG stores: full-range ("J") YUV 4:2:0.
const JPEG_PIXEL: Pixel = Pixel::YUVJ420P;

/// A swscale context kept while the geometry stays the same.
struct Scaler {
    from: (Pixel, u32, u32),
    to: (Pixel, u32, u32),
    ctx: scaling::Context,
}

impl Scaler {
    /// The context for `from` → `to`, made anew only when either changes.
    fn get(
        slot: &mut Option<Scaler>,
        from: (Pixel, u32, u32),
        to: (Pixel, u32, u32),
    ) -> Result<&mut scaling::Context, String> {
        let stale = !matches!(slot, Some(s) if s.from == from && s.to == to);
        if stale {
            let ctx = scaling::Context::get(
                from.0,
                from.1,
                from.2,
                to.0,
                to.1,
                to.2,
                scaling::Flags::BILINEAR,
            )
            .map_err(|e| {
                format!(
                    "swscale cannot convert {:?} {}x{} to {:?} {}x{}: {e}",
                    from.0, from.1, from.2, to.0, to.1, to.2
                )
            })?;
            *slot = Some(Scaler { from, to, ctx });
        }
        match slot {
            Some(s) => Ok(&mut s.ctx),
            None => Err("internal: no scaler".into()),
        }
    }
}

/// Copies a tightly packed RGB24 image into a frame's (possibly padded) rows.
fn fill_rgb(frame: &mut ff::frame::Video, rgb: &[u8], w: usize, h: usize) {
    let stride = frame.stride(0);
    let data = frame.data_mut(0);
    for y in 0..h {
        data[y * stride..y * stride + w * 3].copy_from_slice(&rgb[y * w * 3..(y + 1) * w * 3]);
    }
}

/// Zeroes every byte of a frame's buffers, padding included.
fn zero_buffers(frame: &mut ff::frame::Video) {
    // SAFETY: `buf[i]`, when set, is a valid AVBufferRef of `size` writable bytes that this
    // frame alone refers to (it was just allocated).
    unsafe {
        let f = &mut *frame.as_mut_ptr();
        for b in f.buf.iter().filter(|b| !b.is_null()) {
            let b = &**b;
            if !b.data.is_null() {
                std::ptr::write_bytes(b.data, 0, b.size);
            }
        }
    }
}

/// The rows of a frame's RGB24 plane, tightly packed.
pub(crate) fn packed_rgb(frame: &ff::frame::Video) -> Vec<u8> {
    let (w, h) = (frame.width() as usize, frame.height() as usize);
    let stride = frame.stride(0);
    let data = frame.data(0);
    let mut out = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        out.extend_from_slice(&data[y * stride..y * stride + w * 3]);
    }
    out
}

/// Encodes RGB24 images as baseline JPEG files at a fixed quantizer. One per thread: the
/// encoder is reopened only when the image size changes.
pub struct JpegEncoder {
    quantizer: u32,
    encoder: Option<((u32, u32), ff::encoder::Video)>,
    to_yuv: Option<Scaler>,
    rgb: ff::frame::Video,
    yuv: ff::frame::Video,
    pts: i64,
}

impl JpegEncoder {
    /// `quantizer` is the CLI's `-q:v` (2 = best … 31 = smallest).
    pub fn new(quantizer: u32) -> Self {
        JpegEncoder {
            quantizer,
            encoder: None,
            to_yuv: None,
            rgb: ff::frame::Video::empty(),
            yuv: ff::frame::Video::empty(),
            pts: 0,
        }
    }

    fn open(&mut self, w: u32, h: u32) -> Result<&mut ff::encoder::Video, String> {
        if !matches!(&self.encoder, Some((size, _)) if *size == (w, h)) {
            let codec = ff::encoder::find(ff::codec::Id::MJPEG)
                .ok_or("this libavcodec has no MJPEG encoder")?;
            let mut ctx = ff::codec::context::Context::new_with_codec(codec);
            ctx.set_threading(ff::codec::threading::Config {
                kind: ff::codec::threading::Type::None,
                count: 1,
                ..Default::default()
            });
            let mut enc = ctx
                .encoder()
                .video()
                .map_err(|e| format!("cannot set up the MJPEG encoder: {e}"))?;
            enc.set_width(w);
            enc.set_height(h);
            enc.set_format(JPEG_PIXEL);
            enc.set_time_base((1, 25));
            enc.set_flags(ff::codec::Flags::QSCALE | ff::codec::Flags::BITEXACT);
            enc.set_global_quality(self.quantizer as i32 * QP2LAMBDA);
            enc.set_qmin(self.quantizer as i32);
            enc.set_qmax(self.quantizer as i32);
            let opened = enc
                .open_as(codec)
                .map_err(|e| format!("cannot open the MJPEG encoder at {w}x{h}: {e}"))?;
            self.encoder = Some(((w, h), opened));
            self.rgb = ff::frame::Video::new(Pixel::RGB24, w, h);
            self.yuv = ff::frame::Video::new(JPEG_PIXEL, w, h);
            // The encoder reads whole 16×16 blocks, past the image's right and bottom
            // edges: zeroed buffers keep those bytes (and so the file) deterministic.
            // So may swscale's chroma filter on the RGB side, at an odd width.
            zero_buffers(&mut self.yuv);
            zero_buffers(&mut self.rgb);
        }
        match &mut self.encoder {
            Some((_, e)) => Ok(e),
            None => Err("internal: no encoder".into()),
        }
    }

    /// One JPEG file for a tightly packed `w`×`h` RGB24 image.
    pub fn encode(&mut self, rgb: &[u8], w: usize, h: usize) -> Result<Vec<u8>, String> {
        if w == 0 || h == 0 || rgb.len() != w * h * 3 {
            return Err(format!(
                "cannot encode a {w}x{h} image from {} bytes",
                rgb.len()
            ));
        }
        let (w32, h32) = (w as u32, h as u32);
        self.open(w32, h32)?;
        fill_rgb(&mut self.rgb, rgb, w, h);
        let ctx = Scaler::get(
            &mut self.to_yuv,
            (Pixel::RGB24, w32, h32),
            (JPEG_PIXEL, w32, h32),
        )?;
        ctx.run(&self.rgb, &mut self.yuv)
            .map_err(|e| format!("swscale RGB24 -> YUVJ420P failed: {e}"))?;
        self.pts += 1;
        self.yuv.set_pts(Some(self.pts));
        // SAFETY: a valid frame; `quality` is a plain int the encoder reads as the
        // quantizer in lambda units (what the CLI sets per frame for -q:v).
        unsafe {
            (*self.yuv.as_mut_ptr()).quality = self.quantizer as i32 * QP2LAMBDA;
        }
        let Some((_, enc)) = self.encoder.as_mut() else {
            return Err("internal: no encoder".into());
        };
        enc.send_frame(&self.yuv)
            .map_err(|e| format!("MJPEG encoding failed: {e}"))?;
        let mut packet = ff::Packet::empty();
        enc.receive_packet(&mut packet)
            .map_err(|e| format!("MJPEG encoder gave no packet: {e}"))?;
        packet
            .data()
            .map(<[u8]>::to_vec)
            .ok_or_else(|| "MJPEG encoder gave an empty packet".to_string())
    }
}

/// Decodes JPEG files (as [`JpegEncoder`] writes them, or any baseline JPEG) to RGB24.
/// One per thread.
pub struct JpegDecoder {
    decoder: ff::decoder::Video,
    to_rgb: Option<Scaler>,
    frame: ff::frame::Video,
    rgb: ff::frame::Video,
}

/// A decoded image: tightly packed RGB24.
pub struct Rgb {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

impl JpegDecoder {
    pub fn new() -> Result<Self, String> {
        super::decode::init();
        let codec = ff::decoder::find(ff::codec::Id::MJPEG)
            .ok_or("this libavcodec has no MJPEG decoder")?;
        let mut ctx = ff::codec::context::Context::new_with_codec(codec);
        ctx.set_flags(ff::codec::Flags::BITEXACT);
        ctx.set_threading(ff::codec::threading::Config {
            kind: ff::codec::threading::Type::None,
            count: 1,
            ..Default::default()
        });
        let decoder = ctx
            .decoder()
            .open_as(codec)
            .and_then(|d| d.video())
            .map_err(|e| format!("cannot open the MJPEG decoder: {e}"))?;
        Ok(JpegDecoder {
            decoder,
            to_rgb: None,
            frame: ff::frame::Video::empty(),
            rgb: ff::frame::Video::empty(),
        })
    }

    /// The RGB24 pixels of one JPEG file.
    pub fn decode(&mut self, jpeg: &[u8]) -> Result<Rgb, String> {
        if jpeg.is_empty() {
            return Err("an empty JPEG".into());
        }
        let packet = ff::Packet::copy(jpeg);
        self.decoder
            .send_packet(&packet)
            .map_err(|e| format!("corrupt JPEG: {e}"))?;
        self.decoder
            .receive_frame(&mut self.frame)
            .map_err(|e| format!("JPEG decoded to no image: {e}"))?;
        let (fmt, w, h) = (self.frame.format(), self.frame.width(), self.frame.height());
        if w == 0 || h == 0 || fmt == Pixel::None {
            return Err(format!("JPEG decoded to an empty image ({w}x{h})"));
        }
        if !matches!(&self.to_rgb, Some(s) if s.from == (fmt, w, h)) {
            self.rgb = ff::frame::Video::new(Pixel::RGB24, w, h);
        }
        let ctx = Scaler::get(&mut self.to_rgb, (fmt, w, h), (Pixel::RGB24, w, h))?;
        ctx.run(&self.frame, &mut self.rgb)
            .map_err(|e| format!("swscale {fmt:?} -> RGB24 failed: {e}"))?;
        Ok(Rgb {
            width: w as usize,
            height: h as usize,
            data: packed_rgb(&self.rgb),
        })
    }
}

/// Peak signal-to-noise ratio of `b` against `a` (8-bit samples), in dB; infinite when equal.
pub fn psnr(a: &[u8], b: &[u8]) -> f64 {
    let n = a.len().min(b.len()).max(1);
    let se: f64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| {
            let d = x as f64 - y as f64;
            d * d
        })
        .sum();
    if se == 0.0 {
        return f64::INFINITY;
    }
    10.0 * (255.0f64 * 255.0 / (se / n as f64)).log10()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A smooth gradient with a few edges: what JPEG codes well and badly.
    fn test_image(w: usize, h: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(w * h * 3);
        for y in 0..h {
            for x in 0..w {
                let edge = if (x / 16 + y / 16) % 2 == 0 { 40 } else { 0 };
                v.push(((x * 255) / w) as u8);
                v.push(((y * 255) / h) as u8 / 2 + edge);
                v.push(128u8.wrapping_add(((x + y) % 64) as u8));
            }
        }
        v
    }

    #[test]
    fn round_trip_is_close_and_deterministic() {
        let (w, h) = (75, 42); // odd sizes: chroma rounding, padded strides
        let img = test_image(w, h);
        let mut enc = JpegEncoder::new(2);
        let a = enc.encode(&img, w, h).unwrap();
        let b = JpegEncoder::new(2).encode(&img, w, h).unwrap();
        assert_eq!(a, b, "the same image encodes to the same bytes");
        assert_eq!(&a[..2], &[0xFF, 0xD8], "a JPEG SOI marker");
        let mut dec = JpegDecoder::new().unwrap();
        let out = dec.decode(&a).unwrap();
        assert_eq!((out.width, out.height, out.data.len()), (w, h, w * h * 3));
        let p = psnr(&img, &out.data);
        assert!(p > 30.0, "PSNR {p:.1} dB");
        // A worse quantizer: smaller file, lower PSNR.
        let c = JpegEncoder::new(20).encode(&img, w, h).unwrap();
        assert!(c.len() < a.len());
        assert!(psnr(&img, &dec.decode(&c).unwrap().data) < p);
        // The decoder follows a size change.
        let small = test_image(16, 8);
        let s = enc.encode(&small, 16, 8).unwrap();
        assert_eq!(dec.decode(&s).unwrap().width, 16);
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        let mut dec = JpegDecoder::new().unwrap();
        assert!(dec.decode(&[]).is_err());
        let _ = dec.decode(b"not a jpeg at all, just text");
        let mut enc = JpegEncoder::new(3);
        assert!(enc.encode(&[0; 10], 2, 2).is_err());
        assert!(enc.encode(&[], 0, 0).is_err());
        // The decoder still works after garbage.
        let ok = enc.encode(&test_image(8, 8), 8, 8).unwrap();
        assert!(dec.decode(&ok).is_ok());
    }
}
