//! VectorNet with the LLM block (PAPER.md §5), built as the first author's VectorNet in
//! StreamingForecasting (`forecaster/models`: `SubgraphMLP`, `GlobalAttentionGraph`,
//! `RegressionDecoder`, `JointLoss`): per-polyline subgraphs (separate weights for actors and
//! lanes), the global interaction graph (masked self-attention → LN → ReLU → Linear → LN, plus
//! Linear → LN of the input as the residual path), then `Linear(256, D_llm)` → the LLM block
//! with the padding mask → `Linear(D_llm, 256)`, and the decoder on EVERY actor: K mode heads
//! and a single-mode head (residual MLP → offsets from the actor's current position), and
//! the confidence of each mode from the reference's prediction fusion (the actor's feature
//! with an embedding of the step from its position to the mode's endpoint). Positions are in
//! the AGENT frame of `av.tokens`; the metrics score the AGENT (actor 0).

use super::layers::{Execution, LayerNorm};
use crate::train::block::{BlockAdapter, BlockCore, BlockMode};
use crate::train::ops::attention::{attention, AttnImpl};
use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::{Linear, VarBuilder};
use serde::{Deserialize, Serialize};

/// Model sizes (the `model` part of a `train` stage's params when `data` is `av.tokens`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VectorNetConfig {
    /// Widths of the subgraph layers; each layer's output is concatenated with its max-pool,
    /// so a polyline feature is 2 × the last width (PAPER.md: 32/64/128 → 256).
    pub subgraph_widths: Vec<usize>,
    /// Trajectory modes K.
    pub modes: usize,
    /// Supervise only the AGENT's future (an ablation; the reference supervises every actor
    /// with a future).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub agent_only_loss: bool,
}

impl Default for VectorNetConfig {
    fn default() -> Self {
        VectorNetConfig {
            subgraph_widths: vec![32, 64, 128],
            modes: 6,
            agent_only_loss: false,
        }
    }
}

impl VectorNetConfig {
    pub fn width(&self) -> usize {
        2 * self.subgraph_widths.last().copied().unwrap_or(0)
    }
}

/// Linear-LN-ReLU-Linear-LN-ReLU on every vector, then [x, max over the polyline's vectors].
struct SubgraphLayer {
    l1: Linear,
    n1: LayerNorm,
    l2: Linear,
    n2: LayerNorm,
}

impl SubgraphLayer {
    fn new(inp: usize, w: usize, vb: VarBuilder) -> Result<Self> {
        Ok(SubgraphLayer {
            l1: candle_nn::linear(inp, w, vb.pp("l1"))?,
            n1: LayerNorm::new(w, vb.pp("n1"))?,
            l2: candle_nn::linear(w, w, vb.pp("l2"))?,
            n2: LayerNorm::new(w, vb.pp("n2"))?,
        })
    }

    /// x [N, V, in] → [N, V, 2w]
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.n1.forward(&self.l1.forward(x)?)?.relu()?;
        let h = self.n2.forward(&self.l2.forward(&h)?)?.relu()?;
        let pooled = h.max_keepdim(1)?.broadcast_as(h.shape())?;
        Tensor::cat(&[&h, &pooled], D::Minus1)
    }
}

struct Subgraph {
    layers: Vec<SubgraphLayer>,
}

impl Subgraph {
    fn new(features: usize, widths: &[usize], vb: VarBuilder) -> Result<Self> {
        let mut inp = features;
        let mut layers = Vec::new();
        for (i, &w) in widths.iter().enumerate() {
            layers.push(SubgraphLayer::new(inp, w, vb.pp(format!("layers.{i}")))?);
            inp = 2 * w;
        }
        Ok(Subgraph { layers })
    }

    /// Polylines [B, P, V, F] → one feature per polyline [B, P, width].
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, p, v, f) = x.dims4()?;
        let mut h = x.reshape((b * p, v, f))?;
        for l in &self.layers {
            h = l.forward(&h)?;
        }
        h.max(1)?.reshape((b, p, ()))
    }
}

/// The global interaction graph (one layer, the reference's `global_graph_depth: 1`):
/// `LN(Linear(x)) + LN(Linear(ReLU(LN(Attn(x)))))`, single-head attention over all polylines
/// in which padded ones receive no attention.
struct GlobalGraph {
    q: Linear,
    k: Linear,
    v: Linear,
    attn_norm: LayerNorm,
    attn_out: Linear,
    attn_out_norm: LayerNorm,
    skip: Linear,
    skip_norm: LayerNorm,
}

impl GlobalGraph {
    fn new(d: usize, vb: VarBuilder) -> Result<Self> {
        Ok(GlobalGraph {
            q: candle_nn::linear(d, d, vb.pp("q"))?,
            k: candle_nn::linear(d, d, vb.pp("k"))?,
            v: candle_nn::linear(d, d, vb.pp("v"))?,
            attn_norm: LayerNorm::new(d, vb.pp("attn_norm"))?,
            attn_out: candle_nn::linear(d, d, vb.pp("attn_out"))?,
            attn_out_norm: LayerNorm::new(d, vb.pp("attn_out_norm"))?,
            skip: candle_nn::linear(d, d, vb.pp("skip"))?,
            skip_norm: LayerNorm::new(d, vb.pp("skip_norm"))?,
        })
    }

    /// x [B, N, d], mask [B, N] (1 = real) → [B, N, d]
    fn forward(&self, x: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let d = x.dim(2)?;
        // One head: [B, 1, N, d].
        let heads = |t: Tensor| t.unsqueeze(1);
        let q = heads((self.q.forward(x)? / (d as f64).sqrt())?)?;
        let (k, v) = (heads(self.k.forward(x)?)?, heads(self.v.forward(x)?)?);
        // A finite bias, not -inf, so an all-padding row stays finite. Masks carry no gradient.
        let bias = ((mask.detach().to_dtype(DType::F32)? - 1.0)? * 1e30)?
            .unsqueeze(1)?
            .unsqueeze(1)?;
        let a = attention(&q, &k, &v, Some(&bias), AttnImpl::Full)?.squeeze(1)?;
        let a = self.attn_norm.forward(&a)?.relu()?;
        let a = self.attn_out_norm.forward(&self.attn_out.forward(&a)?)?;
        self.skip_norm.forward(&self.skip.forward(x)?)? + a
    }
}

/// relu(LN(Linear(relu(LN(Linear(x))))) + x) with bias-free linears: the reference's
/// `LinearResidualBlock` (its GroupNorm(1, d) on [N, d] is a LayerNorm over d).
struct ResMlp {
    l1: Linear,
    n1: LayerNorm,
    l2: Linear,
    n2: LayerNorm,
}

impl ResMlp {
    fn new(d: usize, vb: VarBuilder) -> Result<Self> {
        Ok(ResMlp {
            l1: candle_nn::linear_no_bias(d, d, vb.pp("l1"))?,
            n1: LayerNorm::new(d, vb.pp("n1"))?,
            l2: candle_nn::linear_no_bias(d, d, vb.pp("l2"))?,
            n2: LayerNorm::new(d, vb.pp("n2"))?,
        })
    }
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.n1.forward(&self.l1.forward(x)?)?.relu()?;
        let h = self.n2.forward(&self.l2.forward(&h)?)?;
        (h + x)?.relu()
    }
}

/// The reference's `PredictionFusion`: each mode's confidence feature from the actor's
/// feature and an embedding of (actor position − mode endpoint).
struct PredictionFusion {
    delta1: Linear,
    delta2: Linear,
    delta_norm: LayerNorm,
    mapping: Linear,
    mapping_norm: LayerNorm,
}

impl PredictionFusion {
    fn new(d: usize, vb: VarBuilder) -> Result<Self> {
        Ok(PredictionFusion {
            delta1: candle_nn::linear(2, d, vb.pp("delta1"))?,
            delta2: candle_nn::linear_no_bias(d, d, vb.pp("delta2"))?,
            delta_norm: LayerNorm::new(d, vb.pp("delta_norm"))?,
            mapping: candle_nn::linear_no_bias(2 * d, d, vb.pp("mapping"))?,
            mapping_norm: LayerNorm::new(d, vb.pp("mapping_norm"))?,
        })
    }

    /// actor [N, d], ctrs [N, 2], endpoints [N, K, 2] (no gradient) → [N, K, d]
    fn forward(&self, actor: &Tensor, ctrs: &Tensor, endpoints: &Tensor) -> Result<Tensor> {
        let (n, k, _) = endpoints.dims3()?;
        let d = actor.dim(1)?;
        let delta = ctrs.unsqueeze(1)?.broadcast_sub(endpoints)?;
        let e = self.delta1.forward(&delta)?.relu()?;
        let e = self.delta_norm.forward(&self.delta2.forward(&e)?)?.relu()?;
        let a = actor.unsqueeze(1)?.broadcast_as((n, k, d))?;
        let x = Tensor::cat(&[&e, &a], D::Minus1)?;
        self.mapping_norm
            .forward(&self.mapping.forward(&x)?)?
            .relu()
    }
}

/// What the decoder predicts, for every actor slot (padded slots predict too; the loss and the
/// metrics never read them).
pub struct Forecast {
    /// [B, A, K, P, 2] positions of each mode.
    pub modes: Tensor,
    /// [B, A, K] mode confidence logits.
    pub confidence: Tensor,
    /// [B, A, P, 2] the single-mode head.
    pub single: Tensor,
}

impl Forecast {
    /// The AGENT's forecast (actor 0): modes [B, K, P, 2], confidence [B, K], single [B, P, 2].
    pub fn agent(&self) -> Result<Forecast> {
        Ok(Forecast {
            modes: self.modes.narrow(1, 0, 1)?.squeeze(1)?,
            confidence: self.confidence.narrow(1, 0, 1)?.squeeze(1)?,
            single: self.single.narrow(1, 0, 1)?.squeeze(1)?,
        })
    }
}

pub struct VectorNet {
    actors: Subgraph,
    lanes: Subgraph,
    global: GlobalGraph,
    llm: Option<BlockAdapter>,
    mode_heads: Vec<(ResMlp, Linear)>,
    fusion: PredictionFusion,
    conf_head: (ResMlp, Linear),
    single_head: (ResMlp, Linear),
    pred_steps: usize,
}

impl VectorNet {
    /// Chunked attention and the precision of the LLM block and its adapters (the global
    /// graph is one f32 head over a few hundred polylines, so it stays full). VectorNet has no
    /// ViT blocks to checkpoint.
    pub fn configure(&mut self, exec: &Execution) {
        if let Some(l) = self.llm.as_mut() {
            l.configure(exec.attn, exec.precision);
        }
    }

    pub fn new(
        cfg: &VectorNetConfig,
        actor_features: usize,
        lane_features: usize,
        pred_steps: usize,
        block: Option<(BlockCore, BlockMode)>,
        vb: VarBuilder,
    ) -> Result<Self> {
        if cfg.subgraph_widths.is_empty() || cfg.modes == 0 {
            candle_core::bail!("VectorNet needs at least one subgraph width and one mode");
        }
        let d = cfg.width();
        let head = |name: String, out: usize| -> Result<(ResMlp, Linear)> {
            Ok((
                ResMlp::new(d, vb.pp(format!("{name}.mlp")))?,
                candle_nn::linear(d, out, vb.pp(format!("{name}.out")))?,
            ))
        };
        Ok(VectorNet {
            actors: Subgraph::new(
                actor_features,
                &cfg.subgraph_widths,
                vb.pp("actor_subgraph"),
            )?,
            lanes: Subgraph::new(lane_features, &cfg.subgraph_widths, vb.pp("lane_subgraph"))?,
            global: GlobalGraph::new(d, vb.pp("global_graph"))?,
            llm: BlockAdapter::maybe_new(d, block, &vb)?,
            mode_heads: (0..cfg.modes)
                .map(|k| head(format!("mode_heads.{k}"), pred_steps * 2))
                .collect::<Result<_>>()?,
            fusion: PredictionFusion::new(d, vb.pp("fusion"))?,
            conf_head: head("confidence".into(), 1)?,
            single_head: head("single".into(), pred_steps * 2)?,
            pred_steps,
        })
    }

    pub fn has_block(&self) -> bool {
        self.llm.is_some()
    }

    pub fn modes(&self) -> usize {
        self.mode_heads.len()
    }

    /// actors [B, A, V, Fa], actor_mask [B, A], lanes [B, L, V', Fl], lane_mask [B, L]
    /// (masks f32, 1 = real), actor_ctrs [B, A, 2] → the forecast of every actor slot.
    pub fn forward(
        &self,
        actors: &Tensor,
        actor_mask: &Tensor,
        lanes: &Tensor,
        lane_mask: &Tensor,
        actor_ctrs: &Tensor,
    ) -> Result<Forecast> {
        let a = self.actors.forward(actors)?;
        let l = self.lanes.forward(lanes)?;
        let x = Tensor::cat(&[&a, &l], 1)?;
        let mask = Tensor::cat(&[actor_mask, lane_mask], 1)?;
        let mut x = self.global.forward(&x, &mask)?;
        if let Some(llm) = &self.llm {
            x = llm.forward(&x, Some(&mask))?;
        }
        let (b, na) = actor_mask.dims2()?;
        let d = x.dim(2)?;
        let feat = x.narrow(1, 0, na)?.reshape((b * na, d))?; // [N, d]
        let ctrs = actor_ctrs.reshape((b * na, 2))?;
        let p = self.pred_steps;
        let k = self.mode_heads.len();
        let run = |(mlp, out): &(ResMlp, Linear), x: &Tensor| out.forward(&mlp.forward(x)?);
        // Offsets from the actor's position, as positions.
        let at = |t: Tensor| {
            t.reshape((b * na, p, 2))?
                .broadcast_add(&ctrs.unsqueeze(1)?)
        };
        let modes = self
            .mode_heads
            .iter()
            .map(|h| at(run(h, &feat)?)?.unsqueeze(1))
            .collect::<Result<Vec<_>>>()?;
        let modes = Tensor::cat(&modes, 1)?; // [N, K, P, 2]
        let endpoints = modes.narrow(2, p - 1, 1)?.squeeze(2)?.detach();
        let fused = self.fusion.forward(&feat, &ctrs, &endpoints)?; // [N, K, d]
        let confidence = run(&self.conf_head, &fused)?.reshape((b, na, k))?;
        let single = at(run(&self.single_head, &feat)?)?;
        Ok(Forecast {
            modes: modes.reshape((b, na, k, p, 2))?,
            confidence,
            single: single.reshape((b, na, p, 2))?,
        })
    }
}

/// SmoothL1 (Huber, beta 1) of `pred - target`, elementwise.
pub fn smooth_l1_each(pred: &Tensor, target: &Tensor) -> Result<Tensor> {
    let d = (pred - target)?;
    let a = d.abs()?;
    let small = a.lt(1.0)?.to_dtype(DType::F32)?; // constant: no gradient through the mask
    let quad = (d.sqr()? * 0.5)?;
    let lin = (a - 0.5)?;
    (quad * &small)? + (lin * (1.0 - small)?)?
}

/// SmoothL1, mean over all elements.
pub fn smooth_l1(pred: &Tensor, target: &Tensor) -> Result<Tensor> {
    smooth_l1_each(pred, target)?.mean_all()
}

/// The reference's `JointLoss`, over every actor with a future (as there, "with a future" means
/// an observed position after the first future step: `max(mask + 0.1·step/P) > 1`): the winner is the mode with
/// the smallest error at the actor's last observed future step; cross-entropy of the
/// confidences to the winner, plus SmoothL1 summed over the observed future positions of the
/// winner's trajectory and of the single-mode one, each divided by the number of actors.
/// `futures` [B, A, P, 2], `future_mask` [B, A, P] (f32, 1 = observed).
pub fn forecast_loss(f: &Forecast, futures: &Tensor, future_mask: &Tensor) -> Result<Tensor> {
    let t = forecast_loss_terms(f, futures, future_mask)?;
    ((t.cls + t.reg)? + t.single)? / t.count
}

/// The sums [`forecast_loss`] adds up, before the division by the number of actors with a
/// future (`count`, at least 1).
pub struct LossTerms {
    /// Cross-entropy of the confidences to the winners, summed over actors.
    pub cls: Tensor,
    /// SmoothL1 of the winners' trajectories, summed over observed positions.
    pub reg: Tensor,
    /// SmoothL1 of the single-mode trajectories, summed over observed positions.
    pub single: Tensor,
    pub count: f64,
}

/// The terms of [`forecast_loss`].
pub fn forecast_loss_terms(
    f: &Forecast,
    futures: &Tensor,
    future_mask: &Tensor,
) -> Result<LossTerms> {
    let (b, na, k, p, _) = f.modes.dims5()?;
    let n = b * na;
    let dev = f.modes.device();
    let modes = f.modes.reshape((n, k, p, 2))?;
    let gt = futures.reshape((n, p, 2))?;
    let fm = future_mask.reshape((n, p))?.to_dtype(DType::F32)?.detach();
    // The last observed future step: argmax of mask + 0.1·step/P (the reference's trick).
    let ramp = (Tensor::arange(0u32, p as u32, dev)?.to_dtype(DType::F32)? * (0.1 / p as f64))?;
    let last = fm.broadcast_add(&ramp)?;
    let has = last.max(1)?.gt(1.0)?.to_dtype(DType::F32)?; // [N]
    let count = has.sum_all()?.to_scalar::<f32>()?.max(1.0) as f64;
    let last_idx = last.argmax(1)?; // [N]
    let at_last = |t: &Tensor, rows: usize| -> Result<Tensor> {
        // t [N, rows, P, 2] → [N, rows, 2] at each actor's last step.
        let idx = last_idx
            .reshape((n, 1, 1, 1))?
            .broadcast_as((n, rows, 1, 2))?
            .contiguous()?;
        t.gather(&idx, 2)?.squeeze(2)
    };
    let pred_final = at_last(&modes, k)?; // [N, K, 2]
    let gt_final = at_last(&gt.unsqueeze(1)?, 1)?; // [N, 1, 2]
    let dist = pred_final
        .broadcast_sub(&gt_final)?
        .sqr()?
        .sum(D::Minus1)?
        .detach();
    let winner = dist.argmin(1)?; // [N]
    let logp = candle_nn::ops::log_softmax(&f.confidence.reshape((n, k))?, D::Minus1)?;
    let nll = logp.gather(&winner.unsqueeze(1)?, 1)?.squeeze(1)?.neg()?;
    let cls = (nll * &has)?.sum_all()?;
    let idx = winner
        .reshape((n, 1, 1))?
        .broadcast_as((n, 1, p * 2))?
        .contiguous()?;
    let best = modes
        .reshape((n, k, p * 2))?
        .gather(&idx, 1)?
        .reshape((n, p, 2))?;
    // Only the actors with a future count, in every term (the reference's `[mask]` rows).
    let w = fm
        .broadcast_mul(&has.unsqueeze(1)?)?
        .unsqueeze(2)?
        .broadcast_as((n, p, 2))?;
    let reg = (smooth_l1_each(&best, &gt)? * &w)?.sum_all()?;
    let single = f.single.reshape((n, p, 2))?;
    let reg_single = (smooth_l1_each(&single, &gt)? * &w)?.sum_all()?;
    Ok(LossTerms {
        cls,
        reg,
        single: reg_single,
        count,
    })
}

/// Displacement metrics as the Argoverse evaluation computes them, summed over a batch.
#[derive(Debug, Clone, Default)]
pub struct ForecastTotals {
    pub n: u64,
    /// (sum minADE, sum minFDE, misses) for K = all modes and K = 1.
    pub k_all: (f64, f64, u64),
    pub k1: (f64, f64, u64),
}

/// A miss: the chosen mode's final error is over 2 m.
pub const MISS_THRESHOLD_M: f64 = 2.0;

impl ForecastTotals {
    /// The totals as numbers to sum over ranks.
    pub fn to_sums(&self) -> Vec<f64> {
        let (a, b) = (self.k_all, self.k1);
        vec![self.n as f64, a.0, a.1, a.2 as f64, b.0, b.1, b.2 as f64]
    }

    pub fn from_sums(v: &[f64]) -> Self {
        ForecastTotals {
            n: v[0] as u64,
            k_all: (v[1], v[2], v[3] as u64),
            k1: (v[4], v[5], v[6] as u64),
        }
    }

    /// Adds a batch: K = all modes picks the mode with the smallest final error (minFDE), and
    /// minADE is that same mode's average error; K = 1 takes the most confident mode.
    pub fn add(&mut self, f: &Forecast, target: &Tensor) -> Result<()> {
        let (b, k, p, _) = f.modes.dims4()?;
        let modes: Vec<f32> = f.modes.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        let conf: Vec<Vec<f32>> = f.confidence.to_dtype(DType::F32)?.to_vec2()?;
        let target: Vec<f32> = target.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        for (bi, c) in conf.iter().enumerate().take(b) {
            // Error of mode `ki` at step `i`, in metres.
            let err = |ki: usize, i: usize| -> f64 {
                let o = ((bi * k + ki) * p + i) * 2;
                let t = (bi * p + i) * 2;
                let dx = (modes[o] - target[t]) as f64;
                let dy = (modes[o + 1] - target[t + 1]) as f64;
                (dx * dx + dy * dy).sqrt()
            };
            let ade = |ki: usize| (0..p).map(|i| err(ki, i)).sum::<f64>() / p as f64;
            let best = (0..k)
                .min_by(|&x, &y| err(x, p - 1).total_cmp(&err(y, p - 1)))
                .unwrap_or(0);
            // Most confident; ties go to the lower index.
            let top = (0..k)
                .max_by(|&x, &y| c[x].total_cmp(&c[y]).then(y.cmp(&x)))
                .unwrap_or(0);
            for (acc, ki) in [(&mut self.k_all, best), (&mut self.k1, top)] {
                let fde = err(ki, p - 1);
                acc.0 += ade(ki);
                acc.1 += fde;
                acc.2 += u64::from(fde > MISS_THRESHOLD_M);
            }
            self.n += 1;
        }
        Ok(())
    }

    /// (minADE, minFDE, miss rate) averages.
    pub fn mean(acc: (f64, f64, u64), n: u64) -> (f64, f64, f64) {
        let n = n.max(1) as f64;
        (acc.0 / n, acc.1 / n, acc.2 as f64 / n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use candle_nn::VarMap;

    fn forecast(modes: Vec<f32>, conf: Vec<f32>, b: usize, k: usize, p: usize) -> Forecast {
        let dev = Device::Cpu;
        Forecast {
            modes: Tensor::from_vec(modes, (b, k, p, 2), &dev).unwrap(),
            confidence: Tensor::from_vec(conf, (b, k), &dev).unwrap(),
            single: Tensor::zeros((b, p, 2), DType::F32, &dev).unwrap(),
        }
    }

    #[test]
    fn metrics_pick_the_best_final_mode_and_the_most_confident_one() {
        // One scenario, 2 modes, 2 steps; target (0,1) → (0,2).
        // Mode 0 ends 3 m off (miss), mode 1 ends 1 m off; mode 0 is the confident one.
        let f = forecast(
            vec![0.0, 1.0, 3.0, 2.0, /* mode 1 */ 0.0, 0.0, 0.0, 3.0],
            vec![2.0, 1.0],
            1,
            2,
            2,
        );
        let target = Tensor::new(&[[[0f32, 1.0], [0.0, 2.0]]], &Device::Cpu).unwrap();
        let mut t = ForecastTotals::default();
        t.add(&f, &target).unwrap();
        let (ade, fde, mr) = ForecastTotals::mean(t.k_all, t.n);
        assert!((fde - 1.0).abs() < 1e-6 && (ade - 1.0).abs() < 1e-6 && mr == 0.0);
        let (ade1, fde1, mr1) = ForecastTotals::mean(t.k1, t.n);
        assert!((fde1 - 3.0).abs() < 1e-6 && (ade1 - 1.5).abs() < 1e-6 && mr1 == 1.0);
    }

    /// The global graph carries each node's own feature past the attention (the reference's
    /// `linears[i](feats) + cross_attention_feats`): with the attention's values zeroed, the
    /// output still follows the input.
    #[test]
    fn global_graph_has_the_residual_path() {
        let dev = Device::Cpu;
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
        let g = GlobalGraph::new(8, vb).unwrap();
        crate::train::models::layers::init_vars(&varmap, 3).unwrap();
        for (name, var) in varmap.data().lock().unwrap().iter() {
            if name.starts_with("v.") {
                var.set(&var.as_tensor().zeros_like().unwrap()).unwrap();
            }
        }
        let mask = Tensor::ones((1, 3), DType::F32, &dev).unwrap();
        let x = Tensor::randn(0f32, 1.0, (1, 3, 8), &dev).unwrap();
        let y1 = g.forward(&x, &mask).unwrap();
        let other = Tensor::randn(0f32, 1.0, (1, 3, 8), &dev).unwrap();
        let y2 = g.forward(&other, &mask).unwrap();
        let d = crate::test_util::max_abs_diff(&y1, &y2);
        assert!(d > 1e-3, "the output ignores the node's own input: {d}");
    }

    /// The reference's JointLoss by hand: winners at each actor's last observed future step,
    /// sums over observed positions, divided by the actors with a future.
    #[test]
    fn loss_is_the_references_joint_loss() {
        let dev = Device::Cpu;
        // 1 scene, 3 actor slots, K = 2, P = 2.
        #[rustfmt::skip]
        let modes = Tensor::from_vec(
            vec![
                0f32, 0.0, 1.0, 0.0, /* mode 1 */ 0.0, 0.0, 0.0, 3.0,
                9.0, 9.0, 5.0, 5.0, /* mode 1 */ 9.0, 9.0, 0.0, 0.0,
                50.0, 50.0, 50.0, 50.0, /* mode 1 */ -50.0, 9.0, 9.0, 9.0,
            ],
            (1, 3, 2, 2, 2),
            &dev,
        )
        .unwrap();
        let f = Forecast {
            modes,
            confidence: Tensor::new(&[[[0f32, 0.0], [1.0, 0.0], [9.0, -9.0]]], &dev).unwrap(),
            single: Tensor::zeros((1, 3, 2, 2), DType::F32, &dev).unwrap(),
        };
        let futures = Tensor::new(
            &[[
                [[0f32, 1.0], [0.0, 2.0]],
                [[100.0, 100.0], [0.0, 0.5]],
                [[7.0, 7.0], [7.0, 7.0]],
            ]],
            &dev,
        )
        .unwrap();
        let fm = Tensor::new(&[[[1f32, 1.0], [0.0, 1.0], [0.0, 0.0]]], &dev).unwrap();
        let got = forecast_loss(&f, &futures, &fm)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap() as f64;
        // Actor 0: winner mode 1 (final error 1 vs 5): CE ln 2, winner SmoothL1 0.5 + 0.5,
        // single (zeros) 0.5 + 1.5. Actor 1: only step 1 observed, winner mode 1: CE
        // ln(1 + e), winner 0.125, single 0.125. Actor 2: no future, not counted.
        let want = (2f64.ln() + 1.0 + 2.0 + (1.0 + 1f64.exp()).ln() + 0.125 + 0.125) / 2.0;
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
    }

    /// The reference's `init_weights` on VectorNet: Linear weights Xavier-uniform, Linear
    /// biases U(0, 1), LayerNorms (1, 0).
    #[test]
    fn vectornet_takes_the_references_init() {
        let dev = Device::Cpu;
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
        let cfg = VectorNetConfig {
            subgraph_widths: vec![8, 16],
            modes: 2,
            agent_only_loss: false,
        };
        let _net = VectorNet::new(&cfg, 6, 7, 4, None, vb).unwrap();
        crate::train::models::layers::init_vars_xavier(&varmap, 0).unwrap();
        let data = varmap.data().lock().unwrap();
        let vals = |n: &str| -> Vec<f32> {
            data[n]
                .as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap()
        };
        // Linear(6 → 8): bound sqrt(6 / 14).
        let w = vals("actor_subgraph.layers.0.l1.weight");
        let a = (6f32 / 14.0).sqrt();
        assert!(w.iter().all(|v| v.abs() <= a));
        assert!(
            w.iter().any(|v| v.abs() > 0.5 * a),
            "not spread over the bound"
        );
        let b = vals("actor_subgraph.layers.0.l1.bias");
        assert!(b.iter().all(|v| (0.0..1.0).contains(v)) && b.iter().any(|v| *v > 0.5));
        assert!(vals("actor_subgraph.layers.0.n1.weight")
            .iter()
            .all(|v| *v == 1.0));
        assert!(vals("actor_subgraph.layers.0.n1.bias")
            .iter()
            .all(|v| *v == 0.0));
        assert!(vals("global_graph.skip_norm.bias")
            .iter()
            .all(|v| *v == 0.0));
        assert!(vals("mode_heads.1.out.bias")
            .iter()
            .all(|v| (0.0..1.0).contains(v)));
    }

    #[test]
    fn smooth_l1_is_quadratic_then_linear() {
        let dev = Device::Cpu;
        let p = Tensor::new(&[0.5f32, 3.0], &dev).unwrap();
        let t = Tensor::new(&[0f32, 0.0], &dev).unwrap();
        let l = smooth_l1(&p, &t).unwrap().to_scalar::<f32>().unwrap();
        assert!((l - (0.125 + 2.5) / 2.0).abs() < 1e-6);
    }

    #[test]
    fn loss_trains_the_winner_and_ignores_padding() {
        let dev = Device::Cpu;
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
        let cfg = VectorNetConfig {
            subgraph_widths: vec![8, 16],
            modes: 3,
            agent_only_loss: false,
        };
        let net = VectorNet::new(&cfg, 6, 7, 4, None, vb).unwrap();
        crate::train::models::layers::init_vars_xavier(&varmap, 0).unwrap();
        let actors = Tensor::randn(0f32, 1.0, (2, 3, 5, 6), &dev).unwrap();
        let lanes = Tensor::randn(0f32, 1.0, (2, 4, 9, 7), &dev).unwrap();
        let am = Tensor::new(&[[1f32, 1.0, 0.0], [1.0, 0.0, 0.0]], &dev).unwrap();
        let lm = Tensor::new(&[[1f32, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0]], &dev).unwrap();
        let ctrs = Tensor::randn(0f32, 1.0, (2, 3, 2), &dev).unwrap();
        let f = net.forward(&actors, &am, &lanes, &lm, &ctrs).unwrap();
        assert_eq!(f.modes.dims(), &[2, 3, 3, 4, 2]);
        assert_eq!(f.confidence.dims(), &[2, 3, 3]);
        assert_eq!(f.single.dims(), &[2, 3, 4, 2]);
        // Changing a padded polyline changes nothing.
        let mut a2: Vec<f32> = actors.flatten_all().unwrap().to_vec1().unwrap();
        let pad_start = (3 * 5 * 6) + 5 * 6; // scenario 1, actor 1 (padded)
        for v in &mut a2[pad_start..pad_start + 5 * 6] {
            *v += 7.0;
        }
        let actors2 = Tensor::from_vec(a2, (2, 3, 5, 6), &dev).unwrap();
        // And a padded lane (scenario 0, lane 3).
        let mut l2: Vec<f32> = lanes.flatten_all().unwrap().to_vec1().unwrap();
        for v in &mut l2[3 * 9 * 7..4 * 9 * 7] {
            *v -= 5.0;
        }
        let lanes2 = Tensor::from_vec(l2, (2, 4, 9, 7), &dev).unwrap();
        let f2 = net.forward(&actors2, &am, &lanes2, &lm, &ctrs).unwrap();
        // Real actors' forecasts (slots 0-1 of scenario 0, slot 0 of scenario 1).
        let real = |f: &Forecast| {
            Tensor::cat(
                &[
                    f.modes
                        .narrow(0, 0, 1)
                        .unwrap()
                        .narrow(1, 0, 2)
                        .unwrap()
                        .flatten_all()
                        .unwrap(),
                    f.modes
                        .narrow(0, 1, 1)
                        .unwrap()
                        .narrow(1, 0, 1)
                        .unwrap()
                        .flatten_all()
                        .unwrap(),
                    f.confidence.narrow(1, 0, 1).unwrap().flatten_all().unwrap(),
                ],
                0,
            )
            .unwrap()
        };
        let d = crate::test_util::max_abs_diff(&real(&f), &real(&f2));
        assert!(
            d < 1e-5,
            "a padded actor or lane leaked into the output: {d}"
        );
        let f = net.forward(&actors, &am, &lanes, &lm, &ctrs).unwrap();
        let futures = Tensor::randn(0f32, 1.0, (2, 3, 4, 2), &dev).unwrap();
        // Actor (0, 1) has only its first two future steps; padded slots have none.
        let fm = Tensor::new(
            &[
                [[1f32, 1.0, 1.0, 1.0], [1.0, 1.0, 0.0, 0.0], [0.0; 4]],
                [[1.0, 1.0, 1.0, 1.0], [0.0; 4], [0.0; 4]],
            ],
            &dev,
        )
        .unwrap();
        let loss = forecast_loss(&f, &futures, &fm).unwrap();
        assert!(loss.to_scalar::<f32>().unwrap().is_finite());
        let grads = loss.backward().unwrap();
        let data = varmap.data().lock().unwrap();
        for name in [
            "mode_heads.0.out.weight",
            "actor_subgraph.layers.0.l1.weight",
            "confidence.out.bias",
            "fusion.delta1.weight",
            "global_graph.skip.weight",
            "global_graph.attn_out.weight",
            "single.out.weight",
        ] {
            assert!(
                grads.get(data[name].as_tensor()).is_some(),
                "no gradient for {name}"
            );
        }
    }
}
