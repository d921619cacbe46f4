//! Which LLM a checkpoint is: what its own config says beyond the layer shapes (vocabulary,
//! context length, rope theta, norm eps, size), read from HF `config.json`, Meta's
//! `params.json` or the GGUF metadata, and the check of it against the LLM the paper used
//! (LLaMA-v1 7B). A block cut from another model runs, but it is not the paper's
//! experiment: the `llm.block` stage warns (it never refuses) and records the identity in its
//! meta.
//!
//! Why these fields: LLaMA 2 7B has LLaMA 7B's exact shapes (4096 wide, 32 layers, 32 heads,
//! FFN 11008, vocabulary 32000), so the shapes cannot tell them apart. Its config does: a
//! 4096-token context (v1: 2048) and RMSNorm eps 1e-5 (v1: 1e-6; the eps is used inside the
//! block's own norms, so the two blocks compute differently even on equal weights).

use super::block_format::Arch;
use super::gguf::gguf_uint;
use super::LlmError;
use candle_core::quantized::gguf_file;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// A checkpoint's identity: what its config states (None: the format does not say).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlmIdentity {
    /// `llama` or `opt`.
    pub arch: String,
    pub hidden_size: usize,
    pub num_layers: usize,
    pub vocab_size: Option<u64>,
    /// The positions the model was trained for (HF `max_position_embeddings`, GGUF
    /// `llama.context_length`; Meta's params.json does not say).
    pub context_length: Option<u64>,
    pub rope_theta: Option<f64>,
    pub norm_eps: f64,
    /// Where it was read: `config.json`, `params.json`, `gguf`.
    pub from: String,
}

/// The LLM a stage expects (`llm.block` `expect = "llama-v1-7b"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Expected {
    /// LLaMA (v1) 7B, the paper's and the reference code's model.
    #[serde(rename = "llama-v1-7b")]
    LlamaV1_7b,
}

/// LLaMA-v1 7B as its released configs state it (Meta `params.json`: dim 4096, 32 layers,
/// norm_eps 1e-6; the HF conversion: `max_position_embeddings` 2048, vocabulary 32000, rope
/// theta 10000 — the default when a config leaves it out).
const V1_7B: (usize, usize, u64, u64, f64, f64) = (4096, 32, 32000, 2048, 1e-6, 10000.0);

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-3 * b.abs()
}

impl Expected {
    pub fn name(self) -> &'static str {
        match self {
            Expected::LlamaV1_7b => "LLaMA-v1 7B",
        }
    }

    /// How `id` differs from the expected model, one line each (empty: it is that model, as
    /// far as its config says).
    pub fn differences(self, id: &LlmIdentity) -> Vec<String> {
        let Expected::LlamaV1_7b = self;
        let (hidden, layers, vocab, ctx, eps, theta) = V1_7B;
        let mut out = Vec::new();
        if id.arch != "llama" {
            out.push(format!("a {} model, not LLaMA", id.arch));
            return out;
        }
        if id.hidden_size != hidden || id.num_layers != layers {
            out.push(format!(
                "a different size: hidden {}, {} layers (LLaMA 7B: {hidden}, {layers})",
                id.hidden_size, id.num_layers
            ));
        }
        if let Some(c) = id.context_length.filter(|&c| c != ctx) {
            let hint = if c == 4096 { "; 4096 is LLaMA 2's" } else { "" };
            out.push(format!("context length {c} (LLaMA v1: {ctx}{hint})"));
        }
        if !close(id.norm_eps, eps) {
            let hint = if close(id.norm_eps, 1e-5) {
                "; 1e-5 is LLaMA 2's"
            } else {
                ""
            };
            out.push(format!(
                "RMSNorm eps {:e} (LLaMA v1: {eps:e}{hint})",
                id.norm_eps
            ));
        }
        if let Some(v) = id.vocab_size.filter(|&v| v != vocab) {
            out.push(format!("vocabulary {v} (LLaMA v1: {vocab})"));
        }
        if let Some(t) = id.rope_theta.filter(|&t| !close(t, theta)) {
            out.push(format!("rope theta {t} (LLaMA v1: {theta})"));
        }
        out
    }
}

/// The identity from an HF `config.json` (shapes already read by `hf_config`).
pub(super) fn from_config_json(
    path: &Path,
    arch: Arch,
    hidden_size: usize,
    num_layers: usize,
    norm_eps: f64,
) -> Result<LlmIdentity, LlmError> {
    let v = read_json(path)?;
    Ok(LlmIdentity {
        arch: arch_name(arch),
        hidden_size,
        num_layers,
        vocab_size: v["vocab_size"].as_u64(),
        context_length: v["max_position_embeddings"].as_u64(),
        // transformers' LlamaConfig default when the file leaves it out (v1 conversions do).
        rope_theta: v["rope_theta"]
            .as_f64()
            .or((arch == Arch::Llama).then_some(10000.0)),
        norm_eps,
        from: "config.json".into(),
    })
}

/// The identity from Meta's `params.json`: no context length (Meta's `model.py` takes
/// `max_seq_len` at load time), `vocab_size` -1 in the v1/v2 releases (the tokenizer's).
pub(super) fn from_params_json(
    path: &Path,
    hidden_size: usize,
    num_layers: usize,
    norm_eps: f64,
) -> Result<LlmIdentity, LlmError> {
    let v = read_json(path)?;
    Ok(LlmIdentity {
        arch: "llama".into(),
        hidden_size,
        num_layers,
        vocab_size: v["vocab_size"].as_i64().and_then(|x| u64::try_from(x).ok()),
        context_length: None,
        rope_theta: v["rope_theta"].as_f64().or(Some(10000.0)),
        norm_eps,
        from: "params.json".into(),
    })
}

/// The identity from GGUF metadata: `llama.context_length`, `llama.rope.freq_base`, the
/// vocabulary from `llama.vocab_size` or the tokenizer's token list.
pub(super) fn from_gguf(
    c: &gguf_file::Content,
    hidden_size: usize,
    num_layers: usize,
    norm_eps: f64,
) -> LlmIdentity {
    let md = &c.metadata;
    let vocab = md
        .get("llama.vocab_size")
        .and_then(gguf_uint)
        .map(|v| v as u64)
        .or_else(|| match md.get("tokenizer.ggml.tokens") {
            Some(gguf_file::Value::Array(a)) => Some(a.len() as u64),
            _ => None,
        });
    let theta = md.get("llama.rope.freq_base").and_then(|v| match v {
        gguf_file::Value::F32(x) => x.to_string().parse::<f64>().ok(),
        gguf_file::Value::F64(x) => Some(*x),
        _ => None,
    });
    LlmIdentity {
        arch: "llama".into(),
        hidden_size,
        num_layers,
        vocab_size: vocab,
        context_length: md
            .get("llama.context_length")
            .and_then(gguf_uint)
            .map(|v| v as u64),
        // llama.cpp's default when the key is absent.
        rope_theta: theta.or(Some(10000.0)),
        norm_eps,
        from: "gguf".into(),
    }
}

fn arch_name(arch: Arch) -> String {
    arch.to_string()
}

fn read_json(path: &Path) -> Result<serde_json::Value, LlmError> {
    let text = std::fs::read_to_string(path).map_err(|e| super::error::bad(path, e.to_string()))?;
    serde_json::from_str(&text).map_err(|e| super::error::bad(path, format!("not JSON: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::identity as read_identity;
    use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
    use candle_core::{Device, Tensor};
    use std::collections::HashMap;
    use std::path::PathBuf;

    /// A Hugging Face LLaMA directory: `config.json` as written (the real files' fields) and a
    /// small real `model.safetensors` (identity reads no tensor).
    fn hf_dir(dir: &Path, name: &str, config: &str) -> PathBuf {
        let m = dir.join(name);
        std::fs::create_dir_all(&m).unwrap();
        let t: HashMap<String, Tensor> = [(
            "model.norm.weight".to_string(),
            Tensor::ones(4, candle_core::DType::F32, &Device::Cpu).unwrap(),
        )]
        .into_iter()
        .collect();
        candle_core::safetensors::save(&t, m.join("model.safetensors")).unwrap();
        std::fs::write(m.join("config.json"), config).unwrap();
        m
    }

    /// huggyllama/llama-7b's config.json (the HF conversion of LLaMA v1 7B), fields as there.
    const HF_V1: &str = r#"{"architectures": ["LlamaForCausalLM"], "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu", "hidden_size": 4096, "initializer_range": 0.02, "intermediate_size": 11008, "max_position_embeddings": 2048, "model_type": "llama", "num_attention_heads": 32, "num_hidden_layers": 32, "pad_token_id": 0, "rms_norm_eps": 1e-06, "tie_word_embeddings": false, "torch_dtype": "float16", "vocab_size": 32000}"#;
    /// meta-llama/Llama-2-7b-hf's config.json.
    const HF_V2: &str = r#"{"architectures": ["LlamaForCausalLM"], "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu", "hidden_size": 4096, "initializer_range": 0.02, "intermediate_size": 11008, "max_position_embeddings": 4096, "model_type": "llama", "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 32, "pretraining_tp": 1, "rms_norm_eps": 1e-05, "rope_scaling": null, "rope_theta": 10000.0, "tie_word_embeddings": false, "torch_dtype": "float16", "vocab_size": 32000}"#;

    fn meta_dir(dir: &Path, name: &str, params: &str) -> PathBuf {
        let m = dir.join(name);
        std::fs::create_dir_all(&m).unwrap();
        std::fs::write(m.join("params.json"), params).unwrap();
        // identity reads params.json only; the rank file must exist for the format.
        std::fs::write(m.join("consolidated.00.pth"), b"PK").unwrap();
        m
    }

    fn gguf(dir: &Path, name: &str, ctx: u32, eps: f32, hidden: u32, layers: u32) -> PathBuf {
        let md = [
            (
                "general.architecture",
                gguf_file::Value::String("llama".into()),
            ),
            ("llama.block_count", gguf_file::Value::U32(layers)),
            ("llama.embedding_length", gguf_file::Value::U32(hidden)),
            ("llama.feed_forward_length", gguf_file::Value::U32(11008)),
            ("llama.attention.head_count", gguf_file::Value::U32(32)),
            ("llama.context_length", gguf_file::Value::U32(ctx)),
            ("llama.rope.freq_base", gguf_file::Value::F32(10000.0)),
            (
                "llama.attention.layer_norm_rms_epsilon",
                gguf_file::Value::F32(eps),
            ),
            ("llama.vocab_size", gguf_file::Value::U32(32000)),
        ];
        let t = QTensor::quantize(
            &Tensor::ones(32, candle_core::DType::F32, &Device::Cpu).unwrap(),
            GgmlDType::F32,
        )
        .unwrap();
        let path = dir.join(name);
        let refs: Vec<(&str, &gguf_file::Value)> = md.iter().map(|(k, v)| (*k, v)).collect();
        gguf_file::write(
            &mut std::fs::File::create(&path).unwrap(),
            &refs,
            &[("output_norm.weight", &t)],
        )
        .unwrap();
        path
    }

    const V1: Expected = Expected::LlamaV1_7b;

    #[test]
    fn hf_llama_v1_is_the_papers_and_llama_2_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let v1 = read_identity(&hf_dir(dir.path(), "v1", HF_V1)).unwrap();
        assert_eq!(
            (v1.vocab_size, v1.context_length, v1.rope_theta, v1.norm_eps),
            (Some(32000), Some(2048), Some(10000.0), 1e-6)
        );
        assert_eq!((v1.hidden_size, v1.num_layers), (4096, 32));
        assert!(V1.differences(&v1).is_empty(), "{:?}", V1.differences(&v1));

        let v2 = read_identity(&hf_dir(dir.path(), "v2", HF_V2)).unwrap();
        let d = V1.differences(&v2);
        assert_eq!(d.len(), 2, "{d:?}");
        assert!(
            d[0].contains("context length 4096") && d[0].contains("LLaMA 2"),
            "{d:?}"
        );
        assert!(
            d[1].contains("eps 1e-5") && d[1].contains("LLaMA 2"),
            "{d:?}"
        );
    }

    #[test]
    fn meta_params_json_v1_and_v2() {
        let dir = tempfile::tempdir().unwrap();
        let v1 = meta_dir(
            dir.path(),
            "llama-7b",
            r#"{"dim": 4096, "multiple_of": 256, "n_heads": 32, "n_layers": 32, "norm_eps": 1e-06, "vocab_size": -1}"#,
        );
        let id = read_identity(&v1).unwrap();
        assert_eq!((id.vocab_size, id.context_length), (None, None));
        assert!(V1.differences(&id).is_empty(), "{:?}", V1.differences(&id));
        let v2 = meta_dir(
            dir.path(),
            "llama-2-7b",
            r#"{"dim": 4096, "multiple_of": 256, "n_heads": 32, "n_layers": 32, "norm_eps": 1e-05, "vocab_size": -1}"#,
        );
        let d = V1.differences(&read_identity(&v2).unwrap());
        assert_eq!(d.len(), 1, "{d:?}");
        assert!(d[0].contains("1e-5"), "{d:?}");
        // LLaMA 13B: another size.
        let b13 = meta_dir(
            dir.path(),
            "llama-13b",
            r#"{"dim": 5120, "multiple_of": 256, "n_heads": 40, "n_layers": 40, "norm_eps": 1e-06, "vocab_size": -1}"#,
        );
        let d = V1.differences(&read_identity(&b13).unwrap());
        assert!(
            d.len() == 1 && d[0].contains("hidden 5120, 40 layers"),
            "{d:?}"
        );
    }

    #[test]
    fn gguf_metadata_v1_and_v2() {
        let dir = tempfile::tempdir().unwrap();
        let v1 = read_identity(&gguf(dir.path(), "v1.gguf", 2048, 1e-6, 4096, 32)).unwrap();
        assert_eq!(
            (
                v1.vocab_size,
                v1.context_length,
                v1.rope_theta,
                v1.from.as_str()
            ),
            (Some(32000), Some(2048), Some(10000.0), "gguf")
        );
        assert!(V1.differences(&v1).is_empty(), "{:?}", V1.differences(&v1));
        let v2 = read_identity(&gguf(dir.path(), "v2.gguf", 4096, 1e-5, 4096, 32)).unwrap();
        assert_eq!(V1.differences(&v2).len(), 2);
    }

    #[test]
    fn opt_and_small_models_are_not_the_papers() {
        let dir = tempfile::tempdir().unwrap();
        let opt = hf_dir(
            dir.path(),
            "opt",
            r#"{"model_type":"opt","hidden_size":4096,"num_attention_heads":32,"ffn_dim":16384,"num_hidden_layers":32,"do_layer_norm_before":true,"max_position_embeddings":2048,"vocab_size":50272}"#,
        );
        let d = V1.differences(&read_identity(&opt).unwrap());
        assert!(d.len() == 1 && d[0].contains("opt model"), "{d:?}");
        // SmolLM2-135M-like (the demo's block): size, context, eps, vocabulary, rope all differ.
        let small = hf_dir(
            dir.path(),
            "smol",
            r#"{"model_type":"llama","hidden_size":576,"num_attention_heads":9,"num_key_value_heads":3,"intermediate_size":1536,"num_hidden_layers":30,"max_position_embeddings":8192,"rms_norm_eps":1e-05,"rope_theta":100000,"vocab_size":49152}"#,
        );
        assert_eq!(V1.differences(&read_identity(&small).unwrap()).len(), 5);
    }
}
