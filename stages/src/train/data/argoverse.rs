//! `av.tokens` shards (VectorNet polylines, PAPER.md §5) as a training set, read from the
//! shards on demand like the video set. No augmentation: the scenes are already in the
//! agent's frame.

use super::ShardSet;
use anyhow::Result;
use candle_core::{Device, Tensor};
use lm4ve_pipeline::Upstream;
use rayon::prelude::*;

const WHAT: &str = "an av.tokens stage";

pub struct AvSet {
    pub max_actors: usize,
    pub actor_vectors: usize,
    pub actor_features: usize,
    pub max_lanes: usize,
    pub lane_vectors: usize,
    pub lane_features: usize,
    pub pred_steps: usize,
    fields: [usize; 8],
    /// Keep only the AGENT's future in `future_mask` (the `agent_only_loss` ablation; set by
    /// the trainer).
    pub agent_only_loss: bool,
    shards: ShardSet,
}

/// One batch: polylines, masks (f32, 1 = real), the agent's future [B, P, 2], and every
/// actor's position now [B, A, 2], future [B, A, P, 2] and future mask [B, A, P] (f32).
pub struct AvBatch {
    pub actors: Tensor,
    pub actor_mask: Tensor,
    pub lanes: Tensor,
    pub lane_mask: Tensor,
    pub target: Tensor,
    pub actor_ctrs: Tensor,
    pub futures: Tensor,
    pub future_mask: Tensor,
}

impl AvSet {
    pub fn len(&self) -> usize {
        self.shards.len()
    }
    pub fn is_empty(&self) -> bool {
        self.shards.is_empty()
    }

    pub fn load(up: &Upstream, split: &str) -> Result<Self> {
        let shards = ShardSet::open(up, split, WHAT)?;
        let fields = [
            shards.field("actors", WHAT)?,
            shards.field("actor_mask", WHAT)?,
            shards.field("lanes", WHAT)?,
            shards.field("lane_mask", WHAT)?,
            shards.field("target", WHAT)?,
            shards.field("actor_ctrs", WHAT)?,
            shards.field("actor_futures", WHAT)?,
            shards.field("actor_future_mask", WHAT)?,
        ];
        let schema = shards.schema();
        let dims3 = |i: usize, what: &str| -> Result<(usize, usize, usize)> {
            match schema[fields[i]].shape.as_slice() {
                [a, b, c] => Ok((*a, *b, *c)),
                s => anyhow::bail!("{what} have shape {s:?}, expected 3 dims"),
            }
        };
        let (max_actors, actor_vectors, actor_features) = dims3(0, "actors")?;
        let (max_lanes, lane_vectors, lane_features) = dims3(2, "lanes")?;
        let pred_steps = match schema[fields[4]].shape.as_slice() {
            [p, 2] => *p,
            s => anyhow::bail!("target has shape {s:?}, expected [pred_steps, 2]"),
        };
        Ok(AvSet {
            max_actors,
            actor_vectors,
            actor_features,
            max_lanes,
            lane_vectors,
            lane_features,
            pred_steps,
            fields,
            shards,
            agent_only_loss: false,
        })
    }

    pub fn batch(&self, idx: &[usize], device: &Device) -> Result<AvBatch> {
        let samples = idx
            .par_iter()
            .map(|&i| self.shards.read(i))
            .collect::<Result<Vec<_>>>()?;
        let f32s = |k: usize| -> Vec<f32> {
            samples
                .iter()
                .flat_map(|s| s.f32s(self.fields[k]))
                .collect()
        };
        let mask = |k: usize| -> Vec<f32> {
            samples
                .iter()
                .flat_map(|s| s.fields[self.fields[k]].iter().map(|&m| f32::from(m != 0)))
                .collect()
        };
        let mut future_mask = mask(7);
        if self.agent_only_loss {
            // Row 0 of each sample's [A, P] mask is the AGENT's.
            for (e, m) in future_mask.iter_mut().enumerate() {
                if !(e / self.pred_steps).is_multiple_of(self.max_actors) {
                    *m = 0.0;
                }
            }
        }
        let b = idx.len();
        // Real actors and lanes come first in their slots (av.tokens), so the batch keeps only
        // as many slots as its fullest sample fills, as the reference pads to the batch's
        // maximum: a generous `max_lanes` costs storage, not compute. Padding never changes an
        // output (the masks), so neither does the trim.
        let filled = |k: usize, cap: usize| -> usize {
            samples
                .iter()
                .map(|s| {
                    s.fields[self.fields[k]]
                        .iter()
                        .take_while(|&&m| m != 0)
                        .count()
                })
                .max()
                .unwrap_or(0)
                .clamp(1, cap)
        };
        let (na, nl) = (filled(1, self.max_actors), filled(3, self.max_lanes));
        let full = |t: Tensor, slots: usize, keep: usize| -> candle_core::Result<Tensor> {
            if keep == slots {
                Ok(t)
            } else {
                t.narrow(1, 0, keep)?.contiguous()
            }
        };
        let (ma, ml) = (self.max_actors, self.max_lanes);
        Ok(AvBatch {
            actors: full(
                Tensor::from_vec(
                    f32s(0),
                    (b, ma, self.actor_vectors, self.actor_features),
                    device,
                )?,
                ma,
                na,
            )?,
            actor_mask: full(Tensor::from_vec(mask(1), (b, ma), device)?, ma, na)?,
            lanes: full(
                Tensor::from_vec(
                    f32s(2),
                    (b, ml, self.lane_vectors, self.lane_features),
                    device,
                )?,
                ml,
                nl,
            )?,
            lane_mask: full(Tensor::from_vec(mask(3), (b, ml), device)?, ml, nl)?,
            target: Tensor::from_vec(f32s(4), (b, self.pred_steps, 2), device)?,
            actor_ctrs: full(Tensor::from_vec(f32s(5), (b, ma, 2), device)?, ma, na)?,
            futures: full(
                Tensor::from_vec(f32s(6), (b, ma, self.pred_steps, 2), device)?,
                ma,
                na,
            )?,
            future_mask: full(
                Tensor::from_vec(future_mask, (b, ma, self.pred_steps), device)?,
                ma,
                na,
            )?,
        })
    }
}
