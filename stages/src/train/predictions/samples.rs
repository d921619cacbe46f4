//! Who each sample of a split is, read from the data stage's shards in the split's order (the
//! order the task's data set reads them): the `index` / `video_id` fields of classification
//! shards, and a forecast scene's scenario id, focal track id and frame.

use super::rows::SceneInfo;
use crate::train::data::ShardSet;
use anyhow::{ensure, Result};
use lm4ve_pipeline::Upstream;

/// The position of `name` in the shards' schema, if they have it.
fn field(set: &ShardSet, name: &str) -> Option<usize> {
    set.schema().iter().position(|f| f.name == name)
}

/// The first int64 of a field.
fn first_i64(bytes: &[u8]) -> Option<i64> {
    let b: [u8; 8] = bytes.get(..8)?.try_into().ok()?;
    Some(i64::from_le_bytes(b))
}

/// Each sample's `sample` number (the shard's `index` when it has one, else the position) and
/// name (SSv2's `video_id`, in decimal), for `n` samples.
pub fn class_ids(up: &Upstream, split: &str, n: usize) -> Result<(Vec<i64>, Option<Vec<String>>)> {
    let positions: Vec<i64> = (0..n as i64).collect();
    let set = ShardSet::open(up, split, "a classification data stage")?;
    ensure!(
        set.len() == n,
        "split `{split}` has {} samples in its shards and {n} predictions",
        set.len()
    );
    let (index, name) = (field(&set, "index"), field(&set, "video_id"));
    if index.is_none() && name.is_none() {
        return Ok((positions, None));
    }
    let mut samples = Vec::with_capacity(n);
    let mut names = Vec::with_capacity(n);
    for i in 0..n {
        let s = set.read(i)?;
        let at = |f: usize| first_i64(&s.fields[f]);
        samples.push(index.and_then(at).unwrap_or(i as i64));
        if let Some(v) = name.and_then(at) {
            names.push(v.to_string());
        }
    }
    Ok((samples, name.map(|_| names)))
}

/// A UUID's 16 bytes as AV2 names its scenarios (lowercase hex, 8-4-4-4-12).
pub fn uuid_string(b: &[u8]) -> String {
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    if hex.len() != 32 {
        return hex;
    }
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// NUL-padded UTF-8 (a fixed-size uint8 field) as a string.
fn padded_text(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// Each scene's identity and frame, for `n` samples: `scenario_id` is AV1's int64 seq id in
/// decimal or AV2's 16 UUID bytes as the id string; `track_id` AV2's `focal_track_id` when the
/// shards have it, else empty.
pub fn scenes(up: &Upstream, split: &str, n: usize) -> Result<Vec<SceneInfo>> {
    const WHAT: &str = "an av.tokens or av2.tokens stage";
    let set = ShardSet::open(up, split, WHAT)?;
    ensure!(
        set.len() == n,
        "split `{split}` has {} scenes in its shards and {n} forecasts",
        set.len()
    );
    let frame = set.field("frame", WHAT)?;
    let scenario = set.field("scenario_id", WHAT)?;
    let track = field(&set, "focal_track_id");
    let uuid = set.schema()[scenario].dtype == lm4ve_pipeline::shard::Dtype::Uint8;
    (0..n)
        .map(|i| {
            let s = set.read(i)?;
            let f = s.f32s(frame);
            ensure!(
                f.len() == 3,
                "sample {i}: `frame` has {} numbers, expected 3",
                f.len()
            );
            let bytes = &s.fields[scenario];
            Ok(SceneInfo {
                sample: i as i64,
                scenario_id: if uuid {
                    uuid_string(bytes)
                } else {
                    first_i64(bytes).unwrap_or_default().to_string()
                },
                track_id: track.map(|t| padded_text(&s.fields[t])).unwrap_or_default(),
                frame: [f[0], f[1], f[2]],
            })
        })
        .collect()
}

/// Whether `split` of the data stage has futures: AV2's meta lists the splits with targets
/// (`targets`); without that list every split has them (AV1).
pub fn has_targets(up: &Upstream, split: &str) -> bool {
    match up.manifest.meta.get("targets").and_then(|t| t.as_array()) {
        Some(list) => list.iter().any(|s| s.as_str() == Some(split)),
        None => true,
    }
}
