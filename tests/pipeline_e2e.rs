//! End to end through the real binary: caching, staleness, resume after kill -9,
//! concurrency, --part, verify/gc, and the shard reader script.

mod common;
use common::*;
use std::path::Path;
use std::time::{Duration, Instant};

fn setup(per_class: usize) -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let so = demo_data(dir.path(), per_class);
    (
        dir,
        so.join("training_objectdataset.h5"),
        so.join("test_objectdataset.h5"),
    )
}

#[test]
fn second_run_does_no_work_and_says_so() {
    let (dir, train, test) = setup(2);
    let cfg = pc_config(dir.path(), "c.toml", &train, &test, "");
    let first = lm4ve(&cfg, &["pipeline", "run", "--stage", "all"]);
    first.ok();
    assert!(first.stdout.contains("built"), "{}", first.stdout);
    let second = lm4ve(&cfg, &["pipeline", "run", "--stage", "all"]);
    second.ok();
    assert!(
        second
            .stdout
            .contains("nothing to do: 0 stages run, 1 up to date"),
        "{}",
        second.stdout
    );
    let st = lm4ve(&cfg, &["pipeline", "status", "--json"]);
    st.ok();
    let v: serde_json::Value = serde_json::from_str(&st.stdout).unwrap();
    assert_eq!(v[0]["stage"], "pc_tokens");
    assert_eq!(v[0]["state"], "fresh");
}

#[test]
fn param_edit_makes_the_stage_stale_and_status_names_it() {
    let (dir, train, test) = setup(2);
    let cfg = pc_config(dir.path(), "c.toml", &train, &test, "");
    lm4ve(&cfg, &["pipeline", "run"]).ok();
    // A comment changes nothing.
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, format!("# a comment\n{text}")).unwrap();
    let r = lm4ve(&cfg, &["pipeline", "run"]);
    assert!(r.ok().stdout.contains("0 stages run"), "{}", r.stdout);
    // One param changes exactly that stage, and status says which param.
    std::fs::write(&cfg, text.replace("group_size = 8", "group_size = 4")).unwrap();
    let st = lm4ve(&cfg, &["pipeline", "status", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&st.ok().stdout).unwrap();
    assert_eq!(v[0]["state"], "stale");
    let reason = v[0]["reason"].as_str().unwrap();
    assert!(reason.contains("group_size: 8 → 4"), "{reason}");
    // The same reason typed, for tools (issue 23): a tag and its fields.
    let typed = v[0]["reasons"].as_array().unwrap();
    assert!(
        typed.iter().any(|r| r["reason"] == "param_changed"
            && r["param"] == "group_size"
            && r["from"] == 8
            && r["to"] == 4),
        "{typed:?}"
    );
    let r = lm4ve(&cfg, &["pipeline", "run"]);
    assert!(r.ok().stdout.contains("1 stages run"), "{}", r.stdout);
    let show = show_json(&cfg);
    assert_eq!(show["schema"][1]["shape"], serde_json::json!([16, 4, 3]));
}

#[test]
fn status_names_a_changed_input_file() {
    let (dir, train, test) = setup(2);
    let cfg = pc_config(dir.path(), "c.toml", &train, &test, "");
    lm4ve(&cfg, &["pipeline", "run"]).ok();
    // Rewrite the test file with another seed: same name, other bytes.
    let other = {
        let d = dir.path().join("other");
        let mut c = bin();
        c.args([
            "demo-data",
            "--seed",
            "7",
            "--pc-train-per-class",
            "1",
            "--pc-test-per-class",
            "1",
            "--video-train-per-class",
            "0",
            "--video-val-per-class",
            "0",
            "--out",
        ])
        .arg(&d);
        output(c.output().unwrap()).ok();
        d.join("scanobjectnn")
    };
    std::fs::copy(other.join("test_objectdataset.h5"), &test).unwrap();
    let st = lm4ve(&cfg, &["pipeline", "status"]);
    assert!(
        st.ok()
            .stdout
            .contains("input test changed: test_objectdataset.h5"),
        "{}",
        st.stdout
    );
}

#[test]
fn output_is_identical_for_any_thread_count() {
    let (dir, train, test) = setup(3);
    let a = pc_config(dir.path(), "a.toml", &train, &test, "");
    let b_text = std::fs::read_to_string(&a)
        .unwrap()
        .replace("dir = \"cache\"", "dir = \"cache-b\"");
    let b = dir.path().join("b.toml");
    std::fs::write(&b, b_text).unwrap();
    lm4ve(&a, &["-j", "1", "pipeline", "run"]).ok();
    lm4ve(&b, &["-j", "2", "pipeline", "run"]).ok();
    assert_eq!(manifest_hash(&a), manifest_hash(&b));
}

#[test]
fn kill_9_mid_stage_then_resume_gives_the_same_artifact() {
    let (dir, train, test) = setup(40);
    let cfg = pc_config(dir.path(), "c.toml", &train, &test, "");
    let units = dir.path().join("cache/artifacts");
    let mut killed_mid_run = false;
    for _attempt in 0..3 {
        let _ = std::fs::remove_dir_all(dir.path().join("cache"));
        let mut child = bin()
            .arg("-c")
            .arg(&cfg)
            .args(["-j", "1", "pipeline", "run"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let start = Instant::now();
        loop {
            let n = count_unit_records(&units);
            if n >= 3 || start.elapsed() > Duration::from_secs(60) {
                break;
            }
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        // SIGKILL: no destructors, no cleanup.
        let _ = child.kill();
        let _ = child.wait();
        if !any_manifest(&units) {
            killed_mid_run = true;
            break;
        }
    }
    assert!(
        killed_mid_run,
        "the run always finished before it could be killed"
    );
    let r = lm4ve(&cfg, &["pipeline", "run"]);
    r.ok();
    assert!(r.stdout.contains("resumed"), "{}", r.stdout);
    let resumed: u64 = r
        .stdout
        .split(" units run, ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    assert!(
        resumed >= 3,
        "expected to resume finished units: {}",
        r.stdout
    );
    let resumed_hash = manifest_hash(&cfg);
    // An uninterrupted run in a fresh cache gives the same manifest bytes.
    let fresh_cfg = dir.path().join("fresh.toml");
    std::fs::write(
        &fresh_cfg,
        std::fs::read_to_string(&cfg)
            .unwrap()
            .replace("dir = \"cache\"", "dir = \"cache2\""),
    )
    .unwrap();
    lm4ve(&fresh_cfg, &["pipeline", "run"]).ok();
    assert_eq!(resumed_hash, manifest_hash(&fresh_cfg));
    lm4ve(&cfg, &["cache", "verify"]).ok();
}

fn count_unit_records(artifacts: &Path) -> usize {
    let Ok(rd) = std::fs::read_dir(artifacts) else {
        return 0;
    };
    rd.filter_map(|e| e.ok())
        .map(|e| {
            std::fs::read_dir(e.path().join("units"))
                .map(|d| d.count())
                .unwrap_or(0)
        })
        .sum()
}

fn any_manifest(artifacts: &Path) -> bool {
    std::fs::read_dir(artifacts)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .any(|e| e.path().join("manifest.json").exists())
        })
        .unwrap_or(false)
}

#[test]
fn two_concurrent_runs_make_one_consistent_artifact() {
    let (dir, train, test) = setup(10);
    let cfg = pc_config(dir.path(), "c.toml", &train, &test, "");
    let spawn = || {
        bin()
            .arg("-c")
            .arg(&cfg)
            .args(["pipeline", "run"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (
        output(a.wait_with_output().unwrap()),
        output(b.wait_with_output().unwrap()),
    );
    a.ok();
    b.ok();
    let built = [&a, &b]
        .iter()
        .filter(|r| r.stdout.contains(" built "))
        .count();
    assert!(built >= 1, "{}\n{}", a.stdout, b.stdout);
    lm4ve(&cfg, &["cache", "verify"]).ok();
    let h = manifest_hash(&cfg);
    let other = dir.path().join("o.toml");
    std::fs::write(
        &other,
        std::fs::read_to_string(&cfg)
            .unwrap()
            .replace("dir = \"cache\"", "dir = \"cache2\""),
    )
    .unwrap();
    lm4ve(&other, &["pipeline", "run"]).ok();
    assert_eq!(h, manifest_hash(&other));
}

#[test]
fn parts_then_assembly_equal_a_single_run() {
    let (dir, train, test) = setup(4);
    let cfg = pc_config(dir.path(), "c.toml", &train, &test, "");
    for part in ["0/3", "1/3"] {
        let r = lm4ve(
            &cfg,
            &["pipeline", "run", "--stage", "pc_tokens", "--part", part],
        );
        assert!(r.ok().stdout.contains("part"), "{}", r.stdout);
    }
    let st = lm4ve(&cfg, &["pipeline", "status"]);
    assert!(st.ok().stdout.contains("interrupted"), "{}", st.stdout);
    lm4ve(
        &cfg,
        &["pipeline", "run", "--stage", "pc_tokens", "--part", "2/3"],
    )
    .ok();
    let r = lm4ve(&cfg, &["pipeline", "run"]);
    r.ok();
    let h = manifest_hash(&cfg);
    let other = dir.path().join("o.toml");
    std::fs::write(
        &other,
        std::fs::read_to_string(&cfg)
            .unwrap()
            .replace("dir = \"cache\"", "dir = \"cache2\""),
    )
    .unwrap();
    lm4ve(&other, &["pipeline", "run"]).ok();
    assert_eq!(h, manifest_hash(&other));
    // Bad --part is a usage error.
    let r = lm4ve(
        &cfg,
        &["pipeline", "run", "--stage", "pc_tokens", "--part", "3/3"],
    );
    assert_eq!(r.no_panic().code, 2);
}

#[test]
fn flipped_byte_is_named_by_cache_verify() {
    let (dir, train, test) = setup(2);
    let cfg = pc_config(dir.path(), "c.toml", &train, &test, "");
    lm4ve(&cfg, &["pipeline", "run"]).ok();
    lm4ve(&cfg, &["cache", "verify"]).ok();
    let show = show_json(&cfg);
    let shard = show["shard_paths"][0].as_str().unwrap().to_string();
    let mut bytes = std::fs::read(&shard).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&shard, bytes).unwrap();
    let r = lm4ve(&cfg, &["cache", "verify"]);
    assert_eq!(r.no_panic().code, 1, "{}", r.stdout);
    let name = Path::new(&shard).file_name().unwrap().to_str().unwrap();
    assert!(
        r.stdout.contains("CORRUPT") && r.stdout.contains(name),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("pc_tokens"), "{}", r.stdout);
}

#[test]
fn gc_removes_what_the_config_no_longer_uses() {
    let (dir, train, test) = setup(2);
    let cfg = pc_config(dir.path(), "c.toml", &train, &test, "");
    lm4ve(&cfg, &["pipeline", "run"]).ok();
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, text.replace("num_groups = 16", "num_groups = 8")).unwrap();
    lm4ve(&cfg, &["pipeline", "run"]).ok();
    let r = lm4ve(&cfg, &["cache", "gc"]);
    assert!(r.ok().stdout.contains("1 artifacts"), "{}", r.stdout);
    lm4ve(&cfg, &["cache", "verify"]).ok();
    let r = lm4ve(&cfg, &["pipeline", "run"]);
    assert!(r.ok().stdout.contains("0 stages run"), "{}", r.stdout);
}

#[test]
fn python_reader_reads_the_rust_artifact() {
    let (dir, train, test) = setup(2);
    let cfg = pc_config(dir.path(), "c.toml", &train, &test, "");
    lm4ve(&cfg, &["pipeline", "run"]).ok();
    let show = show_json(&cfg);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/read_shards.py");
    let py = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let out = std::process::Command::new(&py)
        .arg(script)
        .arg(show["manifest"].as_str().unwrap())
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["samples"], show["samples"]);
    assert_eq!(v["fields"]["centers"]["shape"], serde_json::json!([16, 3]));
    assert_eq!(v["fields"]["neighborhoods"]["dtype"], "float32");
    assert_eq!(v["fields"]["label"]["dtype"], "int64");
    // And as a module: the values agree with the Rust reader.
    let code = format!(
        "import sys; sys.path.insert(0, {:?}); import read_shards; s = next(read_shards.samples({:?}, split='train')); print(repr(float(s['centers'][3,1])), int(s['label']))",
        concat!(env!("CARGO_MANIFEST_DIR"), "/scripts"),
        show["manifest"].as_str().unwrap()
    );
    let out = std::process::Command::new(&py)
        .args(["-c", &code])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut r = lm4ve_pipeline::shard::ShardReader::open(Path::new(
        show["shard_paths"][0].as_str().unwrap(),
    ))
    .unwrap();
    let s = r.read(0).unwrap();
    let want = format!("{:?} {}", s.f32s(0)[3 * 3 + 1] as f64, s.i64s(2)[0]);
    assert_eq!(text.trim(), want);
}

#[test]
fn dag_and_show() {
    let (dir, train, test) = setup(2);
    let cfg = pc_config(dir.path(), "c.toml", &train, &test, "");
    let r = lm4ve(&cfg, &["pipeline", "dag"]);
    assert!(
        r.ok().stdout.contains("pc_tokens [pc.tokens]"),
        "{}",
        r.stdout
    );
    let r = lm4ve(&cfg, &["pipeline", "show", "pc_tokens", "--json"]);
    assert_eq!(r.no_panic().code, 1, "not built yet: {}", r.stdout);
    lm4ve(&cfg, &["pipeline", "run", "--stage", "pc_tokens"]).ok();
    let v = show_json(&cfg);
    for k in ["stage", "key", "manifest", "samples", "rejects", "shards"] {
        assert!(v.get(k).is_some(), "show --json lacks {k}: {v}");
    }
    assert!(Path::new(v["manifest"].as_str().unwrap()).is_absolute());
    assert_eq!(v["samples"], 12 * 2 + 12);
    let r = lm4ve(&cfg, &["pipeline", "run", "--stage", "nope"]);
    assert_eq!(r.no_panic().code, 2);
    assert!(r.stderr.contains("pc_tokens"), "{}", r.stderr);
}

#[test]
fn tokens_equal_the_numpy_reference_bit_for_bit() {
    let (dir, train, test) = setup(2);
    let cfg = pc_config(dir.path(), "c.toml", &train, &test, "");
    lm4ve(&cfg, &["pipeline", "run"]).ok();
    let show = show_json(&cfg);
    let py = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let root = env!("CARGO_MANIFEST_DIR");
    let npz = dir.path().join("ref.npz");
    let out = std::process::Command::new(&py)
        .arg(format!("{root}/scripts/bench/pc_reference.py"))
        .arg(&train)
        .args([
            "--num-points",
            "256",
            "--num-groups",
            "16",
            "--group-size",
            "8",
            "--out",
        ])
        .arg(&npz)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let code = format!(
        "import sys, numpy as np; sys.path.insert(0, {:?}); import read_shards\n\
         ref = np.load({:?}); got = list(read_shards.samples({:?}, split='train'))\n\
         assert len(got) == len(ref['labels']), (len(got), len(ref['labels']))\n\
         assert np.array_equal(np.stack([s['centers'] for s in got]), ref['centers'])\n\
         assert np.array_equal(np.stack([s['neighborhoods'] for s in got]), ref['neighborhoods'])\n\
         assert np.array_equal(np.array([s['label'] for s in got]), ref['labels'])\n\
         print('equal', len(got))",
        format!("{root}/scripts"),
        npz.display().to_string(),
        show["manifest"].as_str().unwrap()
    );
    let out = std::process::Command::new(&py)
        .args(["-c", &code])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A missing dataset blocks only its stage and what depends on it: a user with ScanObjectNN
/// alone runs the point-cloud stages of a config that also names Argoverse and a checkpoint.
#[test]
fn a_missing_input_blocks_only_its_stage_and_dependents() {
    let dir = tempfile::tempdir().unwrap();
    let so = demo_data(dir.path(), 2);
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"[cache]
dir = "cache"

[stages.pc_tokens]
kind = "pc.tokens"
[stages.pc_tokens.params]
train = "{}"
test = "{}"
num_points = 64
num_groups = 8
group_size = 8

[stages.av_tokens]
kind = "av.tokens"
[stages.av_tokens.params]
train = "argoverse/train/data"
map = "argoverse/map_files"

[stages.llm_block]
kind = "llm.block"
[stages.llm_block.params]
checkpoint = "models/llama-7b"

[stages.train_av]
kind = "train"
[stages.train_av.params]
data = "av_tokens"
block = "llm_block"
"#,
            so.join("training_objectdataset.h5").display(),
            so.join("test_objectdataset.h5").display()
        ),
    )
    .unwrap();
    // Status names each blocked stage and the path it waits for.
    let st = lm4ve(&cfg, &["pipeline", "status"]);
    st.ok();
    let line = |s: &str| {
        st.stdout
            .lines()
            .find(|l| l.starts_with(s))
            .unwrap_or_default()
            .to_string()
    };
    assert!(line("av_tokens").contains("missing input"), "{}", st.stdout);
    assert!(line("av_tokens").contains("map_files"), "{}", st.stdout);
    assert!(
        line("llm_block").contains("models/llama-7b"),
        "{}",
        st.stdout
    );
    assert!(
        line("train_av").contains("missing input of"),
        "{}",
        st.stdout
    );
    assert!(line("pc_tokens").contains("never built"), "{}", st.stdout);
    // The point-cloud stage runs.
    lm4ve(&cfg, &["pipeline", "run", "--stage", "pc_tokens"]).ok();
    // A blocked target fails at once, naming the input (exit 1, not a crash).
    let r = lm4ve(&cfg, &["pipeline", "run", "--stage", "train_av"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("missing input"), "{}", r.stderr);
    // `all` runs everything that can run, then fails naming what could not.
    let r = lm4ve(&cfg, &["pipeline", "run", "--stage", "all"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let st = lm4ve(&cfg, &["pipeline", "status"]);
    assert!(
        st.stdout
            .lines()
            .any(|l| l.starts_with("pc_tokens") && l.contains("fresh")),
        "{}",
        st.stdout
    );
}

/// Studies: a `[stages.X.matrix]` expands into named stages whose downstream follows, keys
/// equal those of hand-written stages, a glob selects variants, one more value builds exactly
/// one more variant, and `-S` sets a param for one command.
#[test]
fn a_matrix_expands_stages_and_shares_keys_with_hand_written_ones() {
    let (dir, train, test) = setup(2);
    let cfg = |name: &str, groups: &str, matrix: bool| {
        let p = dir.path().join(name);
        let pc_params = format!(
            "train = \"{}\"\ntest = \"{}\"\nnum_points = 64\ngroup_size = 8\n",
            train.display(),
            test.display()
        );
        let text = if matrix {
            format!(
                "[cache]\ndir = \"cache\"\n\n[stages.pc]\nkind = \"pc.tokens\"\n[stages.pc.params]\n{pc_params}[stages.pc.matrix]\nnum_groups = {groups}\n\n[stages.train]\nkind = \"train\"\n[stages.train.params]\ndata = \"pc\"\nmode = \"none\"\nepochs = 1\nbatch_size = 8\nepochs_per_checkpoint = 1\n[stages.train.params.model]\ntrans_dim = 16\ndepth = 1\nheads = 2\npointnet_dims = [8, 8, 8]\nencoder_dims = 8\n"
            )
        } else {
            format!(
                "[cache]\ndir = \"cache\"\n\n[stages.pc]\nkind = \"pc.tokens\"\n[stages.pc.params]\n{pc_params}num_groups = {groups}\n"
            )
        };
        std::fs::write(&p, text).unwrap();
        p
    };
    let study = cfg("study.toml", "[4, 8]", true);
    let dag = lm4ve(&study, &["pipeline", "dag"]);
    dag.ok();
    for name in [
        "pc@num_groups=4",
        "pc@num_groups=8",
        "train@num_groups=4",
        "train@num_groups=8",
    ] {
        assert!(dag.stdout.contains(name), "{name} not in:\n{}", dag.stdout);
    }
    // A glob picks one variant (and what it needs).
    let r = lm4ve(
        &study,
        &["pipeline", "run", "--stage", "train@num_groups=4*"],
    );
    r.ok();
    let built = |out: &str| out.lines().filter(|l| l.contains(" built ")).count();
    assert_eq!(built(&r.stdout), 2, "{}", r.stdout);
    // The expanded pc stage has the key of the same stage written by hand.
    let hand = cfg("hand.toml", "4", false);
    let st = lm4ve(&hand, &["pipeline", "status"]);
    assert!(st.ok().stdout.contains("fresh"), "{}", st.stdout);
    // One more value: exactly the new variants are built.
    lm4ve(&study, &["pipeline", "run"]).ok();
    let more = cfg("study.toml", "[4, 8, 16]", true);
    let r = lm4ve(&more, &["pipeline", "run"]);
    r.ok();
    assert_eq!(
        built(&r.stdout),
        2,
        "one pc and one train variant:\n{}",
        r.stdout
    );
    // Exactly one more training run: one more run record among the train variants.
    let train_runs = std::fs::read_dir(dir.path().join("cache/runs"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("train@")
        })
        .count();
    assert_eq!(train_runs, 3);
    // `show` takes a glob too.
    let sh = lm4ve(&more, &["pipeline", "show", "pc@num_groups=*"]);
    assert_eq!(
        sh.ok().stdout.matches("stage     pc@").count(),
        3,
        "{}",
        sh.stdout
    );
    // -S sets a param for one command; status says which and how.
    let st = lm4ve(
        &more,
        &["-S", "stages.pc.params.num_points=96", "pipeline", "status"],
    );
    assert!(
        st.ok().stdout.contains("num_points: 64 → 96"),
        "{}",
        st.stdout
    );
    // A run with the override records it in its run record.
    let set = "stages.pc.params.num_points=96";
    lm4ve(
        &more,
        &["-S", set, "pipeline", "run", "--stage", "pc@num_groups=4"],
    )
    .ok();
    let runs = dir.path().join("cache/runs/pc@num_groups=4");
    let latest = std::fs::read_to_string(runs.join("latest")).unwrap();
    let rec: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(runs.join(format!("{latest}.json"))).unwrap(),
    )
    .unwrap();
    assert_eq!(rec["overrides"], serde_json::json!([set]), "{rec}");
    let bad = lm4ve(
        &more,
        &["-S", "stages.nope.params.x=1", "pipeline", "status"],
    );
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    assert!(bad.stderr.contains("nope"), "{}", bad.stderr);
}

/// The shipped study config parses and expands: 3 modes × 3 seeds of train and eval, whether
/// or not the demo data is there (missing inputs block stages, they do not break the config).
#[test]
fn the_demo_study_config_expands() {
    let cfg = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/demo-study.toml");
    let r = lm4ve(&cfg, &["pipeline", "dag"]);
    r.ok();
    for mode in ["frozen", "random", "none"] {
        for seed in 0..3 {
            for stage in ["train_pc", "eval_pc"] {
                let name = format!("{stage}@mode={mode},seed={seed}");
                assert!(r.stdout.contains(&name), "{name} missing:\n{}", r.stdout);
            }
        }
    }
}

/// The video study config parses and expands whether or not its data is there, and every
/// fine-tuning stage hangs off `pretrain` (its `init_stage`).
#[test]
fn the_video_study_config_expands_with_fine_tuning_after_pretrain() {
    let cfg = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/study-video.toml");
    let r = lm4ve(&cfg, &["pipeline", "dag"]);
    r.ok();
    for variant in ["tubelets", "frames", "rrc", "full", "rrc_mix", "reference"] {
        for seed in 0..2 {
            let name = format!("finetune_{variant}@seed={seed} [train] <- ");
            let line = r
                .stdout
                .lines()
                .find(|l| l.starts_with(&name))
                .unwrap_or_else(|| panic!("{name} missing:\n{}", r.stdout));
            assert!(line.ends_with(", pretrain"), "{line}");
            assert!(r
                .stdout
                .contains(&format!("eval_finetune_{variant}@seed={seed} [eval]")));
        }
    }
    for variant in ["tubelets", "frames", "rrc"] {
        assert!(r
            .stdout
            .contains(&format!("scratch_{variant}@seed=1 [train]")));
    }
}

/// The real-data config: the whole DAG of the paper's three tasks parses, and without the
/// datasets `status` names every missing path instead of failing.
#[test]
fn the_real_data_config_has_the_whole_dag_and_names_missing_inputs() {
    let cfg = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/pipeline.toml");
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().to_str().unwrap().to_string();
    let dag = lm4ve(&cfg, &["--cache", &cache, "pipeline", "dag"]);
    dag.ok();
    for stage in [
        "llm_block",
        "llm_block_15",
        "pc_hardest",
        "pc_objbg",
        "pc_objonly",
        "ssv2_tokens",
        "av_tokens",
        "train_pc_hardest@mode=frozen,seed=0",
        "eval_pc_objonly@mode=none,seed=2",
        "train_ssv2@mode=frozen,seed=1",
        "train_ssv2_b@mode=frozen,seed=0",
        "eval_ssv2_b@mode=none,seed=0",
        "eval_av@mode=frozen,seed=2",
    ] {
        assert!(
            dag.stdout.contains(stage),
            "{stage} missing:\n{}",
            dag.stdout
        );
    }
    let st = lm4ve(&cfg, &["--cache", &cache, "pipeline", "status"]);
    st.ok();
    for (stage, path) in [
        ("pc_hardest ", "augmentedrot_scale75.h5"),
        ("llm_block ", "llama-7b-hf"),
        ("ssv2_tokens ", "labels.json"),
        ("av_tokens ", "map_files"),
        // The pretrained encoders (`init`) are inputs of the train stages.
        ("train_pc_hardest@mode=frozen,seed=0 ", "Point-BERT.pth"),
        ("train_ssv2@mode=none,seed=1 ", "videomae_ssv2_vits.pth"),
        ("train_ssv2_b@mode=frozen,seed=2 ", "videomae_ssv2_vitb.pth"),
    ] {
        let line = st
            .stdout
            .lines()
            .find(|l| l.starts_with(stage))
            .unwrap_or_default();
        assert!(
            line.contains("missing input") && line.contains(path),
            "{stage}: {line}"
        );
    }
}
