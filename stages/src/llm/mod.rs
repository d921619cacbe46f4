//! LLM checkpoints: readers (HF safetensors, GGUF), block extraction, the `llm.block` stage.

pub mod block_format;
