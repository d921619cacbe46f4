//! Hugging Face checkpoints: `config.json` into a block config, and safetensors headers and
//! tensors (single file or sharded), read only where a layer's bytes are.

use super::block_format::{Arch, BlockConfig};
use super::error::{bad, check_shape, LlmError};
use std::path::{Path, PathBuf};

pub(super) fn cfg_usize(
    v: &serde_json::Value,
    keys: &[&str],
    path: &Path,
) -> Result<usize, LlmError> {
    keys.iter()
        .find_map(|k| v.get(*k).and_then(|x| x.as_u64()))
        .map(|x| x as usize)
        .ok_or_else(|| bad(path, format!("config.json lacks `{}`", keys[0])))
}

/// (arch, block config, number of layers) from a HF config.json.
pub(super) fn hf_config(config_json: &Path) -> Result<(BlockConfig, usize), LlmError> {
    let text = std::fs::read_to_string(config_json).map_err(|e| bad(config_json, e.to_string()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| bad(config_json, format!("not JSON: {e}")))?;
    let model_type = v["model_type"].as_str().unwrap_or("");
    let arch = match model_type {
        // Only models whose layer is exactly LLaMA's (no q/k/v biases, SiLU-gated MLP):
        // Qwen2 looks alike but carries q/k/v biases that the canonical block has no room for.
        "llama" | "mistral" => Arch::Llama,
        "opt" => Arch::Opt,
        other => return Err(bad(config_json, format!("unknown architecture `model_type = {other:?}`; supported: llama (and llama-like), opt"))),
    };
    let hidden = cfg_usize(&v, &["hidden_size"], config_json)?;
    let heads = cfg_usize(&v, &["num_attention_heads"], config_json)?;
    let layers = cfg_usize(&v, &["num_hidden_layers"], config_json)?;
    let explicit_head_dim = v["head_dim"].as_u64().map(|x| x as usize);
    if heads == 0 || (explicit_head_dim.is_none() && hidden % heads != 0) {
        return Err(bad(
            config_json,
            "hidden_size is not a multiple of num_attention_heads (and no `head_dim` is given)",
        ));
    }
    // Variants whose layer computes something the canonical block cannot hold would
    // otherwise be extracted "successfully" and silently give a different function.
    let unsupported = |what: &str| {
        bad(
            config_json,
            format!("{what} is not supported: the lm4ve block is the plain {arch} layer; pick a checkpoint without it"),
        )
    };
    let cfg = match arch {
        Arch::Llama => {
            if let Some(act) = v["hidden_act"].as_str().filter(|a| *a != "silu") {
                return Err(unsupported(&format!("hidden_act = {act:?}")));
            }
            for flag in ["attention_bias", "mlp_bias"] {
                if v[flag].as_bool() == Some(true) {
                    return Err(unsupported(&format!("{flag} = true")));
                }
            }
            BlockConfig {
                arch,
                hidden_size: hidden,
                num_heads: heads,
                num_kv_heads: v["num_key_value_heads"]
                    .as_u64()
                    .map(|x| x as usize)
                    .unwrap_or(heads),
                head_dim: explicit_head_dim.unwrap_or(hidden / heads),
                intermediate_size: cfg_usize(&v, &["intermediate_size"], config_json)?,
                // transformers' LlamaConfig default; real configs always state it.
                norm_eps: v["rms_norm_eps"].as_f64().unwrap_or(1e-6),
                post_norm: false,
            }
        }
        Arch::Opt => {
            // transformers' OPTConfig default is true (pre-LayerNorm); opt-350m says false.
            let post_norm = match &v["do_layer_norm_before"] {
                serde_json::Value::Null => false,
                serde_json::Value::Bool(b) => !b,
                other => {
                    return Err(bad(
                        config_json,
                        format!("do_layer_norm_before = {other} is not a boolean"),
                    ))
                }
            };
            if let Some(act) = v["activation_function"].as_str().filter(|a| *a != "relu") {
                return Err(unsupported(&format!("activation_function = {act:?}")));
            }
            if v["enable_bias"].as_bool() == Some(false) {
                return Err(unsupported("enable_bias = false"));
            }
            if v["layer_norm_elementwise_affine"].as_bool() == Some(false) {
                return Err(unsupported("layer_norm_elementwise_affine = false"));
            }
            if hidden % heads != 0 {
                return Err(bad(
                    config_json,
                    "hidden_size is not a multiple of num_attention_heads",
                ));
            }
            BlockConfig {
                arch,
                hidden_size: hidden,
                num_heads: heads,
                num_kv_heads: heads,
                head_dim: hidden / heads,
                intermediate_size: cfg_usize(&v, &["ffn_dim", "intermediate_size"], config_json)?,
                // OPT's LayerNorms use torch's default eps; its config has no key for it.
                norm_eps: 1e-5,
                post_norm,
            }
        }
    };
    if cfg.num_kv_heads == 0 || cfg.num_heads % cfg.num_kv_heads != 0 {
        return Err(bad(
            config_json,
            "num_attention_heads is not a multiple of num_key_value_heads",
        ));
    }
    Ok((cfg, layers))
}

/// The JSON header of a safetensors file and its length in bytes (reads only the header).
pub(super) fn read_safetensors_header(file: &Path) -> Result<(u64, serde_json::Value), LlmError> {
    use std::io::Read;
    let mut f = std::fs::File::open(file).map_err(|e| bad(file, e.to_string()))?;
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let mut n = [0u8; 8];
    f.read_exact(&mut n).map_err(|_| {
        bad(
            file,
            "shorter than a safetensors header; the file is truncated",
        )
    })?;
    let n = u64::from_le_bytes(n);
    if n > 100 << 20 || 8 + n > len {
        return Err(bad(file, "safetensors header length is past the end of the file; the file is truncated or not safetensors"));
    }
    let mut h = vec![0u8; n as usize];
    f.read_exact(&mut h).map_err(|e| bad(file, e.to_string()))?;
    let json = serde_json::from_slice(&h).map_err(|e| {
        bad(
            file,
            format!("bad safetensors header: {e}; the file is corrupt or not safetensors"),
        )
    })?;
    Ok((n, json))
}

/// One HF tensor of the layer, located from the safetensors header (no data read yet).
pub(super) struct HfTensor {
    pub(super) name: &'static str,
    pub(super) key: String,
    pub(super) file: PathBuf,
    pub(super) dtype: String,
    /// Absolute byte range of the data in `file`.
    pub(super) start: u64,
    pub(super) len: u64,
}

/// Bytes per element of the safetensors dtypes a checkpoint's weights come in.
pub(super) fn hf_dtype_size(dtype: &str) -> Option<u64> {
    match dtype {
        "F32" => Some(4),
        "F16" | "BF16" => Some(2),
        "F64" => Some(8),
        _ => None,
    }
}

/// Finds `key` in a parsed safetensors header and checks dtype, shape and byte range.
pub(super) fn locate_hf_tensor(
    file: &Path,
    (header_len, header): &(u64, serde_json::Value),
    name: &'static str,
    key: String,
    expected: &[usize],
) -> Result<HfTensor, LlmError> {
    let entry = header.get(&key).ok_or_else(|| {
        bad(
            file,
            format!("tensor `{key}` is listed in the index but not in this shard; the shard and its index.json do not match (re-download them)"),
        )
    })?;
    let dtype = entry["dtype"].as_str().unwrap_or("?").to_string();
    let size = hf_dtype_size(&dtype).ok_or_else(|| {
        bad(
            file,
            format!("tensor `{key}` has dtype {dtype}; supported are F32, F16, BF16, F64 (convert quantised checkpoints to one of them, or use a GGUF)"),
        )
    })?;
    let shape: Vec<usize> = entry["shape"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|d| d.as_u64().map(|d| d as usize))
                .collect()
        })
        .unwrap_or_default();
    check_shape(file, &key, expected, &shape)?;
    let offsets: Vec<u64> = entry["data_offsets"]
        .as_array()
        .map(|a| a.iter().filter_map(|d| d.as_u64()).collect())
        .unwrap_or_default();
    let (begin, end) = match offsets[..] {
        [b, e] if e >= b => (b, e),
        _ => {
            return Err(bad(
                file,
                format!("tensor `{key}` has bad data_offsets; the file is corrupt"),
            ))
        }
    };
    let numel: u64 = shape.iter().map(|&d| d as u64).product();
    if end - begin != numel * size {
        return Err(bad(
            file,
            format!(
                "tensor `{key}`: {} data bytes for {numel} {dtype} values; the file is corrupt",
                end - begin
            ),
        ));
    }
    let file_len = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
    let start = 8 + header_len + begin;
    if start + (end - begin) > file_len {
        return Err(bad(
            file,
            format!("tensor `{key}` lies past the end of the file ({} > {file_len} bytes); the file is truncated, re-download it", start + (end - begin)),
        ));
    }
    Ok(HfTensor {
        name,
        key,
        file: file.to_path_buf(),
        dtype,
        start,
        len: end - begin,
    })
}

/// Reads one located HF tensor (only its bytes) and converts it to f32.
pub(super) fn read_hf_tensor(t: &HfTensor) -> Result<Vec<f32>, LlmError> {
    use std::io::{Read, Seek, SeekFrom};
    let io = |e: std::io::Error| bad(&t.file, format!("reading `{}`: {e}", t.key));
    let mut f = std::fs::File::open(&t.file).map_err(io)?;
    f.seek(SeekFrom::Start(t.start)).map_err(io)?;
    let mut raw = vec![0u8; t.len as usize];
    f.read_exact(&mut raw).map_err(io)?;
    Ok(match t.dtype.as_str() {
        "F32" => raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        "F16" => raw
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        "BF16" => raw
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        "F64" => raw
            .chunks_exact(8)
            .map(|c| {
                let mut b = [0u8; 8];
                b.copy_from_slice(c);
                f64::from_le_bytes(b) as f32
            })
            .collect(),
        other => {
            return Err(bad(
                &t.file,
                format!("tensor `{}` has unsupported dtype {other}", t.key),
            ))
        }
    })
}
