//! Meta's original LLaMA checkpoints: a directory with `params.json` and one
//! `consolidated.NN.pth` per model-parallel rank (1 for 7B/8B, 2 for 13B, 8 for 65B/70B).
//! Tensor names are `layers.{i}.attention.{wq,wk,wv,wo}.weight`,
//! `layers.{i}.feed_forward.{w1,w2,w3}.weight`, `layers.{i}.{attention,ffn}_norm.weight`
//! (the `meta` column of `block_format::TENSORS`). With several ranks every layer is sliced
//! across all files as Meta's fairscale layers cut it: column-parallel weights (wq, wk, wv,
//! w1, w3) by rows, row-parallel ones (wo, w2) by columns, norms replicated; the slices are
//! concatenated back. The `.pth` files are read lazily (`crate::pth`): one layer of a 13 GB
//! file reads that layer's bytes only, but every rank's file is an input of the layer.
//!
//! q/k rows: Meta's rotary code pairs adjacent rows of each head (`2i`, `2i+1`); Hugging Face's
//! converter permutes them into halves, and llama.cpp's converter permutes them back into
//! Meta's order. So a Meta layer is brought into the canonical (HF) row order with the same
//! map as a GGUF one (`gguf::unpermute_rows`), and the block files of one layer agree tensor
//! for tensor whichever of the three it came from. (Without RoPE the permutation would cancel
//! in q·kᵀ anyway, PAPER.md §2; the common order makes the files comparable.)
//!
//! Layer shapes come from `params.json` as Meta's `model.py` computes them: head_dim =
//! dim / n_heads, kv heads = `n_kv_heads` (default n_heads), FFN width = `multiple_of` ·
//! ⌈int(`ffn_dim_multiplier` · int(8·dim/3)) / `multiple_of`⌉. Keys Meta's files hold beside
//! the layers (`tok_embeddings`, `output`, `norm`, `rope.freqs`, per-layer
//! `attention.inner_attention.rope.freqs`) are not read.

use super::block_format::{tensors_of, Arch, BlockConfig, Role};
use super::error::{bad, check_shape, LlmError};
use super::gguf::unpermute_rows;
use crate::pth::PthFile;
use candle_core::Tensor;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// A Meta checkpoint directory: `params.json` and the rank files, in rank order.
pub(super) struct MetaDir {
    pub(super) params_json: PathBuf,
    pub(super) shards: Vec<PathBuf>,
}

/// Whether `path` is a Meta checkpoint: a directory holding `params.json` and
/// `consolidated.*.pth`, or one of those files (then its directory, all ranks). Ok(None): it
/// is not (another reader's turn).
pub(super) fn locate(path: &Path, is_dir: bool) -> Result<Option<MetaDir>, LlmError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dir = if is_dir {
        path.to_path_buf()
    } else if name == "params.json" || (name.starts_with("consolidated.") && name.ends_with(".pth"))
    {
        path.parent().unwrap_or(Path::new(".")).to_path_buf()
    } else {
        return Ok(None);
    };
    let params_json = dir.join("params.json");
    let mut shards: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| bad(&dir, e.to_string()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .map(|n| n.to_string_lossy())
                .is_some_and(|n| n.starts_with("consolidated.") && n.ends_with(".pth"))
        })
        .collect();
    shards.sort();
    match (params_json.is_file(), shards.is_empty()) {
        (true, false) => Ok(Some(MetaDir {
            params_json,
            shards,
        })),
        // A directory of another format.
        (false, true) if is_dir => Ok(None),
        (true, true) => Err(bad(
            &dir,
            "params.json but no consolidated.NN.pth beside it; Meta checkpoints need both",
        )),
        _ => Err(bad(
            &dir,
            "consolidated.NN.pth but no params.json beside it; Meta checkpoints need both (it holds the layer shapes)",
        )),
    }
}

/// (block config, number of layers) from `params.json`.
pub(super) fn meta_config(params_json: &Path) -> Result<(BlockConfig, usize), LlmError> {
    let text = std::fs::read_to_string(params_json).map_err(|e| bad(params_json, e.to_string()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| bad(params_json, format!("not JSON: {e}")))?;
    let u = |k: &str| {
        v.get(k)
            .and_then(|x| x.as_u64())
            .map(|x| x as usize)
            .ok_or_else(|| bad(params_json, format!("params.json lacks `{k}`")))
    };
    let dim = u("dim")?;
    let heads = u("n_heads")?;
    let layers = u("n_layers")?;
    let multiple_of = u("multiple_of")?;
    let kv = match v.get("n_kv_heads") {
        None | Some(serde_json::Value::Null) => heads,
        Some(_) => u("n_kv_heads")?,
    };
    if heads == 0 || kv == 0 || dim % heads != 0 || heads % kv != 0 || multiple_of == 0 {
        return Err(bad(
            params_json,
            format!("inconsistent shape: dim {dim}, n_heads {heads}, n_kv_heads {kv}, multiple_of {multiple_of} (dim must be a multiple of n_heads, n_heads of n_kv_heads)"),
        ));
    }
    let mut ffn = 2 * (4 * dim) / 3;
    if let Some(m) = v.get("ffn_dim_multiplier").and_then(|x| x.as_f64()) {
        ffn = (m * ffn as f64) as usize;
    }
    let ffn = multiple_of * ffn.div_ceil(multiple_of);
    Ok((
        BlockConfig {
            arch: Arch::Llama,
            hidden_size: dim,
            num_heads: heads,
            num_kv_heads: kv,
            head_dim: dim / heads,
            intermediate_size: ffn,
            // Meta's ModelArgs default.
            norm_eps: v.get("norm_eps").and_then(|x| x.as_f64()).unwrap_or(1e-5),
            post_norm: false,
        },
        layers,
    ))
}

/// How Meta's model-parallel ranks slice a tensor: None = replicated.
fn split_dim(role: Role) -> Option<usize> {
    match role {
        Role::Q | Role::K | Role::V | Role::MlpIn | Role::MlpUp => Some(0),
        Role::O | Role::MlpOut => Some(1),
        _ => None,
    }
}

/// One layer located in every rank's file, shapes checked against `params.json` (the
/// pickles only; no tensor data read yet).
pub(super) struct MetaLayer {
    params_json: PathBuf,
    shards: Vec<PthFile>,
    /// (canonical name, role, Meta key).
    keys: Vec<(&'static str, Role, String)>,
}

impl MetaLayer {
    /// The rank files in order, then params.json.
    pub(super) fn files(&self) -> Vec<PathBuf> {
        let mut f: Vec<PathBuf> = self.shards.iter().map(|s| s.path().to_path_buf()).collect();
        f.push(self.params_json.clone());
        f
    }
}

pub(super) fn open_shards(m: &MetaDir) -> Result<Vec<PthFile>, LlmError> {
    m.shards
        .iter()
        .map(|s| PthFile::open(s, &[]).map_err(|e| bad(s, e.why)))
        .collect()
}

pub(super) fn plan(m: &MetaDir, cfg: &BlockConfig, layer: usize) -> Result<MetaLayer, LlmError> {
    let shards = open_shards(m)?;
    let n = shards.len();
    let mut keys = Vec::new();
    for t in tensors_of(Arch::Llama) {
        let Some(meta) = t.meta else { continue };
        let key = format!("layers.{layer}.{meta}.weight");
        let mut want = cfg.shape_of(t.role);
        if let Some(d) = split_dim(t.role) {
            if !want[d].is_multiple_of(n) {
                return Err(bad(
                    &m.params_json,
                    format!("`{key}` has {} {} to split over {n} consolidated.*.pth files; the files do not belong to this params.json", want[d], if d == 0 { "rows" } else { "columns" }),
                ));
            }
            want[d] /= n;
        }
        for s in &shards {
            let got = s.shape(&key).ok_or_else(|| LlmError::MissingTensor {
                path: s.path().display().to_string(),
                key: key.clone(),
                arch: Arch::Llama,
            })?;
            check_shape(s.path(), &key, &want, &got)?;
        }
        keys.push((t.name, t.role, key));
    }
    Ok(MetaLayer {
        params_json: m.params_json.clone(),
        shards,
        keys,
    })
}

/// Reads the layer: every rank's slice of every tensor, concatenated, q/k rows into HF order.
pub(super) fn read(
    plan: &MetaLayer,
    cfg: &BlockConfig,
) -> Result<HashMap<&'static str, Vec<f32>>, LlmError> {
    let mut got = HashMap::new();
    for (name, role, key) in &plan.keys {
        let parts = plan
            .shards
            .iter()
            .map(|s| s.get_f32(key).map_err(|e| bad(s.path(), e.why)))
            .collect::<Result<Vec<Tensor>, _>>()?;
        let first = plan.shards[0].path();
        let flat = |t: Tensor| -> Result<Vec<f32>, LlmError> {
            t.flatten_all()
                .and_then(|t| t.to_vec1::<f32>())
                .map_err(|e| bad(first, format!("`{key}`: {e}")))
        };
        let data = match split_dim(*role) {
            Some(d) => {
                flat(Tensor::cat(&parts, d).map_err(|e| bad(first, format!("`{key}`: {e}")))?)?
            }
            None => {
                let mut it = parts.into_iter();
                let v = flat(it.next().ok_or_else(|| bad(first, "no shards"))?)?;
                // Replicated on every rank: a rank that disagrees is from another model.
                for (r, p) in it.enumerate() {
                    if flat(p)? != v {
                        return Err(bad(
                            plan.shards[r + 1].path(),
                            format!("`{key}` differs from consolidated rank 0's copy; the consolidated.*.pth files come from different models"),
                        ));
                    }
                }
                v
            }
        };
        let data = match role {
            Role::Q => unpermute_rows(&data, cfg.num_heads, cfg.head_dim, cfg.hidden_size),
            Role::K => unpermute_rows(&data, cfg.num_kv_heads, cfg.head_dim, cfg.hidden_size),
            _ => data,
        };
        got.insert(*name, data);
    }
    Ok(got)
}

/// Tensor count, dtypes and bytes of all ranks (for `llm inspect`).
pub(super) fn census(m: &MetaDir) -> Result<(BTreeMap<String, usize>, usize, u64), LlmError> {
    let mut dtypes = BTreeMap::new();
    let mut tensors = 0;
    let mut bytes = 0;
    for s in open_shards(m)? {
        bytes += std::fs::metadata(s.path()).map(|m| m.len()).unwrap_or(0);
        for info in s.infos().values() {
            *dtypes
                .entry(format!("{:?}", info.dtype).to_uppercase())
                .or_insert(0) += 1;
            tensors += 1;
        }
    }
    Ok((dtypes, tensors, bytes))
}
