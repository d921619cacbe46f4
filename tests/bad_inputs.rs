//! Bad input never panics: a bad sample is a named reject, a bad input as a whole is a
//! clear error naming the file and the fix. Other point-cloud formats (.bin, LAS/LAZ) too.

mod common;
use common::*;
use lm4ve_stages::pointcloud::bin::write_bin_cloud;
use lm4ve_stages::pointcloud::geometry::Point;
use lm4ve_stages::pointcloud::h5::write_scanobjectnn_h5;
use lm4ve_stages::pointcloud::las::write_las_cloud;
use std::path::{Path, PathBuf};

fn sphere(n: usize, seed: u32) -> Vec<Point> {
    // A deterministic spiral on the unit sphere, a little different per seed.
    (0..n)
        .map(|i| {
            let t = (i as f32 + 0.5) / n as f32;
            let z = 1.0 - 2.0 * t;
            let r = (1.0 - z * z).sqrt();
            let a = i as f32 * 2.399_963 + seed as f32;
            [r * a.cos(), r * a.sin(), z]
        })
        .collect()
}

fn write_h5(path: &Path, clouds: &[Vec<Point>]) {
    let labels: Vec<i64> = (0..clouds.len() as i64).map(|i| i % 3).collect();
    let masks: Vec<Vec<i32>> = clouds.iter().map(|c| vec![1; c.len()]).collect();
    write_scanobjectnn_h5(path, clouds, &labels, &masks).unwrap();
}

fn h5_setup(clouds: &[Vec<Point>], extra: &str) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let train = dir.path().join("train.h5");
    let test = dir.path().join("test.h5");
    write_h5(&train, clouds);
    write_h5(&test, &[sphere(300, 9)]);
    let cfg = pc_config(dir.path(), "c.toml", &train, &test, extra);
    (dir, cfg, train)
}

#[test]
fn nan_points_are_a_named_reject_and_the_run_goes_on() {
    let mut bad = sphere(300, 1);
    bad[17][1] = f32::NAN;
    let clouds = vec![sphere(300, 0), bad, sphere(300, 2), sphere(300, 3)];
    let (dir, cfg, _) = h5_setup(&clouds, "");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        text.replace(
            "kind = \"pc.tokens\"",
            "kind = \"pc.tokens\"\nmax_reject_fraction = 0.5",
        ),
    )
    .unwrap();
    let r = lm4ve(&cfg, &["pipeline", "run"]);
    r.ok();
    assert!(r.stdout.contains("4 samples, 1 rejects"), "{}", r.stdout);
    let show = show_json(&cfg);
    let rejects = std::fs::read_to_string(show["rejects_file"].as_str().unwrap()).unwrap();
    assert_eq!(rejects.lines().count(), 1);
    let line: serde_json::Value = serde_json::from_str(rejects.lines().next().unwrap()).unwrap();
    assert!(
        line["file"].as_str().unwrap().ends_with("train.h5"),
        "{line}"
    );
    assert_eq!(line["sample"], "index 1");
    assert!(!line["reason"].as_str().unwrap().is_empty());
    drop(dir);
}

#[test]
fn too_many_rejects_fail_the_stage_with_a_clear_message() {
    let mut bad = sphere(300, 1);
    bad[0][0] = f32::INFINITY;
    let clouds = vec![sphere(300, 0), bad];
    let (_dir, cfg, _) = h5_setup(&clouds, "");
    let r = lm4ve(&cfg, &["pipeline", "run"]);
    assert_eq!(r.no_panic().code, 1);
    assert!(
        r.stderr.contains("rejected") && r.stderr.contains("max_reject_fraction"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("index 1"), "{}", r.stderr);
}

#[test]
fn truncated_h5_is_a_clear_error() {
    let clouds: Vec<_> = (0..8).map(|i| sphere(300, i)).collect();
    let (_dir, cfg, train) = h5_setup(&clouds, "");
    let bytes = std::fs::read(&train).unwrap();
    std::fs::write(&train, &bytes[..bytes.len() / 2]).unwrap();
    let r = lm4ve(&cfg, &["pipeline", "run"]);
    assert_eq!(r.no_panic().code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("train.h5"), "{}", r.stderr);
}

#[test]
fn wrong_shape_h5_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let train = dir.path().join("train.h5");
    {
        let f = hdf5_metno::File::create(&train).unwrap();
        let data = ndarray::Array3::<f32>::zeros((4, 300, 2));
        f.new_dataset_builder()
            .with_data(&data)
            .create("data")
            .unwrap();
        let label = ndarray::Array1::<i64>::zeros(4);
        f.new_dataset_builder()
            .with_data(&label)
            .create("label")
            .unwrap();
    }
    let cfg = pc_config(dir.path(), "c.toml", &train, &train, "");
    let r = lm4ve(&cfg, &["pipeline", "run"]);
    assert_eq!(r.no_panic().code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("train.h5"), "{}", r.stderr);
}

#[test]
fn fewer_points_than_num_points_is_a_clear_error() {
    let clouds: Vec<_> = (0..3).map(|i| sphere(100, i)).collect();
    let (_dir, cfg, _) = h5_setup(&clouds, "");
    let r = lm4ve(&cfg, &["pipeline", "run"]);
    assert_eq!(r.no_panic().code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("num_points"), "{}", r.stderr);
}

/// A dataset that is not there blocks its stage (exit 1: in a larger DAG the other stages
/// still run), naming the path and the config line to fix.
#[test]
fn missing_input_file_blocks_the_stage_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = pc_config(
        dir.path(),
        "c.toml",
        &dir.path().join("nope.h5"),
        &dir.path().join("nope2.h5"),
        "",
    );
    let r = lm4ve(&cfg, &["pipeline", "run"]);
    assert_eq!(r.no_panic().code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("missing input") && r.stderr.contains("nope.h5"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("c.toml:"), "{}", r.stderr);
}

#[test]
fn unknown_param_names_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = pc_config(
        dir.path(),
        "c.toml",
        Path::new("a.h5"),
        Path::new("b.h5"),
        "num_pionts = 5",
    );
    let r = lm4ve(&cfg, &["pipeline", "status"]);
    assert_eq!(r.no_panic().code, 2);
    assert!(
        r.stderr.contains("c.toml:15") && r.stderr.contains("num_pionts"),
        "{}",
        r.stderr
    );
    let r = lm4ve(&dir.path().join("absent.toml"), &["pipeline", "run"]);
    assert_eq!(r.no_panic().code, 2);
    assert!(r.stderr.contains("absent.toml"), "{}", r.stderr);
}

fn bin_dataset(dir: &Path) -> PathBuf {
    let root = dir.join("object_dataset");
    let mut split = String::new();
    for (i, cat) in ["chair", "table", "bed"].iter().enumerate() {
        std::fs::create_dir_all(root.join(cat)).unwrap();
        for j in 0..3 {
            let name = format!("{i:03}_{j:05}.bin");
            write_bin_cloud(
                &root.join(cat).join(&name),
                &sphere(300, (i * 3 + j) as u32),
            )
            .unwrap();
            split.push_str(&format!(
                "{name}\t{cat}\t{}\n",
                if j == 2 { "t" } else { "" }
            ));
        }
    }
    // One object with too few points, one truncated file.
    write_bin_cloud(&root.join("bed/009_00000.bin"), &sphere(10, 0)).unwrap();
    split.push_str("009_00000.bin\tbed\t\n");
    let full = root.join("chair/000_00000.bin");
    let bytes = std::fs::read(&full).unwrap();
    std::fs::write(root.join("chair/009_00001.bin"), &bytes[..bytes.len() - 7]).unwrap();
    split.push_str("009_00001.bin\tchair\t\n");
    std::fs::write(root.join("split_new.txt"), split).unwrap();
    root
}

#[test]
fn scanobjectnn_bin_objects_with_a_split_list() {
    let dir = tempfile::tempdir().unwrap();
    let root = bin_dataset(dir.path());
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "[cache]\ndir = \"cache\"\n[stages.pc_tokens]\nkind = \"pc.tokens\"\nmax_reject_fraction = 0.3\n[stages.pc_tokens.params]\nformat = \"bin\"\nroot = \"{}\"\nsplit = \"{}\"\nnum_points = 256\nnum_groups = 16\ngroup_size = 8\n",
            root.display(),
            root.join("split_new.txt").display()
        ),
    )
    .unwrap();
    let r = lm4ve(&cfg, &["pipeline", "run"]);
    r.ok();
    let v = show_json(&cfg);
    assert_eq!(v["splits"]["train"], 6);
    assert_eq!(v["splits"]["test"], 3);
    assert_eq!(v["rejects"], 2);
    let rejects = std::fs::read_to_string(v["rejects_file"].as_str().unwrap()).unwrap();
    assert!(
        rejects.contains("009_00000.bin") && rejects.contains("009_00001.bin"),
        "{rejects}"
    );
    // Labels are ScanObjectNN's class ids: chair 4, table 9, bed 10.
    assert_eq!(
        v["meta"]["label_counts"],
        serde_json::json!({"4": 3, "9": 3, "10": 3})
    );
}

#[test]
fn las_and_laz_scans_with_labels_csv() {
    let dir = tempfile::tempdir().unwrap();
    let scans = dir.path().join("scans");
    std::fs::create_dir_all(&scans).unwrap();
    let mut csv = String::from("file,label,split\n");
    for i in 0..4u32 {
        let name = if i % 2 == 0 {
            format!("s{i}.las")
        } else {
            format!("s{i}.laz")
        };
        // Georeferenced coordinates: the reader must keep precision.
        let pts: Vec<Point> = sphere(300, i)
            .iter()
            .map(|p| [p[0] + 5000.0, p[1] - 3000.0, p[2] + 100.0])
            .collect();
        write_las_cloud(&scans.join(&name), &pts).unwrap();
        csv.push_str(&format!(
            "{name},{},{}\n",
            if i < 2 { "tree" } else { "pole" },
            if i == 3 { "test" } else { "train" }
        ));
    }
    write_las_cloud(&scans.join("empty.las"), &[]).unwrap();
    csv.push_str("empty.las,pole,train\n");
    std::fs::write(scans.join("labels.csv"), &csv).unwrap();
    let cfg = dir.path().join("c.toml");
    let write_cfg = |labels: &Path| {
        std::fs::write(
            &cfg,
            format!(
                "[cache]\ndir = \"cache\"\n[stages.pc_tokens]\nkind = \"pc.tokens\"\nmax_reject_fraction = 0.5\n[stages.pc_tokens.params]\nformat = \"las\"\nlabels = \"{}\"\nnum_points = 256\nnum_groups = 16\ngroup_size = 8\n",
                labels.display()
            ),
        )
        .unwrap()
    };
    write_cfg(&scans.join("labels.csv"));
    lm4ve(&cfg, &["pipeline", "run"]).ok();
    let v = show_json(&cfg);
    assert_eq!(v["samples"], 4);
    assert_eq!(v["rejects"], 1);
    assert_eq!(v["meta"]["classes"], serde_json::json!(["pole", "tree"]));
    // A row without a label is a config error naming the line.
    std::fs::write(scans.join("bad.csv"), "file,label\ns0.las,tree\ns1.laz,\n").unwrap();
    write_cfg(&scans.join("bad.csv"));
    let r = lm4ve(&cfg, &["pipeline", "run"]);
    assert_eq!(r.no_panic().code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("bad.csv") && r.stderr.contains('3'),
        "{}",
        r.stderr
    );
}
