//! LLM checkpoints: readers (`hf.rs`: HF safetensors, sharded or not; `gguf.rs`: GGUF;
//! `meta.rs`: Meta's original `params.json` + `consolidated.NN.pth`),
//! block extraction into the canonical block file (`checkpoint.rs`, `block_format.rs`: the
//! format and its one tensor-name table), which model a checkpoint is (`identity.rs`: its
//! config's vocabulary, context, rope theta, norm eps, checked against the paper's
//! LLaMA-v1 7B), and the `llm.block` stage.

pub mod block_format;
pub mod checkpoint;
mod error;
mod gguf;
mod gguf_check;
mod hf;
pub mod identity;
mod meta;
#[cfg(test)]
mod meta_tests;
pub mod stage;
#[cfg(test)]
mod tests;

pub use checkpoint::{
    block_file_config, checkpoint_shape, extract_block, extract_blocks, identity, inspect,
    load_block_file, load_block_stack, save_block, stack_to_safetensors_bytes, CheckpointInfo,
    ExtractedBlock, LlmError,
};
