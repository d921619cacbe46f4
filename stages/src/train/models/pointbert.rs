//! The point-cloud encoder of PAPER.md §3 (PointBERT on ScanObjectNN): mini-PointNet group
//! embedding, center positional MLP added before every block, a ViT encoder, then
//! `Linear(d, D_llm)` → the LLM block → `Linear(D_llm, d)`, LayerNorm, and a head on
//! `concat(x[CLS], max over group tokens)`. Sizes come from the config at run time.

use super::layers::{dropout, max_over, LayerNorm};
use super::layers::{BlockPosition, Execution, VitTrunk};
use crate::train::block::{BlockCore, BlockMode};
use crate::train::ops::bias::{linear, Linear};
use candle_core::{Module, ModuleT, Result, Tensor, D};
use candle_nn::{BatchNorm, BatchNormConfig, VarBuilder};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Model sizes (the `model` part of a `train` stage's params).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PointBertConfig {
    pub trans_dim: usize,
    pub depth: usize,
    pub heads: usize,
    pub mlp_ratio: f64,
    /// Widths of the mini-PointNet: first conv, second conv, third conv (paper 128, 256, 512).
    pub pointnet_dims: [usize; 3],
    pub encoder_dims: usize,
    pub drop_path: f64,
    pub head_dropout: f64,
    /// Where the LLM block sits: `end` (default), `middle` or `start` (PAPER.md §2).
    #[serde(default, skip_serializing_if = "BlockPosition::is_default")]
    pub llm_position: BlockPosition,
}

impl Default for PointBertConfig {
    fn default() -> Self {
        PointBertConfig {
            trans_dim: 384,
            depth: 12,
            heads: 6,
            mlp_ratio: 4.0,
            pointnet_dims: [128, 256, 512],
            encoder_dims: 256,
            drop_path: 0.1,
            head_dropout: 0.5,
            llm_position: BlockPosition::End,
        }
    }
}

fn bn(dim: usize, vb: VarBuilder) -> Result<BatchNorm> {
    candle_nn::batch_norm(
        dim,
        BatchNormConfig {
            eps: 1e-5,
            remove_mean: true,
            affine: true,
            momentum: 0.1,
        },
        vb,
    )
}

/// Mini-PointNet: per point Linear-BN-ReLU-Linear, max-pool, concat the pooled feature to
/// every point, Linear-BN-ReLU-Linear, max-pool. (The reference's Conv1d with kernel 1 is a
/// per-point Linear.)
struct GroupEncoder {
    l1: Linear,
    bn1: BatchNorm,
    l2: Linear,
    l3: Linear,
    bn2: BatchNorm,
    l4: Linear,
}

impl GroupEncoder {
    fn new(dims: [usize; 3], out: usize, vb: VarBuilder) -> Result<Self> {
        Ok(GroupEncoder {
            l1: linear(3, dims[0], vb.pp("first_conv.0"))?,
            bn1: bn(dims[0], vb.pp("first_conv.1"))?,
            l2: linear(dims[0], dims[1], vb.pp("first_conv.3"))?,
            l3: linear(dims[1] * 2, dims[2], vb.pp("second_conv.0"))?,
            bn2: bn(dims[2], vb.pp("second_conv.1"))?,
            l4: linear(dims[2], out, vb.pp("second_conv.3"))?,
        })
    }

    /// `neigh` [B, G, K, 3] → [B, G, out]
    fn forward(&self, neigh: &Tensor, train: bool) -> Result<Tensor> {
        let (b, g, k, _) = neigh.dims4()?;
        let n = b * g;
        let x = neigh.reshape((n * k, 3))?;
        let x = self.bn1.forward_t(&self.l1.forward(&x)?, train)?.relu()?;
        let x = self.l2.forward(&x)?.reshape((n, k, ()))?; // [N, K, c2]
        let global = max_over(&x, 1)?.unsqueeze(1)?; // [N, 1, c2]
        let x = Tensor::cat(&[&global.broadcast_as(x.shape())?, &x], 2)?; // [N, K, 2·c2]
        let c = x.dim(2)?;
        let x = x.reshape((n * k, c))?;
        let x = self.bn2.forward_t(&self.l3.forward(&x)?, train)?.relu()?;
        let x = self.l4.forward(&x)?.reshape((n, k, ()))?;
        max_over(&x, 1)?.reshape((b, g, ()))
    }
}

pub struct PointBert {
    cfg: PointBertConfig,
    encoder: GroupEncoder,
    reduce_dim: Linear,
    cls_token: Tensor,
    cls_pos: Tensor,
    pos1: Linear,
    pos2: Linear,
    trunk: VitTrunk,
    norm: LayerNorm,
    head1: Linear,
    head2: Linear,
}

impl PointBert {
    /// Full or chunked attention, activation checkpointing (see `vit::Execution`).
    pub fn configure(&mut self, exec: &Execution) {
        self.trunk.configure(exec);
    }

    /// `block`: the LLM block and its mode, or None for the `none` ablation.
    pub fn new(
        cfg: &PointBertConfig,
        num_classes: usize,
        block: Option<(BlockCore, BlockMode)>,
        vb: VarBuilder,
    ) -> Result<Self> {
        let c = cfg.trans_dim;
        super::layers::check_heads("trans_dim", c, cfg.heads)?;
        let trunk = VitTrunk::new(
            c,
            cfg.depth,
            cfg.heads,
            cfg.mlp_ratio,
            false,
            cfg.drop_path,
            cfg.llm_position,
            block,
            &vb,
        )?;
        Ok(PointBert {
            encoder: GroupEncoder::new(cfg.pointnet_dims, cfg.encoder_dims, vb.pp("encoder"))?,
            reduce_dim: linear(cfg.encoder_dims, c, vb.pp("reduce_dim"))?,
            cls_token: vb.get((1, 1, c), "cls_token")?,
            cls_pos: vb.get((1, 1, c), "cls_pos")?,
            pos1: linear(3, 128, vb.pp("pos_embed.0"))?,
            pos2: linear(128, c, vb.pp("pos_embed.2"))?,
            trunk,
            norm: LayerNorm::new(c, vb.pp("norm"))?,
            head1: linear(2 * c, 256, vb.pp("cls_head.0"))?,
            head2: linear(256, num_classes, vb.pp("cls_head.4"))?,
            cfg: cfg.clone(),
        })
    }

    pub fn has_block(&self) -> bool {
        self.trunk.has_block()
    }

    /// Logits [B, classes]. `rng` Some = training (BN batch stats, drop path, dropout).
    pub fn forward(
        &self,
        centers: &Tensor,
        neighborhoods: &Tensor,
        mut rng: Option<&mut ChaCha8Rng>,
    ) -> Result<Tensor> {
        let feat = self.features(centers, neighborhoods, rng.as_deref_mut())?;
        let h = self.head1.forward(&feat)?.relu()?;
        let h = match rng {
            Some(r) => dropout(&h, self.cfg.head_dropout, r)?,
            None => h,
        };
        self.head2.forward(&h)
    }

    /// What the head reads: `concat(x[CLS], max over group tokens)` after the final norm,
    /// [B, 2·trans_dim] (the reference's `concat_f`).
    pub fn features(
        &self,
        centers: &Tensor,
        neighborhoods: &Tensor,
        rng: Option<&mut ChaCha8Rng>,
    ) -> Result<Tensor> {
        let train = rng.is_some();
        let (b, _g, _) = centers.dims3()?;
        let tokens = self
            .reduce_dim
            .forward(&self.encoder.forward(neighborhoods, train)?)?;
        let pos = self
            .pos2
            .forward(&self.pos1.forward(centers)?.gelu_erf()?)?;
        let c = self.cfg.trans_dim;
        let cls = self.cls_token.broadcast_as((b, 1, c))?;
        let cls_pos = self.cls_pos.broadcast_as((b, 1, c))?;
        let x = Tensor::cat(&[&cls, &tokens], 1)?;
        let pos = Tensor::cat(&[&cls_pos, &pos], 1)?;
        let x = self.trunk.forward(&x, Some(&pos), rng)?;
        let x = self.norm.forward(&x)?;
        let t = x.dim(1)?;
        Tensor::cat(
            &[
                &x.narrow(1, 0, 1)?.squeeze(1)?,
                &x.narrow(1, 1, t - 1)?.max(1)?,
            ],
            D::Minus1,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    #[test]
    fn eval_mode_matches_train_mode_once_bn_stats_settle() {
        let dev = Device::Cpu;
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
        let cfg = PointBertConfig {
            trans_dim: 32,
            depth: 1,
            heads: 2,
            pointnet_dims: [16, 32, 32],
            encoder_dims: 32,
            drop_path: 0.0,
            head_dropout: 0.0,
            ..Default::default()
        };
        let model = PointBert::new(&cfg, 5, None, vb).unwrap();
        crate::train::models::layers::init_vars(&varmap, 0).unwrap();
        let c = Tensor::randn(0f32, 0.5, (8, 16, 3), &dev).unwrap();
        let n = Tensor::randn(0f32, 0.05, (8, 16, 8, 3), &dev).unwrap();
        let mut rng = crate::train::models::layers::step_rng(0, "t", 0);
        let mut train_logits = None;
        for _ in 0..200 {
            train_logits = Some(model.forward(&c, &n, Some(&mut rng)).unwrap());
        }
        let eval_logits = model.forward(&c, &n, None).unwrap();
        let d = crate::test_util::max_abs_diff(&train_logits.unwrap(), &eval_logits);
        let spread = eval_logits
            .var(0)
            .unwrap()
            .sqrt()
            .unwrap()
            .mean_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        eprintln!("d {d} spread {spread}");
        assert!(
            d < 1e-2 * spread.max(1e-3) * 100.0,
            "train vs eval logits differ by {d} (spread {spread})"
        );
    }
}
