//! Synthetic AV2 scenarios in the released layout (`<id>/scenario_<id>.parquet`, written
//! with the `parquet` crate in the columns and types pandas/pyarrow write for av2's
//! `serialize_argoverse_scenario_parquet`, and `log_map_archive_<id>.json`): what the tests
//! and the throughput bench read. Deterministic from a seed.

use std::path::{Path, PathBuf};

/// One row-set of a track.
#[derive(Debug, Clone)]
pub struct SynthTrack {
    pub id: String,
    pub object_type: String,
    pub category: i64,
    /// (timestep, x, y).
    pub states: Vec<(i64, f64, f64)>,
}

#[derive(Debug, Clone)]
pub struct SynthScenario {
    pub id: String,
    pub city: String,
    pub focal: String,
    pub tracks: Vec<SynthTrack>,
    /// The map file's JSON (None: no map file).
    pub map: Option<serde_json::Value>,
}

/// A UUID-like scenario id from a number.
pub fn scenario_id(n: u64) -> String {
    let h = format!(
        "{:032x}",
        u128::from(n).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)
    );
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// A small plausible scene: a focal vehicle driving north along a lane, `others` tracks
/// around it (every third scored, types cycling), a straight lane grid and one crossing.
/// `steps` timesteps are written for every track (60 future ones are dropped when
/// `with_future` is false, as in AV2's test split).
pub fn scene(n: u64, others: usize, lanes: usize, with_future: bool) -> SynthScenario {
    let mut rng = n
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut rnd = || {
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((rng >> 33) as f64) / f64::from(1u32 << 31)
    };
    let steps: i64 = if with_future { 110 } else { 50 };
    let (x0, y0) = (1000.0 + 50.0 * rnd(), -2000.0 + 50.0 * rnd());
    let speed = 5.0 + 5.0 * rnd();
    let types = [
        "vehicle",
        "pedestrian",
        "cyclist",
        "bus",
        "static",
        "motorcyclist",
    ];
    let mut tracks = vec![SynthTrack {
        id: "focal".into(),
        object_type: "vehicle".into(),
        category: 3,
        states: (0..steps)
            .map(|t| (t, x0 + 0.05 * t as f64, y0 + speed * 0.1 * t as f64))
            .collect(),
    }];
    for k in 0..others {
        let (dx, dy) = (60.0 * (rnd() - 0.5), 60.0 * (rnd() - 0.5));
        let (vx, vy) = (2.0 * (rnd() - 0.5), 8.0 * (rnd() - 0.5));
        let start = (k % 5) as i64;
        tracks.push(SynthTrack {
            id: format!("{}", 1000 + k),
            object_type: types[k % types.len()].into(),
            category: if k % 3 == 0 { 2 } else { (k % 2) as i64 },
            states: (start..steps)
                .map(|t| {
                    (
                        t,
                        x0 + dx + vx * 0.1 * t as f64,
                        y0 + dy + vy * 0.1 * t as f64,
                    )
                })
                .collect(),
        });
    }
    tracks.push(SynthTrack {
        id: "AV".into(),
        object_type: "vehicle".into(),
        category: 1,
        states: (0..steps)
            .map(|t| (t, x0 - 8.0, y0 - 10.0 + 0.9 * speed * 0.1 * t as f64))
            .collect(),
    });
    let marks = ["SOLID_WHITE", "DASHED_WHITE", "DOUBLE_SOLID_YELLOW", "NONE"];
    let lane_types = ["VEHICLE", "BIKE", "BUS"];
    let pt = |x: f64, y: f64| serde_json::json!({"x": x, "y": y, "z": 10.0 + 0.01 * x});
    let mut segs = serde_json::Map::new();
    for l in 0..lanes {
        let id = 40_000_000 + 7 * l as i64;
        let (cx, cy) = (
            x0 - 40.0 + 3.7 * (l % 24) as f64,
            y0 - 60.0 + 30.0 * (l / 24) as f64,
        );
        // Boundaries with different point counts, as real maps have.
        let left: Vec<_> = (0..4).map(|i| pt(cx - 1.8, cy + 10.0 * i as f64)).collect();
        let right: Vec<_> = (0..3)
            .map(|i| pt(cx + 1.8 + 0.1 * rnd(), cy + 15.0 * i as f64))
            .collect();
        segs.insert(
            id.to_string(),
            serde_json::json!({
                "id": id, "is_intersection": l % 4 == 0, "lane_type": lane_types[l % 3],
                "left_lane_boundary": left, "right_lane_boundary": right,
                "left_lane_mark_type": marks[l % 4], "right_lane_mark_type": marks[(l + 1) % 4],
                "left_neighbor_id": null, "right_neighbor_id": null,
                "predecessors": [], "successors": [id + 7],
            }),
        );
    }
    let crossing = serde_json::json!({
        "id": 90_000_001,
        "edge1": [pt(x0 - 10.0, y0 + 20.0), pt(x0 + 10.0, y0 + 20.0)],
        "edge2": [pt(x0 - 10.0, y0 + 24.0), pt(x0 + 10.0, y0 + 24.0)],
    });
    let area = serde_json::json!({"id": 1, "area_boundary": [pt(x0 - 50.0, y0 - 50.0), pt(x0 + 50.0, y0 - 50.0), pt(x0, y0 + 50.0)]});
    SynthScenario {
        id: scenario_id(n),
        city: ["austin", "miami", "pittsburgh"][(n % 3) as usize].into(),
        focal: "focal".into(),
        tracks,
        map: Some(serde_json::json!({
            "drivable_areas": {"1": area},
            "lane_segments": segs,
            "pedestrian_crossings": {"90000001": crossing},
        })),
    }
}

/// Writes `s` under `split_dir/<id>/`; returns the scenario folder.
pub fn write(split_dir: &Path, s: &SynthScenario) -> Result<PathBuf, String> {
    let dir = split_dir.join(&s.id);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    write_parquet(&dir.join(format!("scenario_{}.parquet", s.id)), s)?;
    if let Some(map) = &s.map {
        let path = dir.join(format!("log_map_archive_{}.json", s.id));
        std::fs::write(&path, map.to_string()).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(dir)
}

/// One row: its track, timestep, x, y.
type Row<'a> = (&'a SynthTrack, i64, f64, f64);

/// The scenario's rows as av2 serializes them (one row per track state, tracks in order).
pub fn write_parquet(path: &Path, s: &SynthScenario) -> Result<(), String> {
    use parquet::basic::Compression;
    use parquet::data_type::{BoolType, ByteArray, ByteArrayType, DoubleType, Int64Type};
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    use parquet::schema::parser::parse_message_type;
    use std::sync::Arc;
    let e = |e: parquet::errors::ParquetError| format!("{}: {e}", path.display());
    let schema = Arc::new(
        parse_message_type(
            "message schema { optional boolean observed; optional binary track_id (STRING); \
             optional binary object_type (STRING); optional int64 object_category; \
             optional int64 timestep; optional double position_x; optional double position_y; \
             optional double heading; optional double velocity_x; optional double velocity_y; \
             optional binary scenario_id (STRING); optional int64 start_timestamp; \
             optional int64 end_timestamp; optional int64 num_timestamps; \
             optional binary focal_track_id (STRING); optional binary city (STRING); }",
        )
        .map_err(e)?,
    );
    let props = Arc::new(
        WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .build(),
    );
    let file = std::fs::File::create(path).map_err(|err| format!("{}: {err}", path.display()))?;
    let mut w = SerializedFileWriter::new(file, schema, props).map_err(e)?;
    let rows: Vec<Row> = s
        .tracks
        .iter()
        .flat_map(|t| t.states.iter().map(move |&(k, x, y)| (t, k, x, y)))
        .collect();
    let n = rows.len();
    let defs = vec![1i16; n];
    let strs = |f: &dyn Fn(&Row) -> String| -> Vec<ByteArray> {
        rows.iter()
            .map(|r| ByteArray::from(f(r).as_str()))
            .collect()
    };
    let mut rg = w.next_row_group().map_err(e)?;
    macro_rules! column {
        ($ty:ty, $values:expr) => {{
            let mut c = rg
                .next_column()
                .map_err(e)?
                .ok_or("parquet: too few columns")?;
            c.typed::<$ty>()
                .write_batch(&$values, Some(&defs), None)
                .map_err(e)?;
            c.close().map_err(e)?;
        }};
    }
    column!(BoolType, rows.iter().map(|r| r.1 < 50).collect::<Vec<_>>());
    column!(ByteArrayType, strs(&|r| r.0.id.clone()));
    column!(ByteArrayType, strs(&|r| r.0.object_type.clone()));
    column!(
        Int64Type,
        rows.iter().map(|r| r.0.category).collect::<Vec<_>>()
    );
    column!(Int64Type, rows.iter().map(|r| r.1).collect::<Vec<_>>());
    column!(DoubleType, rows.iter().map(|r| r.2).collect::<Vec<_>>());
    column!(DoubleType, rows.iter().map(|r| r.3).collect::<Vec<_>>());
    column!(DoubleType, vec![0.0f64; n]);
    column!(DoubleType, vec![0.0f64; n]);
    column!(DoubleType, vec![0.0f64; n]);
    column!(ByteArrayType, strs(&|_| s.id.clone()));
    column!(Int64Type, vec![315_986_559_459_579_000i64; n]);
    column!(Int64Type, vec![315_986_570_359_579_000i64; n]);
    column!(Int64Type, vec![110i64; n]);
    column!(ByteArrayType, strs(&|_| s.focal.clone()));
    column!(ByteArrayType, strs(&|_| s.city.clone()));
    rg.close().map_err(e)?;
    w.close().map_err(e)?;
    Ok(())
}
