//! The training data sets, one per task (`pointcloud.rs`, `video.rs`, `argoverse.rs`), over
//! [`ShardSet`]: random access to the samples of one split of an upstream artifact without
//! holding them in memory (a full SSv2 or Argoverse artifact is far larger than RAM): the shard readers stay
//! open, each sample is read and decompressed when a batch asks for it.

pub mod argoverse;
pub mod image;
pub mod pointcloud;
pub mod prefetch;
pub mod video;
pub mod video_frames;

use anyhow::{Context, Result};
use lm4ve_pipeline::shard::{Sample, Schema, ShardReader};
use lm4ve_pipeline::Upstream;
use std::sync::Mutex;

pub struct ShardSet {
    schema: Schema,
    readers: Vec<Mutex<ShardReader>>,
    /// (reader, sample index in its shard) per sample.
    index: Vec<(usize, usize)>,
}

impl ShardSet {
    /// Opens every shard of `split`; `what` names the stage kind `data` must be, for messages.
    pub fn open(up: &Upstream, split: &str, what: &str) -> Result<Self> {
        let schema = up.manifest.schema.clone().with_context(|| {
            format!("upstream artifact has no shard schema; `data` must name {what}")
        })?;
        let mut set = ShardSet {
            schema,
            readers: Vec::new(),
            index: Vec::new(),
        };
        for path in up.manifest.shard_paths(&up.manifest_path, Some(split)) {
            let r = ShardReader::open(&path)?;
            let ri = set.readers.len();
            set.index.extend((0..r.len()).map(|i| (ri, i)));
            set.readers.push(Mutex::new(r));
        }
        Ok(set)
    }

    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// The position of field `name` in the schema, or an error naming the expected stage.
    pub fn field(&self, name: &str, what: &str) -> Result<usize> {
        self.schema
            .iter()
            .position(|f| f.name == name)
            .with_context(|| {
                format!("upstream shards lack field `{name}`; `data` must name {what}")
            })
    }

    /// Sample `i` of the split (all fields).
    pub fn read(&self, i: usize) -> Result<Sample> {
        let (ri, si) = *self.index.get(i).context("sample index out of range")?;
        let mut r = self.readers[ri]
            .lock()
            .map_err(|_| anyhow::anyhow!("shard reader lock poisoned"))?;
        Ok(r.read(si)?)
    }
}
