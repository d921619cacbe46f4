//! `lm4ve pipeline submit` through the release binary: an eval's predictions file (written
//! here in the eval's schema) → Argoverse 2's ChallengeSubmission parquet and Argoverse
//! 1.1's h5, read back with the parquet and hdf5 crates and held equal to what the official
//! loaders read from lm4ve's files (tests/fixtures/submission/expected.json, made by
//! scripts/fixtures/submission_roundtrip.py from the files this test leaves in
//! target/tmp/submission-fixture/); bad forecasts and wrong formats refused, naming why.

mod common;
use common::*;
use hdf5_metno as hdf5;
use lm4ve_stages::argoverse::submit::fixture::{forecasts, write_predictions};
use lm4ve_stages::argoverse::submit::Challenge;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::Field;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where the Python script finds lm4ve's files.
fn fixture_dir() -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("submission-fixture");
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn submit(dir: &Path, pred: &Path, out: &Path) -> Run {
    // `--predictions` reads no config; the default one need not exist.
    lm4ve(
        &dir.join("none.toml"),
        &[
            "pipeline",
            "submit",
            "--predictions",
            pred.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
    )
}

fn expected() -> serde_json::Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/submission/expected.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

type Read = BTreeMap<String, (String, Vec<f64>, Vec<Vec<[f64; 2]>>)>;

/// The AV2 parquet as `ChallengeSubmission.from_parquet` groups it: per scenario its track,
/// and the modes sorted by probability, highest first.
fn read_av2(path: &Path) -> Read {
    let r = SerializedFileReader::new(std::fs::File::open(path).unwrap()).unwrap();
    let mut out: Read = BTreeMap::new();
    for row in r.get_row_iter(None).unwrap() {
        let row = row.unwrap();
        let c: Vec<&Field> = row.get_column_iter().map(|(_, v)| v).collect();
        let (Field::Str(sid), Field::Str(track), Field::Double(p)) = (c[0], c[1], c[2]) else {
            panic!("column types: {c:?}")
        };
        let list = |f: &Field| -> Vec<f64> {
            let Field::ListInternal(l) = f else {
                panic!("{f:?}")
            };
            l.elements()
                .iter()
                .map(|e| match e {
                    Field::Double(x) => *x,
                    e => panic!("{e:?}"),
                })
                .collect()
        };
        let t = list(c[3])
            .into_iter()
            .zip(list(c[4]))
            .map(|(x, y)| [x, y])
            .collect();
        let e = out
            .entry(sid.clone())
            .or_insert((track.clone(), vec![], vec![]));
        e.1.push(*p);
        e.2.push(t);
    }
    for (_, probs, trajs) in out.values_mut() {
        let mut order: Vec<usize> = (0..probs.len()).collect();
        order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
        *trajs = order.iter().map(|&k| trajs[k].clone()).collect();
        *probs = order.iter().map(|&k| probs[k]).collect();
    }
    out
}

/// The AV1 h5 as the server reads it: rows grouped by sequence id, (K, 30, 2) each, the
/// probability of each mode's first row.
fn read_av1(path: &Path) -> Read {
    let f = hdf5::File::open(path).unwrap();
    let a = f
        .dataset("argoverse_forecasting")
        .unwrap()
        .read_2d::<f64>()
        .unwrap();
    let mut out: Read = BTreeMap::new();
    for (i, row) in a.outer_iter().enumerate() {
        let e = out
            .entry((row[0] as u64).to_string())
            .or_insert((String::new(), vec![], vec![]));
        if i % 30 == 0 {
            e.1.push(row[3]);
            e.2.push(Vec::new());
        }
        e.2.last_mut().unwrap().push([row[1], row[2]]);
    }
    out
}

fn assert_matches_official(got: &Read, want: &serde_json::Value, what: &str) {
    let want = want["scenarios"].as_object().unwrap();
    assert_eq!(got.len(), want.len(), "{what}");
    for (sid, w) in want {
        let (track, probs, trajs) = &got[sid];
        if let Some(t) = w.get("track_id") {
            assert_eq!(track, t.as_str().unwrap(), "{what} {sid}");
        }
        let wp: Vec<f64> = w["probabilities"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_f64().unwrap())
            .collect();
        assert_eq!(probs, &wp, "{what} {sid}: probabilities");
        let wt: Vec<Vec<[f64; 2]>> = w["trajectories"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                m.as_array()
                    .unwrap()
                    .iter()
                    .map(|p| [p[0].as_f64().unwrap(), p[1].as_f64().unwrap()])
                    .collect()
            })
            .collect();
        assert_eq!(trajs, &wt, "{what} {sid}: trajectories (exact)");
    }
}

#[test]
fn submissions_read_back_as_the_official_loaders_read_them() {
    let dir = fixture_dir();
    let runs = [
        (Challenge::Av2, "av2", "av2.parquet"),
        (Challenge::Av1, "av1", "av1.h5"),
    ];
    for (c, name, out) in runs {
        let pred = dir.join(format!("{name}-predictions.parquet"));
        write_predictions(&pred, &forecasts(c)).unwrap();
        let r = submit(&dir, &pred, &dir.join(out));
        r.ok();
        assert!(r.stdout.contains("wrote 3 scenarios"), "{}", r.stdout);
    }
    let want = expected();
    for (c, name, out) in runs {
        let out = dir.join(out);
        let got = if c == Challenge::Av2 {
            read_av2(&out)
        } else {
            read_av1(&out)
        };
        assert_matches_official(&got, &want[name], name);
    }
    let layout = &want["av1"]["layout"];
    assert_eq!(
        layout["datasets"],
        serde_json::json!(["argoverse_forecasting"])
    );
    assert_eq!(layout["dtype"], "float64");
    // generate_forecasting_h5's gzip level 9 (the script also holds the array equal to the
    // one that function writes).
    assert_eq!(
        (&layout["compression"], &layout["compression_opts"]),
        (&"gzip".into(), &9.into())
    );
    assert_eq!(layout["shape"], serde_json::json!([(6 + 6 + 3) * 30, 4]));
    let dtypes = &want["av2"]["pandas_dtypes"];
    assert_eq!(dtypes["probability"], "float64");
}

#[test]
fn submit_refuses_bad_forecasts_and_wrong_formats() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pred = dir.join("p.parquet");
    let mut f = forecasts(Challenge::Av2);
    f[2].probabilities[1] = 0.5;
    write_predictions(&pred, &f).unwrap();
    let out = dir.join("sub.parquet");
    let r = submit(dir, &pred, &out);
    r.no_panic();
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains(&f[2].scenario_id) && r.stderr.contains("sum to 1.3"),
        "{}",
        r.stderr
    );
    assert!(!out.exists(), "no file when a rule fails");
    assert_eq!(
        std::fs::read_dir(dir).unwrap().count(),
        1,
        "no temp file left"
    );
    // The other release's format: named.
    write_predictions(&pred, &forecasts(Challenge::Av1)).unwrap();
    let r = submit(dir, &pred, &out);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("Argoverse 2 expects 60"), "{}", r.stderr);
    // An extension that names no challenge: bad usage.
    let r = submit(dir, &pred, &dir.join("sub.csv"));
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains(".h5") && r.stderr.contains(".parquet"),
        "{}",
        r.stderr
    );
    // The output over the input: refused before anything is read or written.
    let r = submit(dir, &pred, &pred);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(std::fs::metadata(&pred).unwrap().len() > 0);
    // Not a predictions file.
    std::fs::write(&pred, b"x").unwrap();
    let r = submit(dir, &pred, &dir.join("sub.h5"));
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("p.parquet"), "{}", r.stderr);
}

/// `dir`'s Argoverse 1.1 CSV cut to the AGENT's first 20 timestamps, as the challenge's
/// `test_obs` files are.
fn observed_only(csv: &str) -> String {
    let mut lines = csv.lines();
    let header = lines.next().unwrap();
    let rows: Vec<&str> = lines.filter(|l| !l.trim().is_empty()).collect();
    let mut agent_ts: Vec<f64> = rows
        .iter()
        .filter(|l| l.contains(",AGENT,"))
        .map(|l| l.split(',').next().unwrap().parse().unwrap())
        .collect();
    agent_ts.sort_by(f64::total_cmp);
    let last = agent_ts[19];
    let mut out = vec![header];
    out.extend(
        rows.into_iter()
            .filter(|l| l.split(',').next().unwrap().parse::<f64>().unwrap() <= last),
    );
    out.join("\n") + "\n"
}

/// Argoverse 1.1's test split end to end: `av.tokens` reads `test_obs`-style CSVs (20 steps,
/// no future), the eval on it scores nothing and counts the samples, and `pipeline submit`
/// writes the challenge's h5 with one sequence per test file, K modes of 30 steps whose
/// probabilities sum to 1.
#[test]
fn the_av1_test_split_evaluates_without_targets_and_submits_an_h5() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = av_config(dir.path(), (16, 6), 1, 8, "split = \"test\"");
    let av = dir.path().join("demo/argoverse");
    let test = av.join("test/data");
    std::fs::create_dir_all(&test).unwrap();
    let mut ids = Vec::new();
    for e in std::fs::read_dir(av.join("val/data")).unwrap() {
        let p = e.unwrap().path();
        let text = std::fs::read_to_string(&p).unwrap();
        std::fs::write(test.join(p.file_name().unwrap()), observed_only(&text)).unwrap();
        ids.push(p.file_stem().unwrap().to_string_lossy().into_owned());
    }
    ids.sort();
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "map = \"",
        &format!("test = \"{}\"\nmap = \"", test.display()),
    );
    std::fs::write(&cfg, text).unwrap();
    lm4ve(
        &cfg,
        &["--device", "cpu", "pipeline", "run", "--stage", "eval_av"],
    )
    .ok();
    let tokens = show_json(&cfg, "av_tokens");
    assert_eq!(tokens["splits"]["test"], ids.len(), "{tokens}");
    assert_eq!(
        tokens["meta"]["targets"],
        serde_json::json!(["train", "val"])
    );
    let m = &show_json(&cfg, "eval_av")["meta"];
    assert_eq!(m["split"], "test");
    assert_eq!(m["targets"], false, "{m}");
    assert_eq!(m["samples"], ids.len(), "{m}");
    assert!(m.get("min_fde").is_none(), "nothing scored: {m}");
    let out = dir.path().join("av1.h5");
    let r = lm4ve(
        &cfg,
        &[
            "pipeline",
            "submit",
            "eval_av",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    r.ok();
    let got = read_av1(&out);
    assert_eq!(got.keys().cloned().collect::<Vec<_>>(), ids);
    for (id, (_, probs, modes)) in &got {
        assert_eq!(modes.len(), 6, "{id}");
        assert!(modes.iter().all(|m| m.len() == 30), "{id}");
        assert!(
            (probs.iter().sum::<f64>() - 1.0).abs() < 1e-6,
            "{id}: {probs:?}"
        );
    }
}

fn show_json(cfg: &Path, stage: &str) -> serde_json::Value {
    let r = lm4ve(cfg, &["pipeline", "show", stage, "--json"]);
    r.ok();
    serde_json::from_str(&r.stdout).unwrap()
}
