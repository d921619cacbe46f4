//! What a drawn forecast scene needs from the data stage's shards: the agent's observed
//! positions and the map's polylines, in the scene's (agent) frame, and the frame itself.

use crate::train::data::ShardSet;
use anyhow::{ensure, Context, Result};
use lm4ve_pipeline::Upstream;

/// One scene of an `av.tokens` / `av2.tokens` split, in its frame.
pub struct SceneMap {
    pub frame: [f32; 3],
    /// The agent's observed positions, oldest first.
    pub history: Vec<(f64, f64)>,
    /// Each real lane's points (its vectors' starts, then the last vector's end).
    pub lanes: Vec<Vec<(f64, f64)>>,
}

/// The points of a polyline stored as vectors `[x, y, dx, dy, …]` of `width` numbers;
/// `valid` picks the vectors to keep (the actors' 5th number, `valid`; all for lanes).
fn polyline(v: &[f32], width: usize, actor: bool) -> Vec<(f64, f64)> {
    let mut pts = Vec::new();
    let mut last = None;
    for q in v.chunks_exact(width) {
        if actor && q[4] == 0.0 {
            continue;
        }
        let (x, y) = (f64::from(q[0]), f64::from(q[1]));
        pts.push((x, y));
        last = Some((x + f64::from(q[2]), y + f64::from(q[3])));
    }
    pts.extend(last);
    pts
}

/// Scenes `which` (positions in `split`) of the data stage.
pub fn scene_maps(up: &Upstream, split: &str, which: &[usize]) -> Result<Vec<SceneMap>> {
    const WHAT: &str = "an av.tokens or av2.tokens stage";
    let set = ShardSet::open(up, split, WHAT)?;
    let f = |n: &str| set.field(n, WHAT);
    let (frame, actors, lanes, lane_mask) =
        (f("frame")?, f("actors")?, f("lanes")?, f("lane_mask")?);
    let shape = |i: usize| set.schema()[i].shape.clone();
    let (a_shape, l_shape) = (shape(actors), shape(lanes));
    ensure!(
        a_shape.len() == 3 && l_shape.len() == 3 && a_shape[2] >= 5 && l_shape[2] >= 4,
        "actors {a_shape:?} / lanes {l_shape:?} are not VectorNet polylines"
    );
    which
        .iter()
        .map(|&i| {
            let s = set
                .read(i)
                .with_context(|| format!("scene {i} of split `{split}`"))?;
            let fr = s.f32s(frame);
            ensure!(fr.len() == 3, "scene {i}: `frame` has {} numbers", fr.len());
            let a = s.f32s(actors);
            let agent = &a[..a_shape[1] * a_shape[2]];
            let l = s.f32s(lanes);
            let per_lane = l_shape[1] * l_shape[2];
            let lanes = s.fields[lane_mask]
                .iter()
                .enumerate()
                .filter(|(_, &m)| m != 0)
                .filter_map(|(j, _)| l.get(j * per_lane..(j + 1) * per_lane))
                .map(|v| polyline(v, l_shape[2], false))
                .collect();
            Ok(SceneMap {
                frame: [fr[0], fr[1], fr[2]],
                history: polyline(agent, a_shape[2], true),
                lanes,
            })
        })
        .collect()
}
