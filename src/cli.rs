//! Command-line grammar (clap derive).

use clap::{Args, Parser, Subcommand};
use lm4ve_pipeline::Part;
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "lm4ve",
    version,
    about = "Cached token shards from research datasets, and visual encoders with a frozen LLM block"
)]
pub struct Cli {
    /// Pipeline config (paths inside it are relative to it).
    #[arg(
        short,
        long,
        global = true,
        env = "LM4VE_CONFIG",
        default_value = "configs/pipeline.toml"
    )]
    pub config: PathBuf,
    /// Cache directory (overrides the config's [cache] dir).
    #[arg(long, global = true, env = "LM4VE_CACHE")]
    pub cache: Option<PathBuf>,
    /// Shared remote cache, overriding the config's [cache] remote: s3://BUCKET/PREFIX,
    /// file:///PATH, http(s)://HOST/PATH (WebDAV), or `none`. `cache verify --remote` and
    /// `cache gc --remote` (URL optional) act on the remote instead of the local cache.
    #[arg(
        long,
        global = true,
        env = "LM4VE_REMOTE",
        value_name = "URL",
        num_args = 0..=1,
        default_missing_value = "",
        action = clap::ArgAction::Append,
        hide_env_values = true
    )]
    pub remote: Vec<String>,
    /// Set after parsing: `--remote` was on the command line (not only in the environment).
    #[arg(skip)]
    pub remote_flag: bool,
    /// No progress bars, warnings and errors only.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Worker threads (default: all cores). Output bytes do not depend on it.
    #[arg(short = 'j', long, global = true, env = "LM4VE_THREADS")]
    pub threads: Option<usize>,
    /// Where training and `llm apply` run: auto (CUDA when built with it and a GPU is
    /// present), cpu, or cuda (an error when no GPU/driver is found).
    #[arg(long, global = true, env = "LM4VE_DEVICE", default_value = "auto")]
    pub device: DeviceArg,
    /// Set one stage param for this command: `-S stages.NAME.params.KEY=VALUE` (VALUE as in
    /// TOML: `1e-3`, `"frozen"`, `[1, 2]`; a bare word is a string). Repeatable.
    #[arg(short = 'S', long = "set", global = true, value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run, inspect and explain the stage DAG.
    #[command(subcommand)]
    Pipeline(PipelineCmd),
    /// Maintain the content-addressed cache.
    #[command(subcommand)]
    Cache(CacheCmd),
    /// Write the embedded demo datasets (synthetic, in the real formats).
    DemoData(DemoDataArgs),
    /// Read LLM checkpoints, cut one block out, run a block.
    #[command(subcommand)]
    Llm(LlmCmd),
    /// Time training steps of a model at the paper's sizes with random weights (prints JSON;
    /// `benches/gpu_step.py` is its PyTorch counterpart, `make bench-gpu` runs both).
    BenchTrain(BenchTrainArgs),
    /// Time a data-parallel step's gradient averaging (25 MB buckets through the job's NCCL or
    /// MPI) for each model's trainable parameters, beside the analytic ring all-reduce at 4
    /// and 8 GPUs over NVLink and 100 Gb/s (prints JSON lines; rank 0 prints). Launch it like
    /// training (torchrun, srun, mpirun) or with LM4VE_DATA_PARALLEL=1 for a job of one.
    BenchAllreduce(BenchAllreduceArgs),
    /// Time Point-BERT's per-step resampling of training batches (shuffle, FPS pool, random
    /// subset, scale/shift, grouping) on the clouds of a ScanObjectNN-format h5 file (prints
    /// JSON; `scripts/bench/pc_resample_reference.py` is its numpy counterpart).
    BenchResample(BenchResampleArgs),
    /// The `frames` layout of ssv2.tokens on real clips: cache bytes per clip and the JPEG's
    /// PSNR (write side, vs `ffmpeg -q:v` into files), then the training loader's clips/s on
    /// one core (T random frames decoded, VideoMAE's augmentation, tubelets) and the 2×3
    /// test views (prints JSON).
    BenchVideoFrames(BenchVideoFramesArgs),
    /// The image task's training loader on one core over an ImageNet-layout folder: JPEG
    /// read and decoded, DeiT's training view (RandomResizedCrop, flip, RandAugment, erasing);
    /// prints JSON (images/s wall and per CPU second). `benches/image_loader.sh` runs it beside
    /// timm's loader.
    BenchImageLoader(BenchImageLoaderArgs),
}

#[derive(Debug, Args)]
pub struct BenchImageLoaderArgs {
    /// A folder of class folders of JPEGs (torchvision's `ImageFolder` layout).
    pub dir: std::path::PathBuf,
    /// The training view's side.
    #[arg(long, default_value_t = 224)]
    pub crop: usize,
    /// Timed passes over the images (after one untimed warm-up pass).
    #[arg(long, default_value_t = 2)]
    pub passes: usize,
    /// At most this many images (sorted by path).
    #[arg(long)]
    pub limit: Option<usize>,
}

#[derive(Debug, Args)]
pub struct BenchVideoFramesArgs {
    /// Video files (any container/codec libavcodec reads).
    #[arg(required = true)]
    pub clips: Vec<std::path::PathBuf>,
    /// Short side of the stored frames (0: as decoded).
    #[arg(long, default_value_t = 0)]
    pub frame_short_side: usize,
    /// JPEG quantizer (`-q:v`).
    #[arg(long, default_value_t = 3)]
    pub quantizer: u32,
    /// Frames per training sample (T).
    #[arg(long, default_value_t = 16)]
    pub num_frames: usize,
    /// The model's input side.
    #[arg(long, default_value_t = 224)]
    pub crop: usize,
    /// Timed training draws per clip.
    #[arg(long, default_value_t = 20)]
    pub iters: usize,
    /// Augmented samples per draw (VideoMAE's `--num_sample`; the frames are decoded once).
    #[arg(long, default_value_t = 2)]
    pub repeats: usize,
    /// Also time the ffmpeg CLI writing the same JPEG files (needs `ffmpeg` on PATH).
    #[arg(long)]
    pub ffmpeg: bool,
}

#[derive(Debug, Args)]
pub struct BenchResampleArgs {
    /// A ScanObjectNN-format h5 file (`data` [N, P, 3]).
    pub h5: std::path::PathBuf,
    /// Clouds per batch.
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Points per view (the pool is the reference's: 1200 for 1024).
    #[arg(long, default_value_t = 1024)]
    pub num_points: usize,
    #[arg(long, default_value_t = 64)]
    pub num_groups: usize,
    #[arg(long, default_value_t = 32)]
    pub group_size: usize,
    /// Timed batches; the median is reported.
    #[arg(long, default_value_t = 20)]
    pub iters: usize,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

#[derive(Debug, Args)]
pub struct BenchAllreduceArgs {
    /// pointbert | vit-s | vit-b | vectornet | all
    #[arg(long, default_value = "all")]
    pub model: String,
    /// The LLM block: frozen (LLaMA-7B shapes; its weights are not sent), trainable, or none.
    #[arg(long, default_value = "frozen")]
    pub mode: String,
    /// Timed averaging calls; the median is reported.
    #[arg(long, default_value_t = 10)]
    pub iters: usize,
    /// Untimed calls first.
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Tiny models (a smoke test).
    #[arg(long)]
    pub tiny: bool,
}

#[derive(Debug, Args)]
pub struct BenchTrainArgs {
    /// pointbert | vit-s | vit-b | vectornet
    #[arg(long)]
    pub model: String,
    /// Samples per step (default: 32 for pointbert and vectornet, 8 for the video ViTs).
    #[arg(long)]
    pub batch: Option<usize>,
    /// Timed steps; the median is reported.
    #[arg(long, default_value_t = 10)]
    pub iters: usize,
    /// Untimed steps first.
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// The LLM block: frozen (LLaMA-7B shapes), trainable, random, or none.
    #[arg(long, default_value = "frozen")]
    pub mode: String,
    /// Tiny widths and token counts (a smoke test that runs in a second on a CPU).
    #[arg(long)]
    pub tiny: bool,
    /// Attention: full (materialised scores) or chunked (memory-efficient).
    #[arg(long, default_value = "full")]
    pub attention: String,
    /// Recompute encoder blocks in the backward (activation checkpointing).
    #[arg(long)]
    pub checkpoint_blocks: bool,
    /// Matmul precision: f32, bf16 or f16 (loss-scaled). Default: encoder f32, frozen block
    /// bf16 on CUDA.
    #[arg(long)]
    pub precision: Option<String>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ReportFormat {
    Table,
    Markdown,
    Csv,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CheckpointArg {
    Best,
    Last,
    /// The model's moving average (`model_ema`), when the run kept one.
    Ema,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum DeviceArg {
    Auto,
    Cpu,
    Cuda,
}

#[derive(Debug, Subcommand)]
pub enum LlmCmd {
    /// Architecture, layers, dims and dtypes of a checkpoint (HF safetensors, sharded, GGUF, or
    /// Meta's params.json + consolidated.NN.pth).
    Inspect {
        path: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Extract one block (default: the last) into a canonical block.safetensors.
    Extract {
        path: PathBuf,
        #[arg(long)]
        layer: Option<usize>,
        #[arg(long)]
        out: PathBuf,
    },
    /// Time one training step (forward + backward to the input) through a random LLaMA block
    /// of the given size; prints JSON. `benches/block_step.sh` runs it beside PyTorch.
    BenchStep {
        #[arg(long, default_value_t = 4096)]
        hidden: usize,
        #[arg(long, default_value_t = 32)]
        heads: usize,
        #[arg(long)]
        kv_heads: Option<usize>,
        #[arg(long, default_value_t = 11008)]
        ffn: usize,
        #[arg(long, default_value_t = 2)]
        batch: usize,
        #[arg(long, default_value_t = 64)]
        tokens: usize,
        #[arg(long, default_value_t = 5)]
        iters: usize,
        /// frozen: lm4ve's input-only backward; naive: weights as tracked variables.
        #[arg(long, default_value = "frozen")]
        mode: String,
        /// bf16 matmuls (CUDA only).
        #[arg(long)]
        autocast: bool,
    },
    /// Run the frozen module (layer without RoPE and mask, then the all-ones RMSNorm) on the
    /// tensor `x` [B,T,D] of a safetensors file; writes the tensor `y`.
    Apply {
        #[arg(long)]
        block: PathBuf,
        #[arg(long)]
        input: PathBuf,
        #[arg(long)]
        output: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum PipelineCmd {
    /// Run every stale stage (`--stage all`) or one stage and what it needs.
    Run(RunArgs),
    /// Per stage: fresh, stale (and why) or missing.
    Status {
        #[arg(long)]
        json: bool,
        /// Re-hash every input file instead of trusting unchanged stat data.
        #[arg(long)]
        rehash: bool,
    },
    /// The artifact of one stage under the current config.
    Show {
        stage: String,
        #[arg(long)]
        json: bool,
    },
    /// The stage graph.
    Dag,
    /// Every built eval stage's metrics, grouped by variant with mean ± std and n over
    /// seeds (or over the matrix keys named by --across).
    Report {
        #[arg(long, value_enum, default_value = "table")]
        format: ReportFormat,
        /// Matrix keys to pool runs over (default: seed).
        #[arg(long, default_value = "seed", value_delimiter = ',')]
        across: Vec<String>,
        /// Only eval stages whose names match this glob.
        #[arg(long)]
        stage: Option<String>,
        /// Which trained weights to report: by default each task's paper protocol (point
        /// clouds and images: the best epoch; video and forecasting: the last), as the eval's
        /// metrics.json says under `reported`; `best` or `last` for that one everywhere.
        #[arg(long, value_enum)]
        checkpoint: Option<CheckpointArg>,
        /// Also write a bar chart with error bars per metric (PNG and SVG) and the groups'
        /// held-out curves (curves.png) into this folder.
        #[arg(long, value_name = "DIR")]
        plot: Option<PathBuf>,
    },
    /// Copy a stage's artifact files out of the cache under readable names.
    Export {
        stage: String,
        #[arg(long)]
        out: PathBuf,
    },
    /// A forecasting eval's predictions as the challenge's submission file: `--out x.h5`
    /// (Argoverse 1.1, argoverse-api's h5) or `--out x.parquet` (Argoverse 2,
    /// ChallengeSubmission), world coordinates; evaluate the test split first.
    Submit {
        /// The eval stage (its data an av.tokens or av2.tokens stage).
        #[arg(required_unless_present = "predictions")]
        stage: Option<String>,
        #[arg(long)]
        out: PathBuf,
        /// Which trained weights' forecasts: by default the one the eval reports
        /// (forecasting: last).
        #[arg(long, value_enum)]
        checkpoint: Option<CheckpointArg>,
        /// Convert this predictions parquet instead of an eval stage's.
        #[arg(long, conflicts_with_all = ["stage", "checkpoint"])]
        predictions: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// A stage name, or `all`.
    #[arg(long, default_value = "all")]
    pub stage: String,
    /// Recompute the stage(s) even if cached.
    #[arg(long)]
    pub force: bool,
    /// Re-hash every input file instead of trusting unchanged stat data.
    #[arg(long)]
    pub rehash: bool,
    /// Do only the units with hash(unit) mod n == i (for cluster array jobs); a final run
    /// without --part assembles the artifact.
    #[arg(long, value_name = "i/n")]
    pub part: Option<Part>,
    /// Push what this run computes to the remote (as `[cache] push = true`).
    #[arg(long)]
    pub push: bool,
    /// Only assemble from finished units (local or on the remote); fail naming the
    /// missing units instead of computing them.
    #[arg(long, conflicts_with = "part")]
    pub assemble: bool,
    /// Run nothing: print what each stage would do; for a train stage its parameter counts
    /// (total, trainable, frozen), per-step memory estimate and FLOPs at the configured size.
    #[arg(long, conflicts_with_all = ["part", "assemble", "push", "force"])]
    pub dry_run: bool,
    /// Build up to K independent stages at once, each starting when what it needs is built;
    /// candle's CPU pools then get -j / K threads each (a small model's CPU training does not
    /// use two cores well: two such stages side by side finish sooner). Output bytes do not
    /// depend on it. Default 1: one stage at a time, in DAG order.
    #[arg(long, value_name = "K", default_value_t = 1, env = "LM4VE_CONCURRENT_STAGES",
          value_parser = clap::value_parser!(u16).range(1..=64))]
    pub concurrent_stages: u16,
}

#[derive(Debug, Subcommand)]
pub enum CacheCmd {
    /// Re-hash every object and check every manifest's references; exit 1 on damage.
    /// With --remote: the remote's objects and records.
    Verify,
    /// Remove artifacts the current config does not use, then unreferenced objects.
    /// With --remote: on the remote.
    Gc {
        /// Only report what would be removed.
        #[arg(long)]
        dry_run: bool,
        /// Also keep the artifacts of runs younger than this many days.
        #[arg(long, default_value_t = 0.0, value_name = "DAYS")]
        keep_days: f64,
    },
    /// Send the current config's artifacts (finished or partial) to the remote.
    Push {
        /// One stage (default: every stage of the config).
        #[arg(long)]
        stage: Option<String>,
        /// Re-upload objects the remote already has (repairs a damaged remote).
        #[arg(long)]
        force: bool,
    },
    /// Fetch the current config's artifacts (or their finished units) from the remote.
    Pull {
        /// One stage (default: every stage of the config).
        #[arg(long)]
        stage: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct DemoDataArgs {
    /// Output directory (created).
    #[arg(long, default_value = "demo-data")]
    pub out: PathBuf,
    /// Seed of every random choice (same seed → same bytes).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Point-cloud objects per class in the training file.
    #[arg(long, default_value_t = 40)]
    pub pc_train_per_class: usize,
    /// Point-cloud objects per class in the test file.
    #[arg(long, default_value_t = 12)]
    pub pc_test_per_class: usize,
    /// SSv2-format video clips per class (9 classes) in the train list. 100 is about what a
    /// ViT trained from scratch needs to learn the demo's motions (30 stayed at chance).
    #[arg(long, default_value_t = 100)]
    pub video_train_per_class: usize,
    /// SSv2-format video clips per class in the validation list.
    #[arg(long, default_value_t = 10)]
    pub video_val_per_class: usize,
    /// Argoverse-format scenarios (CSV) in argoverse/train/data.
    #[arg(long, default_value_t = 600)]
    pub av_train: usize,
    /// Argoverse-format scenarios in argoverse/val/data.
    #[arg(long, default_value_t = 150)]
    pub av_val: usize,
    /// Intersections per side of each demo city's street grid (Argoverse vector maps).
    #[arg(long, default_value_t = 8)]
    pub av_grid: usize,
    /// Argoverse 2 scenarios (the released layout: parquet + each scenario's map JSON) in
    /// argoverse2/train (none by default: the demo trains on Argoverse 1.1).
    #[arg(long, default_value_t = 0)]
    pub av2_train: usize,
    /// Argoverse 2 scenarios in argoverse2/val.
    #[arg(long, default_value_t = 0)]
    pub av2_val: usize,
    /// ImageNet-layout images per class (5 classes) in imagenet/train.
    #[arg(long, default_value_t = 40)]
    pub image_train_per_class: usize,
    /// ImageNet-layout images per class in imagenet/val.
    #[arg(long, default_value_t = 10)]
    pub image_val_per_class: usize,
}
