//! PyTorch checkpoints as `torch.save` writes them (PyTorch ≥ 1.6: a zip archive holding a
//! pickle `data.pkl` and one entry per tensor storage), read with candle's pickle support:
//! the pickle is parsed for tensor names, dtypes, shapes and storage entries, and a tensor's
//! bytes are read only when it is asked for, so one layer of a 13 GB file costs one layer.
//!
//! A checkpoint is either a state dict (name → tensor) or a dict holding one under a key
//! (`model`, `base_model`, `module`, `state_dict`, ...); [`PthFile::open`] takes the first
//! of the given keys that is present. Nested dicts below that level, non-tensor values
//! (`epoch`, optimizer state) and Python objects other than tensors are not read.
//!
//! Also here: [`read_state_dict`], one reader for the encoder checkpoints `init` points at,
//! `.pth` or `.safetensors`, told apart by their first bytes rather than their names.

use candle_core::pickle::{PthTensors, TensorInfo};
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// A checkpoint that cannot be read: the file and why, with the fix where there is one.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {why}")]
pub struct PthError {
    pub path: String,
    pub why: String,
}

pub fn err(path: &Path, why: impl Into<String>) -> PthError {
    PthError {
        path: path.display().to_string(),
        why: why.into(),
    }
}

/// What a file's first bytes say it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A zip archive: `torch.save`'s format since PyTorch 1.6.
    TorchZip,
    /// An 8-byte little-endian header length, then a JSON object.
    Safetensors,
}

/// Tells a torch zip checkpoint from a safetensors file by content; anything else (a legacy
/// pre-1.6 torch pickle, a text file, an empty or truncated file) is an error naming the file.
pub fn sniff(path: &Path) -> Result<Format, PthError> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|e| err(path, e.to_string()))?;
    let mut head = [0u8; 9];
    let n = f.read(&mut head).map_err(|e| err(path, e.to_string()))?;
    if n >= 4 && &head[..4] == b"PK\x03\x04" {
        return Ok(Format::TorchZip);
    }
    if n == 9 && head[8] == b'{' {
        return Ok(Format::Safetensors);
    }
    if n >= 2 && head[0] == 0x80 {
        return Err(err(
            path,
            "a legacy (pre-1.6, non-zip) PyTorch pickle, which lm4ve does not read; re-save it with `torch.save(torch.load(f), f)` in PyTorch ≥ 1.6",
        ));
    }
    Err(err(
        path,
        "neither a PyTorch checkpoint (torch.save zip archive) nor a safetensors file",
    ))
}

/// Runs candle's pickle reader so that a panic becomes an error naming the file: the reader
/// indexes into what the pickle says (`Vec::remove` on a tuple of the file's making), so a
/// malformed pickle panics it instead of failing.
fn guarded<T>(
    path: &Path,
    f: impl FnOnce() -> candle_core::Result<T>,
) -> Result<candle_core::Result<T>, PthError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|p| {
        let msg = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        err(
            path,
            format!(
                "its pickle is malformed ({msg}); the file is corrupt or not a PyTorch checkpoint"
            ),
        )
    })
}

/// One state dict of a `.pth` file, tensors read on demand.
pub struct PthFile {
    path: PathBuf,
    /// The top-level key the state dict was found under; None: the file is the state dict.
    pub key: Option<String>,
    tensors: PthTensors,
}

impl PthFile {
    /// Opens `path` and finds its state dict: under the first of `keys` the top-level dict
    /// has, else the top-level dict itself. Reads the pickle only, no tensor data.
    pub fn open(path: &Path, keys: &[&str]) -> Result<Self, PthError> {
        if sniff(path)? != Format::TorchZip {
            return Err(err(
                path,
                "a safetensors file, not a PyTorch .pth checkpoint",
            ));
        }
        let corrupt = |e: candle_core::Error| {
            err(
                path,
                format!("cannot read it as a PyTorch checkpoint ({e}); the file is truncated or corrupt"),
            )
        };
        // Without a key: checks the archive and its pickle, and reads a flat state dict.
        let flat = guarded(path, || PthTensors::new(path, None))?.map_err(corrupt)?;
        for key in keys {
            // candle fails when the top-level dict lacks `key`; the file itself was read above.
            if let Ok(t) = guarded(path, || PthTensors::new(path, Some(key)))? {
                if !t.tensor_infos().is_empty() {
                    return Ok(PthFile {
                        path: path.to_path_buf(),
                        key: Some(key.to_string()),
                        tensors: t,
                    });
                }
            }
        }
        if flat.tensor_infos().is_empty() {
            return Err(err(
                path,
                format!(
                    "holds no tensors at its top level nor under any of the keys {keys:?}; is it a model checkpoint?"
                ),
            ));
        }
        Ok(PthFile {
            path: path.to_path_buf(),
            key: None,
            tensors: flat,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Name → (dtype, shape, ...) of every tensor of the state dict, from the pickle alone.
    pub fn infos(&self) -> &HashMap<String, TensorInfo> {
        self.tensors.tensor_infos()
    }

    pub fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.infos().get(name).map(|i| i.layout.dims().to_vec())
    }

    /// Reads one tensor (only its bytes) as f32 on the CPU.
    pub fn get_f32(&self, name: &str) -> Result<Tensor, PthError> {
        let bad = |e: candle_core::Error| {
            err(
                &self.path,
                format!("reading `{name}`: {e}; the file is truncated or corrupt"),
            )
        };
        let t = guarded(&self.path, || self.tensors.get(name))?
            .map_err(bad)?
            .ok_or_else(|| err(&self.path, format!("no tensor `{name}`")))?;
        to_f32(t).map_err(bad)
    }
}

/// Floats as contiguous f32; other dtypes (BatchNorm's i64 `num_batches_tracked`) as they
/// are: callers skip those by name.
fn to_f32(t: Tensor) -> candle_core::Result<Tensor> {
    if t.dtype().is_float() {
        t.to_dtype(DType::F32)?.contiguous()
    } else {
        Ok(t)
    }
}

/// Checks a safetensors file's header (length, JSON, every tensor's byte range inside the
/// file) without reading the tensor data.
pub fn check_safetensors(path: &Path) -> Result<(), PthError> {
    use std::io::Read;
    let corrupt = |why: &str| err(path, format!("{why}; the file is truncated or corrupt"));
    let mut f = std::fs::File::open(path).map_err(|e| err(path, e.to_string()))?;
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let mut n = [0u8; 8];
    f.read_exact(&mut n)
        .map_err(|_| corrupt("shorter than a safetensors header"))?;
    let n = u64::from_le_bytes(n);
    if n > 100 << 20 || 8 + n > len {
        return Err(corrupt("the safetensors header length is past the end"));
    }
    let mut h = vec![0u8; n as usize];
    f.read_exact(&mut h)
        .map_err(|_| corrupt("the safetensors header is cut short"))?;
    let header: serde_json::Value = serde_json::from_slice(&h)
        .map_err(|e| corrupt(&format!("bad safetensors header ({e})")))?;
    let entries = header
        .as_object()
        .ok_or_else(|| corrupt("the safetensors header is not a JSON object"))?;
    for (name, e) in entries {
        if name == "__metadata__" {
            continue;
        }
        let end = e["data_offsets"]
            .as_array()
            .and_then(|a| a.get(1))
            .and_then(|v| v.as_u64())
            .ok_or_else(|| corrupt(&format!("tensor `{name}` has no data_offsets")))?;
        if 8 + n + end > len {
            return Err(corrupt(&format!(
                "tensor `{name}` lies past the end of the file"
            )));
        }
    }
    Ok(())
}

/// (name, tensor) pairs of one state dict.
pub type StateDict = Vec<(String, Tensor)>;

/// Every tensor of an encoder checkpoint (`.pth` or `.safetensors`), floats as f32: the key
/// it was found under (for `.pth`, the first of `keys` present), and (name, tensor) pairs
/// sorted by name.
pub fn read_state_dict(
    path: &Path,
    keys: &[&str],
) -> Result<(Option<String>, StateDict), PthError> {
    let mut out = Vec::new();
    let key = match sniff(path)? {
        Format::TorchZip => {
            let f = PthFile::open(path, keys)?;
            let mut names: Vec<&String> = f.infos().keys().collect();
            names.sort();
            for name in names {
                out.push((name.clone(), f.get_f32(name)?));
            }
            f.key
        }
        Format::Safetensors => {
            let map = candle_core::safetensors::load(path, &Device::Cpu).map_err(|e| {
                err(
                    path,
                    format!(
                        "cannot read it as safetensors ({e}); the file is truncated or corrupt"
                    ),
                )
            })?;
            for (name, t) in map {
                let t = to_f32(t).map_err(|e| err(path, format!("`{name}`: {e}")))?;
                out.push((name, t));
            }
            out.sort_by(|a, b| a.0.cmp(&b.0));
            if out.is_empty() {
                return Err(err(path, "holds no tensors"));
            }
            None
        }
    };
    Ok((key, out))
}
