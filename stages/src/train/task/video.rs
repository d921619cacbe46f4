//! Video (PAPER.md §4): the VideoMAE ViT with the frozen block on `ssv2.tokens`, SSv2's recipe
//! (LM4VisualEncoding `video_understanding` on VideoMAE's `run_class_finetuning.py`): the
//! frames layout's augmentation, Mixup/CutMix, layer-wise lr decay, the multi-view test.

use super::classify::{self, ClassTotals, Target};
use super::{BenchSetup, BenchSize, Checkpoint, Reported, Task, TaskInfo};
use crate::train::block::{BlockCore, BlockMode};
use crate::train::data::video::VideoSet;
use crate::train::init::{Family, VIDEOMAE};
use crate::train::models::init_rules::{init_by, videomae};
use crate::train::models::layers::{drop_path_rate, Execution};
use crate::train::models::video_vit::{VideoVit, VideoVitConfig};
use crate::train::ops::mixup::MixSpec;
use crate::train::ops::video_aug::TrainAugment;
use crate::train::params::{EvalParams, ParamIssue, TrainParams};
use crate::train::plan::cost::{vit_block, Cost, Exec, F32};
use crate::train::recipe::{Features, Preset, TaskDefaults, TaskRecipe};
use anyhow::Result;
use candle_core::{Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use lm4ve_pipeline::{PipelineConfig, StageConfig, Upstream};
use rand_chacha::ChaCha8Rng;

/// The video classification task.
pub struct Video;

/// Tubelet tokens per clip and the values in each.
#[derive(Debug, Clone, Copy)]
pub struct VideoShape {
    pub tokens: usize,
    pub token_dim: usize,
}

/// A batch: tubelets [B · views, T, D] and the targets (soft when mixed).
pub struct VideoBatch {
    pub tubelets: Tensor,
    pub target: Target,
}

const PRESET_NAMES: &[&str] = &["videomae_ssv2_vit_s", "videomae_ssv2_vit_b"];

impl TaskRecipe for Video {
    // LM4VisualEncoding `video_understanding/scripts/ssv2_vits_llama.sh` on VideoMAE's
    // run_class_finetuning.py: 40 epochs (ViT-B: 30), 5 warm-up, lr 1e-3, min 1e-6, wd 0.05,
    // no clipping, smoothing 0.1, batch 6 per GPU; the adapters and the no-decay parameters
    // train at the full lr.
    fn defaults(&self) -> TaskDefaults {
        TaskDefaults {
            epochs: 40,
            warmup_epochs: 5,
            batch_size: 6,
            lr: 1e-3,
            min_lr: 1e-6,
            weight_decay: 0.05,
            grad_clip: 0.0,
            label_smoothing: 0.1,
            adapter_lr_scale: 1.0,
            no_decay_lr_scale: 1.0,
            epochs_per_checkpoint: 5,
            // `--layer_decay 0.7` (ViT-S; VideoMAE's ViT-B scripts use 0.75).
            layer_decay: Some(0.7),
            // run_class_finetuning.py's defaults: `--mixup 0.8 --cutmix 1.0`.
            mixup: 0.8,
            cutmix: 1.0,
        }
    }

    fn features(&self) -> Features {
        Features {
            resample: false,
            frames_augment: true,
            mixing: true,
            layer_decay: true,
            lr_per_256: true,
            ..Features::default()
        }
    }

    fn preset_names(&self) -> &'static [&'static str] {
        PRESET_NAMES
    }

    /// - `videomae_ssv2_vit_s`: LM4VisualEncoding `video_understanding/scripts/
    ///   ssv2_vits_llama.sh`: VideoMAE ViT-S on SSv2, 4 GPUs × 6 clips, `--num_sample 2`, lr
    ///   1e-3 per 256, layer decay 0.7, 40 epochs.
    /// - `videomae_ssv2_vit_b`: `ssv2_vitb_llama.sh`: ViT-B, 4 GPUs × 3 clips, lr 5e-4 per
    ///   256, layer decay 0.75 (run_class_finetuning.py's default; the script does not set
    ///   it), 30 epochs.
    ///
    /// Both sample each clip twice per batch (`--num_sample 2`).
    fn preset(&self, name: &str) -> Option<Preset> {
        let video = self.defaults();
        let (name, defaults, model) = match name {
            "videomae_ssv2_vit_s" => (
                PRESET_NAMES[0],
                TaskDefaults {
                    batch_size: 24,
                    ..video
                },
                // VideoMAE `vit_small_patch16_224`.
                serde_json::json!({ "embed_dim": 384, "depth": 12, "heads": 6 }),
            ),
            "videomae_ssv2_vit_b" => (
                PRESET_NAMES[1],
                TaskDefaults {
                    epochs: 30,
                    batch_size: 12,
                    lr: 5e-4,
                    layer_decay: Some(0.75),
                    ..video
                },
                // `vit_base_patch16_224`.
                serde_json::json!({ "embed_dim": 768, "depth": 12, "heads": 12 }),
            ),
            _ => return None,
        };
        Some(Preset {
            name,
            defaults,
            model,
            repeated_aug: 2,
        })
    }
}

/// VideoMAE's `--init_scale` (`run_class_finetuning.py` default; the SSv2 scripts keep it):
/// the head starts at trunc-normal 0.02 times this.
pub const VIDEOMAE_INIT_SCALE: f32 = 0.001;

impl TaskInfo for Video {
    fn name(&self) -> &'static str {
        "video"
    }
    fn title(&self) -> &'static str {
        "Video"
    }
    fn data_kind(&self) -> &'static str {
        crate::ssv2::stage::KIND
    }
    fn model_title(&self) -> &'static str {
        "video ViT (ssv2.tokens)"
    }
    /// VideoMAE's `run_class_finetuning.py` runs `final_test` (2 clips x 3 crops) on the
    /// model as training left it, after the last epoch; its `checkpoint-best` is only the
    /// one-view validation's.
    fn reported(&self) -> Reported {
        Reported {
            checkpoint: Checkpoint::Last,
            why: "VideoMAE's final_test on the last epoch's model (2 clips x 3 crops)",
        }
    }
    fn eval_split(&self) -> &'static str {
        "validation"
    }
    fn is_classification(&self) -> bool {
        true
    }
    fn benchmark_classes(&self) -> (usize, &'static str) {
        (174, "Something-Something-v2")
    }
    fn init_family(&self) -> Option<&'static Family> {
        Some(&VIDEOMAE)
    }
    fn check_eval(&self, p: &EvalParams) -> Result<(), ParamIssue> {
        p.refuse_vote()?;
        p.check_test_views(true)
    }
    fn metrics_summary(&self, m: &serde_json::Value) -> Option<String> {
        classify::summary(m)
    }
    fn eval_key_params(&self, p: &EvalParams, key: &mut serde_json::Value) {
        // Only the frames layout uses them; keyed for every video eval (cheap to redo).
        key["test_views"] = serde_json::json!(p.test_views());
    }
}

impl Task for Video {
    type Config = VideoVitConfig;
    type Shape = VideoShape;
    type Data = VideoSet;
    type Batch = VideoBatch;
    type Model = VideoVit;
    type Output = Tensor;
    type Totals = ClassTotals;

    fn load(&self, up: &Upstream, split: &str) -> Result<VideoSet> {
        VideoSet::load(up, split)
    }
    fn len(&self, data: &VideoSet) -> usize {
        data.len()
    }
    fn shape_of(&self, data: &VideoSet) -> VideoShape {
        VideoShape {
            tokens: data.tokens,
            token_dim: data.token_dim,
        }
    }
    fn prepare_train(
        &self,
        v: &mut VideoSet,
        p: &TrainParams,
        _cfg: &VideoVitConfig,
    ) -> Result<()> {
        if let Some(crop) = v.frames_crop() {
            // The output side is the data stage's crop (the model's input), whatever the
            // table says.
            v.augment = p.augment.clone().map(|a| TrainAugment { crop, ..a });
            v.repeats = p.repeated_aug;
        }
        v.mix = Some(MixSpec {
            mixup_alpha: p.mixup,
            cutmix_alpha: p.cutmix,
            switch_prob: p.mixup_switch_prob,
            smoothing: p.label_smoothing,
        });
        Ok(())
    }
    fn prepare_eval(&self, v: &mut VideoSet, p: &EvalParams) {
        let (t, s) = p.test_views();
        v.set_test_views(t, s);
    }
    fn train_batch(
        &self,
        data: &VideoSet,
        idx: &[usize],
        rows: std::ops::Range<usize>,
        aug: &mut ChaCha8Rng,
        device: &Device,
    ) -> Result<VideoBatch> {
        let (x, l, soft) = data.train_batch(idx, rows, aug, device)?;
        let target = match soft {
            Some(soft) => Target::Soft { labels: l, soft },
            None => Target::Labels(l),
        };
        Ok(VideoBatch {
            tubelets: x,
            target,
        })
    }
    fn eval_batch(
        &self,
        data: &VideoSet,
        idx: &[usize],
        device: &Device,
    ) -> Result<(VideoBatch, usize)> {
        let (x, l) = data.eval_batch(idx, device)?;
        Ok((
            VideoBatch {
                tubelets: x,
                target: Target::Labels(l),
            },
            data.views,
        ))
    }

    /// VideoMAE's `_init_weights` and `init_scale` (`models::init_rules::videomae`).
    fn init_weights(&self, varmap: &VarMap, seed: u64) -> Result<()> {
        Ok(init_by(varmap, seed, videomae(VIDEOMAE_INIT_SCALE))?)
    }

    fn build_model(
        &self,
        cfg: &VideoVitConfig,
        shape: VideoShape,
        classes: usize,
        block: Option<(BlockCore, BlockMode)>,
        vb: VarBuilder,
    ) -> Result<VideoVit> {
        Ok(VideoVit::new(
            cfg,
            shape.tokens,
            shape.token_dim,
            classes,
            block,
            vb,
        )?)
    }
    fn configure(&self, model: &mut VideoVit, exec: &Execution) {
        model.configure(exec)
    }
    fn forward(
        &self,
        model: &VideoVit,
        b: &VideoBatch,
        rng: Option<&mut ChaCha8Rng>,
    ) -> Result<Tensor> {
        Ok(model.forward(&b.tubelets, rng)?)
    }
    fn layer_decay_depth(&self, cfg: &VideoVitConfig) -> Option<usize> {
        Some(cfg.depth)
    }

    fn loss(&self, out: &Tensor, b: &VideoBatch, label_smoothing: f64) -> Result<(Tensor, u64)> {
        classify::loss(out, &b.target, label_smoothing)
    }
    fn new_totals(&self, _model: &VideoVit, classes: usize) -> ClassTotals {
        ClassTotals::new(classes)
    }
    fn score(
        &self,
        totals: &mut ClassTotals,
        out: Tensor,
        b: VideoBatch,
        views: usize,
    ) -> Result<()> {
        // Views average probabilities.
        totals.add(&out, b.target.labels(), views, false)
    }
    fn prediction_rows(&self, out: &Tensor, b: &VideoBatch, views: usize) -> Result<Vec<Vec<f64>>> {
        crate::train::predictions::rows::classification(out, b.target.labels(), views, false)
    }
    fn predictions_file(
        &self,
        up: &Upstream,
        split: &str,
        _data: &VideoSet,
        rows: &[Vec<f64>],
    ) -> Result<Option<Vec<u8>>> {
        classify::predictions_file(up, split, rows)
    }
    fn annotate_eval(&self, v: &VideoSet, p: &EvalParams, m: &mut serde_json::Value) {
        if v.is_frames_layout() {
            m["test_views"] = serde_json::json!(p.test_views());
        }
    }

    fn shape_of_params(&self, config: &PipelineConfig, sc: &StageConfig) -> Result<VideoShape> {
        let p: crate::ssv2::stage::Ssv2Params = config.typed_params(sc)?;
        anyhow::ensure!(
            p.tubelet_frames > 0 && p.patch > 0,
            "tubelet_frames and patch must be positive"
        );
        let side = p.crop / p.patch;
        Ok(VideoShape {
            tokens: (p.num_frames / p.tubelet_frames) * side * side,
            token_dim: p.tubelet_frames * p.patch * p.patch * 3,
        })
    }
    fn tokens(&self, _cfg: &VideoVitConfig, shape: VideoShape) -> usize {
        shape.tokens
    }
    fn width(&self, cfg: &VideoVitConfig) -> usize {
        cfg.embed_dim
    }
    fn encoder_cost(
        &self,
        c: &VideoVitConfig,
        shape: VideoShape,
        b: f64,
        classes: f64,
        exec: Exec,
    ) -> Cost {
        let mut cost = Cost::default();
        let (t, d) = (shape.tokens as f64, c.embed_dim as f64);
        cost.trained += 2.0 * b * t * shape.token_dim as f64 * d + 2.0 * b * d * classes;
        cost.act_bytes += F32 * (3.0 * b * t * d + b * (4.0 * d + classes));
        for i in 0..c.depth {
            let drop = drop_path_rate(c.drop_path, i, c.depth) > 0.0;
            cost.add(vit_block(b, t, d, c.heads as f64, c.mlp_ratio, drop, exec));
        }
        cost
    }

    fn bench_models(&self) -> &'static [BenchSize] {
        // VideoMAE ViT-S / ViT-B on SSv2: 16×224×224 as 1568 tubelets of 2×16×16×3, 174
        // classes; VideoMAE does not clip gradients.
        &[
            BenchSize {
                name: "vit-s",
                default_batch: 8,
                grad_clip: 0.0,
            },
            BenchSize {
                name: "vit-b",
                default_batch: 8,
                grad_clip: 0.0,
            },
        ]
    }
    fn bench_setup(
        &self,
        name: &str,
        tiny: bool,
        b: usize,
        device: &Device,
    ) -> Result<BenchSetup<Self>> {
        let (cfg, tokens, token_dim) = if tiny {
            let c = VideoVitConfig {
                embed_dim: 32,
                depth: 2,
                heads: 4,
                ..Default::default()
            };
            (c, 16, 24)
        } else {
            let c = match name {
                "vit-b" => VideoVitConfig {
                    embed_dim: 768,
                    heads: 12,
                    ..Default::default()
                },
                _ => VideoVitConfig::default(),
            };
            // 16 frames of 224×224 in tubelets of 2×16×16: 8·14·14 tokens of 2·16·16·3.
            (c, 8 * 14 * 14, 2 * 16 * 16 * 3)
        };
        let classes = 174;
        use crate::train::bench_inputs::{labels, randn};
        Ok(BenchSetup {
            sizes: serde_json::json!({
                "tokens": tokens, "token_dim": token_dim, "embed_dim": cfg.embed_dim,
                "depth": cfg.depth, "heads": cfg.heads, "classes": classes,
            }),
            batch: VideoBatch {
                tubelets: randn(&[b, tokens, token_dim], device)?,
                target: Target::Labels(labels(b, classes, device)?),
            },
            shape: VideoShape { tokens, token_dim },
            classes,
            config: cfg,
        })
    }
}
