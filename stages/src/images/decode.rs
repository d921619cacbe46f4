//! An image file → RGB pixels, as `PIL.Image.open(f).convert('RGB')` gives them.
//!
//! The format is read from the bytes, not the name (a PNG named `.JPEG` decodes as PNG, as
//! in PIL). JPEG goes through libjpeg-turbo with libjpeg's defaults (what Pillow's decoder
//! asks for): YCbCr/RGB → RGB, grayscale → L replicated, CMYK/YCCK → the CMYK libjpeg
//! returns, inverted (Pillow reads every 4-channel JPEG as `CMYK;I`, "assume adobe
//! conventions") and converted with Pillow's `cmyk2rgb`. PNG follows Pillow's mode table:
//! 1/2/4-bit gray scaled to 0–255, 16-bit gray (`I;16`) clipped at 255, 16-bit colour by its
//! high byte, palette looked up, alpha dropped (convert('RGB') does not composite). EXIF
//! orientation is not applied (PIL does not). An image with more pixels than `max_pixels`
//! is refused before decoding (PIL's DecompressionBombError).

use super::turbo::{ColorSpace, Decoder};
use std::cell::RefCell;
use std::io::Cursor;

/// PIL's `Image.MAX_IMAGE_PIXELS` (`1024³ // 4 // 3`); `Image.open` raises
/// DecompressionBombError above twice this (and only warns above it).
pub const PIL_MAX_IMAGE_PIXELS: u64 = 1024 * 1024 * 1024 / 4 / 3;

/// Packed RGB, rows top to bottom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rgb {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

/// A decoded file: its pixels, its format and PIL's mode for it, and whether the file is a
/// JPEG a loader can use as it is (YCbCr, RGB or grayscale: no colour conversion needed).
#[derive(Debug)]
pub struct Decoded {
    pub rgb: Rgb,
    pub format: &'static str,
    pub mode: &'static str,
    pub jpeg_as_is: bool,
}

thread_local! {
    static DECODER: RefCell<Option<Decoder>> = const { RefCell::new(None) };
}

/// What the first bytes say the file is.
pub fn sniff(bytes: &[u8]) -> Result<&'static str, String> {
    if bytes.is_empty() {
        return Err("empty file (0 bytes)".into());
    }
    let starts = |m: &[u8]| bytes.starts_with(m);
    if starts(&[0xFF, 0xD8, 0xFF]) {
        return Ok("JPEG");
    }
    if starts(b"\x89PNG\r\n\x1a\n") {
        return Ok("PNG");
    }
    let other = if starts(b"GIF87a") || starts(b"GIF89a") {
        "a GIF image"
    } else if starts(b"BM") {
        "a BMP image"
    } else if bytes.len() >= 12 && starts(b"RIFF") && &bytes[8..12] == b"WEBP" {
        "a WebP image"
    } else if starts(b"II*\0") || starts(b"MM\0*") {
        "a TIFF image"
    } else {
        let head: String = bytes
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(" ");
        return Err(format!(
            "not an image: neither JPEG nor PNG by content (first bytes {head})"
        ));
    };
    Err(format!(
        "{other}: this stage reads JPEG and PNG only (ImageNet has only these); convert it to PNG"
    ))
}

/// PIL's decompression-bomb check, before any pixel is decoded.
pub fn check_pixels(width: usize, height: usize, max_pixels: u64) -> Result<(), String> {
    let pixels = width as u64 * height as u64;
    if pixels > max_pixels {
        return Err(format!(
            "image of {width}x{height} = {pixels} pixels exceeds max_pixels = {max_pixels} (PIL's \
             decompression-bomb limit, 2 x Image.MAX_IMAGE_PIXELS); raise max_pixels if the \
             file is trusted"
        ));
    }
    Ok(())
}

/// Decodes one file's bytes as PIL does.
pub fn decode(bytes: &[u8], max_pixels: u64) -> Result<Decoded, String> {
    match sniff(bytes)? {
        "JPEG" => decode_jpeg(bytes, max_pixels),
        _ => decode_png(bytes, max_pixels),
    }
}

fn decode_jpeg(bytes: &[u8], max_pixels: u64) -> Result<Decoded, String> {
    DECODER.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(Decoder::new()?);
        }
        let Some(dec) = slot.as_mut() else {
            return Err("internal: no JPEG decoder".to_string());
        };
        let header = dec.header(bytes)?;
        check_pixels(header.width, header.height, max_pixels)?;
        let px = dec.decode(bytes, &header)?;
        let (w, h) = (header.width, header.height);
        let (data, mode, as_is) = match header.color {
            ColorSpace::Gray => (gray_to_rgb(&px.data), "L", true),
            ColorSpace::Cmyk | ColorSpace::Ycck => (cmyk_inverted_to_rgb(&px.data), "CMYK", false),
            ColorSpace::Rgb | ColorSpace::YCbCr => (px.data, "RGB", true),
        };
        Ok(Decoded {
            rgb: Rgb {
                width: w,
                height: h,
                data,
            },
            format: "JPEG",
            mode,
            jpeg_as_is: as_is,
        })
    })
}

pub fn gray_to_rgb(gray: &[u8]) -> Vec<u8> {
    gray.iter().flat_map(|&v| [v, v, v]).collect()
}

/// Pillow's `MULDIV255`: `a·b/255`, rounded, in integers.
fn muldiv255(a: i32, b: i32) -> i32 {
    let t = a * b + 128;
    ((t >> 8) + t) >> 8
}

/// libjpeg's CMYK bytes → Pillow's `CMYK;I` unpacking (inverted) → `cmyk2rgb`.
pub fn cmyk_inverted_to_rgb(cmyk: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(cmyk.len() / 4 * 3);
    for px in cmyk.chunks_exact(4) {
        let [c, m, y, k] = [255 - px[0], 255 - px[1], 255 - px[2], 255 - px[3]].map(i32::from);
        let nk = 255 - k;
        for v in [c, m, y] {
            out.push((nk - muldiv255(v, nk)).clamp(0, 255) as u8);
        }
    }
    out
}

fn decode_png(bytes: &[u8], max_pixels: u64) -> Result<Decoded, String> {
    use png::{BitDepth, ColorType};
    let bad = |e: png::DecodingError| match e {
        png::DecodingError::IoError(_) => format!("truncated PNG ({e})"),
        e => format!("corrupt PNG: {e}"),
    };
    // The size from IHDR first: PIL refuses a bomb at open, before reading any pixel.
    if bytes.len() >= 24 && &bytes[12..16] == b"IHDR" {
        let be =
            |i: usize| u32::from_be_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        check_pixels(be(16) as usize, be(20) as usize, max_pixels)?;
    }
    let mut dec =
        png::Decoder::new_with_limits(Cursor::new(bytes), png::Limits { bytes: usize::MAX });
    dec.set_transformations(png::Transformations::IDENTITY);
    let mut reader = dec.read_info().map_err(bad)?;
    let info = reader.info();
    let (w, h) = (info.width as usize, info.height as usize);
    check_pixels(w, h, max_pixels)?;
    let (color, depth) = (info.color_type, info.bit_depth);
    let palette: Vec<u8> = info
        .palette
        .as_deref()
        .map(<[u8]>::to_vec)
        .unwrap_or_default();
    let size = reader
        .output_buffer_size()
        .ok_or("PNG too large for memory")?;
    let mut buf = vec![0u8; size];
    let out = reader.next_frame(&mut buf).map_err(bad)?;
    let line = out.line_size;
    let bits = depth as usize;
    let mut rgb = Vec::with_capacity(w * h * 3);
    for row in buf.chunks(line).take(h) {
        // Sample j of this row (bit depths below 8 are packed MSB first).
        let sample = |j: usize| -> u16 {
            match bits {
                16 => u16::from_be_bytes([row[2 * j], row[2 * j + 1]]),
                8 => row[j] as u16,
                b => {
                    let bit = j * b;
                    let byte = row[bit / 8];
                    ((byte >> (8 - b - bit % 8)) & ((1u8 << b) - 1)) as u16
                }
            }
        };
        // A 16-bit sample's high byte (Pillow's `;16B` rawmodes), an 8-bit one as is.
        let hi = |v: u16| if bits == 16 { (v >> 8) as u8 } else { v as u8 };
        match color {
            ColorType::Grayscale => {
                for x in 0..w {
                    let v = sample(x);
                    let g = match depth {
                        // `I;16` → RGB: Pillow's I16_RGB clips at 255.
                        BitDepth::Sixteen => v.min(255) as u8,
                        BitDepth::Eight => v as u8,
                        _ => (v as u32 * 255 / ((1u32 << bits) - 1)) as u8,
                    };
                    rgb.extend([g, g, g]);
                }
            }
            ColorType::GrayscaleAlpha => {
                for x in 0..w {
                    let g = hi(sample(2 * x));
                    rgb.extend([g, g, g]);
                }
            }
            ColorType::Rgb => {
                for x in 0..3 * w {
                    rgb.push(hi(sample(x)));
                }
            }
            ColorType::Rgba => {
                for x in 0..w {
                    for c in 0..3 {
                        rgb.push(hi(sample(4 * x + c)));
                    }
                }
            }
            ColorType::Indexed => {
                for x in 0..w {
                    let i = sample(x) as usize * 3;
                    // An index past the palette is black, as in Pillow's padded palette.
                    let c = palette.get(i..i + 3).unwrap_or(&[0, 0, 0]);
                    rgb.extend_from_slice(c);
                }
            }
        }
    }
    let mode = match (color, depth) {
        (ColorType::Grayscale, BitDepth::One) => "1",
        (ColorType::Grayscale, BitDepth::Sixteen) => "I;16",
        (ColorType::Grayscale, _) => "L",
        (ColorType::GrayscaleAlpha, BitDepth::Sixteen) => "RGBA",
        (ColorType::GrayscaleAlpha, _) => "LA",
        (ColorType::Rgb, _) => "RGB",
        (ColorType::Rgba, _) => "RGBA",
        (ColorType::Indexed, _) => "P",
    };
    if rgb.len() != w * h * 3 {
        return Err(format!(
            "truncated PNG ({} of {} rows)",
            rgb.len() / (3 * w.max(1)),
            h
        ));
    }
    Ok(Decoded {
        rgb: Rgb {
            width: w,
            height: h,
            data: rgb,
        },
        format: "PNG",
        mode,
        jpeg_as_is: false,
    })
}
