//! Unit tests of the Argoverse module: a hand-built scenario checked against values worked
//! out by hand, the frame round trip, the R-tree against brute force on random maps, the
//! readers' errors, and the demo generator.

use super::csv::{parse_scenario, CsvError};
use super::demo::{write_demo_argoverse, DemoAvConfig};
use super::index::CityLanes;
use super::map::{city_of_map_file, parse_vector_map, write_vector_map, Lane, Turn};
use super::vectorize::{resample, sq_distance_local, vectorize, Frame, VecParams};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn lane(id: i64, pts: &[[f64; 2]], turn: Turn, inter: bool, ctl: bool) -> Lane {
    Lane {
        id,
        centerline: pts.to_vec(),
        turn,
        is_intersection: inter,
        has_traffic_control: ctl,
        l_neighbor: None,
        r_neighbor: None,
        predecessors: Vec::new(),
        successors: Vec::new(),
    }
}

/// (track, type, [(step, x, y)])
type Rows<'a> = [(&'a str, &'a str, Vec<(usize, f64, f64)>)];

/// CSV text from rows, with timestamps 1.0 + 0.1·step.
fn csv(rows: &Rows) -> String {
    let mut s = String::from("TIMESTAMP,TRACK_ID,OBJECT_TYPE,X,Y,CITY_NAME\n");
    for (id, ty, pts) in rows {
        for (k, x, y) in pts {
            s.push_str(&format!(
                "{:.1},{id},{ty},{x},{y},MIA\n",
                1.0 + 0.1 * *k as f64
            ));
        }
    }
    s
}

fn assert_close(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() < 1e-4,
            "{what}[{i}]: got {g}, want {w}\n got {got:?}"
        );
    }
}

fn params(max_actors: usize, max_lanes: usize) -> VecParams {
    VecParams {
        obs_steps: 4,
        pred_steps: 2,
        radius: 20.0,
        max_actors,
        max_lanes,
        lane_points: 3,
    }
}

/// The AGENT drives along world +x at 2 m/step; origin (106, 200), theta = -π/2, so a world
/// offset (dx, dy) becomes (-dy, dx) in the normalized frame.
fn hand_scenario() -> (String, CityLanes) {
    let agent: Vec<_> = (0..6).map(|k| (k, 100.0 + 2.0 * k as f64, 200.0)).collect();
    let text = csv(&[
        (
            "00000000-0000-0000-0000-000000000000",
            "AV",
            (0..6).map(|k| (k, 103.0, 197.0)).collect(),
        ),
        ("agent", "AGENT", agent),
        ("d", "OTHERS", vec![(3, 110.0, 200.0)]),
        (
            "b",
            "OTHERS",
            vec![(1, 104.0, 205.0), (2, 105.0, 205.0), (3, 106.0, 205.0)],
        ),
        ("c", "OTHERS", vec![(3, 106.0, 230.0)]),
        (
            "e",
            "OTHERS",
            vec![(0, 105.0, 201.0), (1, 105.0, 201.0), (2, 105.0, 201.0)],
        ),
    ]);
    let lanes = vec![
        lane(
            20,
            &[[106.0, 203.0], [106.0, 213.0]],
            Turn::Left,
            true,
            true,
        ),
        lane(
            30,
            &[[100.0, 198.0], [110.0, 198.0], [120.0, 198.0]],
            Turn::None,
            false,
            false,
        ),
        lane(
            40,
            &[
                [95.5, 200.0],
                [97.5, 200.0],
                [99.5, 200.0],
                [101.5, 200.0],
                [103.5, 200.0],
            ],
            Turn::Right,
            false,
            true,
        ),
        lane(
            50,
            &[[106.0, 210.0], [106.0, 230.0]],
            Turn::None,
            false,
            false,
        ),
        lane(
            60,
            &[[500.0, 500.0], [510.0, 500.0]],
            Turn::None,
            false,
            false,
        ),
    ];
    (text, CityLanes::new("MIA", lanes))
}

#[test]
fn hand_built_scenario_matches_hand_computed_vectors() {
    let (text, city) = hand_scenario();
    let scn = parse_scenario(text.as_bytes(), 4, 6).unwrap();
    let v = vectorize(&scn, &city, &params(5, 4)).unwrap();

    let t = [0.0, 1.0 / 3.0, 2.0 / 3.0];
    #[rustfmt::skip]
    let actors: Vec<f32> = vec![
        // AGENT: (0,-6) → (0,-4) → (0,-2) → (0,0)
        0.0, -6.0, 0.0, 2.0, 1.0, t[0],
        0.0, -4.0, 0.0, 2.0, 1.0, t[1],
        0.0, -2.0, 0.0, 2.0, 1.0, t[2],
        // d (distance 4): seen only at the last observed step, so no valid vector
        0.0, 0.0, 0.0, 0.0, 0.0, t[0],
        0.0, 0.0, 0.0, 0.0, 0.0, t[1],
        0.0, 0.0, 0.0, 0.0, 0.0, t[2],
        // AV (distance 4.24): parked at world (103, 197) = local (3, -3)
        3.0, -3.0, 0.0, 0.0, 1.0, t[0],
        3.0, -3.0, 0.0, 0.0, 1.0, t[1],
        3.0, -3.0, 0.0, 0.0, 1.0, t[2],
        // b (distance 5): appears at step 1
        0.0, 0.0, 0.0, 0.0, 0.0, t[0],
        -5.0, -2.0, 0.0, 1.0, 1.0, t[1],
        -5.0, -1.0, 0.0, 1.0, 1.0, t[2],
        // padding (c is out of range, e is not seen at the last observed step)
        0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
        0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
        0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
    ];
    assert_close(&v.actors, &actors, "actors");
    assert_eq!(v.actor_mask, vec![1, 1, 1, 1, 0]);
    assert_eq!(v.actors_in_range, 4);

    #[rustfmt::skip]
    let lanes: Vec<f32> = vec![
        // In lane-id order, as the reference. Lane 20: two points, edge-padded (the last
        // vector has zero length)
        -3.0, 0.0, -10.0, 0.0, 1.0, 1.0, 1.0,
        -13.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0,
        // lane 30: world y = 198 → local x = 2
        2.0, -6.0, 0.0, 10.0, 0.0, 0.0, 0.0,
        2.0, 4.0, 0.0, 10.0, 0.0, 0.0, 0.0,
        // lane 40: five points resampled by arc length to three
        0.0, -10.5, 0.0, 4.0, 2.0, 0.0, 1.0,
        0.0, -6.5, 0.0, 4.0, 2.0, 0.0, 1.0,
        // padding (lane 50 leaves the box, lane 60 is far away)
        0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
        0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
    ];
    assert_close(&v.lanes, &lanes, "lanes");
    assert_eq!(v.lane_mask, vec![1, 1, 1, 0]);
    assert_eq!(v.lanes_in_range, 3);

    assert_close(&v.target, &[0.0, 2.0, 0.0, 4.0], "target");
    let f = v.frame.to_f32();
    assert_eq!(f, [106.0, 200.0, -std::f32::consts::FRAC_PI_2]);
}

/// A test-split scenario (the observed steps only, as Argoverse 1.1's `test_obs` CSVs) gives
/// the same history, lanes and frame as the full scenario, and no target: zeros with every
/// future masked, which the eval counts and never scores.
#[test]
fn a_scenario_without_futures_vectorizes_with_no_target() {
    let (text, city) = hand_scenario();
    let full = vectorize(
        &parse_scenario(text.as_bytes(), 4, 6).unwrap(),
        &city,
        &params(5, 4),
    )
    .unwrap();
    let obs = parse_scenario(text.as_bytes(), 4, 4).unwrap();
    let v = vectorize(&obs, &city, &params(5, 4)).unwrap();
    assert_eq!(v.actors, full.actors);
    assert_eq!(v.lanes, full.lanes);
    assert_eq!(v.actor_ctrs, full.actor_ctrs);
    assert_eq!(v.frame.to_f32(), full.frame.to_f32());
    assert_eq!(v.target, vec![0.0; full.target.len()]);
    assert!(v.actor_future_mask.iter().all(|m| *m == 0));
    assert!(v.actor_futures.iter().all(|x| *x == 0.0));
    assert!(full.actor_future_mask.contains(&1));
}

#[test]
fn maxima_keep_the_nearest_actors_and_lanes() {
    let (text, city) = hand_scenario();
    let scn = parse_scenario(text.as_bytes(), 4, 6).unwrap();
    let v = vectorize(&scn, &city, &params(2, 2)).unwrap();
    assert_eq!(v.actor_mask, vec![1, 1]);
    assert_eq!(v.actors_in_range, 4);
    // Actor 1 is d (distance 4): all its vectors invalid.
    assert!(v.actors[18..36].chunks(6).all(|r| r[4] == 0.0));
    assert_eq!(v.lane_mask, vec![1, 1]);
    assert_eq!(v.lanes_in_range, 3);
    // The nearest two (30 at 2 m, 40 at 2.5 m; 20 at 3 m dropped), in lane-id order.
    assert_close(&v.lanes[..2], &[2.0, -6.0], "first lane");
    assert_close(&v.lanes[14..16], &[0.0, -10.5], "second lane");
}

/// The reference (StreamingForecasting `VecMapReader.get_lane_data`) keeps a lane when its
/// centerline minus the origin lies in ±radius along the WORLD axes, whatever the agent's
/// heading: with the agent heading north-east, a lane at world offset (15, 15)..(18, 18) is
/// kept (its local y reaches 25.5 m, outside a turned box) and one at (0, 24)..(1, 25) is not
/// (local (-17, 17)..(-17, 18.4), inside a turned box).
#[test]
fn lanes_use_the_reference_world_axis_box() {
    let agent: Vec<_> = (0..6).map(|k| (k, k as f64, k as f64)).collect();
    let text = csv(&[("agent", "AGENT", agent)]);
    let scn = parse_scenario(text.as_bytes(), 4, 6).unwrap();
    let o = [3.0, 3.0];
    let city = CityLanes::new(
        "MIA",
        vec![
            lane(
                9,
                &[[o[0] + 15.0, o[1] + 15.0], [o[0] + 18.0, o[1] + 18.0]],
                Turn::None,
                false,
                false,
            ),
            lane(
                4,
                &[[o[0], o[1] + 24.0], [o[0] + 1.0, o[1] + 25.0]],
                Turn::None,
                false,
                false,
            ),
            lane(
                2,
                &[[o[0] - 5.0, o[1]], [o[0] - 5.0, o[1] + 5.0]],
                Turn::None,
                false,
                false,
            ),
        ],
    );
    let v = vectorize(&scn, &city, &params(1, 3)).unwrap();
    assert_eq!(v.lanes_in_range, 2);
    assert_eq!(v.lane_mask, vec![1, 1, 0]);
    // Lane 2 first (id order), then lane 9 at local x ≈ 0, y ≈ 21.2.
    let r2 = (2f64).sqrt() as f32;
    assert_close(&v.lanes[..2], &[-5.0 / r2, -5.0 / r2], "lane 2");
    assert_close(&v.lanes[14..16], &[0.0, 15.0 * r2], "lane 9");
}

#[test]
fn ties_break_by_track_id_and_lane_id() {
    // Heading +y: theta = 0 exactly, so the distances tie exactly.
    let text = csv(&[
        (
            "agent",
            "AGENT",
            (0..6).map(|k| (k, 0.0, -6.0 + 2.0 * k as f64)).collect(),
        ),
        ("b-track", "OTHERS", vec![(3, 6.0, 0.0)]),
        ("a-track", "OTHERS", vec![(2, -6.0, 1.0), (3, -6.0, 0.0)]),
    ]);
    let scn = parse_scenario(text.as_bytes(), 4, 6).unwrap();
    let city = CityLanes::new(
        "MIA",
        vec![
            lane(7, &[[3.0, 0.0], [3.0, 5.0]], Turn::None, false, false),
            lane(5, &[[-3.0, 0.0], [-3.0, 5.0]], Turn::None, false, false),
        ],
    );
    let v = vectorize(&scn, &city, &params(3, 2)).unwrap();
    assert_eq!(v.frame.theta, 0.0);
    // a-track (second in the file) comes first: its last vector is valid.
    assert_eq!(&v.actors[2 * 18 - 6..2 * 18 - 2], &[-6.0, 1.0, 0.0, -1.0]);
    assert_eq!(v.actors[3 * 18 - 2], 0.0, "b-track has no valid vector");
    // lane 5 (x = -3) before lane 7 (x = 3).
    assert_eq!(v.lanes[0], -3.0);
    assert_eq!(v.lanes[14], 3.0);
}

#[test]
fn heading_falls_back_to_the_last_step_that_differs_then_to_zero() {
    // Moves along +x, then stands still at steps 2 and 3: heading from step 1 to step 3.
    let pts = [
        Some([0.0, 0.0]),
        Some([1.0, 1.0]),
        Some([2.0, 1.0]),
        Some([2.0, 1.0]),
    ];
    let f = Frame::from_agent(&pts, 4).unwrap();
    assert_eq!(f.theta as f32, -std::f32::consts::FRAC_PI_2);
    // Never moves: no rotation.
    let still = [Some([5.0, 5.0]); 4];
    let f = Frame::from_agent(&still, 4).unwrap();
    assert_eq!((f.origin, f.theta), ([5.0, 5.0], 0.0));
    // Not observed at the last observed step: no frame.
    assert!(Frame::from_agent(&[Some([0.0, 0.0]), None], 2).is_none());
}

#[test]
fn normalization_round_trip_and_heading_along_plus_y() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for _ in 0..500 {
        let o = [
            rng.random::<f64>() * 8000.0 - 1000.0,
            rng.random::<f64>() * 8000.0 - 1000.0,
        ];
        let a = rng.random::<f64>() * std::f64::consts::TAU;
        let speed = 0.2 + rng.random::<f64>() * 3.0;
        let prev = [o[0] - speed * a.cos(), o[1] - speed * a.sin()];
        let frame = Frame::from_agent(&[Some(prev), Some(o)], 2).unwrap();
        // The stored f32 frame is exactly the frame used.
        let f = frame.to_f32();
        let stored = Frame::new([f[0] as f64, f[1] as f64], f[2] as f64);
        assert_eq!(stored, frame);
        // The heading points along +y.
        let ahead = frame.to_local([o[0] + 10.0 * a.cos(), o[1] + 10.0 * a.sin()]);
        assert!(
            ahead[0].abs() < 1e-3 && (ahead[1] - 10.0).abs() < 1e-3,
            "{ahead:?}"
        );
        // world → normalized (stored as f32) → world.
        for _ in 0..10 {
            let w = [
                o[0] + rng.random::<f64>() * 200.0 - 100.0,
                o[1] + rng.random::<f64>() * 200.0 - 100.0,
            ];
            let p = frame.to_local(w);
            let p32 = [p[0] as f32 as f64, p[1] as f32 as f64];
            let back = stored.to_world(p32);
            let err = (back[0] - w[0]).hypot(back[1] - w[1]);
            assert!(err < 1e-4, "round trip error {err} m at {w:?}");
            let exact = frame.to_world(p);
            assert!((exact[0] - w[0]).abs() < 1e-9 && (exact[1] - w[1]).abs() < 1e-9);
        }
    }
}

fn random_lanes(rng: &mut ChaCha8Rng, n: usize, extent: f64) -> Vec<Lane> {
    (0..n)
        .map(|i| {
            let mut p = [rng.random::<f64>() * extent, rng.random::<f64>() * extent];
            let len = 2 + rng.random_range(0..11u32) as usize;
            let a = rng.random::<f64>() * std::f64::consts::TAU;
            let pts: Vec<[f64; 2]> = (0..len)
                .map(|_| {
                    let q = p;
                    let step = rng.random::<f64>() * 4.0;
                    let b = a + rng.random::<f64>() - 0.5;
                    p = [p[0] + step * b.cos(), p[1] + step * b.sin()];
                    q
                })
                .collect();
            lane(1000 + i as i64, &pts, Turn::None, false, false)
        })
        .collect()
}

#[test]
fn rtree_query_equals_brute_force_on_random_maps() {
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    for map in 0..8 {
        let extent = 200.0 + 400.0 * map as f64;
        let lanes = random_lanes(&mut rng, 300 + 200 * map, extent);
        let city = CityLanes::new("X", lanes);
        for _ in 0..60 {
            let frame = Frame::new(
                [rng.random::<f64>() * extent, rng.random::<f64>() * extent],
                rng.random::<f64>() * std::f64::consts::TAU - std::f64::consts::PI,
            );
            let radius = 5.0 + rng.random::<f64>() * 150.0;
            let fast = city.lanes_in_box(&frame, radius);
            let brute = city.lanes_in_box_brute(&frame, radius);
            assert_eq!(fast, brute, "map {map}, frame {frame:?}, radius {radius}");
            // The axis-aligned queries too.
            let lo = [frame.origin[0] - radius, frame.origin[1] - radius];
            let hi = [frame.origin[0] + radius, frame.origin[1] + radius];
            let inside: Vec<u32> = (0..city.lanes.len() as u32)
                .filter(|&i| {
                    city.lanes[i as usize]
                        .centerline
                        .iter()
                        .all(|p| (lo[0]..=hi[0]).contains(&p[0]) && (lo[1]..=hi[1]).contains(&p[1]))
                })
                .collect();
            assert_eq!(city.lanes_within_aabb(lo, hi), inside);
        }
    }
}

#[test]
fn resample_and_distance_helpers() {
    let line = [[0.0, 0.0], [1.0, 0.0], [3.0, 0.0]];
    assert_eq!(
        resample(&line, 5),
        vec![[0.0, 0.0], [1.0, 0.0], [3.0, 0.0], [3.0, 0.0], [3.0, 0.0]]
    );
    assert_eq!(resample(&line, 3), vec![[0.0, 0.0], [1.0, 0.0], [3.0, 0.0]]);
    assert_eq!(resample(&line, 2), vec![[0.0, 0.0], [3.0, 0.0]]);
    let long = [[0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [2.0, 2.0]];
    assert_eq!(resample(&long, 3), vec![[0.0, 0.0], [2.0, 0.0], [2.0, 2.0]]);
    assert_eq!(sq_distance_local(&[[-1.0, 2.0], [1.0, 2.0]]), 4.0);
    assert_eq!(sq_distance_local(&[[3.0, 4.0], [6.0, 8.0]]), 25.0);
    assert_eq!(sq_distance_local(&[[3.0, 4.0]]), 25.0);
    assert_eq!(
        sq_distance_local(&[[2.0, 0.0], [2.0, 0.0], [0.0, 2.0]]),
        2.0
    );
}

#[test]
fn csv_errors_are_named() {
    let good = |extra: &str| {
        let mut s = csv(&[(
            "agent",
            "AGENT",
            (0..6).map(|k| (k, k as f64, 0.0)).collect(),
        )]);
        s.push_str(extra);
        s
    };
    let err = |text: &str| parse_scenario(text.as_bytes(), 4, 6).unwrap_err();
    assert!(parse_scenario(good("").as_bytes(), 4, 6).is_ok());
    assert_eq!(err(""), CsvError::Empty);
    assert!(matches!(
        err("TIMESTAMP,TRACK_ID,X,Y\n"),
        CsvError::MissingColumn("OBJECT_TYPE")
    ));
    assert!(matches!(
        err(&good("1.0,x,OTHERS,1.0\n")),
        CsvError::Malformed { line: 8, .. }
    ));
    assert!(matches!(
        err(&good("1.0,x,OTHERS,abc,1,MIA\n")),
        CsvError::Malformed { line: 8, .. }
    ));
    assert!(matches!(
        err(&good("1.0,x,OTHERS,nan,1,MIA\n")),
        CsvError::NonFinite {
            line: 8,
            column: "X",
            ..
        }
    ));
    assert!(matches!(
        err(&good("1.0,x,OTHERS,1,1,PIT\n")),
        CsvError::MixedCity { .. }
    ));
    assert!(matches!(
        err(&good("1.0,x,OTHERS,1,1,MIA\n1.1,x,AV,1,1,MIA\n")),
        CsvError::TypeChange { .. }
    ));
    assert!(matches!(
        err(&good("1.2,x,OTHERS,1,1,MIA\n1.2,x,OTHERS,2,1,MIA\n")),
        CsvError::DuplicateTimestamp {
            first: 8,
            line: 9,
            ..
        }
    ));
    assert!(matches!(
        err(&good("1.3,agent,AGENT,9,9,MIA\n")),
        CsvError::DuplicateTimestamp { .. }
    ));
    assert_eq!(
        err(&csv(&[("x", "OTHERS", vec![(0, 1.0, 1.0)])])),
        CsvError::NoAgent
    );
    assert_eq!(
        err(&good("1.0,a2,AGENT,1,1,MIA\n")),
        CsvError::ManyAgents(2)
    );
    let short = |n: usize| {
        csv(&[(
            "agent",
            "AGENT",
            (0..n).map(|k| (k, 0.0, k as f64)).collect(),
        )])
    };
    assert_eq!(
        err(&short(3)),
        CsvError::TooFewObserved {
            needed: 4,
            found: 3
        }
    );
    assert!(matches!(
        err(&short(5)),
        CsvError::TooFewSteps {
            needed: 6,
            found: 5,
            ..
        }
    ));
    assert_eq!(
        parse_scenario(&[0xff, 0xfe, 0x00], 4, 6).unwrap_err(),
        CsvError::NotText
    );
    // Windows line ends, a BOM and rows of other tracks off the AGENT's grid are fine.
    let crlf = format!(
        "\u{feff}{}",
        good("9.9,late,OTHERS,1,1,MIA\n").replace('\n', "\r\n")
    );
    let s = parse_scenario(crlf.as_bytes(), 4, 6).unwrap();
    assert_eq!(s.tracks.len(), 2);
    assert!(s.tracks[1].points.iter().all(Option::is_none));
}

#[test]
fn vector_map_round_trips_and_names_bad_lines() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let mut lanes = random_lanes(&mut rng, 20, 300.0);
    lanes[3].turn = Turn::Left;
    lanes[4].turn = Turn::Right;
    lanes[4].is_intersection = true;
    lanes[5].has_traffic_control = true;
    lanes[5].l_neighbor = Some(1001);
    lanes[5].r_neighbor = Some(1002);
    lanes[6].predecessors = vec![1003, 1004];
    lanes[6].successors = vec![1005];
    let text = write_vector_map(&lanes);
    assert_eq!(parse_vector_map(&text).unwrap(), lanes);

    let broken = text.replacen("<nd ref=\"0\" />", "<nd ref=\"999999\" />", 1);
    let e = parse_vector_map(&broken).unwrap_err().to_string();
    assert!(e.contains("999999") && e.starts_with("line "), "{e}");
    let e = parse_vector_map(&text.replacen("x=\"", "x=\"oops", 1))
        .unwrap_err()
        .to_string();
    assert!(e.contains("line 3") && e.contains("oops"), "{e}");
    let e = parse_vector_map(&text.replacen("v=\"NONE\"", "v=\"UTURN\"", 1))
        .unwrap_err()
        .to_string();
    assert!(e.contains("UTURN"), "{e}");
    assert!(parse_vector_map("<osm></osm>").is_err());
    assert!(parse_vector_map("<ArgoverseVectorMap>").is_err());

    assert_eq!(
        city_of_map_file("pruned_argoverse_MIA_10316_vector_map.xml"),
        Some("MIA")
    );
    assert_eq!(
        city_of_map_file("MIA_10316_driveable_area_mat_2019_05_28.npy"),
        None
    );
}

#[test]
fn demo_data_is_deterministic_and_vectorizes() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let cfg = DemoAvConfig {
        seed: 5,
        train: 30,
        val: 6,
        grid: 5,
        ..DemoAvConfig::default()
    };
    let summary = write_demo_argoverse(a.path(), &cfg).unwrap();
    write_demo_argoverse(b.path(), &cfg).unwrap();
    assert_eq!((summary.train, summary.val), (30, 6));
    let maps = super::map::find_city_maps(&a.path().join("map_files")).unwrap();
    assert_eq!(maps.keys().collect::<Vec<_>>(), ["MIA", "PIT"]);
    let cities: Vec<CityLanes> = maps
        .iter()
        .map(|(c, p)| super::stage::load_city(c, p).unwrap())
        .collect();
    for (c, (name, n)) in cities.iter().zip(&summary.cities) {
        assert_eq!((&c.city, c.lanes.len()), (name, *n));
        assert!(c.lanes.iter().any(|l| l.turn == Turn::Left));
        assert!(c.lanes.iter().any(|l| l.has_traffic_control));
        assert!(c.lanes.iter().any(|l| l.r_neighbor.is_some()));
    }
    let p = VecParams {
        obs_steps: 20,
        pred_steps: 30,
        radius: 100.0,
        max_actors: 64,
        max_lanes: 128,
        lane_points: 10,
    };
    let mut late_or_early = 0;
    for split in ["train", "val"] {
        let files = super::stage::list_csvs(&a.path().join(split).join("data")).unwrap();
        for f in files {
            let bytes = std::fs::read(&f).unwrap();
            let other = std::fs::read(b.path().join(f.strip_prefix(a.path()).unwrap())).unwrap();
            assert_eq!(bytes, other, "{} differs between two runs", f.display());
            let scn = parse_scenario(&bytes, 20, 50).unwrap();
            late_or_early += scn
                .tracks
                .iter()
                .filter(|t| t.points.iter().any(Option::is_none))
                .count();
            let city = cities.iter().find(|c| c.city == scn.city).unwrap();
            let v = vectorize(&scn, city, &p).unwrap();
            assert!(v.actors_in_range >= 2, "{}", f.display());
            assert!(v.lanes_in_range >= 10, "{}", f.display());
            // At most 16 m/s for 3 s.
            let end = v.target[58].hypot(v.target[59]);
            assert!(
                end.is_finite() && end < 60.0,
                "{}: {:?}",
                f.display(),
                &v.target[58..]
            );
        }
    }
    assert!(late_or_early > 0);
}

#[test]
fn encoded_frames_equal_the_engines_encode_sample() {
    use lm4ve_pipeline::shard::encode_sample;
    let (text, city) = hand_scenario();
    let scn = parse_scenario(text.as_bytes(), 4, 6).unwrap();
    let p = params(5, 4);
    let v = vectorize(&scn, &city, &p).unwrap();
    let f32s = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let id = 4242i64;
    for level in [1, 3] {
        let want = encode_sample(
            &super::stage::schema_for(&p),
            &[
                &f32s(&v.actors),
                &v.actor_mask,
                &f32s(&v.lanes),
                &v.lane_mask,
                &f32s(&v.target),
                &f32s(&v.frame.to_f32()),
                &id.to_le_bytes(),
                &f32s(&v.actor_ctrs),
                &f32s(&v.actor_futures),
                &v.actor_future_mask,
            ],
            level,
        )
        .unwrap();
        // Twice: the second call reuses the thread's zstd context.
        for _ in 0..2 {
            let got = super::stage::encode_vectorized(&p, level, id, &v).unwrap();
            assert_eq!(got, want, "level {level}");
        }
    }
    let mut short = v.clone();
    short.target.pop();
    assert!(super::stage::encode_vectorized(&p, 1, id, &short).is_err());
}
