//! Every RandAugment op against Pillow: the fixtures under `tests/fixtures/video_aug/` were
//! written by `scripts/fixtures/rand_augment_ops.py` through the reference's own
//! rand_augment.py wrappers (Pillow 13). Point and enhance ops must match exactly; the
//! resampling ops may differ by 1 on a few pixels (the rotation's `round(·, 15)`).

use super::pil_ops::{self, Interp};
use super::rand_augment::FILL;

fn fixture_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/video_aug")
}

fn run(op: &str, arg: f64, interp: Interp, src: &[u8], w: usize, h: usize) -> Vec<u8> {
    let mut f = src.to_vec();
    match op {
        "auto_contrast" => pil_ops::autocontrast(&mut f),
        "equalize" => pil_ops::equalize(&mut f),
        "invert" => pil_ops::invert(&mut f),
        "posterize" => pil_ops::posterize(&mut f, arg as u32),
        "solarize" => pil_ops::solarize(&mut f, arg as i32),
        "solarize_add" => pil_ops::solarize_add(&mut f, arg as i32, 128),
        "color" => pil_ops::color(&mut f, arg),
        "contrast" => pil_ops::contrast(&mut f, arg),
        "brightness" => pil_ops::brightness(&mut f, arg),
        "sharpness" => pil_ops::sharpness(&mut f, w, h, arg),
        "rotate" => f = pil_ops::rotate(src, w, h, arg, interp, FILL),
        "shear_x" => f = pil_ops::shear_x(src, w, h, arg, interp, FILL),
        "shear_y" => f = pil_ops::shear_y(src, w, h, arg, interp, FILL),
        "translate_x_rel" => f = pil_ops::translate_x_rel(src, w, h, arg, interp, FILL),
        "translate_y_rel" => f = pil_ops::translate_y_rel(src, w, h, arg, interp, FILL),
        other => panic!("fixture names an unknown op {other:?}"),
    }
    f
}

#[test]
fn every_op_matches_pillow() {
    let dir = fixture_dir();
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    let h = manifest["height"].as_u64().unwrap() as usize;
    let w = manifest["width"].as_u64().unwrap() as usize;
    let input = std::fs::read(dir.join("input.bin")).unwrap();
    let expected = std::fs::read(dir.join("expected.bin")).unwrap();
    let n = h * w * 3;
    assert_eq!(input.len(), n);
    let cases = manifest["cases"].as_array().unwrap();
    assert_eq!(expected.len(), n * cases.len());
    let mut failures = Vec::new();
    let mut changed = 0;
    for (i, case) in cases.iter().enumerate() {
        let op = case["op"].as_str().unwrap();
        let arg = case["arg"].as_f64().unwrap_or(0.0);
        let interp = match case["interp"].as_str() {
            Some("bilinear") => Interp::Bilinear,
            _ => Interp::Bicubic,
        };
        let want = &expected[i * n..(i + 1) * n];
        changed += usize::from(want != input.as_slice());
        let got = run(op, arg, interp, &input, w, h);
        let diffs: Vec<i32> = got
            .iter()
            .zip(want)
            .map(|(&a, &b)| (a as i32 - b as i32).abs())
            .filter(|&d| d > 0)
            .collect();
        let max = diffs.iter().copied().max().unwrap_or(0);
        let geometric = case["interp"].is_string();
        // Resampling: ±1 on at most 1% of the values.
        let ok = if geometric {
            max <= 1 && diffs.len() * 100 <= n
        } else {
            max == 0
        };
        if !ok || !diffs.is_empty() {
            eprintln!(
                "{}: {} values differ, max {max}",
                case["name"].as_str().unwrap_or("?"),
                diffs.len()
            );
        }
        if !ok {
            failures.push(case["name"].as_str().unwrap_or("?").to_string());
        }
    }
    // The fixtures exercise the ops: nearly every case changes the frame.
    assert!(
        changed + 4 >= cases.len(),
        "only {changed} cases change the frame"
    );
    assert!(failures.is_empty(), "differ from Pillow: {failures:?}");
}
