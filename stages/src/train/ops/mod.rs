//! Numerical building blocks shared by the LLM block and the encoders: attention (full or
//! chunked with recompute), activation checkpointing, mixed precision and loss scaling,
//! LayerNorm, a Linear's bias and VectorNet's max-pool concat as one autograd node each
//! (`layer_norm`, `bias`, `pool`), batch mixing (mixup / cutmix), VideoMAE's per-clip video
//! augmentations (`video_aug`), and the operand layouts candle's MKL matmul accepts
//! (`mkl_layout`).
//! Depends on candle, rand, rayon and serde only.

pub mod attention;
pub mod bias;
pub(crate) mod handover;
pub mod image_aug;
pub mod layer_norm;
pub mod mixup;
pub mod mkl_layout;
pub mod pool;
pub mod precision;
pub mod recompute;
mod rows;
pub mod video_aug;
