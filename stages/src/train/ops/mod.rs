//! Numerical building blocks shared by the LLM block and the encoders: attention (full or
//! chunked with recompute), activation checkpointing, mixed precision and loss scaling.
//! Depends on candle only.

pub mod attention;
pub(crate) mod handover;
pub mod precision;
pub mod recompute;
