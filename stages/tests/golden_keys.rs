//! Pins what the code contributes to every artifact key of the committed configs: for each
//! stage of `configs/*.toml`, its kind, VERSION, key params and upstream names, and a "code
//! key" — the content key with every raw-input digest left empty, chained through the
//! upstream stages' code keys. Input *bytes* enter a key through the fingerprint module only;
//! everything else a refactor could change by accident is here.
//!
//! A stage that cannot be built without its data (a missing dataset folder) is pinned by its
//! error message instead.
//!
//! `tests/golden/keys.json` is the record. To accept a deliberate change (a VERSION bump, a
//! new key param), run with `LM4VE_BLESS=1` and commit the diff with the reason.

use lm4ve_pipeline::key::KeyParts;
use lm4ve_pipeline::PipelineConfig;
use std::collections::BTreeMap;
use std::path::Path;

fn pin_config(path: &Path, root: &Path) -> serde_json::Value {
    let strip = |m: &str| m.replace(&root.display().to_string(), "<root>");
    let config = match PipelineConfig::load(path) {
        Ok(c) => c,
        Err(e) => return serde_json::json!({ "config_error": strip(&e.to_string()) }),
    };
    let mut built = BTreeMap::new();
    let mut out = serde_json::Map::new();
    for (name, sc) in &config.stages {
        match lm4ve_stages::build_stage(&config, sc) {
            Ok(stage) => {
                built.insert(name.clone(), stage);
            }
            Err(e) => {
                out.insert(
                    name.clone(),
                    serde_json::json!({ "unbuildable": strip(&e.message) }),
                );
            }
        }
    }
    let mut code_keys: BTreeMap<String, String> = BTreeMap::new();
    // Stages in an order where upstreams come first (configs are small: repeat until done).
    let mut left: Vec<&String> = built.keys().collect();
    while !left.is_empty() {
        let before = left.len();
        left.retain(|name| {
            let stage = &built[*name];
            let ups = stage.upstream();
            if ups
                .iter()
                .any(|u| built.contains_key(u) && !code_keys.contains_key(u))
            {
                return true;
            }
            let upstream: BTreeMap<String, String> = ups
                .iter()
                .map(|u| (u.clone(), code_keys.get(u).cloned().unwrap_or_default()))
                .collect();
            let parts = KeyParts::of(stage.as_ref(), upstream, String::new());
            let key = parts.key();
            out.insert(
                (*name).clone(),
                serde_json::json!({
                    "kind": parts.kind,
                    "version": parts.version,
                    "params": parts.params,
                    "upstream": ups,
                    "code_key": key,
                }),
            );
            code_keys.insert((*name).clone(), key);
            false
        });
        assert!(left.len() < before, "a cycle among {left:?}");
    }
    serde_json::Value::Object(out)
}

/// `lm4ve demo-data`'s datasets at their default sizes.
fn write_demo_data(out: &Path) {
    use lm4ve_stages::argoverse::demo::{write_demo_argoverse, DemoAvConfig};
    use lm4ve_stages::pointcloud::demo::{write_demo_scanobjectnn, DemoPcConfig};
    use lm4ve_stages::ssv2::demo::{write_demo_ssv2, DemoSsv2Config};
    let pc = out.join("scanobjectnn");
    std::fs::create_dir_all(&pc).unwrap();
    write_demo_scanobjectnn(&pc, &DemoPcConfig::default()).unwrap();
    write_demo_ssv2(&out.join("ssv2"), &DemoSsv2Config::default()).unwrap();
    write_demo_argoverse(&out.join("argoverse"), &DemoAvConfig::default()).unwrap();
    lm4ve_stages::images::demo::write_demo_imagenet(
        &out.join("imagenet"),
        &lm4ve_stages::images::demo::DemoImagesConfig::default(),
    )
    .unwrap();
}

#[test]
fn keys_of_every_committed_config_are_pinned() {
    // The configs beside the demo data (written here, so the data stages build and key as
    // they do for `make demo`); every other dataset is absent, the same on every machine.
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    std::fs::create_dir_all(root.join("configs")).unwrap();
    write_demo_data(&root.join("demo-data"));
    let mut all = serde_json::Map::new();
    for name in [
        "demo.toml",
        "demo-study.toml",
        "pipeline.toml",
        "study-image.toml",
        "study-video.toml",
    ] {
        let path = root.join("configs").join(name);
        std::fs::copy(repo.join("configs").join(name), &path).unwrap();
        all.insert(name.into(), pin_config(&path, root));
    }
    let got = serde_json::to_string_pretty(&serde_json::Value::Object(all)).unwrap() + "\n";
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/keys.json");
    if std::env::var_os("LM4VE_BLESS").is_some() {
        std::fs::create_dir_all(golden.parent().unwrap()).unwrap();
        std::fs::write(&golden, &got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&golden)
        .unwrap_or_else(|e| panic!("{}: {e}; run with LM4VE_BLESS=1", golden.display()));
    if got != want {
        let diff: Vec<String> = want
            .lines()
            .zip(got.lines())
            .enumerate()
            .filter(|(_, (a, b))| a != b)
            .take(20)
            .map(|(i, (a, b))| format!("line {}:\n  want {a}\n  got  {b}", i + 1))
            .collect();
        panic!(
            "artifact keys moved ({} vs {} lines); first differences:\n{}",
            want.lines().count(),
            got.lines().count(),
            diff.join("\n")
        );
    }
}
