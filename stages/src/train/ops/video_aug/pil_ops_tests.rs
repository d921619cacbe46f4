//! Each RandAugment op on small hand-made frames against values worked out by hand from
//! Pillow's definitions.

use super::pil_ops::*;

/// A frame of grey pixels (r = g = b) from a list of values.
fn grey(vals: &[u8]) -> Vec<u8> {
    vals.iter().flat_map(|&v| [v, v, v]).collect()
}

fn red(f: &[u8]) -> Vec<u8> {
    f.chunks(3).map(|p| p[0]).collect()
}

#[test]
fn invert_flips_bytes() {
    let mut f = vec![0, 10, 255, 128, 1, 254];
    invert(&mut f);
    assert_eq!(f, vec![255, 245, 0, 127, 254, 1]);
}

#[test]
fn posterize_keeps_the_high_bits() {
    let mut f = grey(&[200, 63, 64, 255]);
    posterize(&mut f, 2);
    assert_eq!(red(&f), vec![192, 0, 64, 192]);
    let mut f = grey(&[200, 63, 64, 255]);
    posterize(&mut f, 0);
    assert_eq!(red(&f), vec![0, 0, 0, 0]);
    let mut f = grey(&[200, 63]);
    posterize(&mut f, 8);
    assert_eq!(red(&f), vec![200, 63]);
}

#[test]
fn solarize_inverts_from_the_threshold() {
    let mut f = grey(&[127, 128, 200, 0]);
    solarize(&mut f, 128);
    assert_eq!(red(&f), vec![127, 127, 55, 0]);
    let mut f = grey(&[255, 0]);
    solarize(&mut f, 256);
    assert_eq!(red(&f), vec![255, 0]);
    let mut f = grey(&[255, 0]);
    solarize(&mut f, 0);
    assert_eq!(red(&f), vec![0, 255]);
}

#[test]
fn solarize_add_adds_below_128_with_saturation() {
    let mut f = grey(&[100, 127, 128, 250]);
    solarize_add(&mut f, 50, 128);
    assert_eq!(red(&f), vec![150, 177, 128, 250]);
    let mut f = grey(&[100]);
    solarize_add(&mut f, 200, 128);
    assert_eq!(red(&f), vec![255]);
}

#[test]
fn autocontrast_stretches_each_channel() {
    // Red 50, 100, 150: scale 2.55, offset −127.5 → 0, int(127.5) = 127, 255.
    // Green constant 9: left as is. Blue 0..255 already: identity.
    let mut f = vec![50, 9, 0, 100, 9, 128, 150, 9, 255];
    autocontrast(&mut f);
    assert_eq!(f, vec![0, 9, 0, 127, 9, 128, 255, 9, 255]);
}

#[test]
fn equalize_on_known_histograms() {
    // 300 × 5, 210 × 9, 100 × 200: step = (610 − 100) div 255 = 2, n starts at 1:
    // 5 → 1 div 2 = 0; 9 → 301 div 2 = 150; 200 → 511 div 2 = 255.
    let mut vals = vec![5u8; 300];
    vals.extend(std::iter::repeat_n(9u8, 210));
    vals.extend(std::iter::repeat_n(200u8, 100));
    let mut f = grey(&vals);
    equalize(&mut f);
    let r = red(&f);
    assert_eq!((r[0], r[300], r[600]), (0, 150, 255));
    // A zero step (fewer than 255 pixels below the top value) leaves the frame alone.
    let mut f = grey(&[3, 3, 7, 7, 200]);
    equalize(&mut f);
    assert_eq!(red(&f), vec![3, 3, 7, 7, 200]);
    // One value: left alone.
    let mut f = grey(&[42; 600]);
    equalize(&mut f);
    assert!(f.iter().all(|&v| v == 42));
}

#[test]
fn luma_is_pillows_fixed_point() {
    // (255·19595 + 0x8000) >> 16 = 76; white stays 255; grey stays grey.
    assert_eq!(luma(255, 0, 0), 76);
    assert_eq!(luma(0, 255, 0), 150);
    assert_eq!(luma(0, 0, 255), 29);
    assert_eq!(luma(255, 255, 255), 255);
    assert_eq!(luma(77, 77, 77), 77);
}

#[test]
fn brightness_zero_is_black_and_half_truncates() {
    let mut f = vec![201, 3, 255];
    brightness(&mut f, 0.0);
    assert_eq!(f, vec![0, 0, 0]);
    let mut f = vec![201, 3, 255];
    brightness(&mut f, 0.5);
    assert_eq!(f, vec![100, 1, 127]);
    let mut f = vec![201, 3, 100];
    brightness(&mut f, 1.5);
    assert_eq!(f, vec![255, 4, 150]);
}

#[test]
fn contrast_blends_with_the_rounded_mean_of_l() {
    // L values 0 and 255: mean 127.5 → int(128.0) = 128.
    let f0 = vec![0, 0, 0, 255, 255, 255];
    let mut f = f0.clone();
    contrast(&mut f, 0.0);
    assert_eq!(f, vec![128; 6]);
    let mut f = f0.clone();
    contrast(&mut f, 0.5);
    // 128 + 0.5·(0 − 128) = 64; 128 + 0.5·127 = 191.5 → 191.
    assert_eq!(f, vec![64, 64, 64, 191, 191, 191]);
    let mut f = f0;
    contrast(&mut f, 2.0);
    assert_eq!(f, vec![0, 0, 0, 255, 255, 255]);
}

#[test]
fn color_zero_is_the_grey_image() {
    let mut f = vec![255, 0, 0, 0, 255, 0];
    color(&mut f, 0.0);
    assert_eq!(f, vec![76, 76, 76, 150, 150, 150]);
    let mut f = vec![255, 0, 0];
    color(&mut f, 1.0);
    assert_eq!(f, vec![255, 0, 0]);
}

#[test]
fn sharpness_smooths_the_inside_and_keeps_the_border() {
    // 3×3 black with a 130 centre: smooth gives 0.5 + 130·5/13 = 50.5 → 50 at the centre.
    let mut vals = [0u8; 9];
    vals[4] = 130;
    let src = grey(&vals);
    let s = smooth(&src, 3, 3);
    assert_eq!(red(&s), vec![0, 0, 0, 0, 50, 0, 0, 0, 0]);
    let mut f = src.clone();
    sharpness(&mut f, 3, 3, 0.0);
    assert_eq!(red(&f)[4], 50);
    // Factor 2 extrapolates away from the blur: 50 + 2·(130 − 50) = 210; borders stay.
    let mut f = src.clone();
    sharpness(&mut f, 3, 3, 2.0);
    assert_eq!(red(&f), vec![0, 0, 0, 0, 210, 0, 0, 0, 0]);
    // Under 3×3: nothing to filter.
    let mut f = grey(&[1, 200]);
    sharpness(&mut f, 2, 1, 0.0);
    assert_eq!(red(&f), vec![1, 200]);
}

/// A `w` × `h` frame whose pixel (x, y) has red `10y + x`, green `x`, blue `y`.
fn coords(w: usize, h: usize) -> Vec<u8> {
    (0..h)
        .flat_map(|y| (0..w).flat_map(move |x| [(10 * y + x) as u8, x as u8, y as u8]))
        .collect()
}

fn px(f: &[u8], w: usize, x: usize, y: usize) -> [u8; 3] {
    let i = (y * w + x) * 3;
    [f[i], f[i + 1], f[i + 2]]
}

#[test]
fn rotating_by_quarter_turns_is_exact() {
    let n = 5;
    let src = coords(n, n);
    for interp in [Interp::Bilinear, Interp::Bicubic] {
        // Counter-clockwise 90°: out(x, y) = in(n−1−y, x).
        let r = rotate(&src, n, n, 90.0, interp, [1, 2, 3]);
        let r180 = rotate(&src, n, n, 180.0, interp, [1, 2, 3]);
        let r270 = rotate(&src, n, n, -90.0, interp, [1, 2, 3]);
        for y in 0..n {
            for x in 0..n {
                assert_eq!(px(&r, n, x, y), px(&src, n, n - 1 - y, x));
                assert_eq!(px(&r180, n, x, y), px(&src, n, n - 1 - x, n - 1 - y));
                assert_eq!(px(&r270, n, x, y), px(&src, n, y, n - 1 - x));
            }
        }
        assert_eq!(rotate(&src, n, n, 360.0, interp, [0; 3]), src);
    }
}

#[test]
fn rotation_fills_the_corners() {
    let (w, h) = (20, 12);
    let src = vec![200u8; w * h * 3];
    let r = rotate(&src, w, h, 30.0, Interp::Bicubic, [128, 128, 128]);
    assert_eq!(px(&r, w, 0, 0), [128; 3]);
    assert_eq!(px(&r, w, w - 1, h - 1), [128; 3]);
    assert_eq!(px(&r, w, w / 2, h / 2), [200; 3]);
}

#[test]
fn translate_moves_by_the_expected_pixels_with_fill() {
    let (w, h) = (10, 4);
    let src = coords(w, h);
    let fill = [7, 8, 9];
    for interp in [Interp::Bilinear, Interp::Bicubic] {
        // pct 0.3 of 10 = 3: out(x) = in(x + 3); x ≥ 7 samples past the edge → fill.
        let t = translate_x_rel(&src, w, h, 0.3, interp, fill);
        for y in 0..h {
            for x in 0..w {
                let want = if x + 3 < w {
                    px(&src, w, x + 3, y)
                } else {
                    fill
                };
                assert_eq!(px(&t, w, x, y), want, "{interp:?} {x} {y}");
            }
        }
        // −0.25 of 4 rows = −1: out(y) = in(y − 1); the first row is fill.
        let t = translate_y_rel(&src, w, h, -0.25, interp, fill);
        for y in 0..h {
            for x in 0..w {
                let want = if y >= 1 { px(&src, w, x, y - 1) } else { fill };
                assert_eq!(px(&t, w, x, y), want);
            }
        }
    }
}

#[test]
fn bilinear_half_pixel_shift_averages_and_truncates() {
    // Row 0, 11, 20, 31; shift by half a pixel: (0+11)/2 = 5.5 → 5, 15.5 → 15, 25.5 → 25,
    // then the last pixel samples x = 4.0, past the edge → fill.
    let src = grey(&[0, 11, 20, 31]);
    let t = translate_x_rel(&src, 4, 1, 0.125, Interp::Bilinear, [99; 3]);
    assert_eq!(red(&t), vec![5, 15, 25, 99]);
}

#[test]
fn shear_x_shifts_each_row_by_factor_times_its_centre() {
    // Factor 2: row y samples x + 2·(y + ½): row 0 shifted 1, row 1 shifted 3.
    let (w, h) = (8, 2);
    let src = coords(w, h);
    let s = shear_x(&src, w, h, 2.0, Interp::Bicubic, [0; 3]);
    for x in 0..w {
        let w0 = if x + 1 < w {
            px(&src, w, x + 1, 0)
        } else {
            [0; 3]
        };
        let w1 = if x + 3 < w {
            px(&src, w, x + 3, 1)
        } else {
            [0; 3]
        };
        assert_eq!(px(&s, w, x, 0), w0);
        assert_eq!(px(&s, w, x, 1), w1);
    }
    // Shear Y with factor 0 is the identity.
    assert_eq!(shear_y(&src, w, h, 0.0, Interp::Bicubic, [0; 3]), src);
}

#[test]
fn constant_frames_stay_constant_inside_under_resampling() {
    let (w, h) = (16, 16);
    let src = vec![77u8; w * h * 3];
    for interp in [Interp::Bilinear, Interp::Bicubic] {
        let r = rotate(&src, w, h, 13.0, interp, [77; 3]);
        assert!(r.iter().all(|&v| v == 77));
        let s = shear_y(&src, w, h, -0.2, interp, [77; 3]);
        assert!(s.iter().all(|&v| v == 77));
    }
}

#[test]
fn empty_and_tiny_frames_do_not_panic() {
    for (w, h) in [(0, 0), (1, 1), (1, 3), (2, 1)] {
        let src = vec![50u8; w * h * 3];
        for interp in [Interp::Bilinear, Interp::Bicubic] {
            assert_eq!(rotate(&src, w, h, 10.0, interp, [0; 3]).len(), src.len());
            assert_eq!(shear_x(&src, w, h, 0.3, interp, [0; 3]).len(), src.len());
            assert_eq!(
                translate_y_rel(&src, w, h, 0.45, interp, [0; 3]).len(),
                src.len()
            );
        }
        let mut f = src.clone();
        sharpness(&mut f, w, h, 1.9);
        autocontrast(&mut f);
        equalize(&mut f);
        contrast(&mut f, 0.3);
    }
}
