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
use crate::train::ops::bias::{linear, linear_no_bias, Linear};
use crate::train::ops::mkl_layout::for_matmul;
use crate::train::ops::pool::cat_with_max;
use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::VarBuilder;
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
            l1: linear(inp, w, vb.pp("l1"))?,
            n1: LayerNorm::new(w, vb.pp("n1"))?,
            l2: linear(w, w, vb.pp("l2"))?,
            n2: LayerNorm::new(w, vb.pp("n2"))?,
        })
    }

    /// x [N, V, in] → [N, V, 2w]
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.n1.forward(&self.l1.forward(x)?)?.relu()?;
        let h = self.n2.forward(&self.l2.forward(&h)?)?.relu()?;
        // One node on the CPU (contiguous); elsewhere candle's cat, whose broadcast side makes
        // it strided, which MKL's matmul needs contiguous.
        for_matmul(cat_with_max(&h)?)
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
            q: linear(d, d, vb.pp("q"))?,
            k: linear(d, d, vb.pp("k"))?,
            v: linear(d, d, vb.pp("v"))?,
            attn_norm: LayerNorm::new(d, vb.pp("attn_norm"))?,
            attn_out: linear(d, d, vb.pp("attn_out"))?,
            attn_out_norm: LayerNorm::new(d, vb.pp("attn_out_norm"))?,
            skip: linear(d, d, vb.pp("skip"))?,
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
            l1: linear_no_bias(d, d, vb.pp("l1"))?,
            n1: LayerNorm::new(d, vb.pp("n1"))?,
            l2: linear_no_bias(d, d, vb.pp("l2"))?,
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
            delta1: linear(2, d, vb.pp("delta1"))?,
            delta2: linear_no_bias(d, d, vb.pp("delta2"))?,
            delta_norm: LayerNorm::new(d, vb.pp("delta_norm"))?,
            mapping: linear_no_bias(2 * d, d, vb.pp("mapping"))?,
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
        // A last-dimension cat with a broadcast side: strided, as the subgraph's (MKL build).
        let x = for_matmul(Tensor::cat(&[&e, &a], D::Minus1)?)?;
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
                linear(d, out, vb.pp(format!("{name}.out")))?,
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

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use candle_nn::VarMap;

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
}
