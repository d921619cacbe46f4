//! The AV2 reader, map and vectorizer on scenarios written in the released layout
//! (`synth`, parquet by the `parquet` crate) and by hand; every bad input as a named reason.

use super::map::{interp_arc, midpoint_line, parse_map};
use super::scenario::read_scenario;
use super::stage::{process, schema_for, uuid_bytes};
use super::synth::{scene, write, SynthScenario};
use super::vectorize::{vectorize, VecParams, ACTOR_FEATURES, LANE_FEATURES};
use std::path::Path;

fn params() -> VecParams {
    VecParams {
        obs_steps: 50,
        pred_steps: 60,
        radius: 100.0,
        max_actors: 16,
        max_lanes: 64,
        lane_points: 10,
    }
}

fn run(dir: &Path, s: &SynthScenario, with_future: bool) -> Result<Vec<u8>, String> {
    let d = write(dir, s)?;
    let p = params();
    process(&d, &p, &schema_for(&p), 1, with_future).map(|r| r.0)
}

#[test]
fn reads_the_released_layout_and_vectorizes_with_the_av_contract() {
    let tmp = tempfile::tempdir().unwrap();
    let s = scene(7, 10, 30, true);
    let d = write(tmp.path(), &s).unwrap();
    let scn = read_scenario(&d.join(format!("scenario_{}.parquet", s.id)), 110).unwrap();
    assert_eq!(scn.tracks.len(), 12);
    assert_eq!(scn.tracks[scn.focal].id, "focal");
    assert_eq!(scn.tracks[scn.focal].category, 3);
    let f = &s.tracks[0].states;
    assert_eq!(scn.tracks[scn.focal].points[49], Some([f[49].1, f[49].2]));
    // Track 1000 starts at step 0, 1001 at step 1: earlier steps are unobserved.
    let t1001 = scn.tracks.iter().find(|t| t.id == "1001").unwrap();
    assert_eq!(t1001.points[0], None);
    assert_eq!(t1001.object_type, 1, "pedestrian");

    let map = parse_map(&std::fs::read(d.join(format!("log_map_archive_{}.json", s.id))).unwrap())
        .unwrap();
    assert_eq!(map.lanes.len(), 30);
    assert_eq!(map.crossings.len(), 1);
    assert!(map.lanes.windows(2).all(|w| w[0].id < w[1].id));
    let p = params();
    let v = vectorize(&scn, &map, &p, true).unwrap();
    // The focal track drives (almost) north: frame origin = its step 49, heading along +y.
    let fr = v.frame.to_f32();
    assert_eq!([fr[0], fr[1]], [f[49].1 as f32, f[49].2 as f32]);
    assert!(
        v.target[1] > 0.0 && v.target[0].abs() < 0.1,
        "moves along +y"
    );
    let last = v
        .frame
        .to_world([f64::from(v.target[118]), f64::from(v.target[119])]);
    assert!((last[0] - f[109].1).abs() < 1e-3 && (last[1] - f[109].2).abs() < 1e-3);
    // Actor 0 the focal track, then the scored tracks (category 2), then the rest.
    let cats: Vec<u8> = v.actor_category[..v.actors_in_range.min(16)].to_vec();
    assert_eq!(cats[0], 3);
    let first_unscored = cats[1..]
        .iter()
        .position(|c| *c != 2)
        .unwrap_or(cats.len() - 1)
        + 1;
    assert!(cats[first_unscored..].iter().all(|c| *c != 2), "{cats:?}");
    // The object type is the 7th feature of every vector of an actor.
    let nv = p.obs_steps - 1;
    for a in 0..16 {
        if v.actor_mask[a] == 1 {
            let row = &v.actors[(a * nv) * ACTOR_FEATURES..][..ACTOR_FEATURES];
            assert_eq!(row[6], f32::from(v.actor_type[a]));
        }
    }
    // Map polylines: lanes (is_crossing 0) then the crossing's two edges (1).
    let lv = p.lane_points - 1;
    let kinds: Vec<f32> = (0..v.lanes_in_range)
        .map(|k| v.lanes[k * lv * LANE_FEATURES + 4])
        .collect();
    assert_eq!(kinds.iter().filter(|k| **k == 1.0).count(), 2);
    assert!(kinds.windows(2).all(|w| w[0] <= w[1]));
    // Futures of the focal track are row 0 of actor_futures.
    assert_eq!(&v.actor_futures[..120], &v.target[..]);
}

#[test]
fn centerline_is_avs_midpoint_line() {
    // Straight boundaries 2 m apart: the midline, 10 points evenly spaced.
    let left = [[0.0, 0.0, 0.0], [0.0, 4.0, 0.0], [0.0, 9.0, 0.0]];
    let right = [[2.0, 0.0, 0.0], [2.0, 9.0, 0.0]];
    let c = midpoint_line(&left, &right, 10);
    assert_eq!(c.len(), 10);
    for (k, q) in c.iter().enumerate() {
        assert!(
            (q[0] - 1.0).abs() < 1e-12 && (q[1] - k as f64).abs() < 1e-12,
            "{q:?}"
        );
    }
    // A cul-de-sac: one side a single point → midpoints to every point of the other side.
    let c = midpoint_line(&[[0.0, 0.0, 0.0]], &right, 10);
    assert_eq!(c, vec![[1.0, 0.0], [1.0, 4.5]]);
    // z counts in the arc length (av2 resamples the 3-D boundaries).
    let bent = interp_arc(3, &[[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [1.0, 0.0, 3.0]]);
    assert!((bent[1][2] - 1.0).abs() < 1e-12 && bent[1][0] == 1.0);
}

#[test]
fn test_split_has_no_future_and_no_target() {
    let tmp = tempfile::tempdir().unwrap();
    let s = scene(3, 5, 10, false);
    let d = write(tmp.path(), &s).unwrap();
    let scn = read_scenario(&d.join(format!("scenario_{}.parquet", s.id)), 110).unwrap();
    let map = parse_map(&std::fs::read(d.join(format!("log_map_archive_{}.json", s.id))).unwrap())
        .unwrap();
    let v = vectorize(&scn, &map, &params(), false).unwrap();
    assert!(v.target.iter().all(|x| *x == 0.0));
    assert!(v.actor_future_mask.iter().all(|m| *m == 0));
    // The same scenario in a split with targets is a reject.
    let e = vectorize(&scn, &map, &params(), true).unwrap_err();
    assert!(e.contains("future step 50"), "{e}");
}

#[test]
fn bad_scenarios_are_named_rejects() {
    let tmp = tempfile::tempdir().unwrap();
    let reject = |s: &SynthScenario| run(tmp.path(), s, true).unwrap_err();

    let mut s = scene(1, 4, 8, true);
    s.map = None;
    assert!(reject(&s).contains("missing map"), "{}", reject(&s));

    let mut s = scene(2, 4, 8, true);
    s.focal = "nobody".into();
    let e = reject(&s);
    assert!(e.contains("no focal track"), "{e}");

    let mut s = scene(3, 4, 8, true);
    s.tracks[0].states.retain(|st| st.0 != 49);
    let e = reject(&s);
    assert!(e.contains("not observed at step 49"), "{e}");

    let mut s = scene(4, 4, 8, true);
    s.tracks[2].states[5].1 = f64::NAN;
    let e = reject(&s);
    assert!(
        e.contains("not a finite number") && e.contains("track 1001"),
        "{e}"
    );

    let mut s = scene(5, 4, 8, true);
    s.tracks[1].object_type = "spaceship".into();
    let e = reject(&s);
    assert!(e.contains("unknown object type `spaceship`"), "{e}");

    let mut s = scene(6, 4, 8, true);
    let again = s.tracks[1].states[3];
    s.tracks[1].states.push(again);
    let e = reject(&s);
    assert!(e.contains("appears twice"), "{e}");

    // Damaged files: a truncated parquet, a truncated JSON, an unknown lane type.
    let s = scene(8, 4, 8, true);
    let d = write(tmp.path(), &s).unwrap();
    let pq = d.join(format!("scenario_{}.parquet", s.id));
    let bytes = std::fs::read(&pq).unwrap();
    std::fs::write(&pq, &bytes[..bytes.len() / 2]).unwrap();
    let p = params();
    let e = process(&d, &p, &schema_for(&p), 1, true).unwrap_err();
    assert!(e.contains("damaged parquet"), "{e}");
    std::fs::write(&pq, &bytes).unwrap();
    let js = d.join(format!("log_map_archive_{}.json", s.id));
    let text = std::fs::read_to_string(&js).unwrap();
    std::fs::write(&js, &text[..text.len() / 2]).unwrap();
    let e = process(&d, &p, &schema_for(&p), 1, true).unwrap_err();
    assert!(e.contains("damaged map JSON"), "{e}");
    std::fs::write(&js, text.replacen("\"VEHICLE\"", "\"HOVERCRAFT\"", 1)).unwrap();
    let e = process(&d, &p, &schema_for(&p), 1, true).unwrap_err();
    assert!(e.contains("unknown lane type `HOVERCRAFT`"), "{e}");

    // A folder that is not a scenario id.
    let mut s = scene(9, 4, 8, true);
    s.id = "not-a-uuid".into();
    assert!(reject(&s).contains("is not a scenario id"));
    assert!(process(&tmp.path().join("missing"), &p, &schema_for(&p), 1, true).is_err());
}

#[test]
fn uuids_round_trip_and_bytes_are_deterministic() {
    let id = "0a1e6f0a-1817-4a98-b02e-db8c9327d151";
    let b = uuid_bytes(id).unwrap();
    assert_eq!(b[0], 0x0a);
    assert_eq!(b[15], 0x51);
    assert!(uuid_bytes("0a1e6f0a-1817-4a98-b02e-db8c9327d15g").is_none());
    // The bytes give back the exact id (a submission names the scenario by it); uppercase
    // would not come back, so it is not an AV2 id.
    assert_eq!(super::stage::uuid_string(&b), id);
    assert!(uuid_bytes("0A1E6F0A-1817-4A98-B02E-DB8C9327D151").is_none());
    for track in ["AV", "100000", "7"] {
        let f = super::stage::track_id_bytes(track).unwrap();
        assert_eq!(super::stage::track_id_string(&f).as_deref(), Some(track));
    }
    assert!(super::stage::track_id_bytes(&"9".repeat(65)).is_none());
    assert!(super::stage::track_id_bytes("").is_none());
    let tmp = tempfile::tempdir().unwrap();
    let s = scene(11, 20, 40, true);
    let a = run(tmp.path(), &s, true).unwrap();
    let b = run(&tmp.path().join("again"), &s, true).unwrap();
    assert_eq!(a, b);
}

/// Files written by the av2 package itself (scripts/fixtures/av2_scenarios.py: pandas/pyarrow
/// parquet, av2's map schema) read as av2 reads them: the same tracks and positions, and
/// centerlines equal to av2's `compute_midpoint_line`.
#[test]
fn reads_files_written_by_the_av2_package() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/av2");
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("expected.json")).unwrap())
            .unwrap();
    for (sid, want) in expected.as_object().unwrap() {
        let split = want["split"].as_str().unwrap();
        let dir = root.join(split).join(sid);
        let scn = read_scenario(&dir.join(format!("scenario_{sid}.parquet")), 110).unwrap();
        assert_eq!(
            scn.tracks[scn.focal].id,
            want["focal_track_id"].as_str().unwrap()
        );
        assert_eq!(scn.city, want["city"].as_str().unwrap());
        let tracks = want["tracks"].as_array().unwrap();
        assert_eq!(scn.tracks.len(), tracks.len());
        for t in tracks {
            let id = t["id"].as_str().unwrap();
            let got = scn.tracks.iter().find(|g| g.id == id).unwrap();
            assert_eq!(
                super::scenario::OBJECT_TYPES[got.object_type as usize],
                t["type"].as_str().unwrap()
            );
            assert_eq!(i64::from(got.category), t["category"].as_i64().unwrap());
            let steps = t["timesteps"].as_array().unwrap();
            assert_eq!(
                got.points.iter().flatten().count(),
                steps.len(),
                "track {id}"
            );
            for (s, pos) in steps.iter().zip(t["positions"].as_array().unwrap()) {
                let q = got.points[s.as_u64().unwrap() as usize].unwrap();
                assert_eq!(
                    q,
                    [pos[0].as_f64().unwrap(), pos[1].as_f64().unwrap()],
                    "track {id}"
                );
            }
        }
        let map =
            parse_map(&std::fs::read(dir.join(format!("log_map_archive_{sid}.json"))).unwrap())
                .unwrap();
        let lines = want["centerlines"].as_object().unwrap();
        assert_eq!(map.lanes.len(), lines.len());
        assert_eq!(map.crossings.len(), 2);
        for lane in &map.lanes {
            let c = lines[&lane.id.to_string()].as_array().unwrap();
            assert_eq!(lane.centerline.len(), c.len(), "lane {}", lane.id);
            for (a, b) in lane.centerline.iter().zip(c) {
                for d in 0..2 {
                    let b = b[d].as_f64().unwrap();
                    assert!((a[d] - b).abs() < 1e-9, "lane {}: {a:?} vs {b}", lane.id);
                }
            }
        }
        let p = params();
        let v = vectorize(&scn, &map, &p, split != "test").unwrap();
        assert_eq!(v.actor_category[0], 3);
        assert_eq!(v.target.iter().any(|x| *x != 0.0), split != "test");
        assert_eq!(v.lanes_in_range, 8 + 4, "8 lanes and 2 crossings × 2 edges");
        // The sample names its scenario and focal track by the exact strings of the release.
        let schema = schema_for(&p);
        let frame = process(&dir, &p, &schema, 1, split != "test").unwrap().0;
        let raw = zstd::decode_all(frame.as_slice()).unwrap();
        let mut at = 0;
        let mut field = |name: &str| -> Vec<u8> {
            for f in &schema {
                let len = f.byte_len();
                if f.name == name {
                    let out = raw[at..at + len].to_vec();
                    at = 0;
                    return out;
                }
                at += len;
            }
            panic!("no field {name}")
        };
        let id: [u8; 16] = field("scenario_id").try_into().unwrap();
        assert_eq!(super::stage::uuid_string(&id), *sid);
        assert_eq!(
            super::stage::track_id_string(&field("focal_track_id")).unwrap(),
            want["focal_track_id"].as_str().unwrap()
        );
    }
}
