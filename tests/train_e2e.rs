//! The frozen LLM block and the trainer through the real binary: `llm extract/apply`, a
//! short training run that lowers the loss, resume after kill -9 with identical weights.

mod common;
use common::*;
use lm4ve_stages::train::predictions::read::{read_classification, read_forecast};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[allow(clippy::too_many_arguments)] // a test fixture: one argument per config knob
fn train_config(
    dir: &Path,
    name: &str,
    train: &Path,
    test: &Path,
    model: &Path,
    mode: &str,
    epochs: usize,
    cache: &str,
) -> PathBuf {
    let text = format!(
        r#"[cache]
dir = "{cache}"

[stages.pc_tokens]
kind = "pc.tokens"
[stages.pc_tokens.params]
format = "h5"
train = "{}"
test = "{}"
num_points = 128
num_groups = 16
group_size = 8
shard_samples = 64

[stages.llm_block]
kind = "llm.block"
[stages.llm_block.params]
checkpoint = "{}"

[stages.train_pc]
kind = "train"
[stages.train_pc.params]
data = "pc_tokens"
block = "llm_block"
mode = "{mode}"
epochs = {epochs}
warmup_epochs = 1
batch_size = 16
lr = 2e-3
epochs_per_checkpoint = 1
[stages.train_pc.params.model]
trans_dim = 32
depth = 1
heads = 2
pointnet_dims = [16, 32, 32]
encoder_dims = 32
drop_path = 0.0
head_dropout = 0.0

[stages.eval_pc]
kind = "eval"
[stages.eval_pc.params]
train = "train_pc"
data = "pc_tokens"
block = "llm_block"
vote = 3
"#,
        train.display(),
        test.display(),
        model.display()
    );
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn show(cfg: &Path, stage: &str) -> serde_json::Value {
    let r = lm4ve(cfg, &["pipeline", "show", stage, "--json"]);
    r.ok();
    serde_json::from_str(&r.stdout).unwrap()
}

fn metrics(cfg: &Path) -> Vec<serde_json::Value> {
    let v = show(cfg, "train_pc");
    let manifest = PathBuf::from(v["manifest"].as_str().unwrap());
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    let f = m["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "metrics.jsonl")
        .unwrap();
    let text =
        std::fs::read_to_string(manifest.parent().unwrap().join(f["path"].as_str().unwrap()))
            .unwrap();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn file_hash(cfg: &Path, stage: &str, name: &str) -> String {
    let v = show(cfg, stage);
    let manifest = PathBuf::from(v["manifest"].as_str().unwrap());
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    m["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == name)
        .unwrap()["blake3"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn frozen_block_training_lowers_the_loss_and_evaluates() {
    let dir = tempfile::tempdir().unwrap();
    let so = demo_data(dir.path(), 6);
    let model = tiny_llama(dir.path());
    let cfg = train_config(
        dir.path(),
        "c.toml",
        &so.join("training_objectdataset.h5"),
        &so.join("test_objectdataset.h5"),
        &model,
        "frozen",
        6,
        "cache",
    );
    let r = lm4ve(
        &cfg,
        &["--device", "cpu", "pipeline", "run", "--stage", "all"],
    );
    r.ok();
    let m = metrics(&cfg);
    assert_eq!(m.len(), 6);
    let first = m[0]["loss"].as_f64().unwrap();
    let last = m[5]["loss"].as_f64().unwrap();
    assert!(last < first, "loss did not go down: {first} → {last}");
    let e = show(&cfg, "eval_pc");
    let oa = e["meta"]["overall_accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&oa));
    // Test-time voting (the reference's test_vote) reports beside the single view.
    assert_eq!(e["meta"]["votes"], 3);
    let voted = e["meta"]["vote_overall_accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&voted));
    assert_eq!(e["meta"]["vote_samples"], e["meta"]["samples"]);
    // Each checkpoint's voted predictions, one row per test cloud in order (point clouds have
    // no names: no `id`); their top-1 is that checkpoint's voted accuracy.
    for which in ["last", "best"] {
        let m = &e["meta"]["checkpoints"][which];
        if m.is_null() {
            continue;
        }
        let path = predictions_file(&cfg, "eval_pc", &format!("predictions-{which}.parquet"));
        let rows = read_classification(&path).unwrap();
        assert_eq!(rows.len() as u64, e["meta"]["samples"].as_u64().unwrap());
        for (i, r) in rows.iter().enumerate() {
            assert_eq!((r.sample, r.id.as_deref()), (i as i64, None));
            assert_eq!(r.top5.len(), 5);
            assert!(r.top5.windows(2).all(|w| w[0].1 >= w[1].1), "{r:?}");
        }
        let right = rows.iter().filter(|r| r.top5[0].0 == r.label).count();
        let acc = m["vote_overall_accuracy"].as_f64().unwrap();
        assert!(
            (right as f64 / rows.len() as f64 - acc).abs() < 1e-12,
            "{which}: {acc}"
        );
    }
    // The block file is the extracted last layer.
    let b = show(&cfg, "llm_block");
    assert_eq!(b["meta"]["layer"], 1);
}

#[test]
fn training_resumes_after_kill_9_to_the_same_weights() {
    let dir = tempfile::tempdir().unwrap();
    let so = demo_data(dir.path(), 4);
    let model = tiny_llama(dir.path());
    let (train, test) = (
        so.join("training_objectdataset.h5"),
        so.join("test_objectdataset.h5"),
    );
    let cfg = train_config(
        dir.path(),
        "c.toml",
        &train,
        &test,
        &model,
        "frozen",
        8,
        "cache",
    );
    // Upstream stages first, so the kill lands inside training.
    lm4ve(&cfg, &["pipeline", "run", "--stage", "llm_block"]).ok();
    lm4ve(&cfg, &["pipeline", "run", "--stage", "pc_tokens"]).ok();
    let mut killed = false;
    for _ in 0..3 {
        let mut child = bin()
            .arg("-c")
            .arg(&cfg)
            .args(["--device", "cpu", "pipeline", "run", "--stage", "train_pc"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let start = Instant::now();
        let units = |d: &Path| -> usize {
            std::fs::read_dir(d.join("cache/artifacts"))
                .map(|rd| {
                    rd.filter_map(|e| e.ok())
                        .filter(|e| {
                            std::fs::read_dir(e.path().join("units"))
                                .map(|u| {
                                    u.filter_map(|x| x.ok()).any(|x| {
                                        x.file_name().to_string_lossy().starts_with("ckpt")
                                    })
                                })
                                .unwrap_or(false)
                        })
                        .map(|e| {
                            std::fs::read_dir(e.path().join("units"))
                                .map(|u| u.count())
                                .unwrap_or(0)
                        })
                        .sum()
                })
                .unwrap_or(0)
        };
        while units(dir.path()) < 2 && start.elapsed() < Duration::from_secs(120) {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = child.kill();
        let _ = child.wait();
        let st = lm4ve(&cfg, &["pipeline", "status", "--json"]);
        let v: serde_json::Value = serde_json::from_str(&st.ok().stdout).unwrap();
        let train_state = v
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["stage"] == "train_pc")
            .unwrap()
            .clone();
        if train_state["state"] != "fresh" {
            killed = true;
            break;
        }
        lm4ve(&cfg, &["pipeline", "run", "--stage", "train_pc", "--force"]).ok();
    }
    assert!(killed, "training always finished before the kill");
    let r = lm4ve(
        &cfg,
        &["--device", "cpu", "pipeline", "run", "--stage", "train_pc"],
    );
    r.ok();
    assert!(!r.stdout.contains(" 0 resumed"), "{}", r.stdout);
    let resumed = file_hash(&cfg, "train_pc", "model.safetensors");
    let cfg2 = train_config(
        dir.path(),
        "c2.toml",
        &train,
        &test,
        &model,
        "frozen",
        8,
        "cache2",
    );
    lm4ve(
        &cfg2,
        &["--device", "cpu", "pipeline", "run", "--stage", "train_pc"],
    )
    .ok();
    assert_eq!(resumed, file_hash(&cfg2, "train_pc", "model.safetensors"));
}

#[test]
fn none_mode_has_no_block_and_other_modes_differ() {
    let dir = tempfile::tempdir().unwrap();
    let so = demo_data(dir.path(), 2);
    let model = tiny_llama(dir.path());
    let (train, test) = (
        so.join("training_objectdataset.h5"),
        so.join("test_objectdataset.h5"),
    );
    let mut hashes = Vec::new();
    for mode in ["none", "frozen", "random", "trainable"] {
        let cfg = train_config(
            dir.path(),
            &format!("{mode}.toml"),
            &train,
            &test,
            &model,
            mode,
            1,
            "cache",
        );
        lm4ve(
            &cfg,
            &["--device", "cpu", "pipeline", "run", "--stage", "train_pc"],
        )
        .ok();
        let h = file_hash(&cfg, "train_pc", "model.safetensors");
        let v = show(&cfg, "train_pc");
        let manifest = PathBuf::from(v["manifest"].as_str().unwrap());
        let m: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
        let f = m["files"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == "model.safetensors")
            .unwrap();
        let weights = candle_core::safetensors::load(
            manifest.parent().unwrap().join(f["path"].as_str().unwrap()),
            &candle_core::Device::Cpu,
        )
        .unwrap();
        let has_adapter = weights.keys().any(|k| k.starts_with("llm_adapter"));
        let has_block = weights.keys().any(|k| k.starts_with("llm_block."));
        assert_eq!(has_adapter, mode != "none", "{mode}");
        assert_eq!(
            has_block,
            mode == "trainable",
            "{mode}: only a trainable block is saved with the model"
        );
        hashes.push(h);
    }
    let unique: std::collections::BTreeSet<_> = hashes.iter().collect();
    assert_eq!(unique.len(), 4, "every mode trains a different model");
}

/// `lm4ve --device DEVICE llm apply --block B --input X --output Y`
fn llm_apply(device: &str, block: &Path, input: &Path, out: &Path) -> Run {
    let mut c = bin();
    c.args(["--device", device, "llm", "apply", "--block"])
        .arg(block)
        .arg("--input")
        .arg(input)
        .arg("--output")
        .arg(out);
    output(c.output().unwrap())
}

#[test]
fn llm_extract_and_apply_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_llama(dir.path());
    let block = dir.path().join("block.safetensors");
    let mut c = bin();
    c.args(["llm", "inspect"]).arg(&model);
    let r = output(c.output().unwrap());
    assert!(r.ok().stdout.contains("llama"), "{}", r.stdout);
    let mut c = bin();
    c.args(["llm", "extract"])
        .arg(&model)
        .args(["--layer", "1", "--out"])
        .arg(&block);
    output(c.output().unwrap()).ok();
    // x [2, 5, 32] → y of the same shape, normalised by the all-ones RMSNorm.
    let x: Vec<f32> = (0..2 * 5 * 32)
        .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
        .collect();
    let input = dir.path().join("x.safetensors");
    let xt = candle_core::Tensor::from_vec(x, (2, 5, 32), &candle_core::Device::Cpu).unwrap();
    candle_core::safetensors::save(&HashMap::from([("x".to_string(), xt)]), &input).unwrap();
    let out = dir.path().join("y.safetensors");
    llm_apply("cpu", &block, &input, &out).ok();
    let y = candle_core::safetensors::load(&out, &candle_core::Device::Cpu).unwrap();
    let y = &y["y"];
    assert_eq!(y.dims(), &[2, 5, 32]);
    let ms: Vec<f32> = y
        .sqr()
        .unwrap()
        .mean(2)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert!(ms.iter().all(|m| (m - 1.0).abs() < 1e-3), "{ms:?}");
    // Errors are exit 2 with a message, never a panic.
    let mut c = bin();
    c.args(["llm", "extract"])
        .arg(&model)
        .args(["--layer", "9", "--out"])
        .arg(&block);
    let r = output(c.output().unwrap());
    assert_eq!(r.no_panic().code, 2, "{}", r.stderr);
    let bad = dir.path().join("bad.safetensors");
    let t = candle_core::Tensor::zeros(
        (2, 5, 31),
        candle_core::DType::F32,
        &candle_core::Device::Cpu,
    )
    .unwrap();
    candle_core::safetensors::save(&HashMap::from([("x".to_string(), t.clone())]), &bad).unwrap();
    let r = llm_apply("auto", &block, &bad, &out);
    assert_eq!(r.no_panic().code, 2);
    assert!(r.stderr.contains("31"), "{}", r.stderr);
    candle_core::safetensors::save(&HashMap::from([("z".to_string(), t)]), &bad).unwrap();
    let r = llm_apply("auto", &block, &bad, &out);
    assert_eq!(r.no_panic().code, 2);
    assert!(r.stderr.contains("`x`"), "{}", r.stderr);
    let mut c = bin();
    c.args(["llm", "inspect"])
        .arg(dir.path().join("nothing-here"));
    assert_eq!(output(c.output().unwrap()).no_panic().code, 2);
}

#[test]
fn device_cuda_without_cuda_is_a_clear_error() {
    if cfg!(feature = "cuda") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_llama(dir.path());
    let block = dir.path().join("block.safetensors");
    let mut c = bin();
    c.args(["llm", "extract"])
        .arg(&model)
        .arg("--out")
        .arg(&block);
    output(c.output().unwrap()).ok();
    let input = dir.path().join("x.safetensors");
    let t = candle_core::Tensor::zeros(
        (1, 2, 32),
        candle_core::DType::F32,
        &candle_core::Device::Cpu,
    )
    .unwrap();
    candle_core::safetensors::save(&HashMap::from([("x".to_string(), t)]), &input).unwrap();
    let r = llm_apply("cuda", &block, &input, &dir.path().join("y"));
    assert_eq!(r.no_panic().code, 1);
    assert!(r.stderr.contains("CUDA"), "{}", r.stderr);
}

/// SSv2-format demo clips (VP9 webm) → `ssv2.tokens` → the video ViT with the frozen block,
/// through the same trainer: top-1/top-5 on the validation split, views averaged.
fn video_config(dir: &Path, ssv2: &Path, model: &Path, mode: &str, epochs: usize) -> PathBuf {
    let text = video_config_toml("cache", ssv2, model, mode, epochs, 8, "");
    let p = dir.join(format!("video-{mode}.toml"));
    std::fs::write(&p, text).unwrap();
    p
}

/// The `frames` layout (every frame as JPEG) through the reference recipe: a preset with
/// repeated augmentation, RandAugment / RandomResizedCrop / erasing / Mixup, and the
/// 2 temporal × 3 spatial test.
#[test]
fn video_frames_layout_trains_with_the_recipe_and_tests_two_by_three_views() {
    let dir = tempfile::tempdir().unwrap();
    let ssv2 = video_demo(dir.path());
    let model = tiny_llama(dir.path());
    let base = std::fs::read_to_string(video_config(dir.path(), &ssv2, &model, "frozen", 1))
        .unwrap()
        .replace(
            "views = 2\nrandom_views = 1\n",
            "layout = \"frames\"\nframe_short_side = 40\n",
        )
        .replace(
            "mode = \"frozen\"\n",
            "mode = \"frozen\"\npreset = \"videomae_ssv2_vit_s\"\n",
        )
        .replace("block = \"llm_block\"\n\"#", "block = \"llm_block\"\n");
    let text = format!("{base}test_clips = 2\ntest_crops = 3\n");
    assert!(text.contains("layout = \"frames\"") && text.contains("preset"));
    let cfg = dir.path().join("frames.toml");
    std::fs::write(&cfg, text).unwrap();
    lm4ve(
        &cfg,
        &["--device", "cpu", "pipeline", "run", "--stage", "all"],
    )
    .ok();
    let d = show(&cfg, "ssv2_tokens")["meta"].clone();
    assert_eq!(d["layout"], "frames");
    let t = show(&cfg, "train_ssv2")["meta"].clone();
    assert_eq!(t["repeated_aug"], 2, "{t}");
    assert_eq!(t["preset"], "videomae_ssv2_vit_s");
    assert!(t["final"]["loss"].as_f64().unwrap().is_finite());
    let e = show(&cfg, "eval_ssv2")["meta"].clone();
    assert_eq!(e["test_views"], serde_json::json!([2, 3]));
    assert_eq!(
        e["samples"].as_u64().unwrap(),
        d["num_classes"].as_u64().unwrap()
    );
    let top1 = e["top1_accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&top1));
}

#[test]
fn video_training_through_the_frozen_block_reports_top1_and_top5() {
    let dir = tempfile::tempdir().unwrap();
    let ssv2 = video_demo(dir.path());
    let model = tiny_llama(dir.path());
    let cfg = video_config(dir.path(), &ssv2, &model, "frozen", 3);
    lm4ve(
        &cfg,
        &["--device", "cpu", "pipeline", "run", "--stage", "all"],
    )
    .ok();
    let t = show(&cfg, "train_ssv2");
    assert_eq!(t["meta"]["task"], "video");
    assert_eq!(t["meta"]["model"]["embed_dim"], 32);
    assert!(t["meta"]["final"]["loss"].as_f64().unwrap().is_finite());
    let e = show(&cfg, "eval_ssv2")["meta"].clone();
    assert_eq!(e["split"], "validation");
    let classes = show(&cfg, "ssv2_tokens")["meta"]["num_classes"]
        .as_u64()
        .unwrap();
    assert_eq!(e["samples"].as_u64().unwrap(), classes);
    let (top1, top5) = (
        e["top1_accuracy"].as_f64().unwrap(),
        e["top5_accuracy"].as_f64().unwrap(),
    );
    assert!((0.0..=1.0).contains(&top1) && top1 <= top5 && top5 <= 1.0);
    // Predictions name each clip by its SSv2 id; their top-1 is the last weights' accuracy.
    let rows = read_classification(&predictions_file(
        &cfg,
        "eval_ssv2",
        "predictions-last.parquet",
    ))
    .unwrap();
    assert_eq!(rows.len() as u64, classes);
    assert!(rows
        .iter()
        .all(|r| r.id.as_deref().is_some_and(|id| id.parse::<i64>().is_ok())));
    let right = rows.iter().filter(|r| r.top5[0].0 == r.label).count() as f64;
    let last = e["checkpoints"]["last"]["top1_accuracy"].as_f64().unwrap();
    assert!((right / rows.len() as f64 - last).abs() < 1e-12);

    // The `none` ablation trains the same ViT without the block and its adapters.
    let none = video_config(dir.path(), &ssv2, &model, "none", 1);
    lm4ve(
        &none,
        &[
            "--device",
            "cpu",
            "pipeline",
            "run",
            "--stage",
            "train_ssv2",
        ],
    )
    .ok();
    assert_ne!(
        file_hash(&cfg, "train_ssv2", "model.safetensors"),
        file_hash(&none, "train_ssv2", "model.safetensors")
    );

    // A PointBERT knob on video data is a config error that names the key.
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("embed_dim = 32", "trans_dim = 32");
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, text).unwrap();
    let r = lm4ve(&bad, &["pipeline", "status"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("trans_dim"), "{}", r.stderr);
}

/// Argoverse-format demo scenarios → `av.tokens` → VectorNet with the frozen block (padding
/// mask in its attention): minADE / minFDE / miss rate at K = 6 and K = 1 on `val`.
#[test]
fn vectornet_training_through_the_frozen_block_reports_forecast_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = av_config(dir.path(), (48, 16), 3, 16, "");
    lm4ve(
        &cfg,
        &["--device", "cpu", "pipeline", "run", "--stage", "all"],
    )
    .ok();
    let t = show(&cfg, "train_av");
    assert_eq!(t["meta"]["task"], "forecast");
    let e = show(&cfg, "eval_av")["meta"].clone();
    assert_eq!(e["split"], "val");
    assert_eq!(e["modes"], 6);
    let n = e["samples"].as_u64().unwrap();
    assert!(n > 0 && n <= 16, "{e}");
    let f = |k: &str| e[k].as_f64().unwrap();
    // Best of 6 is never worse than the most confident one.
    assert!(f("min_fde") <= f("min_fde_k1") + 1e-9);
    assert!(f("min_ade") > 0.0 && f("min_fde").is_finite());
    assert!((0.0..=1.0).contains(&f("miss_rate")));
    assert!(f("miss_rate") <= f("miss_rate_k1") + 1e-9);
    // The K modes of every scene in world coordinates: ranked, probabilities summing to 1,
    // and the best-of-K final error against the truth is the metric's minFDE.
    let scenes = read_forecast(&predictions_file(
        &cfg,
        "eval_av",
        "predictions-last.parquet",
    ))
    .unwrap();
    assert_eq!(scenes.len() as u64, n);
    let mut fde = 0.0;
    for s in &scenes {
        assert_eq!(s.modes.len(), 6);
        assert!(
            s.scenario_id.parse::<u64>().is_ok() && s.track_id.is_empty(),
            "{s:?}"
        );
        let p: Vec<f64> = s.modes.iter().map(|m| m.probability).collect();
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        assert!(p.windows(2).all(|w| w[0] >= w[1]));
        let (tx, ty) = s.truth.as_ref().unwrap();
        let last = tx.len() - 1;
        fde += s
            .modes
            .iter()
            .map(|m| (m.x[last] - tx[last]).hypot(m.y[last] - ty[last]))
            .fold(f64::INFINITY, f64::min);
    }
    let min_fde = e["checkpoints"]["last"]["min_fde"].as_f64().unwrap();
    assert!(
        (fde / n as f64 - min_fde).abs() < 1e-3,
        "{fde} vs {min_fde}"
    );
    // report --plot draws four of the scenes.
    let plots = dir.path().join("plots");
    lm4ve(
        &cfg,
        &["pipeline", "report", "--plot", plots.to_str().unwrap()],
    )
    .ok();
    assert!(plots.join("scenes-eval_av.png").is_file());
    // Every epoch records the held-out forecast metrics, and forecast.png is drawn.
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(t["manifest"].as_str().unwrap()).unwrap()).unwrap();
    let names: Vec<&str> = manifest["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"forecast.png"), "{names:?}");
    let epochs = &t["meta"]["final"];
    assert!(epochs["forecast"]["min_fde"].as_f64().is_some(), "{epochs}");
    // The AGENT-only ablation trains another model (other actors' futures unused).
    let r = lm4ve(
        &cfg,
        &[
            "--device",
            "cpu",
            "-S",
            "stages.train_av.params.model.agent_only_loss=true",
            "pipeline",
            "run",
            "--stage",
            "train_av",
        ],
    );
    r.ok();
    assert!(r.stderr.contains("train_av"), "{}", r.stderr);
}

/// A train config with extra `[stages.train_pc.params]` lines.
fn with_train_params(cfg: &Path, name: &str, extra: &str) -> PathBuf {
    let text = std::fs::read_to_string(cfg).unwrap().replace(
        "epochs_per_checkpoint = 1\n",
        &format!("epochs_per_checkpoint = 1\n{extra}\n"),
    );
    let p = cfg.with_file_name(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn checkpointed_blocks_train_the_same_model_and_f16_chunked_trains() {
    let dir = tempfile::tempdir().unwrap();
    let so = demo_data(dir.path(), 3);
    let model = tiny_llama(dir.path());
    let (train, test) = (
        so.join("training_objectdataset.h5"),
        so.join("test_objectdataset.h5"),
    );
    let base = train_config(
        dir.path(),
        "c.toml",
        &train,
        &test,
        &model,
        "frozen",
        3,
        "cache",
    );
    let run = |cfg: &Path| {
        lm4ve(
            cfg,
            &["--device", "cpu", "pipeline", "run", "--stage", "train_pc"],
        )
        .ok();
    };
    run(&base);
    // Recomputing the blocks in the backward changes what is kept, not one bit of the model.
    let ckpt = with_train_params(&base, "ckpt.toml", "checkpoint_blocks = true");
    let st = lm4ve(&ckpt, &["pipeline", "status"]);
    assert!(
        st.ok().stdout.contains("checkpoint_blocks"),
        "{}",
        st.stdout
    );
    run(&ckpt);
    assert_eq!(
        file_hash(&base, "train_pc", "model.safetensors"),
        file_hash(&ckpt, "train_pc", "model.safetensors")
    );
    // f16 autocast with loss scaling, chunked attention, checkpointed blocks: trains, and the
    // loss scale is part of the checkpoint (a resumed run continues with it).
    let f16 = with_train_params(
        &base,
        "f16.toml",
        "precision = \"f16\"\nattention = \"chunked\"\ncheckpoint_blocks = true",
    );
    run(&f16);
    let m = metrics(&f16);
    assert_eq!(m.len(), 3);
    assert!(m.iter().all(|e| e["loss"].as_f64().unwrap().is_finite()));
    // A misspelt value is a config error naming the key.
    let bad = with_train_params(&base, "bad.toml", "precision = \"fp8\"");
    let r = lm4ve(&bad, &["pipeline", "status"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("precision"), "{}", r.stderr);
}

/// Studies end to end: a seed matrix on a train stage, its eval following, `report` pooling
/// the seeds (mean ± std computed here independently), and `export` naming the files.
#[test]
fn report_pools_seeds_and_export_names_files() {
    let dir = tempfile::tempdir().unwrap();
    let so = demo_data(dir.path(), 2);
    let model = tiny_llama(dir.path());
    let base = train_config(
        dir.path(),
        "c.toml",
        &so.join("training_objectdataset.h5"),
        &so.join("test_objectdataset.h5"),
        &model,
        "none",
        2,
        "cache",
    );
    let text = std::fs::read_to_string(&base)
        .unwrap()
        .replace("block = \"llm_block\"\n", "")
        + "\n[stages.train_pc.matrix]\nseed = [0, 1, 2]\n";
    let cfg = dir.path().join("study.toml");
    std::fs::write(&cfg, text).unwrap();
    lm4ve(&cfg, &["--device", "cpu", "pipeline", "run"]).ok();
    // Independent mean and std of the three evals' accuracy.
    let acc: Vec<f64> = (0..3)
        .map(|s| {
            let v = show(&cfg, &format!("eval_pc@seed={s}"));
            v["meta"]["overall_accuracy"].as_f64().unwrap()
        })
        .collect();
    let mean = acc.iter().sum::<f64>() / 3.0;
    let std = (acc.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / 2.0).sqrt();
    let r = lm4ve(&cfg, &["pipeline", "report", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&r.ok().stdout).unwrap();
    let g = &v["eval_pc"]["overall_accuracy"];
    assert_eq!(g["n"], 3, "{v}");
    assert!((g["mean"].as_f64().unwrap() - mean).abs() < 1e-12);
    assert!((g["std"].as_f64().unwrap() - std).abs() < 1e-12);
    let plots = dir.path().join("plots");
    let md = lm4ve(
        &cfg,
        &[
            "pipeline",
            "report",
            "--format",
            "markdown",
            "--plot",
            plots.to_str().unwrap(),
        ],
    );
    for f in [
        "overall_accuracy.png",
        "overall_accuracy.svg",
        "curves.png",
        "confusion-eval_pc-seed-0.png",
    ] {
        assert!(plots.join(f).is_file(), "{f} not written");
    }
    assert!(md.ok().stdout.contains("(n=3)"), "{}", md.stdout);
    assert!(
        md.stdout.lines().nth(1).unwrap_or("").starts_with("|--"),
        "{}",
        md.stdout
    );
    // Export: readable names, checkpoints numbered by unit.
    let out = dir.path().join("export");
    lm4ve(
        &cfg,
        &[
            "pipeline",
            "export",
            "train_pc@seed=1",
            "--out",
            out.to_str().unwrap(),
        ],
    )
    .ok();
    for f in [
        "model.safetensors",
        "metrics.jsonl",
        "curves.png",
        "checkpoint-00000.safetensors",
        "checkpoint-00001.safetensors",
        "manifest.json",
    ] {
        assert!(
            out.join(f).is_file(),
            "{f} missing in {:?}",
            std::fs::read_dir(&out).unwrap().count()
        );
    }
    // An eval's export holds its predictions.
    let out = dir.path().join("export-eval");
    lm4ve(
        &cfg,
        &[
            "pipeline",
            "export",
            "eval_pc@seed=1",
            "--out",
            out.to_str().unwrap(),
        ],
    )
    .ok();
    let rows = read_classification(&out.join("predictions-last.parquet")).unwrap();
    let samples = show(&cfg, "eval_pc@seed=1")["meta"]["samples"].clone();
    assert_eq!(rows.len() as u64, samples.as_u64().unwrap());
}

/// Point-BERT's recipe needs the raw points: without them the error says what to set, and
/// `resample = false` trains on the cached tokens instead (a different model).
#[test]
fn resampling_needs_kept_points_and_changes_what_trains() {
    let dir = tempfile::tempdir().unwrap();
    let so = demo_data(dir.path(), 2);
    let model = tiny_llama(dir.path());
    let cfg = train_config(
        dir.path(),
        "c.toml",
        &so.join("training_objectdataset.h5"),
        &so.join("test_objectdataset.h5"),
        &model,
        "none",
        1,
        "cache",
    );
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace(
            "shard_samples = 64\n",
            "shard_samples = 64\nkeep_points = 0\n",
        )
        .replace("vote = 3\n", "");
    let no_points = dir.path().join("no-points.toml");
    std::fs::write(&no_points, text).unwrap();
    let r = lm4ve(
        &no_points,
        &["--device", "cpu", "pipeline", "run", "--stage", "train_pc"],
    );
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("keep_points = 2048") && r.stderr.contains("resample = false"),
        "{}",
        r.stderr
    );
    let cached = with_train_params(&no_points, "cached.toml", "resample = false");
    lm4ve(
        &cached,
        &["--device", "cpu", "pipeline", "run", "--stage", "train_pc"],
    )
    .ok();
    lm4ve(
        &cfg,
        &["--device", "cpu", "pipeline", "run", "--stage", "train_pc"],
    )
    .ok();
    assert_ne!(
        file_hash(&cfg, "train_pc", "model.safetensors"),
        file_hash(&cached, "train_pc", "model.safetensors")
    );
    // The kept points are in the shards, as the schema says.
    let pc = show(&cfg, "pc_tokens");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(pc["manifest"].as_str().unwrap()).unwrap()).unwrap();
    let points = manifest["schema"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "points")
        .expect("a points field");
    assert_eq!(points["shape"], serde_json::json!([2048, 3]));
}

/// `init`: a Point-BERT pretraining checkpoint (the fixture written from the official model
/// code by scripts/fixtures/encoder_ckpts.py) initialises the encoder; the train manifest
/// records what was loaded, what the checkpoint lacked and what it held besides; editing
/// the file makes the stage stale; a checkpoint of other sizes fails naming the key.
#[test]
fn init_from_a_point_bert_checkpoint_is_recorded_and_keyed() {
    let dir = tempfile::tempdir().unwrap();
    let so = demo_data(dir.path(), 2);
    let model = tiny_llama(dir.path());
    let ckpt = dir.path().join("Point-BERT.pth");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/encoders/pointbert_pretrain.pth"),
        &ckpt,
    )
    .unwrap();
    let base = train_config(
        dir.path(),
        "c.toml",
        &so.join("training_objectdataset.h5"),
        &so.join("test_objectdataset.h5"),
        &model,
        "frozen",
        1,
        "cache",
    );
    // The fixture's sizes (Point-BERT's mini-PointNet widths are fixed: 128, 256, 512).
    let text = std::fs::read_to_string(&base).unwrap().replace(
        "depth = 1\nheads = 2\npointnet_dims = [16, 32, 32]",
        "depth = 2\nheads = 4\npointnet_dims = [128, 256, 512]",
    );
    std::fs::write(&base, text).unwrap();
    let cfg = with_train_params(&base, "init.toml", "init = \"Point-BERT.pth\"");
    let r = lm4ve(
        &cfg,
        &["--device", "cpu", "pipeline", "run", "--stage", "train_pc"],
    );
    r.ok();
    assert!(
        r.stderr.contains("init from Point-BERT.pth"),
        "{}",
        r.stderr
    );
    let v = show(&cfg, "train_pc");
    let manifest = PathBuf::from(v["manifest"].as_str().unwrap());
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    let init = &m["meta"]["init"];
    assert_eq!(init["family"], "Point-BERT", "{init}");
    assert_eq!(init["state_dict"], "base_model");
    assert_eq!(
        init["loaded"]["blocks.1.attn.qkv.weight"],
        "module.transformer_q.blocks.blocks.1.attn.qkv.weight"
    );
    let missing: Vec<&str> = init["missing"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for k in [
        "cls_head.0.weight",
        "cls_head.4.bias",
        "llm_adapter_up.weight",
    ] {
        assert!(missing.contains(&k), "{k}: {missing:?}");
    }
    assert!(init["ignored"]
        .to_string()
        .contains("module.transformer_k.cls_token"));
    // The file is an input: other weights at the same path make the stage stale (a
    // safetensors file, despite the name: the format is read from the content).
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/encoders/videomae_pretrain.safetensors"),
        &ckpt,
    )
    .unwrap();
    let st = lm4ve(&cfg, &["pipeline", "status"]);
    let line = st
        .ok()
        .stdout
        .lines()
        .find(|l| l.starts_with("train_pc "))
        .unwrap_or_default()
        .to_string();
    assert!(line.contains("stale"), "{}", st.stdout);
    // A checkpoint of other sizes: the first key whose shape differs is named, with both.
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/encoders/pointbert_pretrain.pth"),
        &ckpt,
    )
    .unwrap();
    let wide = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("trans_dim = 32", "trans_dim = 48");
    let wide_cfg = dir.path().join("wide.toml");
    std::fs::write(&wide_cfg, wide).unwrap();
    let r = lm4ve(
        &wide_cfg,
        &["--device", "cpu", "pipeline", "run", "--stage", "train_pc"],
    );
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("Point-BERT.pth")
            && r.stderr.contains("has shape [32], the model's is [48]"),
        "{}",
        r.stderr
    );
}

/// The saved model's tensor names of a config's train_pc.
fn saved_names(cfg: &Path) -> Vec<String> {
    let v = show(cfg, "train_pc");
    let manifest = PathBuf::from(v["manifest"].as_str().unwrap());
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    let f = m["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "model.safetensors")
        .unwrap();
    let w = candle_core::safetensors::load(
        manifest.parent().unwrap().join(f["path"].as_str().unwrap()),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let mut names: Vec<String> = w.keys().cloned().collect();
    names.sort();
    names
}

/// The ablations through the binary: the `mlp` control (with `mlp_hidden`) and a stack of the
/// checkpoint's two layers (`blocks = 2`), frozen and trainable, train, save what trains and
/// evaluate (eval rebuilds the same model from the manifest).
#[test]
fn mlp_and_stacked_blocks_train_and_evaluate() {
    let dir = tempfile::tempdir().unwrap();
    let so = demo_data(dir.path(), 2);
    let model = tiny_llama(dir.path());
    let (train, test) = (
        so.join("training_objectdataset.h5"),
        so.join("test_objectdataset.h5"),
    );
    let base = |mode: &str| {
        train_config(
            dir.path(),
            &format!("{mode}.toml"),
            &train,
            &test,
            &model,
            mode,
            1,
            "cache",
        )
    };
    let stacked = |mode: &str| {
        let cfg = base(mode);
        let text = std::fs::read_to_string(&cfg)
            .unwrap()
            .replace("checkpoint = \"", "blocks = 2\ncheckpoint = \"");
        let p = cfg.with_file_name(format!("{mode}-stack.toml"));
        std::fs::write(&p, text).unwrap();
        p
    };
    let run = |cfg: &Path| {
        lm4ve(
            cfg,
            &["--device", "cpu", "pipeline", "run", "--stage", "eval_pc"],
        )
        .ok();
        let e = show(cfg, "eval_pc");
        let oa = e["meta"]["overall_accuracy"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&oa), "{}", cfg.display());
        saved_names(cfg)
    };
    let mlp = with_train_params(&base("mlp"), "mlp-40.toml", "mlp_hidden = 40");
    let names = run(&mlp);
    for t in [
        "norm.weight",
        "gate_proj.weight",
        "up_proj.weight",
        "down_proj.weight",
    ] {
        assert!(names.contains(&format!("llm_mlp.{t}")), "{names:?}");
    }
    assert!(names.iter().all(|n| !n.starts_with("llm_block")));
    assert!(names.iter().any(|n| n.starts_with("llm_adapter_up")));
    assert_eq!(show(&mlp, "train_pc")["meta"]["mlp_hidden"], 40);
    // mlp_hidden with another mode is a config error naming the key.
    let bad = with_train_params(&base("frozen"), "bad.toml", "mlp_hidden = 40");
    let r = lm4ve(&bad, &["pipeline", "run", "--stage", "train_pc"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("mlp_hidden"), "{}", r.stderr);

    let trainable = stacked("trainable");
    let names = run(&trainable);
    for i in 0..2 {
        assert!(
            names.contains(&format!("llm_block.{i}.self_attn.q_proj.weight")),
            "{names:?}"
        );
    }
    let b = show(&trainable, "llm_block");
    assert_eq!(
        (b["meta"]["layer"].clone(), b["meta"]["blocks"].clone()),
        (0.into(), 2.into())
    );
    let frozen = stacked("frozen");
    let names = run(&frozen);
    assert!(
        names.iter().all(|n| !n.starts_with("llm_block")),
        "{names:?}"
    );
    // The stack is a different model from the last layer alone.
    let single = base("frozen");
    lm4ve(
        &single,
        &["--device", "cpu", "pipeline", "run", "--stage", "train_pc"],
    )
    .ok();
    assert_ne!(
        file_hash(&frozen, "train_pc", "model.safetensors"),
        file_hash(&single, "train_pc", "model.safetensors")
    );
}

/// `pipeline run --stage S --dry-run` runs nothing and prints the train stage's counts,
/// memory and FLOPs, also when the block's checkpoint directory holds only its config.json
/// (the block stage itself then cannot run, and says so).
#[test]
fn dry_run_plans_without_running() {
    let dir = tempfile::tempdir().unwrap();
    let so = demo_data(dir.path(), 2);
    let model = tiny_llama(dir.path());
    let cfg = train_config(
        dir.path(),
        "c.toml",
        &so.join("training_objectdataset.h5"),
        &so.join("test_objectdataset.h5"),
        &model,
        "frozen",
        1,
        "cache",
    );
    let r = lm4ve(
        &cfg,
        &["pipeline", "run", "--stage", "eval_pc", "--dry-run"],
    );
    r.ok();
    for needle in [
        "pc_tokens        pc.tokens: 2 units",
        "llm_block        llm.block: 1 unit (block)",
        "train_pc         train",
        "parameters",
        "trainable",
        "frozen",
        "memory/step",
        "FLOPs/step",
        "eval_pc          eval: 1 unit (eval)",
        "dry run: nothing was run",
    ] {
        assert!(
            r.stdout.contains(needle),
            "`{needle}` missing:\n{}",
            r.stdout
        );
    }
    // The tiny LLaMA layer: 32 wide, 4 heads (2 kv), FFN 48: 2·32 + 32·32·2 + 16·32·2 + 3·32·48
    // = 8256 weights, frozen.
    assert!(r.stdout.contains("0.01M frozen"), "{}", r.stdout);
    assert!(
        !dir.path().join("cache").join("objects").exists()
            || std::fs::read_dir(dir.path().join("cache").join("objects"))
                .unwrap()
                .next()
                .is_none(),
        "a dry run stores nothing"
    );
    let s = lm4ve(&cfg, &["pipeline", "status", "--json"]);
    assert!(!s.stdout.contains("\"fresh\""), "{}", s.stdout);

    // Only config.json: the block stage cannot run, the plan still knows the block.
    let only_cfg = dir.path().join("config-only");
    std::fs::create_dir_all(&only_cfg).unwrap();
    std::fs::copy(model.join("config.json"), only_cfg.join("config.json")).unwrap();
    let r = lm4ve(
        &cfg,
        &[
            "-S",
            &format!("stages.llm_block.params.checkpoint={}", only_cfg.display()),
            "pipeline",
            "run",
            "--stage",
            "train_pc",
            "--dry-run",
        ],
    );
    r.ok();
    assert!(
        r.stdout.contains("llm.block: cannot run")
            && r.stdout.contains("hidden 32, heads 4 (kv 2), ffn 48"),
        "{}",
        r.stdout
    );
    // --dry-run with --force is refused by the argument parser.
    let r = lm4ve(&cfg, &["pipeline", "run", "--dry-run", "--force"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
}

/// `init_stage`: a train stage fine-tunes from another train stage's model. The upstream is
/// built first, its every tensor is loaded (the report names the stage, not the cache
/// object), retraining it makes the fine-tuning stage stale, and a wrong `init_stage` fails
/// at config time naming the key.
#[test]
fn init_stage_fine_tunes_from_another_train_stage() {
    let dir = tempfile::tempdir().unwrap();
    let ssv2 = video_demo(dir.path());
    let model = tiny_llama(dir.path());
    let base =
        std::fs::read_to_string(video_config(dir.path(), &ssv2, &model, "frozen", 1)).unwrap();
    let ft = |extra: &str| {
        format!(
            r#"{base}
[stages.train_ft]
kind = "train"
[stages.train_ft.params]
data = "ssv2_tokens"
block = "llm_block"
epochs = 1
warmup_epochs = 1
batch_size = 8
lr = 1e-4
{extra}
[stages.train_ft.params.model]
embed_dim = 32
depth = 1
heads = 2
drop_path = 0.0
"#
        )
    };
    let cfg = dir.path().join("ft.toml");
    std::fs::write(&cfg, ft("init_stage = \"train_ssv2\"")).unwrap();
    let r = lm4ve(
        &cfg,
        &["--device", "cpu", "pipeline", "run", "--stage", "train_ft"],
    );
    r.ok();
    assert!(
        r.stderr
            .contains("init from train_ssv2/model.safetensors (VideoMAE)"),
        "{}",
        r.stderr
    );
    let m = show_stage_json(&cfg, "train_ft");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(m["manifest"].as_str().unwrap()).unwrap()).unwrap();
    let init = &manifest["meta"]["init"];
    assert_eq!(init["file"], "train_ssv2/model.safetensors", "{init}");
    assert_eq!(init["missing"], serde_json::json!([]), "{init}");
    assert_eq!(
        init["loaded"]["blocks.0.attn.qkv.weight"], "blocks.0.attn.qkv.weight",
        "{init}"
    );
    let dry = lm4ve(
        &cfg,
        &["pipeline", "run", "--stage", "train_ft", "--dry-run"],
    );
    dry.ok();
    assert!(
        dry.stdout
            .contains("init: the model.safetensors of train stage `train_ssv2`"),
        "{}",
        dry.stdout
    );
    // The upstream retrains (another seed): the fine-tuned stage is stale.
    let reseeded = dir.path().join("ft2.toml");
    std::fs::write(
        &reseeded,
        std::fs::read_to_string(&cfg)
            .unwrap()
            .replace("lr = 1e-3\n", "lr = 1e-3\nseed = 7\n"),
    )
    .unwrap();
    let st = lm4ve(&reseeded, &["pipeline", "status"]);
    st.ok();
    let line = st
        .stdout
        .lines()
        .find(|l| l.starts_with("train_ft "))
        .unwrap_or_default()
        .to_string();
    assert!(!line.contains("fresh"), "{}", st.stdout);
    // Wrong uses fail at config time, naming the key and the fix.
    for (extra, says) in [
        ("init_stage = \"ssv2_tokens\"", "must name a `train` stage"),
        ("init_stage = \"train_ft\"", "names this stage itself"),
        ("init_stage = \"nope\"", "names no stage"),
        ("init_stage = \"train_ssv2\"\ninit = \"x.pth\"", "not both"),
    ] {
        std::fs::write(&cfg, ft(extra)).unwrap();
        let r = lm4ve(&cfg, &["pipeline", "status"]);
        r.no_panic();
        assert_ne!(r.code, 0, "{extra}");
        assert!(
            r.stderr.contains("init_stage") && r.stderr.contains(says),
            "{extra}: {}",
            r.stderr
        );
    }
}

/// The train artifact keeps the best epoch's weights (by held-out accuracy, the first of equal
/// epochs) beside the last; `eval` scores both, its top level is the point-cloud protocol's
/// (`ckpt-best`), voting runs `vote_runs` times and keeps the best run, and `report` shows the
/// protocol's number by default and either checkpoint on request.
#[test]
fn best_and_last_weights_are_kept_and_both_evaluated() {
    let dir = tempfile::tempdir().unwrap();
    let so = demo_data(dir.path(), 6);
    let model = tiny_llama(dir.path());
    let base = train_config(
        dir.path(),
        "c.toml",
        &so.join("training_objectdataset.h5"),
        &so.join("test_objectdataset.h5"),
        &model,
        "frozen",
        6,
        "cache",
    );
    let text = std::fs::read_to_string(&base)
        .unwrap()
        .replace("vote = 3\n", "vote = 3\nvote_runs = 2\n");
    let cfg = dir.path().join("best.toml");
    std::fs::write(&cfg, text).unwrap();
    lm4ve(&cfg, &["--device", "cpu", "pipeline", "run"]).ok();
    let m = metrics(&cfg);
    assert_eq!(m.len(), 6);
    let acc: Vec<f64> = m.iter().map(|e| e["test_acc"].as_f64().unwrap()).collect();
    let best = (0..acc.len()).fold(0, |b, i| if acc[i] > acc[b] { i } else { b });
    let t = show(&cfg, "train_pc");
    assert_eq!(t["meta"]["best"]["epoch"], best as u64);
    let (best_file, last_file) = (
        file_hash(&cfg, "train_pc", "model-best.safetensors"),
        file_hash(&cfg, "train_pc", "model.safetensors"),
    );
    assert_eq!(best_file == last_file, best == 5, "best epoch {best}");
    let e = show(&cfg, "eval_pc")["meta"].clone();
    assert_eq!(e["reported"]["checkpoint"], "best", "{e}");
    let ck = &e["checkpoints"];
    assert_eq!(ck["best"]["epoch"], best as u64);
    assert_eq!(ck["last"]["epoch"], 5);
    // The eval's single view of each set of weights is the trainer's held-out score of its
    // epoch (the same test clouds; batch sizes differ, so allow one cloud of rounding).
    let n = e["samples"].as_f64().unwrap();
    for (name, epoch) in [("best", best), ("last", 5)] {
        let got = ck[name]["overall_accuracy"].as_f64().unwrap();
        assert!(
            (got - acc[epoch]).abs() <= 1.0 / n + 1e-12,
            "{name}: {got} vs {}",
            acc[epoch]
        );
    }
    assert_eq!(e["overall_accuracy"], ck["best"]["overall_accuracy"]);
    // Best of two voting runs.
    let runs: Vec<f64> = ck["last"]["vote_run_scores"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(runs.len(), 2);
    let top = runs.iter().cloned().fold(f64::MIN, f64::max);
    assert_eq!(ck["last"]["vote_overall_accuracy"].as_f64().unwrap(), top);
    assert_eq!(e["vote_runs"], 2);
    let report = |extra: &[&str]| -> serde_json::Value {
        let mut args = vec!["pipeline", "report", "--format", "json"];
        args.extend_from_slice(extra);
        serde_json::from_str(&lm4ve(&cfg, &args).ok().stdout).unwrap()
    };
    let mean = |v: &serde_json::Value| v["eval_pc"]["overall_accuracy"]["mean"].as_f64().unwrap();
    assert_eq!(
        mean(&report(&[])),
        ck["best"]["overall_accuracy"].as_f64().unwrap()
    );
    assert_eq!(
        mean(&report(&["--checkpoint", "last"])),
        ck["last"]["overall_accuracy"].as_f64().unwrap()
    );
    assert!(report(&[])["eval_pc"]
        .get("checkpoints.last.overall_accuracy")
        .is_none());
}

/// `expect = "llama-v1-7b"` on a checkpoint whose config says another model: every command
/// that loads the config warns (naming what differs) and nothing is refused; the block's
/// meta records the identity.
#[test]
fn llm_block_warns_when_the_checkpoint_is_not_llama_v1_7b() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_llama(dir.path());
    let cfg = dir.path().join("llm.toml");
    std::fs::write(
        &cfg,
        format!(
            "[cache]\ndir = \"cache\"\n\n[stages.llm_block]\nkind = \"llm.block\"\n[stages.llm_block.params]\ncheckpoint = \"{}\"\nexpect = \"llama-v1-7b\"\n",
            model.display()
        ),
    )
    .unwrap();
    let s = lm4ve(&cfg, &["pipeline", "status"]);
    s.ok();
    assert!(s.stderr.contains("is not LLaMA-v1 7B"), "{}", s.stderr);
    assert!(
        s.stderr.contains("hidden 32, 2 layers") && s.stderr.contains("1e-5"),
        "{}",
        s.stderr
    );
    lm4ve(&cfg, &["pipeline", "run"]).ok();
    let b = show(&cfg, "llm_block");
    assert_eq!(b["meta"]["identity"]["hidden_size"], 32);
    assert_eq!(b["meta"]["identity"]["norm_eps"], 1e-5);
    assert_eq!(b["meta"]["identity"]["from"], "config.json");
}

/// `schedule = "streaming-forecasting"` trains with StreamingForecasting's warm-up pass before
/// epoch 0: iteration `i` at `lr·1e-3 + (lr − lr·1e-3)·i / 1000`, cut at the end of one pass
/// over the data (the demo-sized set is far shorter than 1001 batches), and the epochs then at
/// the lr the pass left; the pass is recorded in the train meta.
#[test]
fn streaming_forecasting_schedule_warms_up_in_a_pass_before_epoch_0() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = av_config(dir.path(), (32, 8), 2, 16, "");
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "warmup_epochs = 1\n",
        "schedule = \"streaming-forecasting\"\n",
    );
    std::fs::write(&cfg, text).unwrap();
    lm4ve(
        &cfg,
        &["--device", "cpu", "pipeline", "run", "--stage", "train_av"],
    )
    .ok();
    let t = show(&cfg, "train_av");
    assert_eq!(t["meta"]["schedule"], "streaming-forecasting");
    let manifest = PathBuf::from(t["manifest"].as_str().unwrap());
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    let f = m["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "metrics.jsonl")
        .unwrap();
    let text =
        std::fs::read_to_string(manifest.parent().unwrap().join(f["path"].as_str().unwrap()))
            .unwrap();
    let (lr, start) = (1e-3, 1e-3 * 1e-3);
    let pass = &t["meta"]["warmup_pass"];
    let steps = pass["steps"].as_u64().unwrap();
    assert!(steps > 0 && steps < 1001, "{pass}");
    let last = start + (lr - start) * (steps - 1) as f64 / 1000.0;
    assert!(
        (pass["last_lr"].as_f64().unwrap() - last).abs() < 1e-15,
        "{pass}"
    );
    for (e, line) in text.lines().enumerate() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        // The pass is one epoch's worth of batches; `step` counts it too.
        let done = v["step"].as_u64().unwrap();
        assert_eq!(done, steps * (e as u64 + 2), "epoch {e}");
        let got = v["lr"].as_f64().unwrap();
        assert!(
            (got - last).abs() < 1e-15,
            "epoch {e}: lr {got}, want the pass's last {last}"
        );
    }
}
