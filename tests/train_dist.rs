//! Data-parallel training through the real binary on the CPU backend (MPI, started by Open
//! MPI's `mpirun`; issue 15): 2 ranks × batch B train the same model as 1 rank × batch 2B,
//! a job of one joined through MPI trains the plain path's bytes, and a 2-rank job killed
//! mid-run resumes to the model of an uninterrupted one.

mod common;
use common::*;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Small video data, a tiny LLaMA block, and a ViT trained on 4-clip global batches with no
/// batch-level randomness (Mixup / CutMix off, no drop-path), so that splitting a batch over
/// ranks changes only float summation order.
fn config(dir: &Path, name: &str, ssv2: &Path, model: &Path, epochs: usize) -> PathBuf {
    let text = video_config_toml(
        &format!("cache-{name}"),
        ssv2,
        model,
        "frozen",
        epochs,
        4,
        "mixup = 0.0\ncutmix = 0.0\n",
    );
    let p = dir.join(format!("{name}.toml"));
    std::fs::write(&p, text).unwrap();
    p
}

/// `mpirun -np 2 lm4ve -c CFG --device cpu pipeline run --stage train_ssv2`.
fn mpirun_train(cfg: &Path) -> Command {
    mpirun(cfg, "train_ssv2")
}

/// `mpirun -np 2 lm4ve -c CFG --device cpu pipeline run --stage STAGE`, one thread per rank,
/// in a process group of its own (so a test can kill the whole job).
fn mpirun(cfg: &Path, stage: &str) -> Command {
    let probe = Command::new("mpirun").arg("--version").output();
    assert!(
        probe.is_ok_and(|o| o.status.success()),
        "mpirun is missing: the data-parallel tests need Open MPI (`make test` installs it through scripts/install-deps.sh: openmpi-bin, libopenmpi-dev)"
    );
    let mut c = Command::new("mpirun");
    c.args([
        "--allow-run-as-root",
        "--oversubscribe",
        "--bind-to",
        "none",
    ])
    .args([
        "-np",
        "2",
        "-x",
        "RAYON_NUM_THREADS=1",
        "-x",
        "RUST_LOG=info",
    ])
    .arg(env!("CARGO_BIN_EXE_lm4ve"))
    .arg("-c")
    .arg(cfg)
    .args(["--device", "cpu", "pipeline", "run", "--stage", stage])
    // Open MPI's shared-memory transport cannot use ptrace-based copies in containers.
    .env("OMPI_MCA_btl_vader_single_copy_mechanism", "none")
    .env_remove("LM4VE_CONFIG")
    .env_remove("LM4VE_CACHE")
    .process_group(0);
    c
}

/// Builds what the training reads (a data-parallel launch refuses to).
fn prepare(cfg: &Path) {
    lm4ve(cfg, &["pipeline", "run", "--stage", "llm_block"]).ok();
    lm4ve(cfg, &["pipeline", "run", "--stage", "ssv2_tokens"]).ok();
}

/// `lm4ve -c CFG --device cpu pipeline run --stage train_ssv2` as one process, with `env`.
fn train_one_process(cfg: &Path, env: &[(&str, &str)]) -> Run {
    let mut c = bin();
    c.arg("-c")
        .arg(cfg)
        .args(["--device", "cpu", "pipeline", "run", "--stage"])
        .arg("train_ssv2")
        .envs(env.iter().copied());
    let r = output(c.output().unwrap());
    r.ok();
    r
}

fn model_file(cfg: &Path) -> PathBuf {
    let v = show_stage_json(cfg, "train_ssv2");
    let manifest = PathBuf::from(v["manifest"].as_str().unwrap());
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    let f = m["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "model.safetensors")
        .unwrap()
        .clone();
    manifest.parent().unwrap().join(f["path"].as_str().unwrap())
}

fn tensors(path: &Path) -> Vec<(String, Vec<f32>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut out: Vec<(String, Vec<f32>)> = st
        .tensors()
        .into_iter()
        .map(|(n, t)| {
            let v = t
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            (n, v)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn train_key(cfg: &Path) -> String {
    let r = lm4ve(cfg, &["pipeline", "status", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&r.ok().stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .find(|s| s["stage"] == "train_ssv2")
        .unwrap()["key"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Units the journal of `cache` holds for the training stage.
fn units_done(cache: &Path) -> usize {
    let Ok(rd) = std::fs::read_dir(cache.join("artifacts")) else {
        return 0;
    };
    rd.filter_map(|e| e.ok())
        .filter_map(|e| std::fs::read_dir(e.path().join("units")).ok())
        .map(|u| {
            u.filter_map(|x| x.ok())
                .filter(|x| x.file_name().to_string_lossy().starts_with("ckpt"))
                .count()
        })
        .sum()
}

#[test]
fn two_ranks_train_the_model_of_one_with_the_global_batch_and_resume_after_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let ssv2 = video_demo(dir.path());
    let model = tiny_llama(dir.path());
    let epochs = 3;

    // One process, global batch 4.
    let single = config(dir.path(), "single", &ssv2, &model, epochs);
    train_one_process(&single, &[]);

    // Two ranks of 2: the same stage key (the world size is not part of it).
    let dp = config(dir.path(), "dp", &ssv2, &model, epochs);
    assert_eq!(train_key(&single), train_key(&dp));
    // A data-parallel launch only trains: the data stages come first, from one process.
    let r = output(mpirun_train(&dp).output().unwrap());
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("build it first with one process"),
        "{}",
        r.stderr
    );
    prepare(&dp);
    let r = output(mpirun_train(&dp).output().unwrap());
    r.ok();
    assert!(
        r.stderr.contains("data-parallel rank 1 of 2 over mpi"),
        "{}",
        r.stderr
    );
    assert!(
        r.stdout.contains("rank 1") && r.stdout.contains("units run with rank 0"),
        "{}",
        r.stdout
    );
    let (a, b) = (tensors(&model_file(&single)), tensors(&model_file(&dp)));
    assert_eq!(a.len(), b.len());
    let mut worst = (0f32, String::new());
    for ((na, va), (nb, vb)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        for (x, y) in va.iter().zip(vb) {
            let d = (x - y).abs();
            if d > worst.0 {
                worst = (d, na.clone());
            }
        }
    }
    // Only summation order differs; AdamW's normalised steps (lr 1e-3) bound how far it moves.
    eprintln!(
        "2 ranks x 2 vs 1 rank x 4: largest difference {} ({})",
        worst.0, worst.1
    );
    assert!(
        worst.0 < 1e-4,
        "2 ranks x 2 vs 1 rank x 4: {} differs by {}",
        worst.1,
        worst.0
    );

    // A job of one joined through the backend (LM4VE_DATA_PARALLEL=1, MPI's singleton: what
    // a single GPU does to check NCCL) runs every collective and trains the very same bytes.
    let alone = config(dir.path(), "alone", &ssv2, &model, epochs);
    prepare(&alone);
    let r = train_one_process(
        &alone,
        &[
            ("LM4VE_DATA_PARALLEL", "1"),
            ("OMPI_MCA_btl_vader_single_copy_mechanism", "none"),
        ],
    );
    assert!(r.stderr.contains("rank 0 of 1 over mpi"), "{}", r.stderr);
    assert_eq!(
        std::fs::read(model_file(&alone)).unwrap(),
        std::fs::read(model_file(&single)).unwrap(),
        "a joined job of one differs from the plain path"
    );

    // Killed (the whole job, kill -9) after its first checkpoint, then run again: resumes
    // to exactly the uninterrupted 2-rank model.
    let resumed = config(dir.path(), "resumed", &ssv2, &model, epochs);
    prepare(&resumed);
    let cache = dir.path().join("cache-resumed");
    let mut child = mpirun_train(&resumed)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while units_done(&cache) < 1 && start.elapsed() < Duration::from_secs(300) {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = Command::new("kill")
        .args(["-s", "KILL", "--", &format!("-{}", child.id())])
        .status();
    let _ = child.wait();
    let done = units_done(&cache);
    assert!(
        (1..epochs).contains(&done),
        "the kill should land between checkpoints ({done} of {epochs} units done)"
    );
    let r = output(mpirun_train(&resumed).output().unwrap());
    r.ok();
    assert!(
        r.stdout.contains(&format!("{done} resumed")),
        "{}",
        r.stdout
    );
    assert_eq!(
        std::fs::read(model_file(&resumed)).unwrap(),
        std::fs::read(model_file(&dp)).unwrap(),
        "the resumed 2-rank job differs from the uninterrupted one"
    );
}

/// VectorNet across two ranks (each makes its share of the scenes of every batch), then its
/// evaluation split over the two ranks gives what one process computes on the whole set.
#[test]
fn vectornet_trains_on_two_ranks_and_a_sharded_evaluation_counts_every_scene() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = av_config(dir.path(), (32, 13), 2, 8, "batch_size = 2");
    lm4ve(&cfg, &["pipeline", "run", "--stage", "av_tokens"]).ok();
    lm4ve(&cfg, &["pipeline", "run", "--stage", "llm_block"]).ok();
    output(mpirun(&cfg, "train_av").output().unwrap()).ok();
    output(mpirun(&cfg, "eval_av").output().unwrap()).ok();
    let sharded = show_stage_json(&cfg, "eval_av")["meta"].clone();
    let read = || {
        let f = predictions_file(&cfg, "eval_av", "predictions-last.parquet");
        lm4ve_stages::train::predictions::read::read_forecast(&f).unwrap()
    };
    let sharded_rows = read();
    lm4ve(
        &cfg,
        &[
            "--device", "cpu", "pipeline", "run", "--stage", "eval_av", "--force",
        ],
    )
    .ok();
    let whole = show_stage_json(&cfg, "eval_av")["meta"].clone();
    assert_eq!(sharded["samples"], whole["samples"], "{sharded}");
    assert!(whole["samples"].as_u64().unwrap() > 0);
    // The ranks' predictions, gathered, are the whole split's, in its order.
    let whole_rows = read();
    assert_eq!(sharded_rows.len(), whole_rows.len());
    for (a, b) in sharded_rows.iter().zip(&whole_rows) {
        assert_eq!((a.sample, &a.scenario_id), (b.sample, &b.scenario_id));
        for (ma, mb) in a.modes.iter().zip(&b.modes) {
            assert!((ma.probability - mb.probability).abs() < 1e-6);
            assert!(
                (ma.x[0] - mb.x[0]).abs() < 1e-3,
                "{} vs {}",
                ma.x[0],
                mb.x[0]
            );
        }
    }
    for k in [
        "min_ade",
        "min_fde",
        "miss_rate",
        "min_ade_k1",
        "min_fde_k1",
    ] {
        let (a, b) = (sharded[k].as_f64().unwrap(), whole[k].as_f64().unwrap());
        assert!((a - b).abs() <= 1e-9 * b.abs().max(1.0), "{k}: {a} vs {b}");
    }
}
