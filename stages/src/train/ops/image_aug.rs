//! DeiT's training view of one image, in the order timm builds it
//! (`timm.data.create_transform(is_training=True)` as DeiT's `build_transform` calls it):
//!
//! 1. `RandomResizedCropAndInterpolation`: a box of area `U(scale)` and log-uniform aspect
//!    `ratio` (10 attempts, then the centred fallback; [`resized_crop::draw_box`]), cut from
//!    the decoded 8-bit image and resized to `S × S` with Pillow's bicubic
//!    ([`crate::images::resize::resize_bicubic`], the resampler the evaluation view is
//!    checked with against Pillow);
//! 2. `RandomHorizontalFlip(0.5)` on the 8-bit crop;
//! 3. RandAugment (`rand-m9-mstd0.5-inc1`) on the 8-bit crop, as PIL ops;
//! 4. `ToTensor` + `Normalize` (ImageNet mean and std);
//! 5. `RandomErasing(reprob, mode='pixel')` on the normalized values.
//!
//! The video recipe differs on purpose (VideoMAE's ssv2.py runs RandAugment on whole frames,
//! then crops bilinearly in normalized values: `video_aug::augment_train_clip`). Every
//! random draw comes from the `rng` passed in, in the order above.

use super::video_aug::clip::normalize_value;
use super::video_aug::erasing::{random_erase, EraseSpec};
use super::video_aug::rand_augment::rand_augment_image;
use super::video_aug::resized_crop::{draw_box, CropBox};
use super::video_aug::{TrainAugment, IMAGENET_MEAN, IMAGENET_STD};
use crate::images::decode::{check_pixels, decode, sniff, Rgb};
use crate::images::region::{decode_region, jpeg_size};
use crate::images::resize::{resize_window, RgbWindow};
use rand::RngExt;
use rand_chacha::ChaCha8Rng;

/// Mirrors an 8-bit RGB image of width `w` left to right, in place.
pub fn hflip_u8(data: &mut [u8], w: usize) {
    if w == 0 {
        return;
    }
    for row in data.chunks_mut(w * 3) {
        let n = row.len() / 3;
        // Reversing the row's bytes reverses the pixels and each pixel's channels; putting
        // the channels back is a second pass. Faster than swapping pixel by pixel, same bytes.
        let px = &mut row[..n * 3];
        px.reverse();
        for p in px.chunks_exact_mut(3) {
            p.swap(0, 2);
        }
    }
}

/// `ToTensor` + `Normalize` by table: the 3 × 256 values `clip::normalize_value` gives, looked
/// up (the same f32s, without a division per byte), built once per process.
fn normalize_by_table(data: &[u8]) -> Vec<f32> {
    static LUT: std::sync::OnceLock<[[f32; 256]; 3]> = std::sync::OnceLock::new();
    let lut = LUT.get_or_init(|| {
        let mut lut = [[0f32; 256]; 3];
        for (c, t) in lut.iter_mut().enumerate() {
            for (v, x) in t.iter_mut().enumerate() {
                *x = normalize_value(v as u8, IMAGENET_MEAN[c], IMAGENET_STD[c]);
            }
        }
        lut
    });
    // Written once, not zeroed first (a second pass over 600 kB per view); `extend` per pixel,
    // tried, profiled slower than the zeroing it saved.
    let mut out: Vec<f32> = Vec::with_capacity(data.len());
    let whole = data.len() / 3 * 3;
    for (o, p) in out
        .spare_capacity_mut()
        .chunks_exact_mut(3)
        .zip(data.chunks_exact(3))
    {
        o[0].write(lut[0][p[0] as usize]);
        o[1].write(lut[1][p[1] as usize]);
        o[2].write(lut[2][p[2] as usize]);
    }
    // SAFETY: the loop above wrote the first `whole` values (capacity is `data.len()`).
    unsafe { out.set_len(whole) };
    out.resize(data.len(), 0.0);
    out
}

/// The training view of `img` (8-bit RGB, any size), normalized f32 `[S, S, 3]` with
/// `S = spec.crop`; `hflip` is the flip probability. An empty image gives a black crop.
pub fn deit_train_view(
    img: &Rgb,
    spec: &TrainAugment,
    hflip: f64,
    rng: &mut ChaCha8Rng,
) -> Vec<f32> {
    let b = draw_box(img.height, img.width, spec.scale, spec.ratio, rng);
    view_of_crop(box_of(img, b), spec, hflip, rng)
}

/// The training view of an image file's bytes: [`deit_train_view`] of its decoded pixels,
/// the same bytes for the same `rng`, but a JPEG is decoded only inside the crop's box (the
/// box needs only the size, which the header gives; `images::region`). A file this cannot
/// decode is an error saying why.
pub fn deit_train_view_file(
    bytes: &[u8],
    max_pixels: u64,
    spec: &TrainAugment,
    hflip: f64,
    rng: &mut ChaCha8Rng,
) -> Result<Vec<f32>, String> {
    if sniff(bytes)? != "JPEG" {
        let img = decode(bytes, max_pixels)?;
        return Ok(deit_train_view(&img.rgb, spec, hflip, rng));
    }
    let size = jpeg_size(bytes)?;
    check_pixels(size.width, size.height, max_pixels)?;
    let b = draw_box(size.height, size.width, spec.scale, spec.ratio, rng);
    let (y, x) = (b.y.min(size.height), b.x.min(size.width));
    let (h, w) = (b.h.min(size.height - y), b.w.min(size.width - x));
    if let Some(region) = decode_region(bytes, size.width, x, y, w, h)? {
        return Ok(view_of_crop(Some(region.window()), spec, hflip, rng));
    }
    // CMYK files, empty boxes: the whole image, then the same box.
    let img = decode(bytes, max_pixels)?.rgb;
    Ok(view_of_crop(box_of(&img, b), spec, hflip, rng))
}

/// The box, clamped to `img`, as a window on it (no copy); None for a malformed image (data
/// not `H·W·3` bytes), whose crop reads as black, as `Clip::new` + `crop` made it.
fn box_of(img: &Rgb, b: CropBox) -> Option<RgbWindow<'_>> {
    let (y, x) = (b.y.min(img.height), b.x.min(img.width));
    let (h, w) = (b.h.min(img.height - y), b.w.min(img.width - x));
    RgbWindow::of_box(img, y, x, h, w)
}

/// Everything after the crop's box is placed, in timm's order: Pillow's bicubic to S × S
/// (black for an empty or unreadable crop), flip, RandAugment, normalize, erasing.
fn view_of_crop(
    crop: Option<RgbWindow<'_>>,
    spec: &TrainAugment,
    hflip: f64,
    rng: &mut ChaCha8Rng,
) -> Vec<f32> {
    let side = spec.crop;
    let mut view = match crop {
        Some(c) if c.width > 0 && c.height > 0 => resize_window(c, side, side).data,
        _ => vec![0; side * side * 3],
    };
    if rng.random::<f64>() < hflip {
        hflip_u8(&mut view, side);
    }
    if let Some(ra) = &spec.rand_augment {
        rand_augment_image(&mut view, side, side, ra, spec.interpolation, rng);
    }
    let mut out = normalize_by_table(&view);
    if spec.erase_prob > 0.0 {
        let es = EraseSpec::ssv2(spec.erase_prob, spec.erase_count);
        random_erase(&mut out, 1, side, side, &es, rng);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::video_aug::clip::{crop, normalize};
    use super::super::video_aug::rand_augment::rand_augment_clip;
    use super::super::video_aug::Clip;
    use super::*;
    use crate::images::resize::resize_bicubic;
    use rand::SeedableRng;

    /// The view as it was computed before the copy-free cut and the normalization table
    /// (whole image into a `Clip`, `clip::crop`, `clip::normalize`): the outputs must be the
    /// same bytes, so the image task's code_version stays.
    fn view_before(img: &Rgb, spec: &TrainAugment, hflip: f64, rng: &mut ChaCha8Rng) -> Vec<f32> {
        let side = spec.crop;
        let clip = Clip::new(1, img.height, img.width, img.data.clone())
            .unwrap_or_else(|_| Clip::zeros(1, img.height, img.width));
        let b = draw_box(img.height, img.width, spec.scale, spec.ratio, rng);
        let cut = crop(&clip, b.y, b.x, b.h, b.w);
        let mut view = if cut.height == 0 || cut.width == 0 {
            vec![0; side * side * 3]
        } else {
            let cut = Rgb {
                width: cut.width,
                height: cut.height,
                data: cut.data,
            };
            resize_bicubic(&cut, side, side).data
        };
        if rng.random::<f64>() < hflip {
            hflip_u8(&mut view, side);
        }
        let mut clip = Clip::new(1, side, side, view).unwrap();
        if let Some(ra) = &spec.rand_augment {
            clip = rand_augment_clip(&clip, ra, spec.interpolation, rng);
        }
        let mut out = normalize(&clip, IMAGENET_MEAN, IMAGENET_STD);
        if spec.erase_prob > 0.0 {
            let es = EraseSpec::ssv2(spec.erase_prob, spec.erase_count);
            random_erase(&mut out, 1, side, side, &es, rng);
        }
        out
    }

    /// DeiT's training augment (RandAugment on) at a small crop, both ratios of timm's range.
    fn deit_spec(crop: usize) -> TrainAugment {
        TrainAugment {
            crop,
            ratio: [0.75, 4.0 / 3.0],
            rand_augment: super::super::video_aug::RandAugmentSpec::parse("rand-m9-mstd0.5-inc1")
                .ok(),
            ..TrainAugment::default()
        }
    }

    #[test]
    fn the_view_is_the_same_bytes_as_before_the_speedup() {
        use super::super::video_aug::TrainInterpolation;
        let mut broken = gradient(30, 20);
        broken.data.truncate(100);
        let images = [gradient(97, 61), gradient(13, 200), gradient(1, 1), broken];
        for (img, interpolation) in images.iter().flat_map(|i| {
            [
                TrainInterpolation::Bicubic,
                TrainInterpolation::Random,
                TrainInterpolation::Bilinear,
            ]
            .map(|t| (i, t))
        }) {
            let spec = TrainAugment {
                interpolation,
                ..deit_spec(40)
            };
            let img = img.clone();
            for seed in 0..40 {
                let a = deit_train_view(&img, &spec, 0.5, &mut ChaCha8Rng::seed_from_u64(seed));
                let b = view_before(&img, &spec, 0.5, &mut ChaCha8Rng::seed_from_u64(seed));
                let (a, b): (Vec<u32>, Vec<u32>) = (
                    a.iter().map(|x| x.to_bits()).collect(),
                    b.iter().map(|x| x.to_bits()).collect(),
                );
                assert_eq!(a, b, "{}x{} seed {seed}", img.width, img.height);
            }
        }
    }

    /// The view from a file's bytes (a JPEG decoded only inside the box) is the view of the
    /// whole decoded image, bit for bit: colour 4:2:0, gray, CMYK (decoded whole) and PNG.
    #[test]
    fn the_view_from_the_file_is_the_view_of_the_decoded_image() {
        use crate::images::turbo::Encoder;
        let spec = deit_spec(48);
        let mut enc = Encoder::new().unwrap();
        let mut files = Vec::new();
        for (w, h, ch) in [(301, 203, 3), (64, 97, 1), (40, 30, 4), (17, 9, 3)] {
            let g = gradient(w, h);
            let px: Vec<u8> = match ch {
                1 => g.data.chunks(3).map(|p| p[0] ^ p[2]).collect(),
                4 => g
                    .data
                    .chunks(3)
                    .flat_map(|p| [p[0], p[1], p[2], p[0] / 2])
                    .collect(),
                _ => g
                    .data
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| v ^ (i as u8 * 7))
                    .collect(),
            };
            files.push(enc.encode(&px, w, h, ch, 90).unwrap());
        }
        let mut png = Vec::new();
        {
            let mut e = png::Encoder::new(&mut png, 23, 19);
            e.set_color(png::ColorType::Rgb);
            let mut wr = e.write_header().unwrap();
            wr.write_image_data(&gradient(23, 19).data).unwrap();
        }
        files.push(png);
        for f in &files {
            let img = decode(f, 1 << 28).unwrap().rgb;
            for seed in 0..30 {
                let a = deit_train_view_file(
                    f,
                    1 << 28,
                    &spec,
                    0.5,
                    &mut ChaCha8Rng::seed_from_u64(seed),
                )
                .unwrap();
                let b = deit_train_view(&img, &spec, 0.5, &mut ChaCha8Rng::seed_from_u64(seed));
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert!(
                    bits(&a) == bits(&b),
                    "{}x{} seed {seed}",
                    img.width,
                    img.height
                );
            }
        }
        let e = deit_train_view_file(
            b"GIF89a....",
            1 << 28,
            &spec,
            0.5,
            &mut ChaCha8Rng::seed_from_u64(0),
        );
        assert!(e.unwrap_err().contains("GIF"));
        let e = deit_train_view_file(
            &files[0],
            100,
            &spec,
            0.5,
            &mut ChaCha8Rng::seed_from_u64(0),
        );
        assert!(e.unwrap_err().contains("max_pixels"));
    }

    fn gradient(w: usize, h: usize) -> Rgb {
        let mut data = Vec::with_capacity(w * h * 3);
        for y in 0..h {
            for x in 0..w {
                data.extend([
                    (x * 255 / w) as u8,
                    (y * 255 / h) as u8,
                    ((x + y) % 256) as u8,
                ]);
            }
        }
        Rgb {
            width: w,
            height: h,
            data,
        }
    }

    /// With RandAugment and erasing off, the view is exactly: the drawn box cut from the
    /// 8-bit image, Pillow's bicubic to S × S, flipped when the next draw says so, then
    /// normalized; the crop is resized before anything else touches the pixels (timm's order).
    #[test]
    fn crop_is_bicubic_on_the_8_bit_image_before_the_rest() {
        let img = gradient(97, 61);
        let spec = TrainAugment {
            rand_augment: None,
            erase_prob: 0.0,
            crop: 32,
            ratio: [0.75, 4.0 / 3.0],
            ..TrainAugment::default()
        };
        for seed in 0..20 {
            let got = deit_train_view(&img, &spec, 0.5, &mut ChaCha8Rng::seed_from_u64(seed));
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let b = draw_box(61, 97, spec.scale, spec.ratio, &mut rng);
            let clip = Clip::new(1, 61, 97, img.data.clone()).unwrap();
            let cut = crop(&clip, b.y, b.x, b.h, b.w);
            let cut = Rgb {
                width: cut.width,
                height: cut.height,
                data: cut.data,
            };
            let mut want = resize_bicubic(&cut, 32, 32).data;
            if rng.random::<f64>() < 0.5 {
                hflip_u8(&mut want, 32);
            }
            let want = normalize(
                &Clip::new(1, 32, 32, want).unwrap(),
                IMAGENET_MEAN,
                IMAGENET_STD,
            );
            assert_eq!(got, want, "seed {seed}");
        }
    }

    #[test]
    fn flip_mirrors_rows() {
        let mut d = vec![1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4, 5, 5, 5, 6, 6, 6];
        hflip_u8(&mut d, 3);
        assert_eq!(
            d,
            vec![3, 3, 3, 2, 2, 2, 1, 1, 1, 6, 6, 6, 5, 5, 5, 4, 4, 4]
        );
    }

    /// The full recipe (RandAugment m9, erasing 0.25) gives finite values of the right size,
    /// the same for the same seed, for odd sizes and a one-pixel image.
    #[test]
    fn full_recipe_is_deterministic_and_sized() {
        let spec = TrainAugment {
            crop: 24,
            ratio: [0.75, 4.0 / 3.0],
            rand_augment: super::super::video_aug::RandAugmentSpec::parse("rand-m9-mstd0.5-inc1")
                .ok(),
            ..TrainAugment::default()
        };
        for (w, h) in [(50, 40), (1, 1), (13, 200)] {
            let img = gradient(w, h);
            let a = deit_train_view(&img, &spec, 0.5, &mut ChaCha8Rng::seed_from_u64(3));
            let b = deit_train_view(&img, &spec, 0.5, &mut ChaCha8Rng::seed_from_u64(3));
            assert_eq!(a.len(), 24 * 24 * 3);
            assert!(a.iter().all(|v| v.is_finite()));
            assert_eq!(a, b);
        }
    }
}
