//! libjpeg-turbo through its TurboJPEG C API (Debian's `libturbojpeg0-dev`; the same
//! library Pillow's wheels link): decode a JPEG to the pixels libjpeg gives PIL (default
//! settings: accurate integer IDCT, fancy upsampling) and encode RGB at a fixed quality.
//!
//! Declared here by hand: the eight functions of the 2.x API this module calls.

use std::ffi::{c_char, c_int, c_uchar, c_ulong, c_void, CStr};

type Handle = *mut c_void;

#[link(name = "turbojpeg")]
extern "C" {
    fn tjInitDecompress() -> Handle;
    fn tjInitCompress() -> Handle;
    fn tjDestroy(handle: Handle) -> c_int;
    fn tjDecompressHeader3(
        handle: Handle,
        jpeg: *const c_uchar,
        size: c_ulong,
        width: *mut c_int,
        height: *mut c_int,
        subsamp: *mut c_int,
        colorspace: *mut c_int,
    ) -> c_int;
    fn tjDecompress2(
        handle: Handle,
        jpeg: *const c_uchar,
        size: c_ulong,
        dst: *mut c_uchar,
        width: c_int,
        pitch: c_int,
        height: c_int,
        pixel_format: c_int,
        flags: c_int,
    ) -> c_int;
    fn tjCompress2(
        handle: Handle,
        src: *const c_uchar,
        width: c_int,
        pitch: c_int,
        height: c_int,
        pixel_format: c_int,
        jpeg: *mut *mut c_uchar,
        size: *mut c_ulong,
        subsamp: c_int,
        quality: c_int,
        flags: c_int,
    ) -> c_int;
    fn tjBufSize(width: c_int, height: c_int, subsamp: c_int) -> c_ulong;
    fn tjGetErrorStr2(handle: Handle) -> *mut c_char;
    fn tjGetErrorCode(handle: Handle) -> c_int;
}

const TJPF_RGB: c_int = 0;
const TJPF_GRAY: c_int = 6;
const TJPF_CMYK: c_int = 11;
const TJSAMP_420: c_int = 2;
const TJSAMP_GRAY: c_int = 3;
const TJFLAG_NOREALLOC: c_int = 1024;
const TJERR_WARNING: c_int = 0;

/// The colour space of a JPEG's components (TurboJPEG's `TJCS_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColorSpace {
    Rgb,
    YCbCr,
    Gray,
    Cmyk,
    Ycck,
}

/// A JPEG's header: size and colour space.
#[derive(Debug, Clone, Copy)]
pub struct Header {
    pub width: usize,
    pub height: usize,
    pub color: ColorSpace,
}

/// Decoded pixels: 1 (gray), 3 (RGB) or 4 (CMYK as stored) bytes a pixel.
pub struct Pixels {
    pub data: Vec<u8>,
    pub channels: usize,
}

struct Owned(Handle);

impl Drop for Owned {
    fn drop(&mut self) {
        // SAFETY: a handle from tjInit*, destroyed once.
        unsafe { tjDestroy(self.0) };
    }
}

impl Owned {
    fn error(&self) -> String {
        // SAFETY: the handle is live; the string is owned by it and copied out at once.
        let p = unsafe { tjGetErrorStr2(self.0) };
        if p.is_null() {
            return "unknown libjpeg-turbo error".into();
        }
        // SAFETY: a NUL-terminated string from libturbojpeg.
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }
    fn is_warning(&self) -> bool {
        // SAFETY: the handle is live.
        unsafe { tjGetErrorCode(self.0) == TJERR_WARNING }
    }
}

/// A decompressor (one per thread: TurboJPEG handles are not shareable).
pub struct Decoder(Owned);

impl Decoder {
    pub fn new() -> Result<Self, String> {
        // SAFETY: no arguments; null on failure.
        let h = unsafe { tjInitDecompress() };
        if h.is_null() {
            return Err("libjpeg-turbo: tjInitDecompress failed".into());
        }
        Ok(Decoder(Owned(h)))
    }

    pub fn header(&mut self, jpeg: &[u8]) -> Result<Header, String> {
        let (mut w, mut h, mut sub, mut cs) = (0, 0, 0, 0);
        // SAFETY: the buffer and its length are valid; outputs are plain ints.
        let rc = unsafe {
            tjDecompressHeader3(
                self.0 .0,
                jpeg.as_ptr(),
                jpeg.len() as c_ulong,
                &mut w,
                &mut h,
                &mut sub,
                &mut cs,
            )
        };
        if rc != 0 {
            return Err(format!("JPEG header: {}", self.0.error()));
        }
        let color = match cs {
            0 => ColorSpace::Rgb,
            1 => ColorSpace::YCbCr,
            2 => ColorSpace::Gray,
            3 => ColorSpace::Cmyk,
            4 => ColorSpace::Ycck,
            other => return Err(format!("JPEG colour space {other} not supported")),
        };
        if w <= 0 || h <= 0 {
            return Err(format!("JPEG header says {w}x{h} pixels"));
        }
        Ok(Header {
            width: w as usize,
            height: h as usize,
            color,
        })
    }

    /// Decodes to gray (1 channel) for grayscale JPEGs, CMYK (4, as stored) for CMYK/YCCK,
    /// else RGB (3): what libjpeg hands Pillow for modes L, CMYK and RGB. A truncated file is
    /// an error, as in PIL (its "image file is truncated"); other libjpeg warnings (e.g.
    /// extraneous bytes before a marker) are not, as PIL ignores them.
    pub fn decode(&mut self, jpeg: &[u8], header: &Header) -> Result<Pixels, String> {
        let (format, channels) = match header.color {
            ColorSpace::Gray => (TJPF_GRAY, 1),
            ColorSpace::Cmyk | ColorSpace::Ycck => (TJPF_CMYK, 4),
            ColorSpace::Rgb | ColorSpace::YCbCr => (TJPF_RGB, 3),
        };
        let len = header
            .width
            .checked_mul(header.height)
            .and_then(|n| n.checked_mul(channels))
            .ok_or("image too large")?;
        let mut data = vec![0u8; len];
        // SAFETY: `data` holds width·height·channels bytes, pitch 0 = packed rows.
        let rc = unsafe {
            tjDecompress2(
                self.0 .0,
                jpeg.as_ptr(),
                jpeg.len() as c_ulong,
                data.as_mut_ptr(),
                header.width as c_int,
                0,
                header.height as c_int,
                format,
                0,
            )
        };
        if rc != 0 {
            let msg = self.0.error();
            if !self.0.is_warning() || msg.contains("Premature end") {
                return Err(if msg.contains("Premature end") {
                    format!("truncated JPEG ({msg})")
                } else {
                    format!("corrupt JPEG: {msg}")
                });
            }
        }
        Ok(Pixels { data, channels })
    }
}

/// A compressor: packed RGB → baseline JPEG, 4:2:0, at one quality.
pub struct Encoder(Owned);

impl Encoder {
    pub fn new() -> Result<Self, String> {
        // SAFETY: no arguments; null on failure.
        let h = unsafe { tjInitCompress() };
        if h.is_null() {
            return Err("libjpeg-turbo: tjInitCompress failed".into());
        }
        Ok(Encoder(Owned(h)))
    }

    pub fn encode_rgb(
        &mut self,
        rgb: &[u8],
        width: usize,
        height: usize,
        quality: u8,
    ) -> Result<Vec<u8>, String> {
        self.encode(rgb, width, height, 3, quality)
    }

    /// Encodes packed pixels of 1 (grayscale JPEG), 3 (RGB → YCbCr 4:2:0) or 4 channels
    /// (CMYK, stored as YCCK with an Adobe marker, as Photoshop writes them).
    pub fn encode(
        &mut self,
        pixels: &[u8],
        width: usize,
        height: usize,
        channels: usize,
        quality: u8,
    ) -> Result<Vec<u8>, String> {
        let (format, subsamp) = match channels {
            1 => (TJPF_GRAY, TJSAMP_GRAY),
            3 => (TJPF_RGB, TJSAMP_420),
            4 => (TJPF_CMYK, TJSAMP_420),
            n => return Err(format!("internal: cannot encode {n} channels")),
        };
        if pixels.len() != width * height * channels || width == 0 || height == 0 {
            return Err(format!(
                "internal: {} bytes for {width}x{height}x{channels}",
                pixels.len()
            ));
        }
        let rgb = pixels;
        // SAFETY: plain arithmetic in libturbojpeg.
        let cap = unsafe { tjBufSize(width as c_int, height as c_int, subsamp) } as usize;
        let mut out = vec![0u8; cap];
        let mut ptr = out.as_mut_ptr();
        let mut size = cap as c_ulong;
        // SAFETY: `out` holds tjBufSize bytes (enough for any image of this size), and
        // NOREALLOC forbids the library from replacing the buffer.
        let rc = unsafe {
            tjCompress2(
                self.0 .0,
                rgb.as_ptr(),
                width as c_int,
                0,
                height as c_int,
                format,
                &mut ptr,
                &mut size,
                subsamp,
                quality as c_int,
                TJFLAG_NOREALLOC,
            )
        };
        if rc != 0 {
            return Err(format!("JPEG encode: {}", self.0.error()));
        }
        out.truncate(size as usize);
        Ok(out)
    }
}
