//! End to end through the release binary: the `av2.tokens` stage over Argoverse 2 scenarios
//! in the released layout (generated with the `parquet` crate, plus the two scenarios the av2
//! package wrote in tests/fixtures/av2) — schema and meta, named rejects while the rest
//! completes, the test split without targets, identical bytes for -j1 and -j2 — and
//! VectorNet trained on it in every block mode (frozen, none, trainable, random,
//! random-trained, mlp), evaluated with the official
//! metrics (K = 6 and 1, brier-minFDE), and on the test split (nothing scored) for a
//! submission (`pipeline submit`).

mod common;
use common::*;
use lm4ve_stages::argoverse::av2::synth::{scene, write};
use std::path::{Path, PathBuf};

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.path().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// `train` (n good + 4 bad), `val` (n/3 + the av2-written fixture), `test` (3 + fixture).
fn av2_data(dir: &Path, n: u64) -> PathBuf {
    let root = dir.join("av2");
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/av2");
    for i in 0..n {
        write(&root.join("train"), &scene(i, 12, 40, true)).unwrap();
    }
    for i in 0..n / 3 {
        write(&root.join("val"), &scene(1000 + i, 12, 40, true)).unwrap();
    }
    for i in 0..3 {
        write(&root.join("test"), &scene(2000 + i, 12, 40, false)).unwrap();
    }
    copy_dir(&fixtures.join("val"), &root.join("val"));
    copy_dir(&fixtures.join("test"), &root.join("test"));
    // Bad scenarios: no map, a NaN position, an unknown object type, a damaged parquet.
    let mut s = scene(500, 4, 8, true);
    s.map = None;
    write(&root.join("train"), &s).unwrap();
    let mut s = scene(501, 4, 8, true);
    s.tracks[1].states[3].1 = f64::NAN;
    write(&root.join("train"), &s).unwrap();
    let mut s = scene(502, 4, 8, true);
    s.tracks[2].object_type = "hovercraft".into();
    write(&root.join("train"), &s).unwrap();
    let s = scene(503, 4, 8, true);
    let d = write(&root.join("train"), &s).unwrap();
    let pq = d.join(format!("scenario_{}.parquet", s.id));
    let bytes = std::fs::read(&pq).unwrap();
    std::fs::write(&pq, &bytes[..bytes.len() - 40]).unwrap();
    root
}

fn tokens_toml(root: &Path) -> String {
    format!(
        r#"[stages.av2_tokens]
kind = "av2.tokens"
max_reject_fraction = 0.2
[stages.av2_tokens.params]
train = "{root}/train"
val = "{root}/val"
test = "{root}/test"
max_actors = 16
max_lanes = 64
shard_samples = 16
"#,
        root = root.display()
    )
}

fn config(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(format!("{name}.toml"));
    std::fs::write(&p, format!("[cache]\ndir = \"cache-{name}\"\n\n{body}")).unwrap();
    p
}

#[test]
fn av2_tokens_schema_meta_rejects_and_bytes_independent_of_threads() {
    let dir = tempfile::tempdir().unwrap();
    let root = av2_data(dir.path(), 24);
    let a = config(dir.path(), "j1", &tokens_toml(&root));
    let b = config(dir.path(), "j2", &tokens_toml(&root));
    let r = lm4ve(&a, &["-j", "1", "pipeline", "run"]);
    r.ok();
    assert!(r.stdout.contains("37 samples, 4 rejects"), "{}", r.stdout);
    lm4ve(&b, &["-j", "2", "pipeline", "run"]).ok();
    let v = show_stage_json(&a, "av2_tokens");
    let bytes = |c: &Path| {
        std::fs::read(
            show_stage_json(c, "av2_tokens")["manifest"]
                .as_str()
                .unwrap(),
        )
        .unwrap()
    };
    assert_eq!(
        bytes(&a),
        bytes(&b),
        "shards do not depend on the thread count"
    );
    assert_eq!(v["splits"]["train"], 24);
    assert_eq!(v["splits"]["val"], 9);
    assert_eq!(v["splits"]["test"], 4);
    let shape = |name: &str| -> Vec<u64> {
        let f = v["schema"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == name)
            .unwrap();
        f["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap())
            .collect()
    };
    assert_eq!(shape("actors"), vec![16, 49, 7]);
    assert_eq!(shape("lanes"), vec![64, 9, 9]);
    assert_eq!(shape("target"), vec![60, 2]);
    assert_eq!(shape("actor_category"), vec![16]);
    assert_eq!(shape("scenario_id"), vec![16]);
    assert_eq!(shape("focal_track_id"), vec![64]);
    let meta = &v["meta"];
    assert_eq!(meta["obs_steps"], 50);
    assert_eq!(meta["pred_steps"], 60);
    assert_eq!(meta["splits"]["train"]["scenarios"], 24);
    assert!(meta["splits"]["train"]["scored_actors"].as_u64().unwrap() > 0);
    assert_eq!(meta["targets"], serde_json::json!(["train", "val"]));
    let rejects = std::fs::read_to_string(v["rejects_file"].as_str().unwrap()).unwrap();
    let reasons: Vec<String> = rejects
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["reason"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(reasons.len(), 4, "{reasons:?}");
    for want in [
        "missing map",
        "not a finite number",
        "unknown object type `hovercraft`",
        "damaged parquet",
    ] {
        assert!(
            reasons.iter().any(|r| r.contains(want)),
            "{want}: {reasons:?}"
        );
    }
    // A second run does nothing.
    let r = lm4ve(&a, &["pipeline", "status"]);
    r.ok();
    assert!(r.stdout.contains("fresh"), "{}", r.stdout);
}

#[test]
fn vectornet_trains_on_av2_in_every_block_mode() {
    let dir = tempfile::tempdir().unwrap();
    let root = av2_data(dir.path(), 24);
    let model = tiny_llama(dir.path());
    let mut body = tokens_toml(&root);
    body.push_str(&format!(
        "\n[stages.llm_block]\nkind = \"llm.block\"\n[stages.llm_block.params]\ncheckpoint = \"{}\"\n",
        model.display()
    ));
    const MODES: [(&str, &str); 6] = [
        ("frozen", "frozen"),
        ("none", "none"),
        ("trainable", "trainable"),
        ("random", "random"),
        ("random_trained", "random-trained"),
        ("mlp", "mlp"),
    ];
    for (name, mode) in MODES {
        body.push_str(&format!(
            r#"
[stages.train_{name}]
kind = "train"
[stages.train_{name}.params]
data = "av2_tokens"
block = "llm_block"
mode = "{mode}"
epochs = 2
warmup_epochs = 1
batch_size = 8
lr = 1e-3
epochs_per_checkpoint = 1
[stages.train_{name}.params.model]
subgraph_widths = [8, 16]
modes = 6

[stages.eval_{name}]
kind = "eval"
[stages.eval_{name}.params]
train = "train_{name}"
data = "av2_tokens"
block = "llm_block"
"#
        ));
    }
    let cfg = config(dir.path(), "train", &body);
    lm4ve(
        &cfg,
        &["--device", "cpu", "pipeline", "run", "--stage", "all"],
    )
    .ok();
    for (name, _) in MODES {
        let t = show_stage_json(&cfg, &format!("train_{name}"));
        assert_eq!(t["meta"]["task"], "forecast_av2");
        let e = show_stage_json(&cfg, &format!("eval_{name}"))["meta"].clone();
        assert_eq!(e["split"], "val");
        assert_eq!(e["modes"], 6);
        assert_eq!(e["samples"], 9, "{e}");
        let f = |k: &str| e[k].as_f64().unwrap();
        assert!(f("min_fde") <= f("min_fde_k1") + 1e-9, "{e}");
        assert!(f("brier_min_fde") >= f("min_fde"), "{e}");
        assert!(
            (f("brier_min_fde_k1") - f("min_fde_k1")).abs() < 1e-9,
            "{e}"
        );
        assert!(f("min_ade") > 0.0 && f("min_fde").is_finite());
    }
    // The test split has no futures: the eval runs, scores nothing, says so and counts the
    // samples; its forecasts are what `pipeline submit` turns into the challenge's file.
    let test = ["-S", "stages.eval_frozen.params.split=test"];
    let with =
        |args: &[&str]| -> Vec<String> { test.iter().chain(args).map(|a| a.to_string()).collect() };
    let run = |args: &[&str]| {
        let a = with(args);
        lm4ve(&cfg, &a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    run(&[
        "--device",
        "cpu",
        "pipeline",
        "run",
        "--stage",
        "eval_frozen",
    ])
    .ok();
    let r = run(&["pipeline", "show", "eval_frozen", "--json"]);
    r.ok();
    let e: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let m = &e["meta"];
    assert_eq!(m["split"], "test");
    assert_eq!(m["targets"], false, "{m}");
    assert_eq!(m["samples"], 4, "{m}");
    assert!(m.get("min_fde").is_none(), "nothing scored: {m}");
    let out = dir.path().join("submission.parquet");
    let r = run(&[
        "pipeline",
        "submit",
        "eval_frozen",
        "--out",
        out.to_str().unwrap(),
    ]);
    r.ok();
    // From the eval's predictions file: one scenario id per test folder, the focal track
    // named, 6 modes.
    let sub = std::fs::read(&out).unwrap();
    assert!(!sub.is_empty());
    for d in std::fs::read_dir(root.join("test")).unwrap() {
        let id = d.unwrap().file_name().into_string().unwrap();
        assert!(
            sub.windows(id.len()).any(|w| w == id.as_bytes()),
            "{id} in the submission"
        );
    }
    // The wrong format for the release, a stage that is not an eval: bad usage, named.
    let h5 = dir.path().join("submission.h5");
    let r = run(&[
        "pipeline",
        "submit",
        "eval_frozen",
        "--out",
        h5.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("forecasts Argoverse 2"), "{}", r.stderr);
    let r = run(&[
        "pipeline",
        "submit",
        "train_frozen",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("is a train stage"), "{}", r.stderr);
}
