//! The image task end to end through the binary: the demo's ImageNet folder → `image.tokens`
//! → a tiny ViT-LLaMA with a frozen tiny LLaMA block, trained with DeiT's per-image
//! augmentation (the stored JPEGs decoded, RandAugment, crops, erasing) and Mixup/CutMix,
//! resumed over two checkpoints, evaluated; and its dry run.

mod common;
use common::{bin, lm4ve, output, predictions_file, tiny_llama};

#[test]
fn a_vit_with_a_frozen_block_trains_on_image_tokens_and_evaluates() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo");
    let mut c = bin();
    c.args(["demo-data", "--out"])
        .arg(&out)
        .args(["--pc-train-per-class", "1", "--pc-test-per-class", "1"])
        .args(["--video-train-per-class", "0", "--video-val-per-class", "0"])
        .args(["--av-train", "0", "--av-val", "0"])
        .args(["--image-train-per-class", "8", "--image-val-per-class", "4"]);
    output(c.output().expect("spawn")).ok();
    let llama = tiny_llama(dir.path());
    let config = dir.path().join("image.toml");
    std::fs::write(
        &config,
        format!(
            r#"[cache]
dir = "cache"

[stages.llm_block]
kind = "llm.block"
[stages.llm_block.params]
checkpoint = "{llama}"

[stages.image_tokens]
kind = "image.tokens"
[stages.image_tokens.params]
format = "folder"
root = "{root}"
eval_size = 64
max_side = 96
max_image_bytes = 65536

[stages.train_image]
kind = "train"
[stages.train_image.params]
data = "image_tokens"
block = "llm_block"
epochs = 2
warmup_epochs = 1
batch_size = 8
epochs_per_checkpoint = 1
[stages.train_image.params.model]
patch = 16
embed_dim = 32
depth = 1
heads = 2

[stages.eval_image]
kind = "eval"
[stages.eval_image.params]
train = "train_image"
data = "image_tokens"
block = "llm_block"
"#,
            llama = llama.display(),
            root = out.join("imagenet").display()
        ),
    )
    .unwrap();
    let plan = lm4ve(
        &config,
        &["pipeline", "run", "--stage", "train_image", "--dry-run"],
    );
    plan.ok();
    assert!(
        plan.stdout.contains("Image, mode frozen"),
        "{}",
        plan.stdout
    );
    // 4 × 4 patches + the class token.
    assert!(
        plan.stdout.contains("17 tokens per sample"),
        "{}",
        plan.stdout
    );

    lm4ve(&config, &["pipeline", "run", "--stage", "eval_image"]).ok();
    let show = lm4ve(&config, &["pipeline", "show", "eval_image", "--json"]);
    show.ok();
    let v: serde_json::Value = serde_json::from_str(&show.stdout).unwrap();
    let meta = &v["meta"];
    assert_eq!(meta["samples"], 20, "{meta}");
    assert_eq!(meta["split"], "val");
    // The model EMA's weights are scored beside the model's, never reported in their place.
    let ema = &meta["checkpoints"]["ema"];
    assert!(ema["top1_accuracy"].as_f64().is_some(), "{meta}");
    assert_ne!(meta["reported"]["checkpoint"], "ema");
    assert!(meta["top1_accuracy"].as_f64().is_some());
    // Predictions number each image by its shard `index` (its place in the ImageFolder).
    let rows = lm4ve_stages::train::predictions::read::read_classification(&predictions_file(
        &config,
        "eval_image",
        "predictions-last.parquet",
    ))
    .unwrap();
    assert_eq!(rows.len(), 20);
    let mut samples: Vec<i64> = rows.iter().map(|r| r.sample).collect();
    samples.dedup();
    assert_eq!(samples.len(), 20, "{samples:?}");
    assert!(rows.iter().all(|r| r.id.is_none() && r.top5.len() <= 5));
    let train = lm4ve(&config, &["pipeline", "show", "train_image", "--json"]);
    let t: serde_json::Value = serde_json::from_str(&train.stdout).unwrap();
    assert_eq!(t["meta"]["task"], "image");
    // DeiT's repeated-augmentation sampler is on by default: 3 copies of each image.
    assert_eq!(t["meta"]["repeated_aug"], 3, "{}", t["meta"]);
    // DeiT's model EMA is on by default: its weights beside the model's.
    assert_eq!(t["meta"]["model_ema"], 0.99996, "{}", t["meta"]);
    let text = lm4ve(&config, &["pipeline", "show", "train_image"]);
    assert!(
        text.stdout.contains("model-ema.safetensors"),
        "{}",
        text.stdout
    );
    assert_eq!(t["meta"]["final"]["epoch"], 1);
    // DeiT's per-epoch schedule: both epochs train at the 1e-6 warm-up start.
    let loss = t["meta"]["final"]["loss"].as_f64().unwrap();
    assert!(loss.is_finite() && loss > 0.0);
    assert_eq!(t["meta"]["final"]["lr"], 1e-6);
    // A second run is a no-op.
    let again = lm4ve(&config, &["pipeline", "run", "--stage", "eval_image"]);
    again.ok();
    assert!(again.stdout.contains("0 stages run"), "{}", again.stdout);
}
