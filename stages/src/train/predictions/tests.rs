//! The predictions writers read back with the parquet reader: schema, rows, lists, nulls, the
//! world transform and byte-for-byte determinism.

use super::read::{read_classification, read_forecast, summary};
use super::rows::{class_rows, classification, forecast, forecast_rows, SceneInfo};
use super::samples::uuid_string;
use super::*;
use crate::train::models::vectornet::Forecast;
use candle_core::{Device, Tensor};

fn put(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn classification_file_reads_back_with_its_schema_and_rows() {
    let rows: Vec<ClassRow> = (0..3)
        .map(|i| ClassRow {
            sample: 10 + i,
            label: i % 2,
            top5: vec![(i, 0.5), (7, 0.25), (3, 0.125)],
            id: Some(format!("v{i}")),
        })
        .collect();
    let bytes = write_classification(&rows).unwrap();
    assert_eq!(bytes, write_classification(&rows).unwrap(), "deterministic");
    let dir = tempfile::tempdir().unwrap();
    let p = put(&dir, "c.parquet", &bytes);
    let s = summary(&p).unwrap();
    assert_eq!(s.rows, 3);
    assert_eq!(
        s.columns,
        ["sample", "label", "pred", "top5_class", "top5_prob", "id"]
    );
    assert_eq!(read_classification(&p).unwrap(), rows);
    // No names: no `id` column.
    let unnamed: Vec<ClassRow> = rows
        .iter()
        .map(|r| ClassRow {
            id: None,
            ..r.clone()
        })
        .collect();
    let p = put(&dir, "u.parquet", &write_classification(&unnamed).unwrap());
    assert_eq!(summary(&p).unwrap().columns.len(), 5);
    assert_eq!(read_classification(&p).unwrap(), unnamed);
}

#[test]
fn row_groups_split_at_the_fixed_size() {
    let rows: Vec<ClassRow> = (0..ROW_GROUP as i64 + 5)
        .map(|i| ClassRow {
            sample: i,
            label: 0,
            top5: vec![(1, 1.0)],
            id: None,
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let p = put(&dir, "big.parquet", &write_classification(&rows).unwrap());
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let r = SerializedFileReader::new(std::fs::File::open(&p).unwrap()).unwrap();
    assert_eq!(r.metadata().num_row_groups(), 2);
    assert_eq!(read_classification(&p).unwrap(), rows);
}

#[test]
fn top5_is_the_mean_of_the_views_as_the_metric_ranks_them() {
    let dev = Device::Cpu;
    // One sample, two views, three classes.
    let logits = Tensor::new(&[[0f32, 2.0, 0.0], [0.0, 0.0, 4.0]], &dev).unwrap();
    let labels = Tensor::new(&[1u32], &dev).unwrap();
    let by_probs = classification(&logits, &labels, 2, false).unwrap();
    let by_logits = classification(&logits, &labels, 2, true).unwrap();
    // k = min(5, 3): [label, 3 classes, 3 probs].
    assert_eq!(by_probs[0].len(), 7);
    assert_eq!(by_probs[0][0], 1.0);
    // Mean logits [0, 1, 2]: class 2 first.
    assert_eq!(&by_logits[0][1..4], &[2.0, 1.0, 0.0]);
    let sum: f64 = by_probs[0][4..].iter().sum();
    assert!((sum - 1.0).abs() < 1e-6);
    let rows = class_rows(&by_logits, &[5], None).unwrap();
    assert_eq!(rows[0].sample, 5);
    assert_eq!(rows[0].top5[0].0, 2);
    assert!(class_rows(&by_logits, &[1, 2], None).is_err());
}

#[test]
fn world_transform_inverts_the_frame() {
    let frame = [10.0f32, -5.0, std::f32::consts::FRAC_PI_2];
    // Turned a quarter: the frame's +x is the world's +y.
    let w = to_world(frame, [1.0, 0.0]);
    assert!(
        (w[0] - 10.0).abs() < 1e-6 && (w[1] + 4.0).abs() < 1e-6,
        "{w:?}"
    );
    let w = to_world(frame, [0.0, 2.0]);
    assert!(
        (w[0] - 8.0).abs() < 1e-6 && (w[1] + 5.0).abs() < 1e-6,
        "{w:?}"
    );
    let back = to_frame(frame, to_world(frame, [3.5, -1.25]));
    assert!((back[0] - 3.5).abs() < 1e-9 && (back[1] + 1.25).abs() < 1e-9);
}

#[test]
fn forecast_file_ranks_modes_turns_them_to_world_and_nulls_missing_truth() {
    let dev = Device::Cpu;
    // One scene, K = 2 modes, P = 2 steps; mode 1 is the more confident.
    let modes = Tensor::new(
        &[[[[1f32, 0.0], [2.0, 0.0]], [[0.0, 1.0], [0.0, 2.0]]]],
        &dev,
    )
    .unwrap();
    let f = Forecast {
        modes: modes.clone(),
        confidence: Tensor::new(&[[0f32, 1.0]], &dev).unwrap(),
        single: modes.narrow(1, 0, 1).unwrap().squeeze(1).unwrap(),
    };
    let truth = Tensor::new(&[[[0f32, 1.0], [0.0, 3.0]]], &dev).unwrap();
    let flat = forecast(&f, &truth).unwrap();
    assert_eq!(flat[0].len(), 2 + 2 * 2 * 2 + 2 * 2);
    let scene = SceneInfo {
        sample: 0,
        scenario_id: "42".into(),
        track_id: String::new(),
        frame: [100.0, 200.0, std::f32::consts::FRAC_PI_2],
    };
    let rows = forecast_rows(&flat, &[scene], 2, true).unwrap();
    let r = &rows[0];
    let e = std::f64::consts::E;
    assert!((r.modes[0].probability - e / (1.0 + e)).abs() < 1e-12);
    assert!((r.modes.iter().map(|m| m.probability).sum::<f64>() - 1.0).abs() < 1e-12);
    // Mode 0 is the model's mode 1, (0, 1) and (0, 2) in the frame: world x = 100 − y.
    assert!((r.modes[0].x[1] - 98.0).abs() < 1e-5 && (r.modes[0].y[1] - 200.0).abs() < 1e-5);
    assert!((r.modes[1].y[0] - 201.0).abs() < 1e-5);
    let (tx, _) = r.truth.as_ref().unwrap();
    assert!((tx[1] - 97.0).abs() < 1e-5);
    let dir = tempfile::tempdir().unwrap();
    let bytes = write_forecast(&rows).unwrap();
    let p = put(&dir, "f.parquet", &bytes);
    let s = summary(&p).unwrap();
    assert_eq!(s.rows, 2, "one row per mode");
    assert_eq!(
        s.columns,
        [
            "sample",
            "scenario_id",
            "track_id",
            "mode",
            "probability",
            "predicted_trajectory_x",
            "predicted_trajectory_y",
            "truth_x",
            "truth_y"
        ]
    );
    assert_eq!(read_forecast(&p).unwrap(), rows);
    // No futures in the split: null truth.
    let scene = SceneInfo {
        sample: 0,
        scenario_id: "a".into(),
        track_id: "17".into(),
        frame: [0.0; 3],
    };
    let rows = forecast_rows(&flat, &[scene], 2, false).unwrap();
    let p = put(&dir, "t.parquet", &write_forecast(&rows).unwrap());
    let back = read_forecast(&p).unwrap();
    assert_eq!(back[0].truth, None);
    assert_eq!(back[0].track_id, "17");
    assert!(forecast_rows(&flat, &[], 2, true).is_err());
}

#[test]
fn uuids_print_as_av2_names_them() {
    let b =
        crate::argoverse::av2::stage::uuid_bytes("0a1e6f0a-1817-4a98-b02e-db8c9327d151").unwrap();
    assert_eq!(uuid_string(&b), "0a1e6f0a-1817-4a98-b02e-db8c9327d151");
}
