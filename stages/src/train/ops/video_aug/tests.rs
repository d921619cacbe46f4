//! The whole augmentation: config parsing, op choice, one draw for all frames, the order of
//! the stages, test crops, determinism and odd sizes.

use super::rand_augment::*;
use super::*;
use rand::SeedableRng;

fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

#[test]
fn parses_the_reference_default() {
    let s = RandAugmentSpec::parse("rand-m7-n4-mstd0.5-inc1").unwrap();
    assert_eq!(s, RandAugmentSpec::ssv2_default());
    assert_eq!(s.ops(), &RAND_INCREASING_TRANSFORMS);
    assert_eq!(s.to_string(), "rand-m7-n4-mstd0.5-inc1");
}

#[test]
fn parses_other_good_strings_as_the_reference_does() {
    let s = RandAugmentSpec::parse("rand-m9-n3-mstd0.5").unwrap();
    assert_eq!((s.magnitude, s.num_layers, s.increasing), (9, 3, false));
    assert_eq!(s.ops(), &RAND_TRANSFORMS);
    // Defaults: magnitude 10, 2 layers, no noise.
    let s = RandAugmentSpec::parse("rand").unwrap();
    assert_eq!((s.magnitude, s.num_layers, s.magnitude_std), (10, 2, 0.0));
    let s = RandAugmentSpec::parse("rand-mstd1-w0").unwrap();
    assert_eq!((s.magnitude_std, s.weight_idx), (1.0, Some(0)));
    // `bool("0")` is true in the reference: inc0 still selects the increasing list.
    assert!(RandAugmentSpec::parse("rand-inc0").unwrap().increasing);
    // The first mstd wins (setdefault); later m and n override.
    let s = RandAugmentSpec::parse("rand-mstd0.2-mstd0.9-m3-m5").unwrap();
    assert_eq!((s.magnitude_std, s.magnitude), (0.2, 5));
    for s in [
        "rand-m7-n4-mstd0.5-inc1",
        "rand-m9-n2",
        "rand-m10-n2-mstd1-w0",
    ] {
        let p = RandAugmentSpec::parse(s).unwrap();
        assert_eq!(RandAugmentSpec::parse(&p.to_string()).unwrap(), p);
    }
}

#[test]
fn refuses_bad_strings_clearly() {
    let cases: &[(&str, &str)] = &[
        ("", "must start with \"rand\""),
        ("auto-m7", "must start with \"rand\""),
        ("randm7", "must start with \"rand\""),
        ("rand-m", "has no value"),
        ("rand-n-1", "has no value"),
        ("rand-x7", "unknown key \"x\""),
        ("rand-m7.5", "bad value \"7.5\" for \"m\""),
        ("rand-mstd0.5.1", "bad value"),
        ("rand-w1", "only choice weights w0"),
        ("rand-w0-n14", "without replacement"),
    ];
    for (s, want) in cases {
        let e = RandAugmentSpec::parse(s).unwrap_err().to_string();
        assert!(e.contains(want), "{s:?}: {e}");
    }
}

#[test]
fn train_augment_reads_from_config_with_defaults() {
    let d: TrainAugment = serde_json::from_str("{}").unwrap();
    assert_eq!(d, TrainAugment::default());
    assert_eq!(d.rand_augment, Some(RandAugmentSpec::ssv2_default()));
    assert_eq!(
        (d.scale, d.ratio, d.erase_prob, d.erase_count, d.crop),
        ([0.08, 1.0], [0.75, 1.3333], 0.25, 1, 224)
    );
    assert_eq!(d.interpolation, TrainInterpolation::Bicubic);
    let t: TrainAugment = serde_json::from_str(
        r#"{"rand_augment": "rand-m9-n2", "interpolation": "random", "crop": 112}"#,
    )
    .unwrap();
    assert_eq!(t.rand_augment.as_ref().map(|s| s.magnitude), Some(9));
    assert_eq!((t.interpolation, t.crop), (TrainInterpolation::Random, 112));
    let off: TrainAugment = serde_json::from_str(r#"{"rand_augment": "none"}"#).unwrap();
    assert_eq!(off.rand_augment, None);
    let back: TrainAugment = serde_json::from_str(&serde_json::to_string(&off).unwrap()).unwrap();
    assert_eq!(back, off);
    let e = serde_json::from_str::<TrainAugment>(r#"{"rand_augment": "rand-q1"}"#).unwrap_err();
    assert!(e.to_string().contains("unknown key"), "{e}");
    assert!(serde_json::from_str::<TrainAugment>(r#"{"scael": [0.1, 1.0]}"#).is_err());
    // Round trip.
    let back: TrainAugment = serde_json::from_str(&serde_json::to_string(&d).unwrap()).unwrap();
    assert_eq!(back, d);
    assert!(d.validate().is_ok());
    let bad = TrainAugment {
        ratio: [1.5, 0.5],
        ..TrainAugment::default()
    };
    assert!(bad.validate().is_err());
}

#[test]
fn ops_are_chosen_uniformly_with_replacement() {
    let spec = RandAugmentSpec::ssv2_default();
    let mut r = rng(21);
    let mut counts = std::collections::HashMap::new();
    let mut repeats = 0;
    let clips = 6000;
    for _ in 0..clips {
        let ops = choose_ops(&spec, &mut r);
        assert_eq!(ops.len(), 4);
        let mut u = ops.clone();
        u.sort_by_key(|o| format!("{o:?}"));
        u.dedup();
        repeats += usize::from(u.len() < 4);
        for o in ops {
            *counts.entry(o).or_insert(0usize) += 1;
        }
    }
    assert_eq!(counts.len(), 15);
    let expect = clips as f64 * 4.0 / 15.0;
    for (op, &n) in &counts {
        assert!(RAND_INCREASING_TRANSFORMS.contains(op));
        assert!((n as f64 - expect).abs() < 0.1 * expect, "{op:?} {n}");
    }
    // P(some repeat among 4 of 15) = 1 − 15·14·13·12 / 15⁴ ≈ 0.35.
    let p = repeats as f64 / clips as f64;
    assert!((p - 0.353).abs() < 0.03, "{p}");
}

#[test]
fn weighted_choice_is_without_replacement_and_skips_zero_weights() {
    let spec = RandAugmentSpec::parse("rand-m9-n4-w0").unwrap();
    let mut r = rng(22);
    let mut rotate = 0;
    for _ in 0..3000 {
        let ops = choose_ops(&spec, &mut r);
        assert_eq!(ops.len(), 4);
        for (i, a) in ops.iter().enumerate() {
            assert!(!matches!(a, OpName::Invert | OpName::Posterize), "{a:?}");
            assert!(!ops[i + 1..].contains(a), "{ops:?}");
        }
        rotate += usize::from(ops[0] == OpName::Rotate);
    }
    // The first pick is Rotate with probability 0.3 / 1.0.
    assert!((rotate as f64 / 3000.0 - 0.3).abs() < 0.04, "{rotate}");
}

#[test]
fn drawn_ops_pass_with_half_probability_and_clipped_noisy_magnitude() {
    let spec = RandAugmentSpec::ssv2_default();
    let mut r = rng(23);
    let (mut applied, mut mags) = (0usize, Vec::new());
    let clips = 5000;
    for _ in 0..clips {
        for d in draw_ops(&spec, &mut r) {
            applied += 1;
            assert!((0.0..=10.0).contains(&d.magnitude));
            mags.push(d.magnitude);
            match (d.op, d.arg) {
                (OpName::Rotate, Some(a)) => assert!(a.abs() <= 30.0),
                (OpName::ShearX | OpName::ShearY, Some(a)) => assert!(a.abs() <= 0.3),
                (OpName::TranslateXRel | OpName::TranslateYRel, Some(a)) => {
                    assert!(a.abs() <= 0.45)
                }
                (OpName::PosterizeIncreasing, Some(b)) => assert!((0.0..=4.0).contains(&b)),
                (OpName::SolarizeIncreasing, Some(t)) => assert!((0.0..=256.0).contains(&t)),
                (OpName::ColorIncreasing | OpName::ContrastIncreasing, Some(f)) => {
                    assert!((0.1..=1.9).contains(&f))
                }
                (OpName::AutoContrast | OpName::Equalize | OpName::Invert, a) => {
                    assert_eq!(a, None)
                }
                _ => {}
            }
        }
    }
    let frac = applied as f64 / (clips * 4) as f64;
    assert!((frac - 0.5).abs() < 0.02, "{frac}");
    let mean = mags.iter().sum::<f64>() / mags.len() as f64;
    let sd = (mags.iter().map(|m| (m - mean).powi(2)).sum::<f64>() / mags.len() as f64).sqrt();
    assert!(
        (mean - 7.0).abs() < 0.03 && (sd - 0.5).abs() < 0.03,
        "{mean} {sd}"
    );
}

#[test]
fn level_arguments_at_magnitude_seven() {
    let mut r = rng(24);
    // Posterize increasing: 4 − int(2.8) = 2 bits; solarize increasing: 256 − int(179.2);
    // solarize add: int(77.0); shear ±0.21; translate ±0.315; rotate ±21.
    assert_eq!(
        level_to_arg(OpName::PosterizeIncreasing, 7.0, &mut r),
        Some(2.0)
    );
    assert_eq!(
        level_to_arg(OpName::SolarizeIncreasing, 7.0, &mut r),
        Some(77.0)
    );
    assert_eq!(level_to_arg(OpName::SolarizeAdd, 7.0, &mut r), Some(77.0));
    assert_eq!(level_to_arg(OpName::Posterize, 10.0, &mut r), Some(4.0));
    let f = level_to_arg(OpName::BrightnessIncreasing, 7.0, &mut r).unwrap();
    assert!((f - 1.63).abs() < 1e-12 || (f - 0.37).abs() < 1e-12, "{f}");
    let s = level_to_arg(OpName::ShearX, 7.0, &mut r).unwrap();
    assert!((s.abs() - 0.21).abs() < 1e-12);
    let d = level_to_arg(OpName::Rotate, 7.0, &mut r).unwrap();
    assert!((d.abs() - 21.0).abs() < 1e-12);
    assert_eq!(level_to_arg(OpName::Equalize, 7.0, &mut r), None);
}

fn same_frames(frames: usize) -> Clip {
    let one = synthetic_clip(1, 30, 40, 5);
    Clip {
        frames,
        height: 30,
        width: 40,
        data: one.data.repeat(frames),
    }
}

#[test]
fn one_draw_is_applied_to_every_frame() {
    let clip = same_frames(4);
    let spec = RandAugmentSpec::parse("rand-m9-n4-mstd0.5-inc1").unwrap();
    let mut changed = 0;
    for seed in 0..40 {
        let out = rand_augment_clip(&clip, &spec, TrainInterpolation::Bicubic, &mut rng(seed));
        let f0 = out.frame(0);
        for t in 1..4 {
            assert_eq!(out.frame(t), f0, "seed {seed} frame {t}");
        }
        changed += usize::from(out != clip);
    }
    assert!(changed > 30, "{changed}");
}

#[test]
fn each_op_is_the_single_frame_op_on_every_frame() {
    let clip = synthetic_clip(3, 24, 32, 9);
    let spec = RandAugmentSpec::ssv2_default();
    for seed in 0..10 {
        let ops = draw_ops(&spec, &mut rng(seed));
        let out = apply_ops(&clip, &ops, TrainInterpolation::Bicubic, &mut rng(0));
        for t in 0..3 {
            let mut f = clip.frame(t).to_vec();
            for op in &ops {
                apply_op(&mut f, 32, 24, op, pil_ops::Interp::Bicubic);
            }
            assert_eq!(out.frame(t), f.as_slice());
        }
    }
}

#[test]
fn random_interpolation_is_drawn_per_frame() {
    // A rotation on identical frames: with "random" some frames differ from others.
    let clip = same_frames(8);
    let op = DrawnOp {
        op: OpName::Rotate,
        magnitude: 7.0,
        arg: Some(13.7),
    };
    let out = apply_ops(&clip, &[op], TrainInterpolation::Random, &mut rng(3));
    let distinct: std::collections::HashSet<&[u8]> = (0..8).map(|t| out.frame(t)).collect();
    assert_eq!(distinct.len(), 2);
}

#[test]
fn whole_pipeline_is_deterministic_per_seed_and_thread_count() {
    let clip = synthetic_clip(4, 48, 64, 1);
    let spec = TrainAugment {
        crop: 32,
        erase_prob: 1.0,
        ..TrainAugment::default()
    };
    let a = augment_train_clip(&clip, &spec, &mut rng(5));
    let b = augment_train_clip(&clip, &spec, &mut rng(5));
    let c = augment_train_clip(&clip, &spec, &mut rng(6));
    assert_eq!(a.len(), 4 * 32 * 32 * 3);
    assert!(a.iter().all(|v| v.is_finite()));
    assert_eq!(a, b);
    assert_ne!(a, c);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let one = pool.install(|| augment_train_clip(&clip, &spec, &mut rng(5)));
    assert_eq!(a, one);
}

#[test]
fn without_random_stages_the_pipeline_is_normalize_of_the_frame() {
    // No RandAugment, no erasing, a box forced to the whole square frame at the same size:
    // the output is exactly the normalized clip.
    let clip = synthetic_clip(2, 16, 16, 2);
    let spec = TrainAugment {
        rand_augment: None,
        scale: [1.0, 1.0],
        ratio: [1.0, 1.0],
        erase_prob: 0.0,
        crop: 16,
        ..TrainAugment::default()
    };
    let out = augment_train_clip(&clip, &spec, &mut rng(1));
    assert_eq!(out, clip::normalize(&clip, IMAGENET_MEAN, IMAGENET_STD));
}

#[test]
fn odd_sizes_give_defined_outputs() {
    let spec = TrainAugment::default();
    // Frames smaller than the crop: upsampled to 224².
    let tiny = synthetic_clip(2, 3, 2, 0);
    let out = augment_train_clip(&tiny, &spec, &mut rng(1));
    assert_eq!(out.len(), 2 * 224 * 224 * 3);
    assert!(out.iter().all(|v| v.is_finite()));
    // Empty frames: zeros (erasing may still write its noise).
    let empty = Clip::zeros(2, 0, 5);
    assert_eq!(
        augment_train_clip(&empty, &spec, &mut rng(1)).len(),
        2 * 224 * 224 * 3
    );
    // No frames, or a zero crop: nothing.
    assert!(augment_train_clip(&Clip::zeros(0, 10, 10), &spec, &mut rng(1)).is_empty());
    let zero = TrainAugment {
        crop: 0,
        ..TrainAugment::default()
    };
    assert!(augment_train_clip(&tiny, &zero, &mut rng(1)).is_empty());
    // A clip whose data is short is padded, not indexed past its end.
    let bad = Clip {
        frames: 2,
        height: 8,
        width: 8,
        data: vec![9; 100],
    };
    assert_eq!(
        augment_train_clip(&bad, &spec, &mut rng(1)).len(),
        2 * 224 * 224 * 3
    );
}

fn window(c: &Clip, y: usize, x: usize, h: usize, w: usize) -> Clip {
    clip::crop(c, y, x, h, w)
}

#[test]
fn test_crops_are_left_centre_right_for_landscape() {
    // Already at the short side (10): no resize; long 40, step (40 − 10) / 2 = 15.
    let c = synthetic_clip(2, 10, 40, 3);
    let crops = test_crops(&c, 10, 3);
    assert_eq!(crops.len(), 3);
    for (k, x) in [0, 15, 30].into_iter().enumerate() {
        assert_eq!(crops[k], window(&c, 0, x, 10, 10), "crop {k}");
    }
    // One crop: the centre.
    assert_eq!(test_crops(&c, 10, 1), vec![window(&c, 0, 15, 10, 10)]);
    assert!(test_crops(&c, 10, 0).is_empty());
}

#[test]
fn test_crops_are_top_centre_bottom_for_portrait_after_resize() {
    // 20 × 9 → short side 6: int(6 · 20 / 9) = 13 rows; step (13 − 6) / 2 = 3.5 → 0, 3, 7.
    let c = synthetic_clip(1, 20, 9, 4);
    let r = clip::resize_short_side(&c, 6);
    assert_eq!((r.height, r.width), (13, 6));
    let crops = test_crops(&c, 6, 3);
    for (k, y) in [0, 3, 7].into_iter().enumerate() {
        assert_eq!(crops[k], window(&r, y, 0, 6, 6), "crop {k}");
        assert_eq!((crops[k].height, crops[k].width), (6, 6));
    }
    // Square frames: all crops the same.
    let sq = synthetic_clip(1, 8, 8, 4);
    let crops = test_crops(&sq, 8, 3);
    assert!(crops.iter().all(|k| *k == sq));
}

/// `cargo test --release -p lm4ve-stages bench_train_clip -- --ignored --nocapture`: wall
/// time and this thread's CPU time (Linux schedstat; what matters on a shared machine).
#[test]
#[ignore]
fn bench_train_clip() {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let n = 300;
    for (name, spec) in [
        ("default", TrainAugment::default()),
        (
            "without RandAugment",
            TrainAugment {
                rand_augment: None,
                ..TrainAugment::default()
            },
        ),
    ] {
        let (wall, cpu) = pool.install(|| {
            let t = cpu_ns();
            let wall = bench_augment_train_clip(16, 240, 427, &spec, n, 0);
            (wall, (cpu_ns() - t) as f64 / 1e6 / n as f64)
        });
        eprintln!("augment_train_clip 16x240x427 -> 16x224x224 {name}, one thread: {wall:.2} ms/clip wall, {cpu:.2} ms/clip cpu");
    }
}

fn cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

/// Each op alone on a 16x240x427 clip (magnitude 7, bicubic), CPU ms per clip:
/// `cargo test --release -p lm4ve-stages bench_per_op -- --ignored --nocapture`.
#[test]
#[ignore]
fn bench_per_op() {
    let clip = synthetic_clip(16, 240, 427, 0);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    for op in RAND_INCREASING_TRANSFORMS {
        let mut r = rng(0);
        let arg = level_to_arg(op, 7.0, &mut r);
        let d = DrawnOp {
            op,
            magnitude: 7.0,
            arg,
        };
        let ns = pool.install(|| {
            let t = cpu_ns();
            for _ in 0..5 {
                let out = apply_ops(&clip, &[d], TrainInterpolation::Bicubic, &mut r);
                std::hint::black_box(out);
            }
            cpu_ns() - t
        });
        eprintln!("{op:?}: {:.2} ms/clip cpu", ns as f64 / 5e6);
    }
}
