//! lm4ve-pipeline: the engine — stage DAG, content keys, input fingerprints, the local
//! content-addressed cache and its shared remote, resumable work units, run records, locks
//! and the shard format.
//! It knows nothing about video, point clouds or LLMs (those live in `lm4ve-stages`).

pub mod artifact;
pub mod cas;
pub mod config;
pub mod dag;
pub mod engine;
pub mod file_list;
pub mod fingerprint;
pub mod key;
pub mod links;
pub mod lock;
pub mod maintenance;
pub mod matrix;
pub mod progress;
pub mod record;
pub mod remote;
pub mod shard;
pub mod stage;
pub mod stat_file;
pub mod trust;
pub mod verified;

pub use artifact::{Manifest, Reject, UnitRecord};
pub use cas::Cache;
pub use config::{ConfigError, PipelineConfig, StageConfig};
pub use engine::{
    DataParallel, Outcome, Part, Pipeline, RunOptions, StageFactory, StageFailed, UsageError,
};
pub use file_list::FileList;
pub use fingerprint::InputSpec;
pub use progress::Progress;
pub use remote::{Remote, RemoteError};
pub use stage::{Stage, StageCtx, UnitOutput, UnitPlan, Upstream};
