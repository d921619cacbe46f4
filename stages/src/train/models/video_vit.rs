//! The video encoder of PAPER.md §4 (VideoMAE's ViT on Something-Something-v2): tubelet
//! embedding, fixed sinusoidal positional embedding, pre-norm ViT blocks with q/v biases,
//! then `Linear(d, D_llm)` → the LLM block → `Linear(D_llm, d)`, mean pooling over tokens,
//! LayerNorm (VideoMAE's `fc_norm`) and a linear head. LayerNorm eps 1e-6 as VideoMAE's.
//!
//! The tubelet embedding is VideoMAE's `Conv3d(3, d, kernel = stride = (t, p, p))` written as
//! a Linear over the flattened tubelet, because `ssv2.tokens` shards already hold each
//! tubelet as one row laid out (dt, dy, dx, rgb). A VideoMAE Conv3d weight [d, 3, t, p, p]
//! maps to our `patch_embed.proj.weight` [d, t·p·p·3] by permuting to [d, t, p, p, 3] and
//! flattening; the bias is the same.

use super::layers::{dropout, LayerNorm};
use super::layers::{BlockPosition, Execution, VitTrunk};
use crate::train::block::{BlockCore, BlockMode};
use crate::train::ops::bias::{linear as linear_with_bias, Linear};
use crate::train::ops::precision::{linear, Precision};
use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::VarBuilder;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Model sizes (the `model` part of a `train` stage's params when `data` is `ssv2.tokens`).
/// Defaults are VideoMAE ViT-S.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VideoVitConfig {
    pub embed_dim: usize,
    pub depth: usize,
    pub heads: usize,
    pub mlp_ratio: f64,
    pub drop_path: f64,
    /// Dropout before the head (VideoMAE's `fc_drop_rate`).
    #[serde(default)]
    pub head_dropout: f64,
    /// Where the LLM block sits: `end` (default), `middle` or `start` (PAPER.md §2).
    #[serde(default, skip_serializing_if = "BlockPosition::is_default")]
    pub llm_position: BlockPosition,
    /// eps of every LayerNorm: VideoMAE's `partial(nn.LayerNorm, eps=1e-6)`.
    pub norm_eps: f64,
}

impl Default for VideoVitConfig {
    fn default() -> Self {
        VideoVitConfig {
            embed_dim: 384,
            depth: 12,
            heads: 6,
            mlp_ratio: 4.0,
            drop_path: 0.1,
            head_dropout: 0.0,
            llm_position: BlockPosition::End,
            norm_eps: 1e-6,
        }
    }
}

/// VideoMAE's fixed positional table: position `pos`, channel `j` gets
/// `pos / 10000^(2·floor(j/2)/d)`, sine on even channels, cosine on odd ones. [tokens, d].
pub fn sinusoid_table(tokens: usize, d: usize, device: &Device) -> Result<Tensor> {
    let mut v = Vec::with_capacity(tokens * d);
    for pos in 0..tokens {
        for j in 0..d {
            let angle = pos as f64 / 10000f64.powf(2.0 * (j / 2) as f64 / d as f64);
            v.push(if j % 2 == 0 { angle.sin() } else { angle.cos() } as f32);
        }
    }
    Tensor::from_vec(v, (tokens, d), device)
}

pub struct VideoVit {
    cfg: VideoVitConfig,
    patch_embed: Linear,
    pos: Tensor,
    trunk: VitTrunk,
    fc_norm: LayerNorm,
    head: Linear,
    /// Autocast of the tubelet embedding (the blocks carry their own).
    prec: Option<Precision>,
}

impl VideoVit {
    /// Full or chunked attention, activation checkpointing (see `vit::Execution`).
    pub fn configure(&mut self, exec: &Execution) {
        self.trunk.configure(exec);
        self.prec = exec.precision;
    }

    /// `tokens` and `token_dim` come from the data (T/t·(crop/p)² and t·p·p·3); `block` is
    /// the LLM block and its mode, or None for the `none` ablation.
    pub fn new(
        cfg: &VideoVitConfig,
        tokens: usize,
        token_dim: usize,
        num_classes: usize,
        block: Option<(BlockCore, BlockMode)>,
        vb: VarBuilder,
    ) -> Result<Self> {
        let d = cfg.embed_dim;
        super::layers::check_heads("embed_dim", d, cfg.heads)?;
        Ok(VideoVit {
            patch_embed: linear_with_bias(token_dim, d, vb.pp("patch_embed.proj"))?,
            pos: sinusoid_table(tokens, d, vb.device())?.unsqueeze(0)?,
            trunk: VitTrunk::new(
                d,
                cfg.depth,
                cfg.heads,
                cfg.mlp_ratio,
                true,
                cfg.drop_path,
                cfg.llm_position,
                block,
                &vb,
            )?
            .with_norm_eps(cfg.norm_eps),
            fc_norm: LayerNorm::new(d, vb.pp("fc_norm"))?.with_eps(cfg.norm_eps),
            head: linear_with_bias(d, num_classes, vb.pp("head"))?,
            cfg: cfg.clone(),
            prec: None,
        })
    }

    pub fn has_block(&self) -> bool {
        self.trunk.has_block()
    }

    /// Logits [B, classes] from normalized tubelets [B, tokens, token_dim] (f32).
    /// `rng` Some = training (drop path, dropout).
    pub fn forward(&self, tubelets: &Tensor, mut rng: Option<&mut ChaCha8Rng>) -> Result<Tensor> {
        let x = self.features(tubelets, rng.as_deref_mut())?;
        let x = match rng {
            Some(r) => dropout(&x, self.cfg.head_dropout, r)?,
            None => x,
        };
        self.head.forward(&x)
    }

    /// What the head reads: `fc_norm` of the mean over tokens, [B, d] (VideoMAE's
    /// `forward_features`).
    pub fn features(&self, tubelets: &Tensor, rng: Option<&mut ChaCha8Rng>) -> Result<Tensor> {
        let x = linear(&self.patch_embed, tubelets, self.prec)?;
        let x = x.broadcast_add(&self.pos.to_dtype(DType::F32)?)?;
        let x = self.trunk.forward(&x, None, rng)?;
        self.fc_norm.forward(&x.mean(1)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_nn::VarMap;

    /// Activation checkpointing (and chunked attention) change what is kept, not what is
    /// computed: every parameter's gradient equals the plain path's, drop path included.
    #[test]
    fn checkpointed_blocks_give_the_plain_gradients() {
        use crate::train::models::layers::step_rng;
        use crate::train::models::layers::Execution;
        use crate::train::ops::attention::AttnImpl;
        use crate::train::ops::recompute::GradSink;
        let dev = Device::Cpu;
        let cfg = VideoVitConfig {
            embed_dim: 32,
            depth: 3,
            heads: 4,
            drop_path: 0.5,
            ..Default::default()
        };
        let x = Tensor::randn(0f32, 1.0, (2, 8, 12), &dev).unwrap();
        let labels = Tensor::new(&[1u32, 3], &dev).unwrap();
        let grads_with = |exec: Execution| -> Vec<(String, Vec<f32>)> {
            let varmap = VarMap::new();
            let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
            let mut model = VideoVit::new(&cfg, 8, 12, 5, None, vb).unwrap();
            crate::train::models::layers::init_vars(&varmap, 7).unwrap();
            model.configure(&exec);
            let mut rng = step_rng(0, "dropout", 0);
            let logits = model.forward(&x, Some(&mut rng)).unwrap();
            let loss = crate::train::models::layers::smoothed_cross_entropy(&logits, &labels, 0.0)
                .unwrap();
            let mut g = loss.backward().unwrap();
            if let Some(sink) = &exec.checkpoint {
                sink.merge_into(&mut g).unwrap();
            }
            let vars = varmap.data().lock().unwrap();
            let mut names: Vec<&String> = vars.keys().collect();
            names.sort();
            names
                .into_iter()
                .map(|n| {
                    let t = g
                        .get(vars[n].as_tensor())
                        .unwrap_or_else(|| panic!("no grad for {n}"));
                    (n.clone(), t.flatten_all().unwrap().to_vec1().unwrap())
                })
                .collect()
        };
        let plain = grads_with(Execution::default());
        for exec in [
            Execution {
                attn: AttnImpl::Full,
                checkpoint: Some(GradSink::default()),
                precision: None,
            },
            Execution {
                attn: AttnImpl::Chunked,
                checkpoint: Some(GradSink::default()),
                precision: None,
            },
        ] {
            let attn = exec.attn;
            let other = grads_with(exec);
            assert_eq!(plain.len(), other.len());
            for ((n, a), (_, b)) in plain.iter().zip(&other) {
                let d = a
                    .iter()
                    .zip(b)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                let m = a.iter().map(|v| v.abs()).fold(0f32, f32::max);
                if attn == AttnImpl::Full {
                    // Same ops on the same values: the same bits.
                    assert_eq!(a, b, "{n}: checkpointed gradient differs by {d}");
                } else {
                    assert!(d <= 1e-5 * m.max(1.0), "{n}: differs by {d} (max {m})");
                }
            }
        }
    }

    /// The LLM block at the start, middle or end of the trunk (PAPER.md §2 ablation): same
    /// parameters, different computation; `end` is the default.
    #[test]
    fn llm_position_moves_the_block() {
        use crate::llm::block_format::{Arch, BlockConfig};
        use crate::train::block::{BlockMode, LlmBlock};
        let dev = Device::Cpu;
        let bcfg = BlockConfig {
            arch: Arch::Llama,
            hidden_size: 16,
            num_heads: 2,
            num_kv_heads: 2,
            head_dim: 8,
            intermediate_size: 24,
            norm_eps: 1e-5,
            post_norm: false,
        };
        let x = Tensor::randn(0f32, 1.0, (2, 8, 12), &dev).unwrap();
        let run = |pos: BlockPosition| {
            let varmap = VarMap::new();
            let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
            let cfg = VideoVitConfig {
                embed_dim: 32,
                depth: 4,
                heads: 4,
                drop_path: 0.0,
                llm_position: pos,
                ..Default::default()
            };
            let block = LlmBlock::random(&bcfg, 3, &dev).unwrap();
            let model =
                VideoVit::new(&cfg, 8, 12, 5, Some((block.into(), BlockMode::Frozen)), vb).unwrap();
            crate::train::models::layers::init_vars(&varmap, 0).unwrap();
            let n = varmap.all_vars().len();
            (model.forward(&x, None).unwrap(), n)
        };
        let (end, n_end) = run(BlockPosition::End);
        let (start, n_start) = run(BlockPosition::Start);
        let (middle, _) = run(BlockPosition::Middle);
        assert_eq!(n_end, n_start, "same parameters wherever the block sits");
        let diff = |a: &Tensor, b: &Tensor| {
            (a - b)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
        };
        assert!(diff(&end, &start) > 1e-6 && diff(&end, &middle) > 1e-6);
        assert_eq!(VideoVitConfig::default().llm_position, BlockPosition::End);
        // The default is not serialized: existing keys keep their value.
        let v = serde_json::to_value(VideoVitConfig::default()).unwrap();
        assert!(v.get("llm_position").is_none());
        // VideoMAE's LayerNorm eps, always in the key (it changed from PyTorch's 1e-5).
        assert_eq!(v["norm_eps"], 1e-6);
    }

    #[test]
    fn sinusoid_table_matches_the_formula() {
        let t = sinusoid_table(5, 6, &Device::Cpu).unwrap();
        let v: Vec<Vec<f32>> = t.to_vec2().unwrap();
        assert_eq!(v[0], vec![0.0, 1.0, 0.0, 1.0, 0.0, 1.0]);
        let want = (3.0f64 / 10000f64.powf(2.0 / 6.0)).cos() as f32;
        assert!((v[3][3] - want).abs() < 1e-6);
        assert!((v[4][0] - 4f32.sin()).abs() < 1e-6);
    }

    #[test]
    fn forward_shapes_and_temporal_order_matters() {
        let dev = Device::Cpu;
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
        let cfg = VideoVitConfig {
            embed_dim: 32,
            depth: 2,
            heads: 4,
            drop_path: 0.0,
            ..Default::default()
        };
        let model = VideoVit::new(&cfg, 8, 12, 5, None, vb).unwrap();
        crate::train::models::layers::init_vars(&varmap, 0).unwrap();
        let x = Tensor::randn(0f32, 1.0, (3, 8, 12), &dev).unwrap();
        let y = model.forward(&x, None).unwrap();
        assert_eq!(y.dims(), &[3, 5]);
        // Reversing the token order changes the output: positions are embedded.
        let idx = Tensor::new(&[7u32, 6, 5, 4, 3, 2, 1, 0], &dev).unwrap();
        let y_rev = model
            .forward(&x.index_select(&idx, 1).unwrap(), None)
            .unwrap();
        let d = crate::test_util::max_abs_diff(&y, &y_rev);
        assert!(d > 1e-6, "output ignores token order");
    }
}
