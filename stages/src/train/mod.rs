//! Training: the frozen LLM block (forward + input-only backward), the PointBERT encoder,
//! AdamW, data loading from shards, the `train` and `eval` stages.

pub mod attention;
pub mod av_data;
pub mod block;
pub mod block_grad;
pub mod data;
pub mod device;
pub mod nn;
pub mod optim;
pub mod plot;
pub mod pointbert;
pub mod precision;
pub mod recompute;
pub mod shard_set;
pub mod stage;
pub mod step_bench;
pub mod task;
pub mod vectornet;
pub mod video_data;
pub mod video_vit;
pub mod vit;
