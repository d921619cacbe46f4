//! Image classification (PAPER.md §6, the paper's first task): the reference's ViT-LLaMA on
//! `image.tokens` (ImageNet), with DeiT's recipe as LM4VisualEncoding `image_classification/`
//! runs it (`main.py` defaults and its README's command): AdamW lr 5e-4 × batch / 512, wd
//! 0.05 in timm's groups, timm's per-epoch cosine from a 1e-6 warm-up to 1e-5 over 300 epochs
//! with 20 of warm-up, drop path 0.1,
//! RandAugment `rand-m9-mstd0.5-inc1`, random erasing 0.25, Mixup 0.8 / CutMix 1.0 (switch
//! 0.5) with label smoothing 0.1, the global batch 1024 (128 per GPU × 8), the
//! repeated-augmentation sampler (`RASampler`, 3 copies; `train::sampler`). Not yet: the
//! model EMA (DeiT keeps it beside the model but reports the model's accuracy).

use super::classify::{self, ClassTotals, Target};
use super::{BenchSetup, BenchSize, Checkpoint, Reported, Task, TaskInfo};
use crate::train::block::{BlockCore, BlockMode};
use crate::train::data::image::ImageSet;
use crate::train::models::image_vit::{ImageVit, ImageVitConfig};
use crate::train::models::init_rules::{init_by, timm_vit};
use crate::train::models::layers::{drop_path_rate, Execution};
use crate::train::ops::mixup::MixSpec;
use crate::train::ops::video_aug::{RandAugmentSpec, TrainAugment};
use crate::train::params::{EvalParams, ParamIssue, TrainParams};
use crate::train::plan::cost::{vit_block, Cost, Exec, F32};
use crate::train::recipe::{Features, Preset, TaskDefaults, TaskRecipe};
use anyhow::Result;
use candle_core::{Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use lm4ve_pipeline::{PipelineConfig, StageConfig, Upstream};
use rand_chacha::ChaCha8Rng;

/// The data kind this task trains on.
pub const KIND: &str = crate::images::stage::KIND;

/// The reference's model names, as `preset` values.
const PRESETS: &[&str] = &[
    "vit_llama_tiny_patch16_224",
    "vit_llama_tiny_patch32_224",
    "vit_llama_small_patch16_224",
    "vit_llama_base_patch16_224",
    "vit_llama_base_patch32_224",
];

/// The image classification task.
pub struct Image;

/// A batch: images [B, S, S, 3] and the targets (soft when mixed).
pub struct ImageBatch {
    pub images: Tensor,
    pub target: Target,
}

impl TaskRecipe for Image {
    fn defaults(&self) -> TaskDefaults {
        TaskDefaults {
            epochs: 300,
            // The reference's README command (`--warmup-epochs 20`; main.py's default is 5).
            warmup_epochs: 20,
            batch_size: 1024,
            lr: 5e-4,
            min_lr: 1e-5,
            weight_decay: 0.05,
            grad_clip: 0.0,
            label_smoothing: 0.1,
            adapter_lr_scale: 1.0,
            no_decay_lr_scale: 1.0,
            epochs_per_checkpoint: 10,
            layer_decay: None,
            mixup: 0.8,
            cutmix: 1.0,
        }
    }

    fn features(&self) -> Features {
        Features {
            frames_augment: true,
            mixing: true,
            lr_batch_base: Some(512),
            epoch_schedule: true,
            timm_groups: true,
            ra_sampler: true,
            model_ema: true,
            ..Features::default()
        }
    }

    fn preset_names(&self) -> &'static [&'static str] {
        PRESETS
    }

    /// The reference's registered models (`models/vit_llama.py`), each with DeiT's recipe.
    fn preset(&self, name: &str) -> Option<Preset> {
        let i = PRESETS.iter().position(|p| *p == name)?;
        let model = ImageVitConfig::preset(["vit-t", "vit-t/32", "vit-s", "vit-b", "vit-b/32"][i])?;
        Some(Preset {
            name: PRESETS[i],
            defaults: self.defaults(),
            model,
            repeated_aug: crate::train::recipe::RA_REPEATS,
        })
    }

    /// DeiT's `--aa rand-m9-mstd0.5-inc1` (two ops), bicubic, RandomResizedCrop scale
    /// [0.08, 1] ratio [3/4, 4/3], `--reprob 0.25`.
    fn default_augment(&self) -> TrainAugment {
        TrainAugment {
            rand_augment: RandAugmentSpec::parse("rand-m9-mstd0.5-inc1").ok(),
            ratio: [0.75, 4.0 / 3.0],
            ..TrainAugment::default()
        }
    }
}

impl TaskInfo for Image {
    fn name(&self) -> &'static str {
        "image"
    }
    fn title(&self) -> &'static str {
        "Image"
    }
    fn data_kind(&self) -> &'static str {
        KIND
    }
    fn model_title(&self) -> &'static str {
        "image ViT (image.tokens)"
    }
    /// The reference's DeiT `main.py` saves `best_model.pth` whenever val top-1 beats
    /// `max_accuracy` and prints `Max accuracy`, the number DeiT-style tables report; its
    /// `checkpoint.pth` is the last epoch. The paper's rows are the best epoch's.
    fn reported(&self) -> Reported {
        Reported {
            checkpoint: Checkpoint::Best,
            why: "DeiT main.py's best_model.pth / `Max accuracy`: the epoch of best val top-1",
        }
    }
    fn eval_split(&self) -> &'static str {
        "val"
    }
    fn is_classification(&self) -> bool {
        true
    }
    /// DeiT's and timm's ViT checkpoints, and the reference's ViT-LLaMA ones.
    fn init_family(&self) -> Option<&'static crate::train::init::Family> {
        Some(&crate::train::init::DEIT)
    }
    /// 1: the training view in timm's order, decoded as PIL decodes (`ops::image_aug`).
    /// 2: `init` from a timm / DeiT / ViT-LLaMA checkpoint loads its fused `attn.qkv.bias` as
    /// the q and v biases (before, they were ignored and kept lm4ve's init).
    fn code_version(&self) -> u32 {
        2
    }
    fn benchmark_classes(&self) -> (usize, &'static str) {
        (1000, "ImageNet-1k")
    }
    fn check_eval(&self, p: &EvalParams) -> Result<(), ParamIssue> {
        p.refuse_vote()?;
        p.check_test_views(false)
    }
    fn metrics_summary(&self, m: &serde_json::Value) -> Option<String> {
        classify::summary(m)
    }
}

impl Task for Image {
    type Config = ImageVitConfig;
    /// The images' side S.
    type Shape = usize;
    type Data = ImageSet;
    type Batch = ImageBatch;
    type Model = ImageVit;
    type Output = Tensor;
    type Totals = ClassTotals;

    fn load(&self, up: &Upstream, split: &str) -> Result<ImageSet> {
        ImageSet::load(up, split)
    }
    fn len(&self, data: &ImageSet) -> usize {
        data.len()
    }
    fn shape_of(&self, data: &ImageSet) -> usize {
        data.side
    }
    fn prepare_train(
        &self,
        data: &mut ImageSet,
        p: &TrainParams,
        _cfg: &ImageVitConfig,
    ) -> Result<()> {
        data.augment = p.augment.clone();
        data.mix = Some(MixSpec {
            mixup_alpha: p.mixup,
            cutmix_alpha: p.cutmix,
            switch_prob: p.mixup_switch_prob,
            smoothing: p.label_smoothing,
        });
        Ok(())
    }
    fn train_batch(
        &self,
        data: &ImageSet,
        idx: &[usize],
        rows: std::ops::Range<usize>,
        aug: &mut ChaCha8Rng,
        device: &Device,
    ) -> Result<ImageBatch> {
        let (images, l, soft) = data.train_batch(idx, rows, aug, device)?;
        Ok(ImageBatch {
            images,
            target: match soft {
                Some(soft) => Target::Soft { labels: l, soft },
                None => Target::Labels(l),
            },
        })
    }
    fn eval_batch(
        &self,
        data: &ImageSet,
        idx: &[usize],
        device: &Device,
    ) -> Result<(ImageBatch, usize)> {
        let (images, l) = data.eval_batch(idx, device)?;
        Ok((
            ImageBatch {
                images,
                target: Target::Labels(l),
            },
            1,
        ))
    }

    fn build_model(
        &self,
        cfg: &ImageVitConfig,
        side: usize,
        classes: usize,
        block: Option<(BlockCore, BlockMode)>,
        vb: VarBuilder,
    ) -> Result<ImageVit> {
        Ok(ImageVit::new(cfg, side, classes, block, vb)?)
    }
    /// timm's `init_weights` as the reference's `ViTLLaMA` runs it
    /// (`models::init_rules::timm_vit`): Linear weights trunc-normal 0.02 (the adapters too,
    /// built before it runs) with zero biases, the position embedding trunc-normal 0.02, the
    /// class token normal 1e-6, the Conv2d patch embedding PyTorch's default.
    fn init_weights(&self, varmap: &VarMap, seed: u64) -> Result<()> {
        Ok(init_by(varmap, seed, timm_vit)?)
    }
    fn configure(&self, model: &mut ImageVit, exec: &Execution) {
        model.configure(exec)
    }
    fn forward(
        &self,
        model: &ImageVit,
        b: &ImageBatch,
        rng: Option<&mut ChaCha8Rng>,
    ) -> Result<Tensor> {
        Ok(model.forward(&b.images, rng)?)
    }

    fn loss(&self, out: &Tensor, b: &ImageBatch, label_smoothing: f64) -> Result<(Tensor, u64)> {
        classify::loss(out, &b.target, label_smoothing)
    }
    fn new_totals(&self, _model: &ImageVit, classes: usize) -> ClassTotals {
        ClassTotals::new(classes)
    }
    fn score(
        &self,
        totals: &mut ClassTotals,
        out: Tensor,
        b: ImageBatch,
        views: usize,
    ) -> Result<()> {
        totals.add(&out, b.target.labels(), views, false)
    }
    fn prediction_rows(&self, out: &Tensor, b: &ImageBatch, views: usize) -> Result<Vec<Vec<f64>>> {
        crate::train::predictions::rows::classification(out, b.target.labels(), views, false)
    }
    fn predictions_file(
        &self,
        up: &Upstream,
        split: &str,
        _data: &ImageSet,
        rows: &[Vec<f64>],
    ) -> Result<Option<Vec<u8>>> {
        classify::predictions_file(up, split, rows)
    }

    fn shape_of_params(&self, config: &PipelineConfig, sc: &StageConfig) -> Result<usize> {
        // The data stage's `eval_size` (DeiT's `--input-size`, 224 when unset).
        let side = sc
            .params
            .get("eval_size")
            .and_then(|v| v.as_integer())
            .unwrap_or(224);
        let _ = config;
        usize::try_from(side).map_err(|_| anyhow::anyhow!("eval_size = {side} is not a size"))
    }
    fn tokens(&self, cfg: &ImageVitConfig, side: usize) -> usize {
        (side / cfg.patch.max(1)).pow(2) + 1
    }
    fn width(&self, cfg: &ImageVitConfig) -> usize {
        cfg.embed_dim
    }
    fn encoder_cost(
        &self,
        c: &ImageVitConfig,
        side: usize,
        b: f64,
        classes: f64,
        exec: Exec,
    ) -> Cost {
        let mut cost = Cost::default();
        let p = c.patch.max(1);
        let t = ((side / p).pow(2) + 1) as f64;
        let d = c.embed_dim as f64;
        cost.trained += 2.0 * b * (t - 1.0) * (p * p * 3) as f64 * d + 2.0 * b * d * classes;
        cost.act_bytes += F32 * (3.0 * b * t * d + b * (2.0 * d + classes));
        for i in 0..c.depth {
            let drop = drop_path_rate(c.drop_path, i, c.depth) > 0.0;
            cost.add(vit_block(b, t, d, c.heads as f64, c.mlp_ratio, drop, exec));
        }
        cost
    }

    fn bench_models(&self) -> &'static [BenchSize] {
        // DeiT ViT-S/16 at 224: 197 tokens; DeiT does not clip.
        &[BenchSize {
            name: "deit-s",
            default_batch: 64,
            grad_clip: 0.0,
        }]
    }
    fn bench_setup(
        &self,
        _name: &str,
        tiny: bool,
        b: usize,
        device: &Device,
    ) -> Result<BenchSetup<Self>> {
        use crate::train::bench_inputs::{labels, randn};
        let (cfg, side) = if tiny {
            (
                ImageVitConfig {
                    patch: 8,
                    embed_dim: 32,
                    depth: 2,
                    heads: 4,
                    ..Default::default()
                },
                32,
            )
        } else {
            (ImageVitConfig::default(), 224)
        };
        let classes = 1000;
        Ok(BenchSetup {
            sizes: serde_json::json!({
                "image": side, "patch": cfg.patch, "embed_dim": cfg.embed_dim,
                "depth": cfg.depth, "heads": cfg.heads, "classes": classes,
            }),
            batch: ImageBatch {
                images: randn(&[b, side, side, 3], device)?,
                target: Target::Labels(labels(b, classes, device)?),
            },
            shape: side,
            classes,
            config: cfg,
        })
    }
}
