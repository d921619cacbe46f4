//! End to end through the release binary: the `av.tokens` stage over Argoverse-format demo
//! data — the shard schema and meta, samples equal to the library's vectorization of the same
//! file, bad scenarios as named rejects while the rest completes, config errors with file and
//! line (exit 2), a damaged map failing the stage, and identical bytes for -j1 and -j2.

mod common;
use common::*;
use lm4ve_pipeline::shard::ShardReader;
use lm4ve_stages::argoverse::csv::parse_scenario;
use lm4ve_stages::argoverse::demo::{write_demo_argoverse, DemoAvConfig};
use lm4ve_stages::argoverse::stage::load_city;
use lm4ve_stages::argoverse::vectorize::{vectorize, VecParams};
use std::path::{Path, PathBuf};

const MIA_MAP: &str = "pruned_argoverse_MIA_10316_vector_map.xml";

/// Demo data (small) in `dir/av`, returns that root.
fn av_data(dir: &Path, train: usize, val: usize) -> PathBuf {
    let root = dir.join("av");
    write_demo_argoverse(
        &root,
        &DemoAvConfig {
            seed: 11,
            train,
            val,
            grid: 5,
            ..DemoAvConfig::default()
        },
    )
    .unwrap();
    root
}

/// A config with one `av.tokens` stage over `root`; `extra` goes into its params.
fn av_config(dir: &Path, name: &str, root: &Path, stage_extra: &str, extra: &str) -> PathBuf {
    let text = format!(
        r#"[cache]
dir = "cache-{name}"

[stages.av_tokens]
kind = "av.tokens"
{stage_extra}
[stages.av_tokens.params]
train = "{root}/train/data"
val = "{root}/val/data"
map = "{root}/map_files"
obs_steps = 20
pred_steps = 30
radius = 100.0
max_actors = 16
max_lanes = 48
lane_points = 10
shard_samples = 16
{extra}
"#,
        root = root.display()
    );
    let p = dir.join(format!("{name}.toml"));
    std::fs::write(&p, text).unwrap();
    p
}

fn show(config: &Path) -> serde_json::Value {
    let r = lm4ve(config, &["pipeline", "show", "av_tokens", "--json"]);
    r.ok();
    serde_json::from_str(&r.stdout).expect("show --json prints JSON")
}

fn f32s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

#[test]
fn av_tokens_schema_meta_and_samples_equal_the_library() {
    let dir = tempfile::tempdir().unwrap();
    let root = av_data(dir.path(), 40, 12);
    let cfg = av_config(dir.path(), "a", &root, "", "");
    let r = lm4ve(&cfg, &["pipeline", "run"]);
    r.ok();
    assert!(r.stdout.contains("52 samples, 0 rejects"), "{}", r.stdout);
    let v = show(&cfg);
    assert_eq!(v["splits"]["train"], 40);
    assert_eq!(v["splits"]["val"], 12);
    assert_eq!(v["shards"], 4, "3 train shards of ≤16 + 1 val shard");
    let schema: Vec<(String, String, Vec<u64>)> = v["schema"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["name"].as_str().unwrap().to_string(),
                f["dtype"].as_str().unwrap().to_string(),
                f["shape"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d.as_u64().unwrap())
                    .collect(),
            )
        })
        .collect();
    let want: Vec<(String, String, Vec<u64>)> = [
        ("actors", "float32", vec![16, 19, 6]),
        ("actor_mask", "uint8", vec![16]),
        ("lanes", "float32", vec![48, 9, 7]),
        ("lane_mask", "uint8", vec![48]),
        ("target", "float32", vec![30, 2]),
        ("frame", "float32", vec![3]),
        ("scenario_id", "int64", vec![1]),
        ("actor_ctrs", "float32", vec![16, 2]),
        ("actor_futures", "float32", vec![16, 30, 2]),
        ("actor_future_mask", "uint8", vec![16, 30]),
    ]
    .into_iter()
    .map(|(n, d, s)| (n.to_string(), d.to_string(), s))
    .collect();
    assert_eq!(schema, want);
    let meta = &v["meta"];
    for (k, want) in [
        ("obs_steps", 20),
        ("pred_steps", 30),
        ("max_actors", 16),
        ("max_lanes", 48),
        ("lane_points", 10),
        ("actor_features", 6),
        ("lane_features", 7),
    ] {
        assert_eq!(meta[k], want, "meta.{k}");
    }
    assert_eq!(meta["radius"], 100.0);
    assert_eq!(meta["splits"]["train"]["scenarios"], 40);
    assert_eq!(meta["maps"]["MIA"], MIA_MAP);

    // Every sample equals the library's vectorization of the file its scenario_id names.
    let params = VecParams {
        obs_steps: 20,
        pred_steps: 30,
        radius: 100.0,
        max_actors: 16,
        max_lanes: 48,
        lane_points: 10,
    };
    let cities: Vec<_> = ["MIA", "PIT"]
        .iter()
        .map(|c| {
            let file = std::fs::read_dir(root.join("map_files"))
                .unwrap()
                .map(|e| e.unwrap().path())
                .find(|p| p.to_string_lossy().contains(c))
                .unwrap();
            load_city(c, &file).unwrap()
        })
        .collect();
    let shards = v["shard_paths"].as_array().unwrap();
    let mut seen = 0;
    for (n, path) in shards.iter().enumerate() {
        let split = if n < 3 { "train" } else { "val" };
        let mut reader = ShardReader::open(Path::new(path.as_str().unwrap())).unwrap();
        for i in 0..reader.len() {
            let s = reader.read(i).unwrap();
            let id = s.i64s(6)[0];
            assert_eq!(
                id as usize,
                if split == "train" {
                    n * 16 + i + 1
                } else {
                    i + 1
                }
            );
            let file = root.join(split).join("data").join(format!("{id}.csv"));
            let scn = parse_scenario(&std::fs::read(&file).unwrap(), 20, 50).unwrap();
            let city = cities.iter().find(|c| c.city == scn.city).unwrap();
            let want = vectorize(&scn, city, &params).unwrap();
            assert_eq!(f32s(&s.fields[0]), want.actors, "{}", file.display());
            assert_eq!(s.fields[1], want.actor_mask);
            assert_eq!(f32s(&s.fields[2]), want.lanes);
            assert_eq!(s.fields[3], want.lane_mask);
            assert_eq!(f32s(&s.fields[4]), want.target);
            assert_eq!(f32s(&s.fields[5]), want.frame.to_f32().to_vec());
            assert_eq!(f32s(&s.fields[7]), want.actor_ctrs);
            assert_eq!(f32s(&s.fields[8]), want.actor_futures);
            assert_eq!(s.fields[9], want.actor_future_mask);
            // Row 0 of the futures is the AGENT's target, all observed.
            assert_eq!(f32s(&s.fields[8])[..60], f32s(&s.fields[4])[..]);
            assert!(s.fields[9][..30].iter().all(|&m| m == 1));
            assert_eq!(s.fields[1][0], 1, "actor 0 is the AGENT");
            // What eval does: the stored frame takes the target back to the CSV's positions.
            let f = f32s(&s.fields[5]);
            let (sin, cos) = (f[2] as f64).sin_cos();
            let agent = &scn.tracks[scn.agent];
            for (k, p) in f32s(&s.fields[4]).chunks(2).enumerate() {
                let (x, y) = (p[0] as f64, p[1] as f64);
                let world = [
                    cos * x - sin * y + f[0] as f64,
                    sin * x + cos * y + f[1] as f64,
                ];
                let want = agent.points[20 + k].unwrap();
                let err = (world[0] - want[0]).hypot(world[1] - want[1]);
                assert!(err < 1e-3, "{}: step {}: {err} m", file.display(), 20 + k);
            }
            seen += 1;
        }
    }
    assert_eq!(seen, 52);
}

/// Writes `text` as scenario `name` of the train split.
fn put(root: &Path, name: &str, text: &str) {
    std::fs::write(root.join("train/data").join(name), text).unwrap();
}

#[test]
fn bad_scenarios_are_named_rejects_and_the_rest_completes() {
    let dir = tempfile::tempdir().unwrap();
    let root = av_data(dir.path(), 24, 4);
    let good = std::fs::read_to_string(root.join("train/data/1.csv")).unwrap();
    let lines: Vec<&str> = good.lines().collect();
    let agent_id = lines
        .iter()
        .find(|l| l.contains(",AGENT,"))
        .unwrap()
        .split(',')
        .nth(1)
        .unwrap()
        .to_string();
    let join = |ls: Vec<String>| ls.join("\n") + "\n";
    let owned = || lines.iter().map(|l| l.to_string()).collect::<Vec<_>>();
    // A row with a missing column.
    let mut t = owned();
    t[5] = t[5].rsplit_once(',').unwrap().0.to_string();
    put(&root, "1001.csv", &join(t));
    // No AGENT.
    put(&root, "1002.csv", &good.replace(",AGENT,", ",OTHERS,"));
    // The AGENT seen at 15 steps only.
    let mut agent_rows = 0;
    let t: Vec<String> = owned()
        .into_iter()
        .filter(|l| {
            if l.contains(",AGENT,") {
                agent_rows += 1;
                agent_rows <= 15
            } else {
                true
            }
        })
        .collect();
    put(&root, "1003.csv", &join(t));
    // A city with no map.
    put(
        &root,
        "1004.csv",
        &good.replace(",MIA\n", ",XYZ\n").replace(",PIT\n", ",XYZ\n"),
    );
    // NaN coordinates.
    let mut t = owned();
    let i = t.iter().position(|l| l.contains(",AGENT,")).unwrap();
    let f: Vec<&str> = t[i].split(',').collect();
    t[i] = format!("{},{},{},nan,{},{}", f[0], f[1], f[2], f[4], f[5]);
    put(&root, "1005.csv", &join(t));
    // The AGENT twice at one timestamp.
    let mut t = owned();
    t.push(t[i].clone());
    put(&root, "1006.csv", &join(t));
    // Not an integer scenario id.
    put(&root, "abc.csv", &good);
    // A validation scenario cut after 40 steps (needs 50).
    let cut: Vec<String> = {
        let mut stamps: Vec<&str> = lines[1..]
            .iter()
            .map(|l| &l[..l.find(',').unwrap()])
            .collect();
        stamps.dedup();
        let keep: std::collections::HashSet<&str> = stamps[..40].iter().copied().collect();
        lines
            .iter()
            .enumerate()
            .filter(|(n, l)| *n == 0 || keep.contains(&l[..l.find(',').unwrap()]))
            .map(|(_, l)| l.to_string())
            .collect()
    };
    std::fs::write(root.join("val/data/77.csv"), join(cut)).unwrap();

    let cfg = av_config(dir.path(), "bad", &root, "max_reject_fraction = 0.5", "");
    let r = lm4ve(&cfg, &["pipeline", "run"]);
    r.no_panic().ok();
    assert!(r.stdout.contains("28 samples, 8 rejects"), "{}", r.stdout);
    let v = show(&cfg);
    let rejects = std::fs::read_to_string(v["rejects_file"].as_str().unwrap()).unwrap();
    let rejects: Vec<serde_json::Value> = rejects
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let reason = |file: &str| -> String {
        rejects
            .iter()
            .find(|r| r["file"].as_str().unwrap().ends_with(file))
            .unwrap_or_else(|| panic!("{file} not rejected: {rejects:?}"))["reason"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let expect = [
        ("train/data/1001.csv", "line 6: malformed row"),
        ("train/data/1002.csv", "missing AGENT"),
        (
            "train/data/1003.csv",
            "fewer than 20 observed steps: the AGENT has 15",
        ),
        ("train/data/1004.csv", "unknown city `XYZ`"),
        ("train/data/1005.csv", "X = `nan` is not a finite number"),
        (
            "train/data/1006.csv",
            &format!(
                "duplicate timestamp {}",
                &lines[i][..lines[i].find(',').unwrap()]
            ),
        ),
        ("train/data/abc.csv", "not `<integer scenario id>.csv`"),
        (
            "val/data/77.csv",
            "needs 50 steps (20 observed + 30 future) for the AGENT, found 40",
        ),
    ];
    for (file, want) in expect {
        let got = reason(file);
        assert!(got.contains(want), "{file}: {got}");
    }
    assert!(reason("train/data/1006.csv").contains(&agent_id));
    assert_eq!(rejects.len(), 8);
}

#[test]
fn config_errors_exit_2_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let root = av_data(dir.path(), 2, 1);
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let maps = format!("{}/map_files", root.display());
    let no_maps = empty.display().to_string();
    // (what the params line becomes, the key whose line the error must name, text it must hold)
    let cases: [(&str, String, &str, &str); 7] = [
        (
            "radius = 100.0",
            "radius = -1.0".into(),
            "radius",
            "radius = -1",
        ),
        (
            "lane_points = 10",
            "lane_points = 1".into(),
            "lane_points",
            "lane_points = 1",
        ),
        (
            "obs_steps = 20",
            "obs_steps = 1".into(),
            "obs_steps",
            "obs_steps = 1",
        ),
        (
            "max_actors = 16",
            "max_actors = 0".into(),
            "max_actors",
            "at least 1",
        ),
        (
            "shard_samples = 16",
            "shard_samples = 16\nbogus = 3".into(),
            "bogus",
            "bogus",
        ),
        ("/train/data\"", "/nope/data\"".into(), "train", "nope/data"),
        (
            &maps,
            no_maps,
            "map",
            "has no pruned_argoverse_<CITY>_<ID>_vector_map.xml",
        ),
    ];
    for (n, (from, to, key, want)) in cases.iter().enumerate() {
        let cfg = av_config(dir.path(), &format!("c{n}"), &root, "", "");
        let text = std::fs::read_to_string(&cfg).unwrap();
        assert!(text.contains(*from), "case {n}: `{from}` not in the config");
        let text = text.replacen(*from, to, 1);
        std::fs::write(&cfg, &text).unwrap();
        let r = lm4ve(&cfg, &["pipeline", "run"]);
        r.no_panic();
        // A dataset folder that is not there blocks the stage (exit 1: other stages could
        // still run); a wrong value is a config error (exit 2). Both name the file and line.
        let want_code = if to.contains("/nope/") { 1 } else { 2 };
        assert_eq!(r.code, want_code, "case {n}: {}", r.stderr);
        let line = 1 + text
            .lines()
            .position(|l| l.starts_with(&format!("{key} =")))
            .unwrap();
        let file_line = format!("{}:{line}", cfg.display());
        assert!(
            r.stderr.contains(&file_line) && r.stderr.contains(want),
            "case {n}: want `{file_line}` and `{want}` in:\n{}",
            r.stderr
        );
    }
}

#[test]
fn a_damaged_map_fails_the_stage_naming_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let root = av_data(dir.path(), 6, 1);
    let map = root.join("map_files").join(MIA_MAP);
    let text = std::fs::read_to_string(&map).unwrap();
    std::fs::write(
        &map,
        text.replacen("<nd ref=\"3\" />", "<nd ref=\"-5\" />", 1),
    )
    .unwrap();
    let pit = root.join("map_files/pruned_argoverse_PIT_10314_vector_map.xml");
    let text = std::fs::read_to_string(&pit).unwrap();
    std::fs::write(
        &pit,
        text.replacen("<nd ref=\"3\" />", "<nd ref=\"-5\" />", 1),
    )
    .unwrap();
    let cfg = av_config(dir.path(), "m", &root, "", "");
    let r = lm4ve(&cfg, &["pipeline", "run"]);
    r.no_panic();
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("_vector_map.xml: line ") && r.stderr.contains("node ref -5"),
        "{}",
        r.stderr
    );
}

#[test]
fn av_tokens_bytes_do_not_depend_on_threads() {
    let dir = tempfile::tempdir().unwrap();
    let root = av_data(dir.path(), 40, 8);
    let a = av_config(dir.path(), "j1", &root, "", "");
    let b = av_config(dir.path(), "j2", &root, "", "");
    lm4ve(&a, &["-j", "1", "pipeline", "run"]).ok();
    lm4ve(&b, &["-j", "2", "pipeline", "run"]).ok();
    let bytes = |c: &Path| std::fs::read(show(c)["manifest"].as_str().unwrap()).unwrap();
    assert_eq!(bytes(&a), bytes(&b));
    // A second run does nothing.
    let r = lm4ve(&a, &["pipeline", "status"]);
    r.ok();
    assert!(r.stdout.contains("fresh"), "{}", r.stdout);
}

/// The real config's caps (`configs/pipeline.toml`'s `av_tokens`: `max_actors`, `max_lanes`)
/// keep every actor and lane of the demo scenarios (`actors_dropped` and `lanes_dropped` are
/// 0 in both splits), where the demo's own small caps drop some.
#[test]
fn the_real_configs_caps_drop_nothing_on_the_demo() {
    let real = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/pipeline.toml"),
    )
    .unwrap();
    let section = real
        .split("[stages.av_tokens.params]")
        .nth(1)
        .unwrap()
        .split("\n[")
        .next()
        .unwrap();
    let cap = |key: &str| -> usize {
        section
            .lines()
            .find_map(|l| l.trim().strip_prefix(key)?.trim().strip_prefix('='))
            .unwrap_or_else(|| panic!("configs/pipeline.toml's av_tokens sets no {key}"))
            .trim()
            .parse()
            .unwrap()
    };
    let (actors, lanes) = (cap("max_actors"), cap("max_lanes"));
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("av");
    write_demo_argoverse(
        &root,
        &DemoAvConfig {
            train: 60,
            val: 20,
            ..DemoAvConfig::default()
        },
    )
    .unwrap();
    let cfg = dir.path().join("real-caps.toml");
    std::fs::write(
        &cfg,
        format!(
            "[cache]\ndir = \"cache\"\n[stages.av_tokens]\nkind = \"av.tokens\"\n[stages.av_tokens.params]\ntrain = \"{r}/train/data\"\nval = \"{r}/val/data\"\nmap = \"{r}/map_files\"\nmax_actors = {actors}\nmax_lanes = {lanes}\n",
            r = root.display()
        ),
    )
    .unwrap();
    lm4ve(&cfg, &["pipeline", "run", "--stage", "av_tokens"]).ok();
    let m = show_stage_json(&cfg, "av_tokens")["meta"].clone();
    for split in ["train", "val"] {
        let s = &m["splits"][split];
        assert_eq!(s["actors_dropped"], 0, "{split}: {s}");
        assert_eq!(s["lanes_dropped"], 0, "{split}: {s}");
        assert!(s["max_lanes_in_range"].as_u64().unwrap() > 48, "{s}");
    }
}
