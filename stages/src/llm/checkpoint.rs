//! Reading one transformer layer out of an LLM checkpoint without loading the rest:
//! Hugging Face safetensors (one file, or shards with `model.safetensors.index.json`, read
//! through mmap so only the layer's pages are touched) and GGUF (llama.cpp; seek to each
//! tensor, dequantise with candle). Output: the canonical block of `block_format.rs`.

use super::block_format::{Arch, BlockConfig, BLOCK_FORMAT};
use candle_core::quantized::gguf_file;
use candle_core::Device;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    #[error("{path}: {why}")]
    Bad { path: String, why: String },
    #[error(
        "{path}: tensor `{key}` is missing; the checkpoint is incomplete or not a {arch} model"
    )]
    MissingTensor {
        path: String,
        key: String,
        arch: Arch,
    },
    #[error("{path}: tensor `{key}` has shape {got:?}, the config says {expected:?}")]
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

fn bad(path: &Path, why: impl Into<String>) -> LlmError {
    LlmError::Bad {
        path: path.display().to_string(),
        why: why.into(),
    }
}

/// What `lm4ve llm inspect` prints.
#[derive(Debug, Clone)]
pub struct CheckpointInfo {
    pub path: PathBuf,
    pub format: String,
    pub arch: Arch,
    pub num_layers: usize,
    pub config: BlockConfig,
    pub dtypes: BTreeMap<String, usize>,
    pub tensors: usize,
    pub bytes: u64,
}

/// One extracted layer in canonical form.
#[derive(Debug, Clone)]
pub struct ExtractedBlock {
    pub config: BlockConfig,
    pub layer: usize,
    pub num_layers: usize,
    pub source: String,
    /// (canonical name, shape, f32 data), in `BlockConfig::tensor_shapes` order.
    pub tensors: Vec<(String, Vec<usize>, Vec<f32>)>,
    /// The files whose bytes were read (what the block's content key hashes).
    pub source_files: Vec<PathBuf>,
}

enum Source {
    /// HF: the safetensors files, the tensor → file map, config.json.
    Hf {
        files: Vec<PathBuf>,
        route: Option<HashMap<String, PathBuf>>,
        config_json: PathBuf,
    },
    Gguf(PathBuf),
}

fn locate(path: &Path) -> Result<Source, LlmError> {
    let md = std::fs::metadata(path).map_err(|e| {
        bad(
            path,
            format!("{e}; pass a .safetensors, .gguf, index.json or model directory"),
        )
    })?;
    let is_gguf = |p: &Path| {
        let mut magic = [0u8; 4];
        std::fs::File::open(p)
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
            .map(|_| &magic == b"GGUF")
            .unwrap_or(false)
    };
    let dir = if md.is_dir() {
        path.to_path_buf()
    } else {
        path.parent().unwrap_or(Path::new(".")).to_path_buf()
    };
    if md.is_file() && (path.extension().is_some_and(|e| e == "gguf") || is_gguf(path)) {
        if !is_gguf(path) {
            return Err(bad(path, "not a GGUF file (no GGUF magic); re-download it"));
        }
        return Ok(Source::Gguf(path.to_path_buf()));
    }
    let config_json = dir.join("config.json");
    if !config_json.exists() {
        return Err(bad(path, format!("no config.json beside the weights ({}); Hugging Face checkpoints need it for the layer shapes", config_json.display())));
    }
    let index = if md.is_file() && path.extension().is_some_and(|e| e == "json") {
        Some(path.to_path_buf())
    } else if md.is_dir() && dir.join("model.safetensors.index.json").exists() {
        Some(dir.join("model.safetensors.index.json"))
    } else {
        None
    };
    if let Some(index) = index {
        let text = std::fs::read_to_string(&index).map_err(|e| bad(&index, e.to_string()))?;
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| bad(&index, format!("not JSON: {e}")))?;
        let map = v["weight_map"]
            .as_object()
            .ok_or_else(|| bad(&index, "no `weight_map` object"))?;
        let mut route = HashMap::new();
        let mut files = BTreeSet::new();
        for (k, f) in map {
            let f = dir.join(
                f.as_str()
                    .ok_or_else(|| bad(&index, format!("weight_map[{k}] is not a file name")))?,
            );
            files.insert(f.clone());
            route.insert(k.clone(), f);
        }
        return Ok(Source::Hf {
            files: files.into_iter().collect(),
            route: Some(route),
            config_json,
        });
    }
    let file = if md.is_dir() {
        dir.join("model.safetensors")
    } else {
        path.to_path_buf()
    };
    if !file.exists() {
        return Err(bad(
            path,
            "no model.safetensors or model.safetensors.index.json in the directory",
        ));
    }
    Ok(Source::Hf {
        files: vec![file],
        route: None,
        config_json,
    })
}

fn cfg_usize(v: &serde_json::Value, keys: &[&str], path: &Path) -> Result<usize, LlmError> {
    keys.iter()
        .find_map(|k| v.get(*k).and_then(|x| x.as_u64()))
        .map(|x| x as usize)
        .ok_or_else(|| bad(path, format!("config.json lacks `{}`", keys[0])))
}

/// (arch, block config, number of layers) from a HF config.json.
fn hf_config(config_json: &Path) -> Result<(BlockConfig, usize), LlmError> {
    let text = std::fs::read_to_string(config_json).map_err(|e| bad(config_json, e.to_string()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| bad(config_json, format!("not JSON: {e}")))?;
    let model_type = v["model_type"].as_str().unwrap_or("");
    let arch = match model_type {
        "llama" | "mistral" | "qwen2" => Arch::Llama,
        "opt" => Arch::Opt,
        other => return Err(bad(config_json, format!("unknown architecture `model_type = {other:?}`; supported: llama (and llama-like), opt"))),
    };
    let hidden = cfg_usize(&v, &["hidden_size"], config_json)?;
    let heads = cfg_usize(&v, &["num_attention_heads"], config_json)?;
    let layers = cfg_usize(&v, &["num_hidden_layers"], config_json)?;
    if heads == 0 || hidden % heads != 0 {
        return Err(bad(
            config_json,
            "hidden_size is not a multiple of num_attention_heads",
        ));
    }
    let cfg = match arch {
        Arch::Llama => BlockConfig {
            arch,
            hidden_size: hidden,
            num_heads: heads,
            num_kv_heads: v["num_key_value_heads"]
                .as_u64()
                .map(|x| x as usize)
                .unwrap_or(heads),
            head_dim: v["head_dim"]
                .as_u64()
                .map(|x| x as usize)
                .unwrap_or(hidden / heads),
            intermediate_size: cfg_usize(&v, &["intermediate_size"], config_json)?,
            norm_eps: v["rms_norm_eps"].as_f64().unwrap_or(1e-6),
        },
        Arch::Opt => {
            if v["do_layer_norm_before"].as_bool() == Some(false) {
                return Err(bad(config_json, "post-LayerNorm OPT (do_layer_norm_before = false, e.g. opt-350m) is not supported; use another OPT size"));
            }
            BlockConfig {
                arch,
                hidden_size: hidden,
                num_heads: heads,
                num_kv_heads: heads,
                head_dim: hidden / heads,
                intermediate_size: cfg_usize(&v, &["ffn_dim", "intermediate_size"], config_json)?,
                norm_eps: 1e-5,
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

fn gguf_content(path: &Path) -> Result<gguf_file::Content, LlmError> {
    let mut f = std::fs::File::open(path).map_err(|e| bad(path, e.to_string()))?;
    gguf_file::Content::read(&mut f).map_err(|e| {
        bad(
            path,
            format!("cannot read the GGUF header: {e}; the file is truncated or corrupt"),
        )
    })
}

fn gguf_config(path: &Path, c: &gguf_file::Content) -> Result<(BlockConfig, usize), LlmError> {
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
            .and_then(|v| v.to_u64().ok().or_else(|| v.to_u32().ok().map(u64::from)))
            .map(|x| x as usize)
            .ok_or_else(|| bad(path, format!("GGUF metadata lacks `llama.{k}`")))
    };
    let hidden = u("embedding_length")?;
    let heads = u("attention.head_count")?;
    let kv = u("attention.head_count_kv").unwrap_or(heads);
    if heads == 0 || kv == 0 || hidden % heads != 0 || heads % kv != 0 {
        return Err(bad(path, "inconsistent head counts in the GGUF metadata"));
    }
    let eps = c
        .metadata
        .get("llama.attention.layer_norm_rms_epsilon")
        .and_then(|v| v.to_f32().ok())
        // GGUF stores f32: take its shortest decimal form so 1e-5 reads as 1e-5, as in HF.
        .and_then(|v| v.to_string().parse::<f64>().ok())
        .unwrap_or(1e-6);
    Ok((
        BlockConfig {
            arch: Arch::Llama,
            hidden_size: hidden,
            num_heads: heads,
            num_kv_heads: kv,
            head_dim: u("attention.key_length").unwrap_or(hidden / heads),
            intermediate_size: u("feed_forward_length")?,
            norm_eps: eps,
        },
        u("block_count")?,
    ))
}

pub fn inspect(path: &Path) -> Result<CheckpointInfo, LlmError> {
    let mut dtypes = BTreeMap::new();
    let mut bytes = 0u64;
    let mut tensors = 0;
    let (format, cfg, layers) = match locate(path)? {
        Source::Gguf(p) => {
            let c = gguf_content(&p)?;
            let (cfg, layers) = gguf_config(&p, &c)?;
            for info in c.tensor_infos.values() {
                *dtypes.entry(format!("{:?}", info.ggml_dtype)).or_insert(0) += 1;
                tensors += 1;
            }
            bytes = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
            ("gguf".to_string(), cfg, layers)
        }
        Source::Hf {
            files,
            route,
            config_json,
        } => {
            let (cfg, layers) = hf_config(&config_json)?;
            for f in &files {
                bytes += std::fs::metadata(f).map(|m| m.len()).unwrap_or(0);
                let header = read_safetensors_header(f)?;
                for (k, v) in header.as_object().into_iter().flatten() {
                    if k == "__metadata__" {
                        continue;
                    }
                    let dt = v["dtype"].as_str().unwrap_or("?").to_string();
                    *dtypes.entry(dt).or_insert(0) += 1;
                    tensors += 1;
                }
            }
            (
                if route.is_some() {
                    "safetensors-sharded"
                } else {
                    "safetensors"
                }
                .to_string(),
                cfg,
                layers,
            )
        }
    };
    Ok(CheckpointInfo {
        path: path.to_path_buf(),
        format,
        arch: cfg.arch,
        num_layers: layers,
        config: cfg,
        dtypes,
        tensors,
        bytes,
    })
}

/// The JSON header of a safetensors file (reads only the header bytes).
fn read_safetensors_header(file: &Path) -> Result<serde_json::Value, LlmError> {
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
    serde_json::from_slice(&h).map_err(|e| bad(file, format!("bad safetensors header: {e}")))
}

/// (canonical name, checkpoint key) for one layer.
fn key_map(arch: Arch, gguf: bool, layer: usize, opt_prefix: &str) -> Vec<(&'static str, String)> {
    match (arch, gguf) {
        (Arch::Llama, false) => [
            "input_layernorm.weight",
            "self_attn.q_proj.weight",
            "self_attn.k_proj.weight",
            "self_attn.v_proj.weight",
            "self_attn.o_proj.weight",
            "post_attention_layernorm.weight",
            "mlp.gate_proj.weight",
            "mlp.up_proj.weight",
            "mlp.down_proj.weight",
        ]
        .iter()
        .map(|n| (*n, format!("model.layers.{layer}.{n}")))
        .collect(),
        (Arch::Llama, true) => [
            ("input_layernorm.weight", "attn_norm"),
            ("self_attn.q_proj.weight", "attn_q"),
            ("self_attn.k_proj.weight", "attn_k"),
            ("self_attn.v_proj.weight", "attn_v"),
            ("self_attn.o_proj.weight", "attn_output"),
            ("post_attention_layernorm.weight", "ffn_norm"),
            ("mlp.gate_proj.weight", "ffn_gate"),
            ("mlp.up_proj.weight", "ffn_up"),
            ("mlp.down_proj.weight", "ffn_down"),
        ]
        .iter()
        .map(|(n, g)| (*n, format!("blk.{layer}.{g}.weight")))
        .collect(),
        (Arch::Opt, _) => BlockConfig {
            arch: Arch::Opt,
            hidden_size: 0,
            num_heads: 1,
            num_kv_heads: 1,
            head_dim: 0,
            intermediate_size: 0,
            norm_eps: 0.0,
        }
        .tensor_shapes()
        .into_iter()
        .map(|(n, _)| (n, format!("{opt_prefix}decoder.layers.{layer}.{n}")))
        .collect(),
    }
}

/// Undoes llama.cpp's q/k row permutation (its converter interleaves the two rotary halves
/// of every head: HF row `h·hd + j·hd/2 + i` is GGUF row `h·hd + 2i + j`).
fn unpermute_rows(data: &[f32], heads: usize, cols: usize) -> Vec<f32> {
    let rows = data.len() / cols.max(1);
    let hd = rows / heads.max(1);
    let half = hd / 2;
    let mut out = vec![0f32; data.len()];
    for h in 0..heads {
        for i in 0..half {
            for j in 0..2 {
                let g = h * hd + 2 * i + j;
                let f = h * hd + j * half + i;
                out[f * cols..(f + 1) * cols].copy_from_slice(&data[g * cols..(g + 1) * cols]);
            }
        }
    }
    out
}

pub fn extract_block(path: &Path, layer: Option<usize>) -> Result<ExtractedBlock, LlmError> {
    let source = locate(path)?;
    let (cfg, num_layers) = match &source {
        Source::Gguf(p) => gguf_config(p, &gguf_content(p)?)?,
        Source::Hf { config_json, .. } => hf_config(config_json)?,
    };
    let layer = layer.unwrap_or(num_layers.saturating_sub(1));
    if layer >= num_layers {
        return Err(LlmError::Layer {
            path: path.display().to_string(),
            layer,
            num_layers,
        });
    }
    let shapes: HashMap<&str, Vec<usize>> = cfg.tensor_shapes().into_iter().collect();
    let mut tensors = Vec::new();
    let mut source_files = Vec::new();
    match &source {
        Source::Gguf(p) => {
            let content = gguf_content(p)?;
            let mut f = std::fs::File::open(p).map_err(|e| bad(p, e.to_string()))?;
            for (name, key) in key_map(cfg.arch, true, layer, "") {
                if !content.tensor_infos.contains_key(&key) {
                    return Err(LlmError::MissingTensor {
                        path: p.display().to_string(),
                        key,
                        arch: cfg.arch,
                    });
                }
                let q = content
                    .tensor(&mut f, &key, &Device::Cpu)
                    .map_err(|e| bad(p, format!("`{key}`: {e}")))?;
                let t = q
                    .dequantize(&Device::Cpu)
                    .map_err(|e| bad(p, format!("`{key}`: {e}")))?;
                let dims = t.dims().to_vec();
                let mut data: Vec<f32> = t
                    .flatten_all()
                    .and_then(|t| t.to_vec1())
                    .map_err(|e| bad(p, format!("`{key}`: {e}")))?;
                check_shape(p, &key, &shapes[name], &dims)?;
                if name == "self_attn.q_proj.weight" {
                    data = unpermute_rows(&data, cfg.num_heads, cfg.hidden_size);
                } else if name == "self_attn.k_proj.weight" {
                    data = unpermute_rows(&data, cfg.num_kv_heads, cfg.hidden_size);
                }
                tensors.push((name.to_string(), dims, data));
            }
            source_files.push(p.clone());
        }
        Source::Hf {
            files,
            route,
            config_json,
        } => {
            // Which prefix does this OPT file use? Look for the first key of the layer.
            let mut all_keys: HashMap<String, PathBuf> = HashMap::new();
            match route {
                Some(r) => all_keys.extend(r.iter().map(|(k, v)| (k.clone(), v.clone()))),
                None => {
                    let h = read_safetensors_header(&files[0])?;
                    for k in h.as_object().into_iter().flatten().map(|(k, _)| k) {
                        all_keys.insert(k.clone(), files[0].clone());
                    }
                }
            }
            let opt_prefix = if all_keys.keys().any(|k| k.starts_with("model.decoder.")) {
                "model."
            } else {
                ""
            };
            let wanted = key_map(cfg.arch, false, layer, opt_prefix);
            let mut by_file: BTreeMap<PathBuf, Vec<(&str, String)>> = BTreeMap::new();
            for (name, key) in &wanted {
                let file = all_keys.get(key).ok_or_else(|| LlmError::MissingTensor {
                    path: path.display().to_string(),
                    key: key.clone(),
                    arch: cfg.arch,
                })?;
                by_file
                    .entry(file.clone())
                    .or_default()
                    .push((name, key.clone()));
            }
            let mut got: HashMap<&str, (Vec<usize>, Vec<f32>)> = HashMap::new();
            for (file, items) in &by_file {
                // SAFETY of the mmap: the file is only read; a concurrent writer would be a
                // user error that at worst yields wrong numbers, caught by the shape checks.
                let st = unsafe { candle_core::safetensors::MmapedSafetensors::new(file) }
                    .map_err(|e| {
                        bad(
                            file,
                            format!("{e}; the file is truncated or not safetensors"),
                        )
                    })?;
                for (name, key) in items {
                    let t = st
                        .load(key, &Device::Cpu)
                        .and_then(|t| t.to_dtype(candle_core::DType::F32))
                        .map_err(|e| bad(file, format!("`{key}`: {e}")))?;
                    let dims = t.dims().to_vec();
                    check_shape(file, key, &shapes[*name], &dims)?;
                    let data = t
                        .flatten_all()
                        .and_then(|t| t.to_vec1())
                        .map_err(|e| bad(file, e.to_string()))?;
                    got.insert(name, (dims, data));
                }
                source_files.push(file.clone());
            }
            source_files.push(config_json.clone());
            for (name, _) in &wanted {
                if let Some((d, v)) = got.remove(name) {
                    tensors.push((name.to_string(), d, v));
                }
            }
        }
    }
    // Canonical order.
    let order: Vec<&str> = cfg.tensor_shapes().iter().map(|(n, _)| *n).collect();
    tensors.sort_by_key(|(n, _, _)| order.iter().position(|o| o == n).unwrap_or(usize::MAX));
    Ok(ExtractedBlock {
        config: cfg,
        layer,
        num_layers,
        source: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        tensors,
        source_files,
    })
}

fn check_shape(path: &Path, key: &str, expected: &[usize], got: &[usize]) -> Result<(), LlmError> {
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

impl ExtractedBlock {
    /// The canonical file's bytes (deterministic: safetensors orders tensors by name).
    pub fn to_safetensors_bytes(&self) -> Result<Vec<u8>, LlmError> {
        let c = &self.config;
        let meta: HashMap<String, String> = [
            ("format", BLOCK_FORMAT.to_string()),
            ("architecture", c.arch.to_string()),
            ("hidden_size", c.hidden_size.to_string()),
            ("num_heads", c.num_heads.to_string()),
            ("num_kv_heads", c.num_kv_heads.to_string()),
            ("head_dim", c.head_dim.to_string()),
            ("intermediate_size", c.intermediate_size.to_string()),
            ("norm_eps", format!("{:e}", c.norm_eps)),
            ("layer", self.layer.to_string()),
            ("num_layers", self.num_layers.to_string()),
            ("source", self.source.clone()),
            (
                "activation",
                match c.arch {
                    Arch::Llama => "silu",
                    Arch::Opt => "relu",
                }
                .to_string(),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = self
            .tensors
            .iter()
            .map(|(n, s, d)| {
                (
                    n.clone(),
                    s.clone(),
                    d.iter().flat_map(|v| v.to_le_bytes()).collect(),
                )
            })
            .collect();
        let views = bytes
            .iter()
            .map(|(n, s, b)| {
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                    .map(|v| (n.clone(), v))
                    .map_err(|e| bad(Path::new(&self.source), e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        safetensors::tensor::serialize(views, Some(meta))
            .map_err(|e| bad(Path::new(&self.source), e.to_string()))
    }
}

pub fn save_block(block: &ExtractedBlock, out: &Path) -> Result<(), LlmError> {
    let bytes = block.to_safetensors_bytes()?;
    std::fs::write(out, bytes).map_err(|e| bad(out, e.to_string()))
}

type BlockTensors = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

/// Reads a canonical block file: its config (from the metadata), tensors and metadata.
pub fn load_block_file(
    path: &Path,
) -> Result<
    (
        BlockConfig,
        BlockTensors,
        serde_json::Map<String, serde_json::Value>,
    ),
    LlmError,
> {
    let bytes = std::fs::read(path).map_err(|e| bad(path, e.to_string()))?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| bad(path, format!("not a safetensors file: {e}")))?;
    let md = header.metadata().clone().unwrap_or_default();
    if md.get("format").map(String::as_str) != Some(BLOCK_FORMAT) {
        return Err(bad(path, format!("not an lm4ve block file (metadata format != {BLOCK_FORMAT}); make one with `lm4ve llm extract`")));
    }
    let get = |k: &str| {
        md.get(k)
            .cloned()
            .ok_or_else(|| bad(path, format!("block metadata lacks `{k}`")))
    };
    let num = |k: &str| -> Result<usize, LlmError> {
        get(k)?
            .parse()
            .map_err(|_| bad(path, format!("block metadata `{k}` is not a number")))
    };
    let arch = match get("architecture")?.as_str() {
        "llama" => Arch::Llama,
        "opt" => Arch::Opt,
        a => return Err(bad(path, format!("unknown architecture `{a}`"))),
    };
    let cfg = BlockConfig {
        arch,
        hidden_size: num("hidden_size")?,
        num_heads: num("num_heads")?,
        num_kv_heads: num("num_kv_heads")?,
        head_dim: num("head_dim")?,
        intermediate_size: num("intermediate_size")?,
        norm_eps: get("norm_eps")?
            .parse()
            .map_err(|_| bad(path, "norm_eps is not a number"))?,
    };
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| bad(path, e.to_string()))?;
    let mut tensors = BTreeMap::new();
    for (name, expected) in cfg.tensor_shapes() {
        let view = st.tensor(name).map_err(|_| LlmError::MissingTensor {
            path: path.display().to_string(),
            key: name.to_string(),
            arch,
        })?;
        check_shape(path, name, &expected, view.shape())?;
        if view.dtype() != safetensors::Dtype::F32 {
            return Err(bad(
                path,
                format!("`{name}` is {:?}, block files hold f32", view.dtype()),
            ));
        }
        let data = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        tensors.insert(name.to_string(), (expected, data));
    }
    let meta = md
        .into_iter()
        .map(|(k, v)| (k, serde_json::Value::String(v)))
        .collect();
    Ok((cfg, tensors, meta))
}
