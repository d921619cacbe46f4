//! The errors of reading a checkpoint, shared by every reader (`hf.rs`, `gguf.rs`,
//! `meta.rs`) and by `checkpoint.rs`, which dispatches to them: a leaf, so the readers need
//! nothing of the dispatcher.

use crate::llm::block_format::Arch;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    #[error("{path}: {why}")]
    Bad { path: String, why: String },
    #[error(
        "{path}: tensor `{key}` is missing; the checkpoint is incomplete (re-download it) or not a {arch} model (check config.json / the GGUF metadata)"
    )]
    MissingTensor {
        path: String,
        key: String,
        arch: Arch,
    },
    #[error("{path}: tensor `{key}` has shape {got:?}, the config says {expected:?}; the config (config.json, params.json or GGUF metadata) does not belong to these weights")]
    Shape {
        path: String,
        key: String,
        expected: Vec<usize>,
        got: Vec<usize>,
    },
    #[error("{path}: layer {layer} out of range: the model has {num_layers} layers (0..={max})", max = num_layers.saturating_sub(1))]
    Layer {
        path: String,
        layer: usize,
        num_layers: usize,
    },
}

pub(super) fn bad(path: &Path, why: impl Into<String>) -> LlmError {
    LlmError::Bad {
        path: path.display().to_string(),
        why: why.into(),
    }
}

pub(super) fn check_shape(
    path: &Path,
    key: &str,
    expected: &[usize],
    got: &[usize],
) -> Result<(), LlmError> {
    if expected != got {
        return Err(LlmError::Shape {
            path: path.display().to_string(),
            key: key.to_string(),
            expected: expected.to_vec(),
            got: got.to_vec(),
        });
    }
    Ok(())
}
