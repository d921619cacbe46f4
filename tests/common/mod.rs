//! Helpers for the end-to-end tests: run the real `lm4ve` binary, write configs and data.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The binary under test: the one cargo built, or `LM4VE_TEST_BIN` when set (to run a
/// suite against another build, e.g. the code before a fix, and see which cases fail).
pub fn bin() -> Command {
    let exe = std::env::var_os("LM4VE_TEST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_lm4ve")));
    let mut c = Command::new(exe);
    c.env_remove("LM4VE_CONFIG")
        .env_remove("LM4VE_CACHE")
        .env_remove("LM4VE_THREADS")
        .env("RUST_LOG", "info");
    c
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn ok(&self) -> &Self {
        assert_eq!(
            self.code, 0,
            "stdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
    pub fn no_panic(&self) -> &Self {
        assert!(
            !self.stderr.contains("panicked"),
            "lm4ve panicked:\n{}",
            self.stderr
        );
        assert!(
            self.code == 0 || self.code == 1 || self.code == 2,
            "exit {}",
            self.code
        );
        self
    }
}

pub fn output(o: Output) -> Run {
    Run {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// `lm4ve -c CONFIG ARGS...`
pub fn lm4ve(config: &Path, args: &[&str]) -> Run {
    let mut c = bin();
    c.arg("-c").arg(config).args(args);
    output(c.output().expect("spawn lm4ve"))
}

/// Writes the demo point-cloud data (small) into `dir/demo`, returns the scanobjectnn dir.
pub fn demo_data(dir: &Path, per_class: usize) -> PathBuf {
    let out = dir.join("demo");
    let mut c = bin();
    c.args(["demo-data", "--out"])
        .arg(&out)
        .args(["--pc-train-per-class", &per_class.to_string()])
        .args(["--pc-test-per-class", &(per_class / 2).max(1).to_string()])
        // Point-cloud tests need no clips or scenarios (libvpx alone would add seconds).
        .args(["--video-train-per-class", "0", "--video-val-per-class", "0"])
        .args(["--av-train", "0", "--av-val", "0"]);
    output(c.output().expect("spawn")).ok();
    out.join("scanobjectnn")
}

/// A config with one `pc.tokens` stage over the given h5 files; `extra` is appended to its params.
pub fn pc_config(dir: &Path, name: &str, train: &Path, test: &Path, extra: &str) -> PathBuf {
    let text = format!(
        r#"[cache]
dir = "cache"

[stages.pc_tokens]
kind = "pc.tokens"

[stages.pc_tokens.params]
format = "h5"
train = "{}"
test = "{}"
num_points = 256
num_groups = 16
group_size = 8
shard_samples = 16
{extra}
"#,
        train.display(),
        test.display()
    );
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

pub fn show_json(config: &Path) -> serde_json::Value {
    let r = lm4ve(config, &["pipeline", "show", "pc_tokens", "--json"]);
    r.ok();
    serde_json::from_str(&r.stdout).expect("show --json prints JSON")
}

pub fn manifest_hash(config: &Path) -> String {
    let v = show_json(config);
    let path = v["manifest"].as_str().unwrap();
    blake3::hash(&std::fs::read(path).unwrap())
        .to_hex()
        .to_string()
}

/// `lm4ve -c CONFIG pipeline show STAGE --json`, parsed.
pub fn show_stage_json(config: &Path, stage: &str) -> serde_json::Value {
    let r = lm4ve(config, &["pipeline", "show", stage, "--json"]);
    r.ok();
    serde_json::from_str(&r.stdout).expect("show --json prints JSON")
}

/// A tiny random LLaMA checkpoint in Hugging Face layout (safetensors + config.json).
pub fn tiny_llama(dir: &Path) -> PathBuf {
    let (d, heads, kv, f, layers) = (32usize, 4usize, 2usize, 48usize, 2usize);
    let hd = d / heads;
    let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
    let mut seed = 1u32;
    let mut rnd = |n: usize| -> Vec<f32> {
        (0..n)
            .map(|_| {
                seed = seed.wrapping_mul(1664525).wrapping_add(1013904223);
                ((seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5) * 0.2
            })
            .collect()
    };
    for l in 0..layers {
        let p = format!("model.layers.{l}.");
        for (name, shape) in [
            ("input_layernorm.weight", vec![d]),
            ("self_attn.q_proj.weight", vec![heads * hd, d]),
            ("self_attn.k_proj.weight", vec![kv * hd, d]),
            ("self_attn.v_proj.weight", vec![kv * hd, d]),
            ("self_attn.o_proj.weight", vec![d, heads * hd]),
            ("post_attention_layernorm.weight", vec![d]),
            ("mlp.gate_proj.weight", vec![f, d]),
            ("mlp.up_proj.weight", vec![f, d]),
            ("mlp.down_proj.weight", vec![d, f]),
        ] {
            let n = shape.iter().product();
            let data = if shape.len() == 1 {
                vec![1.0; n]
            } else {
                rnd(n)
            };
            tensors.push((format!("{p}{name}"), shape, data));
        }
    }
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .into_iter()
        .map(|(n, s, d)| (n, s, d.iter().flat_map(|v| v.to_le_bytes()).collect()))
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = bytes
        .iter()
        .map(|(n, s, b)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                    .unwrap(),
            )
        })
        .collect();
    let model = dir.join("tiny-llama");
    std::fs::create_dir_all(&model).unwrap();
    safetensors::tensor::serialize_to_file(views, None, &model.join("model.safetensors")).unwrap();
    std::fs::write(
        model.join("config.json"),
        format!(
            r#"{{"model_type": "llama", "hidden_size": {d}, "num_attention_heads": {heads}, "num_key_value_heads": {kv}, "intermediate_size": {f}, "num_hidden_layers": {layers}, "rms_norm_eps": 1e-5}}"#
        ),
    )
    .unwrap();
    model
}

/// Small demo video data (3 training and 1 validation clip per class) in `dir/demo`; returns
/// its SSv2 folder.
pub fn video_demo(dir: &Path) -> PathBuf {
    let out = dir.join("demo");
    let mut c = bin();
    c.args(["demo-data", "--out"])
        .arg(&out)
        .args(["--pc-train-per-class", "1", "--pc-test-per-class", "1"])
        .args(["--video-train-per-class", "3", "--video-val-per-class", "1"])
        .args(["--av-train", "0", "--av-val", "0"]);
    output(c.output().expect("spawn")).ok();
    out.join("ssv2")
}

/// The `ssv2_tokens` (4 frames, 32-pixel crops, 2 + 1 views) and `llm_block` stages of the
/// small video configs.
pub fn video_stages_toml(ssv2: &Path, model: &Path) -> String {
    format!(
        r#"[stages.ssv2_tokens]
kind = "ssv2.tokens"
[stages.ssv2_tokens.params]
root = "{}"
num_frames = 4
tubelet_frames = 2
patch = 16
short_side = 32
crop = 32
views = 2
random_views = 1
shard_samples = 8

[stages.llm_block]
kind = "llm.block"
[stages.llm_block.params]
checkpoint = "{}"
"#,
        ssv2.display(),
        model.display()
    )
}

/// Demo Argoverse scenes (`train` / `val` of them) and a VectorNet config on them in `dir`:
/// `av_tokens` (8 actors, 16 lanes), the tiny LLaMA `llm_block`, `train_av` (`epochs`,
/// `batch_size`, lr 1e-3, a checkpoint per epoch, subgraph widths 8/16, 6 modes) and
/// `eval_av`, whose params get `eval_extra` lines.
pub fn av_config(
    dir: &Path,
    scenes: (usize, usize),
    epochs: usize,
    batch_size: usize,
    eval_extra: &str,
) -> PathBuf {
    let out = dir.join("demo");
    let mut c = bin();
    c.args(["demo-data", "--out"])
        .arg(&out)
        .args(["--pc-train-per-class", "1", "--pc-test-per-class", "1"])
        .args(["--video-train-per-class", "0", "--video-val-per-class", "0"])
        .args(["--av-train", &scenes.0.to_string()])
        .args(["--av-val", &scenes.1.to_string()]);
    output(c.output().expect("spawn")).ok();
    let av = out.join("argoverse");
    let model = tiny_llama(dir);
    let text = format!(
        r#"[cache]
dir = "cache"

[stages.av_tokens]
kind = "av.tokens"
[stages.av_tokens.params]
train = "{av}/train/data"
val = "{av}/val/data"
map = "{av}/map_files"
max_actors = 8
max_lanes = 16
shard_samples = 32

[stages.llm_block]
kind = "llm.block"
[stages.llm_block.params]
checkpoint = "{model}"

[stages.train_av]
kind = "train"
[stages.train_av.params]
data = "av_tokens"
block = "llm_block"
epochs = {epochs}
warmup_epochs = 1
batch_size = {batch_size}
lr = 1e-3
epochs_per_checkpoint = 1
[stages.train_av.params.model]
subgraph_widths = [8, 16]
modes = 6

[stages.eval_av]
kind = "eval"
[stages.eval_av.params]
train = "train_av"
data = "av_tokens"
block = "llm_block"
{eval_extra}
"#,
        model = model.display(),
        av = av.display()
    );
    let cfg = dir.join("av.toml");
    std::fs::write(&cfg, text).unwrap();
    cfg
}

/// A small video config: `video_stages_toml`, `train_ssv2` (a 32-wide, 1-block ViT with the
/// block in `mode`, `epochs`, `batch_size`, lr 1e-3, a checkpoint per epoch, plus the
/// `extra_train` lines) and `eval_ssv2`, with its cache in `dir/<cache>`.
pub fn video_config_toml(
    cache: &str,
    ssv2: &Path,
    model: &Path,
    mode: &str,
    epochs: usize,
    batch_size: usize,
    extra_train: &str,
) -> String {
    format!(
        r#"[cache]
dir = "{cache}"

{}
[stages.train_ssv2]
kind = "train"
[stages.train_ssv2.params]
data = "ssv2_tokens"
block = "llm_block"
mode = "{mode}"
epochs = {epochs}
warmup_epochs = 1
batch_size = {batch_size}
lr = 1e-3
{extra_train}epochs_per_checkpoint = 1
[stages.train_ssv2.params.model]
embed_dim = 32
depth = 1
heads = 2
drop_path = 0.0

[stages.eval_ssv2]
kind = "eval"
[stages.eval_ssv2.params]
train = "train_ssv2"
data = "ssv2_tokens"
block = "llm_block"
"#,
        video_stages_toml(ssv2, model)
    )
}

/// An eval stage's predictions file `name` (`predictions-last.parquet`, …) as `pipeline show
/// --json` lists it: its path, after checking the listed rows and columns against the
/// footer.
pub fn predictions_file(config: &Path, stage: &str, name: &str) -> PathBuf {
    let v = show_stage_json(config, stage);
    let list = v["predictions"].as_array().expect("show lists predictions");
    let f = list
        .iter()
        .find(|f| f["name"] == name)
        .unwrap_or_else(|| panic!("{stage} has no {name}: {list:?}"));
    let path = PathBuf::from(f["path"].as_str().unwrap());
    let s = lm4ve_stages::train::predictions::read::summary(&path).unwrap();
    assert_eq!(f["rows"], s.rows, "{f}");
    path
}
