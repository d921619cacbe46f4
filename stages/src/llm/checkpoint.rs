//! Reading one transformer layer out of an LLM checkpoint without loading the rest:
//! Hugging Face safetensors (one file, or shards with `model.safetensors.index.json`; the
//! headers say where each tensor's bytes are, and only those byte ranges of only the shards
//! holding the layer are read), GGUF (llama.cpp; seek to each tensor, dequantise with
//! candle) and Meta's original `params.json` + `consolidated.NN.pth` (`meta.rs`; each rank's
//! slice of the layer read lazily from the zip). Every key, shape and byte range is checked against the headers before any data
//! is read. Output: the canonical block of `block_format.rs`.

use super::block_format::{self, Arch, BlockConfig, BLOCK_FORMAT};
pub use super::error::LlmError;
use super::error::{bad, check_shape};
use super::gguf::{gguf_config, gguf_content, unpermute_rows};
use super::hf::{hf_config, locate_hf_tensor, read_hf_tensor, read_safetensors_header, HfTensor};
use super::identity::{self, LlmIdentity};
use super::meta::{self, MetaDir, MetaLayer};
use candle_core::quantized::gguf_file;
use candle_core::Device;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

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
#[derive(Clone)]
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

/// Names and shapes only: a 7B layer's 200M floats in a log or a failed `unwrap` help nobody.
impl std::fmt::Debug for ExtractedBlock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shapes: Vec<(&str, &[usize])> = self
            .tensors
            .iter()
            .map(|(n, s, _)| (n.as_str(), s.as_slice()))
            .collect();
        f.debug_struct("ExtractedBlock")
            .field("config", &self.config)
            .field("layer", &self.layer)
            .field("num_layers", &self.num_layers)
            .field("source", &self.source)
            .field("tensors", &shapes)
            .field("source_files", &self.source_files)
            .finish()
    }
}

enum Source {
    /// HF: the safetensors files, the tensor → file map, config.json.
    Hf {
        files: Vec<PathBuf>,
        route: Option<HashMap<String, PathBuf>>,
        config_json: PathBuf,
    },
    Gguf(PathBuf),
    Meta(MetaDir),
}

fn locate(path: &Path) -> Result<Source, LlmError> {
    let md = std::fs::metadata(path).map_err(|e| {
        bad(
            path,
            format!("{e}; pass a .safetensors, .gguf, index.json, model directory or Meta params.json directory"),
        )
    })?;
    let is_gguf = |p: &Path| {
        let mut magic = [0u8; 4];
        std::fs::File::open(p)
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
            .map(|_| &magic == b"GGUF")
            .unwrap_or(false)
    };
    if let Some(m) = meta::locate(path, md.is_dir())? {
        return Ok(Source::Meta(m));
    }
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

/// What the checkpoint's own config says it is (`super::identity`), from its config file or
/// header only (no tensor is read).
pub fn identity(path: &Path) -> Result<LlmIdentity, LlmError> {
    match locate(path)? {
        Source::Gguf(p) => {
            let c = gguf_content(&p)?;
            let (cfg, layers) = gguf_config(&p, &c)?;
            Ok(identity::from_gguf(
                &c,
                cfg.hidden_size,
                layers,
                cfg.norm_eps,
            ))
        }
        Source::Meta(m) => {
            let (cfg, layers) = meta::meta_config(&m.params_json)?;
            identity::from_params_json(&m.params_json, cfg.hidden_size, layers, cfg.norm_eps)
        }
        Source::Hf { config_json, .. } => {
            let (cfg, layers) = hf_config(&config_json)?;
            identity::from_config_json(
                &config_json,
                cfg.arch,
                cfg.hidden_size,
                layers,
                cfg.norm_eps,
            )
        }
    }
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
        Source::Meta(m) => {
            let (cfg, layers) = meta::meta_config(&m.params_json)?;
            (dtypes, tensors, bytes) = meta::census(&m)?;
            ("meta-pth".to_string(), cfg, layers)
        }
        Source::Hf {
            files,
            route,
            config_json,
        } => {
            let (cfg, layers) = hf_config(&config_json)?;
            for f in &files {
                bytes += std::fs::metadata(f).map(|m| m.len()).unwrap_or(0);
                let (_, header) = read_safetensors_header(f)?;
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

/// (canonical name, checkpoint key) for one layer, from the one name table
/// ([`block_format::TENSORS`]).
fn key_map(arch: Arch, gguf: bool, layer: usize, opt_prefix: &str) -> Vec<(&'static str, String)> {
    block_format::tensors_of(arch)
        .map(|t| {
            let key = match (arch, gguf, t.gguf) {
                (Arch::Llama, true, Some(g)) => format!("blk.{layer}.{g}.weight"),
                (Arch::Llama, _, _) => format!("model.layers.{layer}.{}", t.name),
                (Arch::Opt, _, _) => format!("{opt_prefix}decoder.layers.{layer}.{}", t.name),
            };
            (t.name, key)
        })
        .collect()
}

/// Everything needed to read one layer, resolved from headers only. Both the stage (which
/// hashes `files()` into its key at build time) and `extract_block` start here, so they
/// agree on which bytes a block depends on and every "missing / wrong shape" error fires
/// before any tensor data is read.
struct LayerPlan {
    cfg: BlockConfig,
    num_layers: usize,
    layer: usize,
    kind: PlanKind,
}

enum PlanKind {
    Gguf {
        file: PathBuf,
        content: gguf_file::Content,
        keys: Vec<(&'static str, String)>,
    },
    Hf {
        tensors: Vec<HfTensor>,
        config_json: PathBuf,
    },
    Meta(MetaLayer),
}

impl LayerPlan {
    /// The files whose bytes the block is made of, sorted (config.json last for HF).
    fn files(&self) -> Vec<PathBuf> {
        match &self.kind {
            PlanKind::Gguf { file, .. } => vec![file.clone()],
            PlanKind::Hf {
                tensors,
                config_json,
            } => {
                let set: BTreeSet<PathBuf> = tensors.iter().map(|t| t.file.clone()).collect();
                let mut out: Vec<PathBuf> = set.into_iter().collect();
                out.push(config_json.clone());
                out
            }
            PlanKind::Meta(m) => m.files(),
        }
    }
}

fn plan_layer(path: &Path, layer: Option<usize>) -> Result<LayerPlan, LlmError> {
    let source = locate(path)?;
    let (cfg, num_layers, content) = match &source {
        Source::Gguf(p) => {
            let c = gguf_content(p)?;
            let (cfg, n) = gguf_config(p, &c)?;
            (cfg, n, Some(c))
        }
        Source::Hf { config_json, .. } => {
            let (cfg, n) = hf_config(config_json)?;
            (cfg, n, None)
        }
        Source::Meta(m) => {
            let (cfg, n) = meta::meta_config(&m.params_json)?;
            (cfg, n, None)
        }
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
    let expected = |name: &str| shapes.get(name).cloned().unwrap_or_default();
    let kind = match (source, content) {
        (Source::Gguf(file), Some(content)) => {
            let keys = key_map(cfg.arch, true, layer, "");
            for (name, key) in &keys {
                let info =
                    content
                        .tensor_infos
                        .get(key)
                        .ok_or_else(|| LlmError::MissingTensor {
                            path: file.display().to_string(),
                            key: key.clone(),
                            arch: cfg.arch,
                        })?;
                // candle's reader already reverses GGUF's ne[] (fastest dim first) into
                // row-major order, so this compares like with like.
                check_shape(&file, key, &expected(name), info.shape.dims())?;
            }
            if cfg.head_dim % 2 != 0 {
                return Err(bad(
                    &file,
                    format!("head_dim {} is odd; llama.cpp's q/k row permutation needs an even head_dim, so this is not a LLaMA GGUF", cfg.head_dim),
                ));
            }
            PlanKind::Gguf {
                file,
                content,
                keys,
            }
        }
        (
            Source::Hf {
                files,
                route,
                config_json,
            },
            _,
        ) => {
            // key → file holding it: from the index for shards, else the one file's header.
            let mut headers: BTreeMap<PathBuf, (u64, serde_json::Value)> = BTreeMap::new();
            let key_file: HashMap<String, PathBuf> = match route {
                Some(r) => r,
                None => {
                    let mut m = HashMap::new();
                    for f in &files {
                        let h = read_safetensors_header(f)?;
                        for k in h.1.as_object().into_iter().flatten().map(|(k, _)| k) {
                            m.insert(k.clone(), f.clone());
                        }
                        headers.insert(f.clone(), h);
                    }
                    m
                }
            };
            // Hub OPT files exist with and without the `model.` prefix.
            let opt_prefix = if key_file.keys().any(|k| k.starts_with("model.decoder.")) {
                "model."
            } else {
                ""
            };
            let mut tensors = Vec::new();
            for (name, key) in key_map(cfg.arch, false, layer, opt_prefix) {
                let file = key_file
                    .get(&key)
                    .cloned()
                    .ok_or_else(|| LlmError::MissingTensor {
                        path: path.display().to_string(),
                        key: key.clone(),
                        arch: cfg.arch,
                    })?;
                if !headers.contains_key(&file) {
                    let h = read_safetensors_header(&file)?;
                    headers.insert(file.clone(), h);
                }
                let header = headers
                    .get(&file)
                    .ok_or_else(|| bad(&file, "header lost"))?;
                tensors.push(locate_hf_tensor(&file, header, name, key, &expected(name))?);
            }
            PlanKind::Hf {
                tensors,
                config_json,
            }
        }
        (Source::Meta(m), _) => PlanKind::Meta(meta::plan(&m, &cfg, layer)?),
        (Source::Gguf(file), None) => return Err(bad(&file, "GGUF header not read")),
    };
    Ok(LayerPlan {
        cfg,
        num_layers,
        layer,
        kind,
    })
}

/// The files layer `layer` is read from (for HF also config.json), from headers only: what
/// the `llm.block` stage hashes into its key without reading tensor data. Fails like
/// `extract_block` would (layer out of range, missing tensor, wrong shape).
pub fn layer_files(path: &Path, layer: usize) -> Result<Vec<PathBuf>, LlmError> {
    Ok(plan_layer(path, Some(layer))?.files())
}

pub fn extract_block(path: &Path, layer: Option<usize>) -> Result<ExtractedBlock, LlmError> {
    let plan = plan_layer(path, layer)?;
    let source_files = plan.files();
    let cfg = &plan.cfg;
    let mut got: HashMap<&str, Vec<f32>> = HashMap::new();
    match &plan.kind {
        PlanKind::Gguf {
            file,
            content,
            keys,
        } => {
            let mut f = std::fs::File::open(file).map_err(|e| bad(file, e.to_string()))?;
            for (name, key) in keys {
                let err = |e: candle_core::Error| {
                    bad(
                        file,
                        format!("`{key}`: {e}; the file is truncated or corrupt"),
                    )
                };
                let t = content
                    .tensor(&mut f, key, &Device::Cpu)
                    .and_then(|q| q.dequantize(&Device::Cpu))
                    .map_err(err)?;
                let mut data: Vec<f32> = t.flatten_all().and_then(|t| t.to_vec1()).map_err(err)?;
                if *name == "self_attn.q_proj.weight" {
                    data = unpermute_rows(&data, cfg.num_heads, cfg.head_dim, cfg.hidden_size);
                } else if *name == "self_attn.k_proj.weight" {
                    data = unpermute_rows(&data, cfg.num_kv_heads, cfg.head_dim, cfg.hidden_size);
                }
                got.insert(name, data);
            }
        }
        PlanKind::Hf { tensors, .. } => {
            for t in tensors {
                got.insert(t.name, read_hf_tensor(t)?);
            }
        }
        PlanKind::Meta(m) => got = meta::read(m, cfg)?,
    }
    let mut tensors = Vec::new();
    for (name, shape) in cfg.tensor_shapes() {
        let data = got.remove(name).ok_or_else(|| LlmError::MissingTensor {
            path: path.display().to_string(),
            key: name.to_string(),
            arch: cfg.arch,
        })?;
        tensors.push((name.to_string(), shape, data));
    }
    Ok(ExtractedBlock {
        config: plan.cfg.clone(),
        layer: plan.layer,
        num_layers: plan.num_layers,
        source: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        tensors,
        source_files,
    })
}

impl ExtractedBlock {
    /// The canonical file's bytes: equal blocks give equal bytes (see `write_safetensors_f32`).
    pub fn to_safetensors_bytes(&self) -> Result<Vec<u8>, LlmError> {
        write_safetensors_f32(&self.tensors, &self.metadata())
            .map_err(|why| bad(Path::new(&self.source), why))
    }

    /// The block file's metadata (the keys of `block_format.rs`).
    fn metadata(&self) -> BTreeMap<String, String> {
        let c = &self.config;
        [
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
        // Written only for post-norm layers: pre-norm files stay byte for byte what they were.
        .chain(
            c.post_norm
                .then(|| ("do_layer_norm_before", "false".to_string())),
        )
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}

/// Serialises f32 tensors and string metadata as a safetensors file, byte for byte the same
/// on every run and machine. The `safetensors` crate keeps metadata in a `HashMap` and
/// writes it in hash order, which differs from run to run; the cache wants equal bytes for
/// equal content, so the header is built here: `__metadata__` first, then tensors by name,
/// every object's keys sorted, data laid out in the same order, header padded with spaces
/// to 8 bytes as the reference writer does.
fn write_safetensors_f32(
    tensors: &[(String, Vec<usize>, Vec<f32>)],
    meta: &BTreeMap<String, String>,
) -> Result<Vec<u8>, String> {
    let mut sorted: Vec<&(String, Vec<usize>, Vec<f32>)> = tensors.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    // serde_json escapes the strings; the object is assembled by hand so its key order
    // does not depend on serde_json's map flavour.
    let js = |s: &str| serde_json::Value::String(s.to_string()).to_string();
    let mut header = String::from("{");
    if !meta.is_empty() {
        header.push_str("\"__metadata__\":{");
        let fields: Vec<String> = meta
            .iter()
            .map(|(k, v)| format!("{}:{}", js(k), js(v)))
            .collect();
        header.push_str(&fields.join(","));
        header.push('}');
    }
    let mut offset = 0usize;
    for (name, shape, data) in &sorted {
        let numel: usize = shape.iter().product();
        if numel != data.len() {
            return Err(format!(
                "tensor `{name}`: shape {shape:?} holds {numel} values, got {}",
                data.len()
            ));
        }
        if header.len() > 1 {
            header.push(',');
        }
        let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
        let end = offset + 4 * data.len();
        header.push_str(&format!(
            "{}:{{\"data_offsets\":[{offset},{end}],\"dtype\":\"F32\",\"shape\":[{}]}}",
            js(name),
            dims.join(",")
        ));
        offset = end;
    }
    header.push('}');
    while header.len() % 8 != 0 {
        header.push(' ');
    }
    let mut out = Vec::with_capacity(8 + header.len() + offset);
    out.extend_from_slice(&(header.len() as u64).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for (_, _, data) in &sorted {
        for v in data.iter() {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    Ok(out)
}

pub fn save_block(block: &ExtractedBlock, out: &Path) -> Result<(), LlmError> {
    let bytes = block.to_safetensors_bytes()?;
    std::fs::write(out, bytes).map_err(|e| bad(out, e.to_string()))
}

type BlockTensors = BTreeMap<String, (Vec<usize>, Vec<f32>)>;
type BlockMeta = serde_json::Map<String, serde_json::Value>;

/// Reads a canonical block file of one layer: its config (from the metadata), tensors and
/// metadata. A file holding a stack of layers (`blocks` > 1) is refused with a pointer to
/// [`load_block_stack`], so that no consumer silently runs only its first layer.
pub fn load_block_file(path: &Path) -> Result<(BlockConfig, BlockTensors, BlockMeta), LlmError> {
    let (cfg, mut layers, meta) = load_block_stack(path)?;
    if layers.len() != 1 {
        return Err(bad(
            path,
            format!(
                "holds a stack of {} layers (`blocks = {}` of an llm.block stage); this command runs one layer, the trainer runs stacks",
                layers.len(),
                layers.len()
            ),
        ));
    }
    let tensors = layers.pop().unwrap_or_default();
    Ok((cfg, tensors, meta))
}

/// Reads a canonical block file of one layer or of a stack of `blocks` consecutive layers
/// (tensors under `layers.{i}.`, see `block_format.rs`): the shared config, each layer's
/// tensors in order, and the metadata.
pub fn load_block_stack(
    path: &Path,
) -> Result<(BlockConfig, Vec<BlockTensors>, BlockMeta), LlmError> {
    let bytes = std::fs::read(path).map_err(|e| bad(path, e.to_string()))?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| bad(path, format!("not a safetensors file: {e}")))?;
    let md = header.metadata().clone().unwrap_or_default();
    let (cfg, blocks) = block_config_of(path, &md)?;
    let arch = cfg.arch;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| bad(path, e.to_string()))?;
    let expected_count = blocks * cfg.tensor_shapes().len();
    if st.len() != expected_count {
        return Err(bad(
            path,
            format!(
                "holds {} tensors, a {blocks}-layer {arch} block has {expected_count}",
                st.len()
            ),
        ));
    }
    let mut layers = Vec::with_capacity(blocks);
    for i in 0..blocks {
        let prefix = if blocks == 1 {
            String::new()
        } else {
            stack_prefix(i)
        };
        layers.push(read_block_tensors(path, &st, &cfg, &prefix)?);
    }
    let meta = md
        .into_iter()
        .map(|(k, v)| (k, serde_json::Value::String(v)))
        .collect();
    Ok((cfg, layers, meta))
}

/// The config and layer count a block file's metadata describes.
fn block_config_of(
    path: &Path,
    md: &std::collections::HashMap<String, String>,
) -> Result<(BlockConfig, usize), LlmError> {
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
        // Absent (every file written before post-LN OPT was supported): pre-norm.
        post_norm: match md.get("do_layer_norm_before").map(String::as_str) {
            None | Some("true") => false,
            Some("false") => true,
            Some(o) => {
                return Err(bad(
                    path,
                    format!("block metadata `do_layer_norm_before` is `{o}`, not true or false"),
                ))
            }
        },
    };
    if cfg.post_norm && cfg.arch != Arch::Opt {
        return Err(bad(
            path,
            format!("block metadata says post-LayerNorm for a {arch} block; only OPT has post-LayerNorm layers"),
        ));
    }
    let blocks = match md.get("blocks") {
        None => 1,
        Some(v) => v.parse::<usize>().ok().filter(|n| *n >= 1).ok_or_else(|| {
            bad(
                path,
                format!("block metadata `blocks` is `{v}`, not a count"),
            )
        })?,
    };
    Ok((cfg, blocks))
}

/// The config, layer count and metadata of a block file from its header alone (no tensor
/// data is read): what the `mlp` ablation needs of a 7B block, and what a dry run reads.
pub fn block_file_config(path: &Path) -> Result<(BlockConfig, usize, BlockMeta), LlmError> {
    let (_, header) = super::hf::read_safetensors_header(path)?;
    let md: std::collections::HashMap<String, String> = header
        .get("__metadata__")
        .and_then(|m| m.as_object())
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                .collect()
        })
        .unwrap_or_default();
    let (cfg, blocks) = block_config_of(path, &md)?;
    let meta = md
        .into_iter()
        .map(|(k, v)| (k, serde_json::Value::String(v)))
        .collect();
    Ok((cfg, blocks, meta))
}

/// The tensors of one layer of a block file, under `prefix` + their canonical names.
fn read_block_tensors(
    path: &Path,
    st: &safetensors::SafeTensors,
    cfg: &BlockConfig,
    prefix: &str,
) -> Result<BlockTensors, LlmError> {
    let arch = cfg.arch;
    let mut tensors = BTreeMap::new();
    for (name, expected) in cfg.tensor_shapes() {
        let key = format!("{prefix}{name}");
        let view = st.tensor(&key).map_err(|_| LlmError::MissingTensor {
            path: path.display().to_string(),
            key: key.clone(),
            arch,
        })?;
        check_shape(path, &key, &expected, view.shape())?;
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
    Ok(tensors)
}

/// Where layer `i` of a stacked block file keeps its tensors.
pub fn stack_prefix(i: usize) -> String {
    format!("layers.{i}.")
}

/// The first layer of a stack of `n` when the config names none: the last `n` layers, as the
/// reference's `LLaMATransformer` takes layers `first_layer..n_layers`.
pub fn default_first_layer(num_layers: usize, n: usize) -> usize {
    num_layers.saturating_sub(n.max(1))
}

fn check_stack(path: &Path, first: usize, n: usize, num_layers: usize) -> Result<(), LlmError> {
    if n == 0 {
        return Err(bad(path, "a stack needs at least one layer (blocks >= 1)"));
    }
    if first + n > num_layers {
        return Err(LlmError::Layer {
            path: path.display().to_string(),
            layer: first + n - 1,
            num_layers,
        });
    }
    Ok(())
}

/// The files layers `first..first + n` are read from, from headers only: for n = 1 exactly
/// [`layer_files`]; for more, the union in first-appearance order with the config file
/// (config.json, params.json) kept last.
pub fn layers_files(path: &Path, first: usize, n: usize) -> Result<Vec<PathBuf>, LlmError> {
    let plan = plan_layer(path, Some(first))?;
    check_stack(path, first, n, plan.num_layers)?;
    let mut out = plan.files();
    if n == 1 {
        return Ok(out);
    }
    let config = match plan.kind {
        PlanKind::Hf { .. } | PlanKind::Meta(_) => out.pop(),
        PlanKind::Gguf { .. } => None,
    };
    for layer in first + 1..first + n {
        for f in plan_layer(path, Some(layer))?.files() {
            if Some(&f) != config.as_ref() && !out.contains(&f) {
                out.push(f);
            }
        }
    }
    out.extend(config);
    Ok(out)
}

/// `n` consecutive layers (`first`, default the last `n`), each in canonical form.
pub fn extract_blocks(
    path: &Path,
    first: Option<usize>,
    n: usize,
) -> Result<Vec<ExtractedBlock>, LlmError> {
    let num_layers = plan_layer(path, None)?.num_layers;
    let first = first.unwrap_or_else(|| default_first_layer(num_layers, n));
    check_stack(path, first, n, num_layers)?;
    (first..first + n)
        .map(|layer| extract_block(path, Some(layer)))
        .collect()
}

/// The block file of a stack: for one layer exactly [`ExtractedBlock::to_safetensors_bytes`];
/// for more, every layer's tensors under `layers.{i}.`, the first layer's metadata (its
/// `layer` is the first of the stack) and `blocks` = the count.
pub fn stack_to_safetensors_bytes(blocks: &[ExtractedBlock]) -> Result<Vec<u8>, LlmError> {
    let first = match blocks {
        [] => return Err(bad(Path::new("block"), "an empty stack")),
        [one] => return one.to_safetensors_bytes(),
        [first, ..] => first,
    };
    let src = Path::new(&first.source);
    let mut tensors = Vec::new();
    for (i, b) in blocks.iter().enumerate() {
        if b.config != first.config || b.layer != first.layer + i {
            return Err(bad(
                src,
                "a stack must be consecutive layers of one model (same shapes)",
            ));
        }
        tensors.extend(
            b.tensors
                .iter()
                .map(|(n, s, d)| (format!("{}{n}", stack_prefix(i)), s.clone(), d.clone())),
        );
    }
    let mut meta = first.metadata();
    meta.insert("blocks".into(), blocks.len().to_string());
    write_safetensors_f32(&tensors, &meta).map_err(|why| bad(src, why))
}

/// The layer shape and layer count of a checkpoint from its config alone: a Hugging Face
/// model's `config.json` (the weight files need not be there), Meta's `params.json`, or a GGUF
/// header. For dry runs, which must not need the weights.
pub fn checkpoint_shape(path: &Path) -> Result<(BlockConfig, usize), LlmError> {
    let md = std::fs::metadata(path).map_err(|e| {
        bad(
            path,
            format!("{e}; a dry run needs at least the model's config.json (or the GGUF file)"),
        )
    })?;
    if md.is_file() {
        let mut magic = [0u8; 4];
        let is_gguf = std::fs::File::open(path)
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
            .map(|_| &magic == b"GGUF")
            .unwrap_or(false);
        if is_gguf {
            return gguf_config(path, &gguf_content(path)?);
        }
        if path.file_name().is_some_and(|n| n == "config.json") {
            return hf_config(path);
        }
        if path.file_name().is_some_and(|n| n == "params.json") {
            return meta::meta_config(path);
        }
    }
    let dir = if md.is_dir() {
        path
    } else {
        path.parent().unwrap_or(Path::new("."))
    };
    let (config_json, params_json) = (dir.join("config.json"), dir.join("params.json"));
    if !config_json.exists() && params_json.exists() {
        return meta::meta_config(&params_json);
    }
    hf_config(&config_json)
}
