//! Decoding a clip with libavcodec (through ffmpeg-next) and turning the kept frames into
//! RGB crops with libswscale — the same two libraries, decoder and flags the `ffmpeg` CLI
//! uses, so our frames equal `ffmpeg -vf scale=W:H:flags=bilinear,crop=...` byte for byte
//! (tests/video_tokens.rs checks it).
//!
//! Why decode everything first: VP9 (and every inter codec) needs all frames up to the one
//! we want, and the frame count N that the sampling rule depends on is only known at the
//! end (container headers are not trusted for it). The
//! decoded frames of a 2–6 s SSv2 clip are a few MB, so they are kept (as reference-counted
//! decoder buffers) and only the sampled ones are converted and scaled. A clip whose frames
//! exceed a memory budget (a long video) is decoded twice instead: once to count, once
//! keeping only the sampled frames ([`Keep`]).
//!
//! Geometry (the rounding choices, written once here):
//! - resize so the short side is `short_side`; the long side is `round(long · short_side /
//!   short)` with halves rounded up, computed in integers (320×240 → 299×224);
//! - square frames: both sides `short_side`;
//! - center crop `crop`×`crop` at `x0 = floor((W' − crop) / 2)`, `y0 = floor((H' − crop) / 2)`
//!   (the `crop` filter's default `(in_w-out_w)/2` truncated the same way);
//! - conversion to RGB24 and resizing happen in one swscale call with `SWS_BILINEAR`, and the
//!   YUV→RGB matrix and range are taken from the frame as the `scale` filter does (colorspace
//!   BT.709/FCC/240M/BT.2020 when signalled, else BT.601; limited range unless the frame says
//!   full).
//!
//! Errors: every failure is a `String` naming what went wrong (the caller adds the file);
//! nothing here panics on bad input. libav* reports many problems only through its log
//! (a truncated webm ends in "File ended prematurely" and a clean EOF), so error-level log
//! lines emitted while a clip is decoded on this thread are collected and make the clip a
//! reject. Decoders run with one thread, so their log lines arrive on the calling thread.

use super::tubelets::Window;
use ff::ffi;
use ff::format::Pixel;
use ff::software::scaling;
use ffmpeg_next as ff;
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Once;

static INIT: Once = Once::new();

thread_local! {
    /// Error lines libav* logged on this thread while a capture is active.
    static CAPTURED: RefCell<Option<Vec<String>>> = const { RefCell::new(None) };
}

/// Initialises libav* once per process and routes its log through ours.
pub fn init() {
    INIT.call_once(|| {
        // ffmpeg-next's init only registers (a no-op on FFmpeg >= 4) and cannot fail here.
        let _ = ff::init();
        install_log_callback();
    });
}

#[cfg(target_arch = "x86_64")]
type VaList = *mut ffi::__va_list_tag;

/// The name av_log would print for `avcl` (the demuxer or codec: "matroska,webm", "vp9").
///
/// # Safety
/// `avcl` must be null or point to a struct whose first member is a `*const AVClass`.
#[cfg(target_arch = "x86_64")]
unsafe fn component_name(avcl: *mut std::os::raw::c_void) -> String {
    if avcl.is_null() {
        return String::new();
    }
    // SAFETY: per the function's contract.
    unsafe {
        let class = *(avcl as *const *const ffi::AVClass);
        if class.is_null() {
            return String::new();
        }
        let name = match (*class).item_name {
            Some(item_name) => item_name(avcl),
            None => (*class).class_name,
        };
        if name.is_null() {
            String::new()
        } else {
            std::ffi::CStr::from_ptr(name)
                .to_string_lossy()
                .into_owned()
        }
    }
}

#[cfg(target_arch = "x86_64")]
fn install_log_callback() {
    unsafe extern "C" fn callback(
        avcl: *mut std::os::raw::c_void,
        level: std::os::raw::c_int,
        fmt: *const std::os::raw::c_char,
        vl: VaList,
    ) {
        if level > ffi::AV_LOG_WARNING || fmt.is_null() {
            return;
        }
        let mut buf = [0 as std::os::raw::c_char; 1024];
        // No "[name @ 0xADDR]" prefix: addresses would make reject reasons differ per run.
        let mut prefix: std::os::raw::c_int = 0;
        // SAFETY: fmt/vl come from av_log; the buffer size is passed along.
        unsafe {
            ffi::av_log_format_line2(
                avcl,
                level,
                fmt,
                vl,
                buf.as_mut_ptr(),
                buf.len() as std::os::raw::c_int,
                &mut prefix,
            );
        }
        // SAFETY: av_log_format_line2 always NUL-terminates within the buffer.
        let msg = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }
            .to_string_lossy()
            .trim()
            .to_string();
        if msg.is_empty() {
            return;
        }
        // SAFETY: avcl is null or a struct whose first member is an AVClass pointer (av_log's contract).
        let name = unsafe { component_name(avcl) };
        let line = if name.is_empty() {
            msg
        } else {
            format!("{name}: {msg}")
        };
        let captured = level <= ffi::AV_LOG_ERROR
            && CAPTURED
                .try_with(|c| match c.try_borrow_mut() {
                    Ok(mut c) => match c.as_mut() {
                        Some(v) => {
                            if v.len() < 8 && !v.contains(&line) {
                                v.push(line.clone());
                            }
                            true
                        }
                        None => false,
                    },
                    Err(_) => false,
                })
                .unwrap_or(false);
        if !captured {
            tracing::debug!(target: "libav", "{line}");
        }
    }
    // SAFETY: installs a callback that never unwinds (no panicking operations inside).
    unsafe { ffi::av_log_set_callback(Some(callback)) };
}

/// Elsewhere libav*'s own logger stays; truncation is then caught only where the demuxer or
/// decoder returns an error code.
#[cfg(not(target_arch = "x86_64"))]
fn install_log_callback() {
    // SAFETY: setting the log level is always allowed.
    unsafe { ffi::av_log_set_level(ffi::AV_LOG_ERROR) };
}

/// Collects libav* error lines logged on this thread until dropped.
struct Capture;

impl Capture {
    fn start() -> Capture {
        CAPTURED.with(|c| *c.borrow_mut() = Some(Vec::new()));
        Capture
    }
    fn take(&self) -> Vec<String> {
        CAPTURED.with(|c| {
            c.borrow_mut()
                .as_mut()
                .map(std::mem::take)
                .unwrap_or_default()
        })
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = CAPTURED.try_with(|c| {
            if let Ok(mut c) = c.try_borrow_mut() {
                *c = None;
            }
        });
    }
}

/// A function handed every decoded frame in order (its index and the frame).
pub type Visit<'a> = &'a mut dyn FnMut(usize, &ff::frame::Video) -> Result<(), String>;

/// Which decoded frames to keep (all are decoded: inter frames depend on earlier ones).
pub enum Keep<'a> {
    /// Every frame, while their pixel buffers stay under this many bytes; past it none
    /// (the count is still exact), and the caller decodes again with `Only`.
    All { budget_bytes: usize },
    /// Only the frames with these indices.
    Only(&'a BTreeSet<usize>),
    /// None: each frame is handed to the function as it is decoded (the first error stops
    /// the decode and is returned).
    Each(Visit<'a>),
}

/// The decoded frames of a clip's best video stream, in output (= presentation) order.
pub struct Decoded {
    /// Frame index → frame, for the frames kept.
    pub frames: BTreeMap<usize, ff::frame::Video>,
    /// How many frames the stream decoded to.
    pub count: usize,
    /// `Keep::All` only: whether every frame fit in the budget (and so is in `frames`).
    pub complete: bool,
    pub codec: String,
}

fn with_log(msg: String, log: &[String]) -> String {
    if log.is_empty() {
        msg
    } else {
        format!("{msg} (libav: {})", log.join("; "))
    }
}

/// Decodes the best video stream of `path` (one decoder thread), keeping frames as `keep`
/// says. Errors name what went wrong (not the file: the caller knows it).
pub fn decode(path: &Path, keep: Keep) -> Result<Decoded, String> {
    init();
    match std::fs::metadata(path) {
        Ok(md) if md.len() == 0 => return Err("empty file (0 bytes)".into()),
        Ok(_) => {}
        Err(e) => return Err(format!("cannot read: {e}")),
    }
    let capture = Capture::start();
    let result = decode_inner(path, keep);
    let log = capture.take();
    match result {
        Err(e) => Err(with_log(e, &log)),
        Ok(_) if !log.is_empty() => Err(format!(
            "damaged video (truncated or corrupt): {}",
            log.join("; ")
        )),
        Ok(d) if d.count == 0 => Err(format!("no frames could be decoded ({})", d.codec)),
        Ok(d) => Ok(d),
    }
}

/// Every frame of `path`, however many (tests and tools; the stage uses [`decode`]).
pub fn decode_all(path: &Path) -> Result<Vec<ff::frame::Video>, String> {
    let d = decode(
        path,
        Keep::All {
            budget_bytes: usize::MAX,
        },
    )?;
    Ok(d.frames.into_values().collect())
}

/// Bytes held by a decoded frame's planes.
fn frame_bytes(f: &ff::frame::Video) -> usize {
    (0..f.planes())
        .map(|i| f.stride(i) * f.plane_height(i) as usize)
        .sum()
}

struct Sink<'a> {
    keep: Keep<'a>,
    frames: BTreeMap<usize, ff::frame::Video>,
    count: usize,
    bytes: usize,
    complete: bool,
}

impl Sink<'_> {
    fn push(&mut self, frame: ff::frame::Video) -> Result<(), String> {
        let i = self.count;
        self.count += 1;
        match &mut self.keep {
            Keep::All { budget_bytes } => {
                if !self.complete {
                    return Ok(());
                }
                self.bytes = self.bytes.saturating_add(frame_bytes(&frame));
                if self.bytes > *budget_bytes {
                    self.complete = false;
                    self.frames.clear();
                } else {
                    self.frames.insert(i, frame);
                }
            }
            Keep::Only(wanted) => {
                if wanted.contains(&i) {
                    self.frames.insert(i, frame);
                }
            }
            Keep::Each(visit) => visit(i, &frame)?,
        }
        Ok(())
    }
}

fn decode_inner(path: &Path, keep: Keep) -> Result<Decoded, String> {
    let mut ictx =
        ff::format::input(path).map_err(|e| format!("not a readable video container: {e}"))?;
    let (index, params) = {
        let stream = ictx
            .streams()
            .best(ff::media::Type::Video)
            .ok_or_else(|| "no video stream in the file".to_string())?;
        (stream.index(), stream.parameters())
    };
    let mut ctx = ff::codec::context::Context::from_parameters(params)
        .map_err(|e| format!("cannot set up the decoder: {e}"))?;
    ctx.set_threading(ff::codec::threading::Config {
        kind: ff::codec::threading::Type::None,
        count: 1,
        ..Default::default()
    });
    let codec_id = ctx.id();
    let codec = format!("{codec_id:?}").to_lowercase();
    let mut decoder = ctx
        .decoder()
        .video()
        .map_err(|e| format!("no decoder for codec {codec}: {e}"))?;
    let mut sink = Sink {
        keep,
        frames: BTreeMap::new(),
        count: 0,
        bytes: 0,
        complete: true,
    };
    let mut packet = ff::Packet::empty();
    let mut packets = 0usize;
    loop {
        match packet.read(&mut ictx) {
            Ok(()) => {}
            Err(ff::Error::Eof) => break,
            Err(e) => {
                return Err(format!(
                    "demuxing failed after {packets} video packets: {e}"
                ))
            }
        }
        if packet.stream() != index {
            continue;
        }
        packets += 1;
        decoder
            .send_packet(&packet)
            .map_err(|e| format!("corrupt video packet {packets}: {e}"))?;
        drain(&mut decoder, &mut sink)?;
    }
    decoder
        .send_eof()
        .map_err(|e| format!("decoder flush failed: {e}"))?;
    drain(&mut decoder, &mut sink)?;
    Ok(Decoded {
        frames: sink.frames,
        count: sink.count,
        complete: sink.complete,
        codec,
    })
}

fn drain(decoder: &mut ff::decoder::Video, sink: &mut Sink) -> Result<(), String> {
    loop {
        let mut frame = ff::frame::Video::empty();
        match decoder.receive_frame(&mut frame) {
            Ok(()) => sink.push(frame)?,
            Err(ff::Error::Eof) => return Ok(()),
            Err(ff::Error::Other { errno }) if errno == ffi::EAGAIN => return Ok(()),
            Err(e) => return Err(format!("decoding frame {} failed: {e}", sink.count)),
        }
    }
}

/// The size a `w`×`h` frame is resized to so that its short side is `short` (see the
/// module doc for the rounding).
pub fn scaled_size(w: u32, h: u32, short: u32) -> (u32, u32) {
    let (w64, h64, s) = (w as u64, h as u64, short as u64);
    if w == h {
        (short, short)
    } else if w > h {
        (((2 * w64 * s + h64) / (2 * h64)) as u32, short)
    } else {
        (short, ((2 * h64 * s + w64) / (2 * w64)) as u32)
    }
}

/// Where the center crop starts in a `sw`×`sh` resized frame.
pub fn crop_origin(sw: u32, sh: u32, crop: u32) -> (u32, u32) {
    ((sw - crop) / 2, (sh - crop) / 2)
}

/// Converts decoded frames to RGB24, resized so that the short side is `short_side` (0: the
/// frame's own size), with one swscale call as the CLI's `scale` filter does. Keeps one
/// swscale context per input geometry (a stream may change size mid-clip).
pub struct Resizer {
    short_side: u32,
    scaler: Option<(Pixel, u32, u32, scaling::Context)>,
    out: ff::frame::Video,
}

impl Resizer {
    pub fn new(short_side: u32) -> Self {
        Resizer {
            short_side,
            scaler: None,
            out: ff::frame::Video::empty(),
        }
    }

    /// The RGB24 frame (its rows may be padded: read it through `stride(0)`).
    pub fn scale(&mut self, frame: &ff::frame::Video) -> Result<&ff::frame::Video, String> {
        let (fmt, w, h) = (frame.format(), frame.width(), frame.height());
        if w == 0 || h == 0 || fmt == Pixel::None {
            return Err(format!("decoder returned an empty frame ({w}x{h})"));
        }
        let (sw, sh) = match self.short_side {
            0 => (w, h),
            s => scaled_size(w, h, s),
        };
        let stale =
            !matches!(&self.scaler, Some((f, w0, h0, _)) if *f == fmt && *w0 == w && *h0 == h);
        if stale {
            let ctx =
                scaling::Context::get(fmt, w, h, Pixel::RGB24, sw, sh, scaling::Flags::BILINEAR)
                    .map_err(|e| {
                        format!("swscale cannot convert {fmt:?} {w}x{h} to RGB24 {sw}x{sh}: {e}")
                    })?;
            self.scaler = Some((fmt, w, h, ctx));
            self.out = ff::frame::Video::empty();
        }
        let Some((_, _, _, ctx)) = self.scaler.as_mut() else {
            return Err("internal: no scaler".into());
        };
        set_colorspace_like_vf_scale(ctx, frame);
        ctx.run(frame, &mut self.out)
            .map_err(|e| format!("swscale failed: {e}"))?;
        Ok(&self.out)
    }
}

/// Resizes decoded frames to RGB24 (short side `short_side`) and hands out the center
/// `crop`×`crop` window of the result.
pub struct Cropper {
    resizer: Resizer,
    crop: u32,
}

impl Cropper {
    pub fn new(short_side: u32, crop: u32) -> Self {
        Cropper {
            resizer: Resizer::new(short_side),
            crop,
        }
    }

    /// Resizes `frame` (to RGB24); the center crop is the returned window.
    pub fn scale(&mut self, frame: &ff::frame::Video) -> Result<Window<'_>, String> {
        let crop = self.crop;
        let out = self.resizer.scale(frame)?;
        let (x0, y0) = crop_origin(out.width(), out.height(), crop);
        let window = Window {
            data: out.data(0),
            stride: out.stride(0),
            x0: x0 as usize,
            y0: y0 as usize,
        };
        if !window.fits(crop as usize) {
            return Err("internal: crop outside the scaled frame".into());
        }
        Ok(window)
    }
}

/// What libavfilter's `scale` does per frame before `sws_scale` (its `in_color_matrix` is
/// "auto"): the YUV→RGB coefficients from the frame's colorspace (BT.601 when unspecified or
/// unknown) and the input range from the frame's `color_range` when it says one.
fn set_colorspace_like_vf_scale(ctx: &mut scaling::Context, frame: &ff::frame::Video) {
    // SAFETY: ctx and frame are valid; sws_{get,set}ColorspaceDetails only read/write the
    // context's colour tables; the coefficient table is a static from libswscale.
    unsafe {
        let f = &*frame.as_ptr();
        let mut colorspace = f.colorspace as std::os::raw::c_int;
        if !(1..=10).contains(&colorspace)
            || colorspace == ffi::AVColorSpace::AVCOL_SPC_YCGCO as i32
        {
            colorspace = ffi::AVColorSpace::AVCOL_SPC_BT470BG as i32;
        }
        let s = ctx.as_mut_ptr();
        let mut inv_table: *mut std::os::raw::c_int = std::ptr::null_mut();
        let mut table: *mut std::os::raw::c_int = std::ptr::null_mut();
        let (mut src_range, mut dst_range, mut brightness, mut contrast, mut saturation) =
            (0, 0, 0, 0, 0);
        if ffi::sws_getColorspaceDetails(
            s,
            &mut inv_table,
            &mut src_range,
            &mut table,
            &mut dst_range,
            &mut brightness,
            &mut contrast,
            &mut saturation,
        ) < 0
        {
            // RGB input: no YUV details to set.
            return;
        }
        let coefs = ffi::sws_getCoefficients(colorspace);
        match f.color_range {
            ffi::AVColorRange::AVCOL_RANGE_JPEG => src_range = 1,
            ffi::AVColorRange::AVCOL_RANGE_MPEG => src_range = 0,
            _ => {}
        }
        ffi::sws_setColorspaceDetails(
            s, coefs, src_range, coefs, dst_range, brightness, contrast, saturation,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_side_resize_rounds_half_up() {
        assert_eq!(scaled_size(320, 240, 224), (299, 224)); // 298.67
        assert_eq!(scaled_size(427, 240, 224), (399, 224)); // 398.53
        assert_eq!(scaled_size(240, 320, 224), (224, 299));
        assert_eq!(scaled_size(241, 177, 112), (152, 112)); // 152.49
        assert_eq!(scaled_size(3, 2, 1), (2, 1)); // 1.5 → 2
        assert_eq!(scaled_size(100, 100, 64), (64, 64));
        assert_eq!(crop_origin(299, 224, 224), (37, 0));
        assert_eq!(crop_origin(152, 112, 96), (28, 8));
    }

    #[test]
    fn over_budget_clips_count_exactly_and_a_second_pass_keeps_the_wanted_frames() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.webm");
        let rgb = super::super::demo::synth_clip(super::super::demo::Motion::Up, 66, 50, 9, 1);
        super::super::demo::write_webm(&path, 66, 50, 12, &rgb, None).unwrap();
        let all = decode_all(&path).unwrap();
        assert_eq!(all.len(), 9);
        let first = decode(
            &path,
            Keep::All {
                budget_bytes: 20_000,
            },
        )
        .unwrap();
        assert_eq!(
            (first.count, first.complete, first.frames.len()),
            (9, false, 0)
        );
        let wanted: BTreeSet<usize> = [0, 4, 8].into();
        let again = decode(&path, Keep::Only(&wanted)).unwrap();
        assert_eq!(again.count, 9);
        assert_eq!(
            again.frames.keys().copied().collect::<Vec<_>>(),
            vec![0, 4, 8]
        );
        let mut cropper = Cropper::new(50, 48);
        for (i, f) in &again.frames {
            let a = cropper.scale(f).unwrap();
            let a = (a.data.to_vec(), a.stride);
            let b = cropper.scale(&all[*i]).unwrap();
            assert_eq!(a, (b.data.to_vec(), b.stride), "frame {i}");
        }
    }

    #[test]
    fn missing_empty_and_text_files_are_errors_not_panics() {
        let dir = tempfile::tempdir().unwrap();
        let e = decode_all(&dir.path().join("nope.webm")).err().unwrap();
        assert!(e.contains("cannot read"), "{e}");
        let z = dir.path().join("z.webm");
        std::fs::write(&z, b"").unwrap();
        assert_eq!(decode_all(&z).err().unwrap(), "empty file (0 bytes)");
        let t = dir.path().join("t.webm");
        std::fs::write(&t, "this is not a video, just some text\n".repeat(20)).unwrap();
        let e = decode_all(&t).err().unwrap();
        assert!(!e.is_empty(), "{e}");
    }
}
