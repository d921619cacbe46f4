//! The image encoder of PAPER.md §6: the reference's `ViTLLaMA` (LM4VisualEncoding
//! `image_classification/models/vit_llama.py`, on timm's VisionTransformer): patch embedding,
//! a class token, a learned position embedding over class + patches, pre-norm ViT blocks
//! (LayerNorm eps 1e-6, qkv bias, GELU MLP ×4, linearly increasing drop path), then the
//! bias-free adapters around the frozen LLM block after the last block
//! (`llama_dim_mapper1` → `llama` → `llama_dim_mapper2`), the final norm, and the head on the
//! class token.
//!
//! The patch embedding is timm's `Conv2d(3, d, kernel = stride = p)` written as a Linear over
//! the flattened patch laid out (dy, dx, rgb): a timm weight [d, 3, p, p] maps to
//! `patch_embed.proj.weight` [d, p·p·3] by permuting to [d, p, p, 3] and flattening. timm's k
//! bias is the one bias this trunk does not carry: it shifts every score of a query by the
//! same amount, so the softmax ignores it.

use super::layers::{BlockPosition, Execution, LayerNorm, VitTrunk};
use crate::train::block::{BlockCore, BlockMode};
use crate::train::ops::bias::{linear as linear_with_bias, Linear};
use crate::train::ops::mkl_layout::for_matmul;
use crate::train::ops::precision::{linear, Precision};
use candle_core::{Module, Result, Tensor, D};
use candle_nn::VarBuilder;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Model sizes (the `model` part of a `train` stage's params when `data` is `image.tokens`).
/// Defaults are DeiT's ViT-S/16 (`vit_llama_small_patch16_224`); `preset` picks another.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImageVitConfig {
    pub patch: usize,
    pub embed_dim: usize,
    pub depth: usize,
    pub heads: usize,
    pub mlp_ratio: f64,
    /// DeiT's `--drop-path` (0.1).
    pub drop_path: f64,
    /// Where the LLM block sits: `end` (default, the reference's), `middle` or `start`.
    #[serde(default, skip_serializing_if = "BlockPosition::is_default")]
    pub llm_position: BlockPosition,
    /// eps of every LayerNorm: timm's `partial(nn.LayerNorm, eps=1e-6)`.
    pub norm_eps: f64,
}

impl Default for ImageVitConfig {
    fn default() -> Self {
        ImageVitConfig {
            patch: 16,
            embed_dim: 384,
            depth: 12,
            heads: 6,
            mlp_ratio: 4.0,
            drop_path: 0.1,
            llm_position: BlockPosition::End,
            norm_eps: 1e-6,
        }
    }
}

impl ImageVitConfig {
    /// The reference's model names: `vit-t`, `vit-s`, `vit-b` (patch 16), `vit-t/32`,
    /// `vit-b/32`.
    pub fn preset(name: &str) -> Option<serde_json::Value> {
        let (patch, d, heads) = match name {
            "vit-t" => (16, 192, 3),
            "vit-t/32" => (32, 192, 3),
            "vit-s" => (16, 384, 6),
            "vit-b" => (16, 768, 12),
            "vit-b/32" => (32, 768, 12),
            _ => return None,
        };
        Some(serde_json::json!({ "patch": patch, "embed_dim": d, "heads": heads, "depth": 12 }))
    }
}

pub struct ImageVit {
    patch: usize,
    patch_embed: Linear,
    cls_token: Tensor,
    pos_embed: Tensor,
    trunk: VitTrunk,
    norm: LayerNorm,
    head: Linear,
    prec: Option<Precision>,
}

impl ImageVit {
    /// Full or chunked attention, activation checkpointing, precision.
    pub fn configure(&mut self, exec: &Execution) {
        self.trunk.configure(exec);
        self.prec = exec.precision;
    }

    /// A model for square images of side `image` (a multiple of the patch).
    pub fn new(
        cfg: &ImageVitConfig,
        image: usize,
        num_classes: usize,
        block: Option<(BlockCore, BlockMode)>,
        vb: VarBuilder,
    ) -> Result<Self> {
        let d = cfg.embed_dim;
        super::layers::check_heads("embed_dim", d, cfg.heads)?;
        if cfg.patch == 0 || !image.is_multiple_of(cfg.patch) {
            candle_core::bail!(
                "the images' side {image} must be a multiple of the patch {}",
                cfg.patch
            );
        }
        let patches = (image / cfg.patch).pow(2);
        let init = candle_nn::Init::Const(0.0);
        Ok(ImageVit {
            patch: cfg.patch,
            patch_embed: linear_with_bias(cfg.patch * cfg.patch * 3, d, vb.pp("patch_embed.proj"))?,
            cls_token: vb.get_with_hints((1, 1, d), "cls_token", init)?,
            pos_embed: vb.get_with_hints((1, patches + 1, d), "pos_embed", init)?,
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
            norm: LayerNorm::new(d, vb.pp("norm"))?.with_eps(cfg.norm_eps),
            head: linear_with_bias(d, num_classes, vb.pp("head"))?,
            prec: None,
        })
    }

    pub fn has_block(&self) -> bool {
        self.trunk.has_block()
    }

    /// Logits [B, classes] from normalized images [B, H, W, 3] (f32, channels last).
    /// `rng` Some = training (drop path).
    pub fn forward(&self, images: &Tensor, rng: Option<&mut ChaCha8Rng>) -> Result<Tensor> {
        let x = self.features(images, rng)?;
        // A strided view [B, d] (row stride T·d): MKL's matmul needs it contiguous.
        let cls = for_matmul(x.narrow(1, 0, 1)?.squeeze(1)?)?;
        self.head.forward(&cls)
    }

    /// The tokens after the final norm [B, 1 + patches, d] (the reference's
    /// `forward_features`), from images as [`ImageVit::forward`] takes them.
    pub fn features(&self, images: &Tensor, rng: Option<&mut ChaCha8Rng>) -> Result<Tensor> {
        let (b, h, w, c) = images.dims4()?;
        let p = self.patch;
        let (gh, gw) = (h / p, w / p);
        // [B, gh, p, gw, p, 3] → [B, gh, gw, p, p, 3] → [B, N, p·p·3].
        let patches = images
            .reshape((b, gh, p, gw, p, c))?
            .permute((0, 1, 3, 2, 4, 5))?
            .contiguous()?
            .reshape((b, gh * gw, p * p * c))?;
        let x = linear(&self.patch_embed, &patches, self.prec)?;
        let d = x.dim(D::Minus1)?;
        let cls = self.cls_token.broadcast_as((b, 1, d))?;
        let x = Tensor::cat(&[&cls, &x], 1)?.broadcast_add(&self.pos_embed)?;
        let x = self.trunk.forward(&x, None, rng)?;
        self.norm.forward(&x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    #[test]
    fn presets_are_the_references_sizes_and_the_forward_has_its_shapes() {
        assert_eq!(ImageVitConfig::preset("vit-b").unwrap()["embed_dim"], 768);
        assert_eq!(ImageVitConfig::preset("vit-t/32").unwrap()["patch"], 32);
        assert!(ImageVitConfig::preset("vit-h").is_none());
        let dev = Device::Cpu;
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
        let cfg = ImageVitConfig {
            patch: 8,
            embed_dim: 16,
            depth: 2,
            heads: 2,
            ..Default::default()
        };
        let m = ImageVit::new(&cfg, 32, 5, None, vb).unwrap();
        crate::train::models::layers::init_vars(&varmap, 0).unwrap();
        let x = Tensor::randn(0f32, 1.0, (3, 32, 32, 3), &dev).unwrap();
        assert_eq!(m.forward(&x, None).unwrap().dims(), &[3, 5]);
        // 16 patches + the class token.
        assert_eq!(
            varmap.data().lock().unwrap()["pos_embed"].dims(),
            &[1, 17, 16]
        );
        assert!(ImageVit::new(
            &cfg,
            30,
            5,
            None,
            VarBuilder::from_varmap(&VarMap::new(), DType::F32, &dev)
        )
        .is_err());
    }
}
