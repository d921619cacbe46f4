//! What differs per task, behind one trait. A task is the kind of data a `train` stage reads
//! (its `data` stage's kind) and everything that follows from it: its recipe's defaults and
//! features, the model and its config, the data set and its batches, the loss, the held-out
//! metrics (and the sums an all-reduce adds up), the dry run's shapes and costs, the log line
//! and the plots.
//!
//! - [`TaskInfo`]: what the config layer asks without types (names, split, recipe, checks).
//! - [`Task`]: the typed part, with the task's own config, data, batch, model and output
//!   types. The trainer, the eval stage, the dry run and the benches are generic over it.
//!
//! One file per task: `pointcloud.rs` (PointBERT on `pc.tokens`, PAPER.md §3), `video.rs` (the
//! VideoMAE ViT on `ssv2.tokens`, §4), `forecast/` (VectorNet on `av.tokens`, §5), with what
//! the two classification tasks share in `classify.rs`. `train::registry` maps a data kind to
//! its task; that is the one place that names them all.

pub mod classify;
pub mod forecast;
pub mod image;
pub mod pointcloud;
pub mod video;

use super::block::{BlockCore, BlockMode};
use super::init::Family;
use super::models::layers::Execution;
use super::params::{EvalParams, ParamIssue, TrainParams};
use super::plan::cost::{Cost, Exec};
use super::recipe::TaskRecipe;
use anyhow::Result;
use candle_core::{Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use lm4ve_pipeline::{PipelineConfig, StageConfig, Upstream};
use rand_chacha::ChaCha8Rng;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// What the config layer asks of a task, without its types.
pub trait TaskInfo: TaskRecipe + Send + Sync {
    /// The manifest's `task` value (`pointcloud`, `video`, `forecast`).
    fn name(&self) -> &'static str;
    /// The task in messages (`PointCloud`, `Video`, `Forecast`).
    fn title(&self) -> &'static str;
    /// The kind of the data stage whose shards it trains on.
    fn data_kind(&self) -> &'static str;
    /// The model in messages, e.g. `PointBERT (pc.tokens)`.
    fn model_title(&self) -> &'static str;
    /// The held-out split (ScanObjectNN `test`, SSv2 `validation`, Argoverse `val`).
    fn eval_split(&self) -> &'static str;
    /// Classification tasks have labels and `num_classes`.
    fn is_classification(&self) -> bool;
    /// The class count of the benchmark its data comes from, and its name (a dry run reads
    /// no labels).
    fn benchmark_classes(&self) -> (usize, &'static str);
    /// This task's own code version, bumped when its data path or model changes what a
    /// training run computes: a `train` key holds it as `task_version` when it is not 0, so
    /// one task's change retrains that task only (`TRAIN_VERSION` is every task's).
    fn code_version(&self) -> u32 {
        0
    }
    /// The family of pretrained checkpoints `init` reads for this model; None: no `init`.
    fn init_family(&self) -> Option<&'static Family> {
        None
    }
    /// The eval stage's task-specific params (`vote`, `test_clips`, …): refused where the
    /// task has no use for them.
    fn check_eval(&self, p: &EvalParams) -> Result<(), ParamIssue>;
    /// What the eval params add to the eval stage's key beyond the split and batch size.
    fn eval_key_params(&self, _p: &EvalParams, _key: &mut serde_json::Value) {}
    /// Which of the training run's weights the paper's number comes from (the reference's
    /// protocol): the `eval` stage scores both, and its top-level metrics are this one's.
    fn reported(&self) -> Reported {
        Reported {
            checkpoint: Checkpoint::Last,
            why: "the weights at the end of training",
        }
    }
    /// One line for `pipeline show` of an eval artifact's metrics, when they are this task's
    /// kind of metrics.
    fn metrics_summary(&self, _metrics: &serde_json::Value) -> Option<String> {
        None
    }
}

/// The weights a `train` artifact keeps: the last epoch's (`model.safetensors`) and the
/// best epoch's by the held-out score the trainer records each epoch
/// (`model-best.safetensors`), and with `model_ema` the model's moving average
/// (`model-ema.safetensors`; scored, never the reported one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Checkpoint {
    Best,
    Last,
    Ema,
}

impl Checkpoint {
    pub fn name(self) -> &'static str {
        match self {
            Checkpoint::Best => "best",
            Checkpoint::Last => "last",
            Checkpoint::Ema => "ema",
        }
    }
}

/// The checkpoint a task's paper number comes from, and where the reference says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reported {
    pub checkpoint: Checkpoint,
    pub why: &'static str,
}

/// A task with its types: the generic trainer, eval, dry run and benches run through this.
pub trait Task: TaskInfo + Sized + 'static {
    /// The `[model]` table, typed, defaults filled in (it enters the key as serialized).
    type Config: Serialize + DeserializeOwned + Clone + Send + Sync;
    /// The input sizes the data decides (from the shards, or in a dry run from the data
    /// stage's params).
    type Shape: Copy;
    /// One split of the data stage's shards.
    type Data: Sync;
    /// The inputs and targets of one batch.
    type Batch: Send;
    type Model;
    type Output;
    /// Held-out metrics accumulated over batches.
    type Totals: Totals;

    // ------------------------------------------------------------ data

    fn load(&self, up: &Upstream, split: &str) -> Result<Self::Data>;
    fn len(&self, data: &Self::Data) -> usize;
    fn shape_of(&self, data: &Self::Data) -> Self::Shape;
    /// The training set as the recipe wants it (augmentation, views, loss options).
    fn prepare_train(
        &self,
        _data: &mut Self::Data,
        _p: &TrainParams,
        _cfg: &Self::Config,
    ) -> Result<()> {
        Ok(())
    }
    /// The test set as the eval stage's params want it (views).
    fn prepare_eval(&self, _data: &mut Self::Data, _p: &EvalParams) {}
    /// Augmented inputs and targets for the samples at positions `rows` of the batch `idx`
    /// (all of it in a job of one; a rank's share in a data-parallel job). A sample's
    /// augmentation depends on the step's generator and its place in the batch, not on
    /// `rows`.
    fn train_batch(
        &self,
        data: &Self::Data,
        idx: &[usize],
        rows: std::ops::Range<usize>,
        aug: &mut ChaCha8Rng,
        device: &Device,
    ) -> Result<Self::Batch>;
    /// Test inputs and targets, and the views per sample (inputs hold B · views rows,
    /// sample-major).
    fn eval_batch(
        &self,
        data: &Self::Data,
        idx: &[usize],
        device: &Device,
    ) -> Result<(Self::Batch, usize)>;

    // ------------------------------------------------------------ model

    fn build_model(
        &self,
        cfg: &Self::Config,
        shape: Self::Shape,
        classes: usize,
        block: Option<(BlockCore, BlockMode)>,
        vb: VarBuilder,
    ) -> Result<Self::Model>;
    /// The model's own initialisation of its weights (trunc-normal by default).
    fn init_weights(&self, varmap: &VarMap, seed: u64) -> Result<()> {
        Ok(super::models::layers::init_vars(varmap, seed)?)
    }
    /// Sets how attention and the encoder blocks run (values unchanged).
    fn configure(&self, model: &mut Self::Model, exec: &Execution);
    /// `rng` Some = training.
    fn forward(
        &self,
        model: &Self::Model,
        batch: &Self::Batch,
        rng: Option<&mut ChaCha8Rng>,
    ) -> Result<Self::Output>;
    /// The depth VideoMAE's layer-wise lr decay counts (None: the model has no ViT layers
    /// to decay).
    fn layer_decay_depth(&self, _cfg: &Self::Config) -> Option<usize> {
        None
    }

    // ------------------------------------------------------------ loss and metrics

    /// The training loss of a batch and how many of its samples the model got right.
    fn loss(
        &self,
        out: &Self::Output,
        batch: &Self::Batch,
        label_smoothing: f64,
    ) -> Result<(Tensor, u64)>;
    fn new_totals(&self, model: &Self::Model, classes: usize) -> Self::Totals;
    /// Adds a held-out batch (`views` views per sample) to the totals.
    fn score(
        &self,
        totals: &mut Self::Totals,
        out: Self::Output,
        batch: Self::Batch,
        views: usize,
    ) -> Result<()>;
    /// Test-time voting, when the eval params ask for it: sets the data up for it and
    /// returns the number of votes (the eval stage then scores again, `vote_*`).
    fn begin_vote(&self, _data: &mut Self::Data, _p: &EvalParams, _seed: u64) -> Option<usize> {
        None
    }
    /// What the eval's metrics.json says about how it was run, beyond the metrics.
    fn annotate_eval(&self, _data: &Self::Data, _p: &EvalParams, _m: &mut serde_json::Value) {}

    // ------------------------------------------------------------ predictions

    /// A held-out batch's per-sample predictions as flat rows of a fixed width
    /// (`train::predictions::rows`), taken before [`Task::score`]; empty: the task writes no
    /// predictions file.
    fn prediction_rows(
        &self,
        _out: &Self::Output,
        _batch: &Self::Batch,
        _views: usize,
    ) -> Result<Vec<Vec<f64>>> {
        Ok(Vec::new())
    }
    /// The predictions file (parquet bytes) of the split's flat rows, in the split's order;
    /// None: the task writes none.
    fn predictions_file(
        &self,
        _up: &Upstream,
        _split: &str,
        _data: &Self::Data,
        _rows: &[Vec<f64>],
    ) -> Result<Option<Vec<u8>>> {
        Ok(None)
    }

    // ------------------------------------------------------------ log and plots

    /// The held-out detail of an epoch kept in its record (None: the score says it all).
    fn epoch_detail(&self, _held: &Evaluation) -> Option<serde_json::Value> {
        None
    }
    /// The log line of an epoch.
    fn epoch_log(&self, stage: &str, m: &EpochMetrics) -> String {
        format!(
            "{stage}: epoch {} loss {:.4} train acc {:.3} test acc {:.3} ({:.1} s)",
            m.epoch + 1,
            m.loss,
            m.train_acc,
            m.test_acc,
            m.seconds
        )
    }
    /// The names of the training and the held-out fractions in `curves.png`.
    fn curve_names(&self) -> (&'static str, &'static str) {
        ("train accuracy", "held-out top-1")
    }
    /// Plots beyond `curves.png`, as (file name, PNG bytes); each name must be one the
    /// train stage declares ([`TaskInfo`] users list them through `extra_files`).
    fn extra_plots(
        &self,
        _stage: &str,
        _history: &[EpochMetrics],
    ) -> Result<Vec<(&'static str, Vec<u8>)>> {
        Ok(Vec::new())
    }
    /// The files [`Task::extra_plots`] may write.
    fn extra_files(&self) -> &'static [&'static str] {
        &[]
    }

    // ------------------------------------------------------------ dry run

    /// The input sizes from the data stage's params (no shard is read).
    fn shape_of_params(&self, config: &PipelineConfig, data: &StageConfig) -> Result<Self::Shape>;
    /// Tokens per sample through the encoder trunk and the block.
    fn tokens(&self, cfg: &Self::Config, shape: Self::Shape) -> usize;
    /// The encoder's width (the adapters map it to the block's).
    fn width(&self, cfg: &Self::Config) -> usize;
    /// The encoder's and head's FLOPs and activations of a training step of `batch` rows.
    fn encoder_cost(
        &self,
        cfg: &Self::Config,
        shape: Self::Shape,
        batch: f64,
        classes: f64,
        exec: Exec,
    ) -> Cost;

    // ------------------------------------------------------------ benches

    /// The models `lm4ve bench-train` steps for this task: (name, default batch, the
    /// trainer's gradient clip).
    fn bench_models(&self) -> &'static [BenchSize] {
        &[]
    }
    /// The bench model `name` at the paper's size (or tiny), and one batch of random inputs.
    fn bench_setup(
        &self,
        _name: &str,
        _tiny: bool,
        _batch: usize,
        _device: &Device,
    ) -> Result<BenchSetup<Self>> {
        anyhow::bail!("the {} task has no benchmark models", self.name())
    }
}

/// A model `lm4ve bench-train` can step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BenchSize {
    pub name: &'static str,
    /// The per-GPU batch the benchmarks use by default.
    pub default_batch: usize,
    /// The trainer's gradient clipping for the task.
    pub grad_clip: f64,
}

/// A bench model's config and input sizes, one batch of random inputs and targets, the
/// class count, and the sizes to report.
pub struct BenchSetup<T: Task> {
    pub config: T::Config,
    pub shape: T::Shape,
    pub classes: usize,
    pub batch: T::Batch,
    pub sizes: serde_json::Value,
}

/// Held-out metric totals that a data-parallel job sums over its ranks.
pub trait Totals {
    /// The counts as numbers to sum.
    fn to_sums(&self) -> Vec<f64>;
    /// Totals from summed numbers (`to_sums`' layout).
    fn set_from_sums(&mut self, sums: &[f64]);
    /// The metrics of the totals.
    fn evaluation(&self) -> Evaluation;
}

/// Held-out metrics: `score` is one number in [0, 1], higher is better (top-1 accuracy;
/// 1 − miss rate at K modes for forecasts), for logs and curves; `metrics` is everything, as
/// `eval` writes it to metrics.json.
#[derive(Debug, Clone)]
pub struct Evaluation {
    pub score: f64,
    pub metrics: serde_json::Value,
}

/// The best epoch by the held-out score, the first of equal ones (the reference's
/// `better_than`: strictly greater replaces). A NaN score is never the best.
pub fn best_epoch<'a>(epochs: impl Iterator<Item = &'a EpochMetrics>) -> Option<&'a EpochMetrics> {
    epochs
        .filter(|m| !m.test_acc.is_nan())
        .fold(None, |b: Option<&EpochMetrics>, m| match b {
            Some(b) if b.test_acc >= m.test_acc => Some(b),
            _ => Some(m),
        })
}

/// What one epoch measured: a line of `metrics.jsonl` and of the unit records.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EpochMetrics {
    pub epoch: usize,
    pub step: u64,
    pub lr: f64,
    pub loss: f64,
    /// Fraction right on the training batches: classes, or for forecasts hits (best-of-K
    /// final error within 2 m).
    pub train_acc: f64,
    /// The held-out score of [`Evaluation`] (top-1, or 1 − miss rate).
    pub test_acc: f64,
    /// The task's held-out detail ([`Task::epoch_detail`]). Named `forecast` in the records
    /// because forecasting was the first task to keep one (existing records stay readable).
    #[serde(rename = "forecast", default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<serde_json::Value>,
    /// Wall-clock time: logged, never stored (artifacts are a pure function of their key;
    /// the run's time is in its run record).
    #[serde(skip)]
    pub seconds: f64,
}
