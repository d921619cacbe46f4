//! LLM checkpoints: readers (HF safetensors, sharded or not; GGUF), block extraction into
//! the canonical block file, and the `llm.block` stage.

pub mod block_format;
pub mod checkpoint;
mod gguf_check;
pub mod stage;
#[cfg(test)]
mod tests;

pub use checkpoint::{
    extract_block, inspect, load_block_file, save_block, CheckpointInfo, ExtractedBlock, LlmError,
};
