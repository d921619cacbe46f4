//! GGUF checkpoints (llama.cpp): metadata into a block config, and llama.cpp's q/k row
//! permutation undone so a GGUF block equals the Hugging Face one tensor for tensor.

use super::block_format::{Arch, BlockConfig};
use super::error::{bad, LlmError};
use candle_core::quantized::gguf_file;
use std::path::Path;

pub(super) fn gguf_content(path: &Path) -> Result<gguf_file::Content, LlmError> {
    // candle's reader trusts the file's lengths; check them first (gguf_check.rs).
    super::gguf_check::check(path).map_err(|e| {
        bad(
            path,
            format!("bad GGUF header: {e}; the file is truncated or corrupt"),
        )
    })?;
    let mut f = std::fs::File::open(path).map_err(|e| bad(path, e.to_string()))?;
    gguf_file::Content::read(&mut f).map_err(|e| {
        bad(
            path,
            format!("cannot read the GGUF header: {e}; the file is truncated or corrupt"),
        )
    })
}

/// A non-negative integer metadata value of any width (converters differ: u32 is usual,
/// some write u64 or i32).
pub(super) fn gguf_uint(v: &gguf_file::Value) -> Option<usize> {
    use gguf_file::Value as V;
    let x: i128 = match v {
        V::U8(x) => (*x).into(),
        V::I8(x) => (*x).into(),
        V::U16(x) => (*x).into(),
        V::I16(x) => (*x).into(),
        V::U32(x) => (*x).into(),
        V::I32(x) => (*x).into(),
        V::U64(x) => (*x).into(),
        V::I64(x) => (*x).into(),
        _ => return None,
    };
    usize::try_from(x).ok()
}

pub(super) fn gguf_config(
    path: &Path,
    c: &gguf_file::Content,
) -> Result<(BlockConfig, usize), LlmError> {
    let arch = c
        .metadata
        .get("general.architecture")
        .and_then(|v| v.to_string().ok())
        .cloned()
        .unwrap_or_default();
    if arch != "llama" {
        return Err(bad(
            path,
            format!("unknown GGUF architecture `{arch}`; supported: llama"),
        ));
    }
    let u = |k: &str| -> Result<usize, LlmError> {
        c.metadata
            .get(&format!("llama.{k}"))
            .and_then(gguf_uint)
            .ok_or_else(|| bad(path, format!("GGUF metadata lacks `llama.{k}`")))
    };
    let hidden = u("embedding_length")?;
    let heads = u("attention.head_count")?;
    let kv = u("attention.head_count_kv").unwrap_or(heads);
    let head_dim = match u("attention.key_length") {
        Ok(hd) => hd,
        Err(_) if heads > 0 && hidden % heads == 0 => hidden / heads,
        Err(e) => return Err(e),
    };
    if heads == 0 || kv == 0 || heads % kv != 0 {
        return Err(bad(
            path,
            format!("inconsistent head counts in the GGUF metadata ({heads} heads, {kv} kv heads); the file is damaged or not a LLaMA model"),
        ));
    }
    let eps = c
        .metadata
        .get("llama.attention.layer_norm_rms_epsilon")
        .and_then(|v| match v {
            // llama.cpp stores f32: take its shortest decimal form so 1e-5 reads as 1e-5,
            // as in HF's config.json, and both sources give the same BlockConfig.
            gguf_file::Value::F32(x) => x.to_string().parse::<f64>().ok(),
            gguf_file::Value::F64(x) => Some(*x),
            _ => None,
        })
        .unwrap_or(1e-6);
    Ok((
        BlockConfig {
            arch: Arch::Llama,
            hidden_size: hidden,
            num_heads: heads,
            num_kv_heads: kv,
            head_dim,
            intermediate_size: u("feed_forward_length")?,
            norm_eps: eps,
            post_norm: false,
        },
        u("block_count")?,
    ))
}

/// Undoes llama.cpp's q/k row permutation. Its converter reorders the rows of every head
/// for its rotary layout (reshape [heads, 2, hd/2, D], swap axes 1 and 2): HF row
/// `h·hd + j·hd/2 + i` becomes GGUF row `h·hd + 2i + j`. We map it back so a GGUF block
/// equals the HF one tensor for tensor.
pub(super) fn unpermute_rows(data: &[f32], heads: usize, head_dim: usize, cols: usize) -> Vec<f32> {
    let half = head_dim / 2;
    let mut out = vec![0f32; data.len()];
    for h in 0..heads {
        for i in 0..half {
            for j in 0..2 {
                let g = h * head_dim + 2 * i + j;
                let f = h * head_dim + j * half + i;
                out[f * cols..(f + 1) * cols].copy_from_slice(&data[g * cols..(g + 1) * cols]);
            }
        }
    }
    out
}
