//! The AVX2 bicubic affine against the scalar engine, bit for bit: odd sizes (widths that
//! leave a tail of 1–3 pixels), frames too small for a group of four, the fill, edge
//! clamping, rotations at many angles, shears and translations (the three shapes).

use super::affine::{affine_into, affine_into_scalar, Interp};
use super::pil_ops::rotate_matrix;

/// A frame with hard edges (0/255 steps, so the cubic overshoots and is clipped) and noise.
fn picture(w: usize, h: usize, seed: u64) -> Vec<u8> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..w * h * 3)
        .map(|i| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let p = i / 3;
            if (p % w / 3 + p / w / 2).is_multiple_of(3) {
                if s.is_multiple_of(2) {
                    0
                } else {
                    255
                }
            } else {
                (s >> 24) as u8
            }
        })
        .collect()
}

fn matrices(w: usize, h: usize) -> Vec<[f64; 6]> {
    let mut ms = vec![
        [1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
        [1.0, 0.0, 0.0, 0.0, 1.0, f64::NAN],
        [1.0, 0.0, 1e9, 0.0, 1.0, 0.0],
    ];
    for f in [-0.3, -0.117, 0.05, 0.21, 0.3, 1.7] {
        ms.push([1.0, f, 0.0, 0.0, 1.0, 0.0]); // shear X
        ms.push([1.0, 0.0, 0.0, f, 1.0, 0.0]); // shear Y
        ms.push([1.0, 0.0, f * w as f64, 0.0, 1.0, 0.0]); // translate X
        ms.push([1.0, 0.0, 0.0, 0.0, 1.0, f * h as f64]); // translate Y
        ms.push([1.0, f, 0.5 * f, 0.1 * f, 1.0, -f]); // a general matrix
    }
    for t in [-3.0, -1.0, 0.0, 2.0, 5.0] {
        ms.push([1.0, 0.0, t, 0.0, 1.0, 0.0]);
        ms.push([1.0, 0.0, 0.0, 0.0, 1.0, t]);
    }
    for deg in [
        -30.0, -13.5, -0.4, 0.0, 1.0, 7.25, 29.9, 45.0, 90.0, 180.0, 270.0, 333.0,
    ] {
        ms.push(rotate_matrix(w, h, deg));
    }
    ms
}

#[test]
fn avx2_bicubic_is_the_scalar_engine_bit_for_bit() {
    if !std::arch::is_x86_feature_detected!("avx2") {
        eprintln!("no AVX2 on this CPU: the scalar engine is the only path");
        return;
    }
    let sizes = [1, 2, 3, 4, 5, 6, 7, 8, 9, 13, 17, 31, 40];
    let mut pairs: Vec<(usize, usize)> = Vec::new();
    for (i, &w) in sizes.iter().enumerate() {
        pairs.extend(sizes[i % 3..].iter().map(|&h| (w, h)));
    }
    // The image recipe's crop, and a non-square frame (rotations are not exact there).
    pairs.extend([(224, 224), (99, 61)]);
    let mut checked = 0;
    for (w, h) in pairs {
        let src = picture(w, h, (w * 100 + h) as u64);
        for m in matrices(w, h) {
            let fill = [128, 7, 250];
            let mut want = vec![0u8; src.len()];
            affine_into_scalar(&src, w, h, m, Interp::Bicubic, fill, &mut want);
            let mut got = vec![1u8; src.len()];
            affine_into(&src, w, h, m, Interp::Bicubic, fill, &mut got);
            assert!(got == want, "{w}x{h} matrix {m:?}");
            checked += 1;
        }
    }
    assert!(checked > 1000);
}
