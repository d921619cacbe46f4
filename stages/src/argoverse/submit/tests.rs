//! The converters' rules, and both files read back with the parquet and hdf5 crates
//! (tests/submit.rs holds them to the official loaders' reading).

use super::fixture::{forecasts, write_predictions};
use super::*;
use hdf5_metno as hdf5;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::Field;

fn err(c: Challenge, f: &[ScenarioForecast]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(match c {
        Challenge::Av1 => "s.h5",
        Challenge::Av2 => "s.parquet",
    });
    let e = c.write(&path, f).unwrap_err().to_string();
    assert!(!path.exists(), "nothing is written when a rule fails: {e}");
    e
}

#[test]
fn predictions_files_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    for c in [Challenge::Av1, Challenge::Av2] {
        let f = forecasts(c);
        let p = dir.path().join("predictions-last.parquet");
        write_predictions(&p, &f).unwrap();
        assert_eq!(read_predictions(&p).unwrap(), f);
    }
    assert_eq!(predictions_file("best"), "predictions-best.parquet");
    let bad = dir.path().join("bad.parquet");
    std::fs::write(&bad, b"not parquet").unwrap();
    let e = read_predictions(&bad).unwrap_err().to_string();
    assert!(
        e.contains("bad.parquet") && e.contains("not a parquet"),
        "{e}"
    );
}

#[test]
fn av2_parquet_has_the_challenge_columns_and_values() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub.parquet");
    let f = forecasts(Challenge::Av2);
    Challenge::Av2.write(&path, &f).unwrap();
    let r = SerializedFileReader::new(std::fs::File::open(&path).unwrap()).unwrap();
    let names: Vec<String> = r
        .metadata()
        .file_metadata()
        .schema()
        .get_fields()
        .iter()
        .map(|f| f.name().to_string())
        .collect();
    assert_eq!(
        names,
        [
            "scenario_id",
            "track_id",
            "probability",
            "predicted_trajectory_x",
            "predicted_trajectory_y"
        ]
    );
    let rows: Vec<_> = r.get_row_iter(None).unwrap().map(|r| r.unwrap()).collect();
    assert_eq!(rows.len(), 6 + 6 + 3);
    let mut i = 0;
    for s in &f {
        for (k, t) in s.trajectories.iter().enumerate() {
            let cols: Vec<&Field> = rows[i].get_column_iter().map(|(_, v)| v).collect();
            assert_eq!(cols[0], &Field::Str(s.scenario_id.clone()));
            assert_eq!(cols[1], &Field::Str(s.track_id.clone()));
            assert_eq!(cols[2], &Field::Double(s.probabilities[k]));
            for axis in 0..2 {
                let Field::ListInternal(l) = cols[3 + axis] else {
                    panic!("{:?}", cols[3 + axis])
                };
                let got: Vec<f64> = l
                    .elements()
                    .iter()
                    .map(|e| match e {
                        Field::Double(x) => *x,
                        e => panic!("{e:?}"),
                    })
                    .collect();
                let want: Vec<f64> = t.iter().map(|p| p[axis]).collect();
                assert_eq!(got, want);
            }
            i += 1;
        }
    }
}

#[test]
fn av1_h5_is_generate_forecasting_h5s_layout() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub.h5");
    let f = forecasts(Challenge::Av1);
    Challenge::Av1.write(&path, &f).unwrap();
    let file = hdf5::File::open(&path).unwrap();
    let ds = file.dataset(av1_h5::DATASET).unwrap();
    let rows = (6 + 6 + 3) * 30;
    assert_eq!(ds.shape(), vec![rows, 4]);
    let a = ds.read_2d::<f64>().unwrap();
    let mut r = 0;
    for s in &f {
        let id: f64 = s.scenario_id.parse().unwrap();
        for (t, p) in s.trajectories.iter().zip(&s.probabilities) {
            for q in t {
                assert_eq!(a[[r, 0]], id);
                assert_eq!(a[[r, 1]], f64::from(q[0] as f32));
                assert_eq!(a[[r, 2]], f64::from(q[1] as f32));
                assert_eq!(a[[r, 3]], *p);
                r += 1;
            }
        }
    }
}

#[test]
fn rules_name_the_scenario() {
    for c in [Challenge::Av1, Challenge::Av2] {
        let good = forecasts(c);
        let id = good[1].scenario_id.clone();
        let mut f = good.clone();
        f[1].probabilities[0] -= 0.1;
        let e = err(c, &f);
        assert!(e.contains(&id) && e.contains("sum to 0.8"), "{e}");
        let mut f = good.clone();
        f[1].trajectories[2].pop();
        let e = err(c, &f);
        assert!(e.contains(&id) && e.contains("mode 2 has"), "{e}");
        let mut f = good.clone();
        f[1].trajectories[0][5][1] = f64::NAN;
        let e = err(c, &f);
        assert!(e.contains(&id) && e.contains("not a finite"), "{e}");
        let mut f = good.clone();
        f[2].scenario_id = id.clone();
        let e = err(c, &f);
        assert!(e.contains(&id) && e.contains("twice"), "{e}");
        let mut f = good.clone();
        f[0].probabilities.pop();
        assert!(err(c, &f).contains("probabilities"));
        assert!(err(c, &[]).contains("no forecasts"));
        // A release's forecasts in the other's file.
        let other = match c {
            Challenge::Av1 => Challenge::Av2,
            Challenge::Av2 => Challenge::Av1,
        };
        let e = err(other, &good);
        assert!(e.contains(&good[0].scenario_id), "{e}");
    }
    // AV2: at most 6 modes, the focal track named, a lowercase UUID.
    let good = forecasts(Challenge::Av2);
    let mut f = good.clone();
    let extra = f[0].trajectories[0].clone();
    f[0].trajectories.push(extra);
    f[0].probabilities = vec![1.0 / 7.0; 7];
    let e = err(Challenge::Av2, &f);
    assert!(
        e.contains("7 modes") && e.contains(&f[0].scenario_id),
        "{e}"
    );
    let mut f = good.clone();
    f[1].track_id.clear();
    assert!(err(Challenge::Av2, &f).contains("no track id"));
    let mut f = good.clone();
    f[1].scenario_id = f[1].scenario_id.to_uppercase();
    assert!(err(Challenge::Av2, &f).contains("lowercase UUID"));
    // numpy's isclose: 1 + 5e-6 passes, 1 + 5e-5 does not.
    assert!(sums_to_one(1.0 + 5e-6) && !sums_to_one(1.0 + 5e-5));
    assert_eq!(
        Challenge::of_file(std::path::Path::new("x/sub.h5")),
        Some(Challenge::Av1)
    );
    assert_eq!(Challenge::of_data_kind("av2.tokens"), Some(Challenge::Av2));
}
