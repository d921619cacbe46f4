//! Checkpoint readers on tiny random checkpoints the tests write in the real formats:
//! HF safetensors (one file and sharded), GGUF (llama.cpp's q/k permutation applied, F32,
//! F16 and Q8_0 tensors), OPT with and without the `model.` prefix, and bad checkpoints.

use super::block_format::Arch;
use super::checkpoint::{extract_block, inspect, load_block_file, save_block, LlmError};
use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

const D: usize = 32;
const HEADS: usize = 4;
const KV: usize = 2;
const F: usize = 48;
const LAYERS: usize = 3;
const HD: usize = D / HEADS;

fn rnd(seed: &mut u32, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| {
            *seed = seed.wrapping_mul(1664525).wrapping_add(1013904223);
            ((*seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5) * 0.5
        })
        .collect()
}

/// HF LLaMA tensors of every layer: (key, shape, data).
fn llama_tensors() -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut seed = 7;
    let mut out = Vec::new();
    for l in 0..LAYERS {
        for (name, shape) in [
            ("input_layernorm.weight", vec![D]),
            ("self_attn.q_proj.weight", vec![HEADS * HD, D]),
            ("self_attn.k_proj.weight", vec![KV * HD, D]),
            ("self_attn.v_proj.weight", vec![KV * HD, D]),
            ("self_attn.o_proj.weight", vec![D, HEADS * HD]),
            ("post_attention_layernorm.weight", vec![D]),
            ("mlp.gate_proj.weight", vec![F, D]),
            ("mlp.up_proj.weight", vec![F, D]),
            ("mlp.down_proj.weight", vec![D, F]),
        ] {
            let n = shape.iter().product();
            out.push((format!("model.layers.{l}.{name}"), shape, rnd(&mut seed, n)));
        }
    }
    out
}

fn write_safetensors(path: &Path, tensors: &[(String, Vec<usize>, Vec<f32>)]) {
    let map: HashMap<String, Tensor> = tensors
        .iter()
        .map(|(n, s, d)| {
            (
                n.clone(),
                Tensor::from_vec(d.clone(), s.as_slice(), &Device::Cpu).unwrap(),
            )
        })
        .collect();
    candle_core::safetensors::save(&map, path).unwrap();
}

fn llama_config(dir: &Path) {
    std::fs::write(
        dir.join("config.json"),
        format!(r#"{{"model_type":"llama","hidden_size":{D},"num_attention_heads":{HEADS},"num_key_value_heads":{KV},"intermediate_size":{F},"num_hidden_layers":{LAYERS},"rms_norm_eps":1e-5}}"#),
    )
    .unwrap();
}

fn hf_llama(dir: &Path) -> PathBuf {
    let m = dir.join("hf");
    std::fs::create_dir_all(&m).unwrap();
    write_safetensors(&m.join("model.safetensors"), &llama_tensors());
    llama_config(&m);
    m
}

/// The same model in two shards with an index.
fn hf_llama_sharded(dir: &Path) -> PathBuf {
    let m = dir.join("sharded");
    std::fs::create_dir_all(&m).unwrap();
    let t = llama_tensors();
    let (a, b) = t.split_at(t.len() / 2 + 3);
    write_safetensors(&m.join("model-00001-of-00002.safetensors"), a);
    write_safetensors(&m.join("model-00002-of-00002.safetensors"), b);
    let mut map = serde_json::Map::new();
    for (n, _, _) in a {
        map.insert(n.clone(), "model-00001-of-00002.safetensors".into());
    }
    for (n, _, _) in b {
        map.insert(n.clone(), "model-00002-of-00002.safetensors".into());
    }
    std::fs::write(
        m.join("model.safetensors.index.json"),
        serde_json::json!({"weight_map": map}).to_string(),
    )
    .unwrap();
    llama_config(&m);
    m
}

/// llama.cpp's converter permutation (HF → GGUF) for q/k rows.
fn permute(data: &[f32], heads: usize, cols: usize) -> Vec<f32> {
    let rows = data.len() / cols;
    let hd = rows / heads;
    let half = hd / 2;
    let mut out = vec![0f32; data.len()];
    for h in 0..heads {
        for j in 0..2 {
            for i in 0..half {
                let hf = h * hd + j * half + i;
                let g = h * hd + 2 * i + j;
                out[g * cols..(g + 1) * cols].copy_from_slice(&data[hf * cols..(hf + 1) * cols]);
            }
        }
    }
    out
}

fn gguf_llama(dir: &Path) -> PathBuf {
    let names = [
        ("input_layernorm.weight", "attn_norm"),
        ("self_attn.q_proj.weight", "attn_q"),
        ("self_attn.k_proj.weight", "attn_k"),
        ("self_attn.v_proj.weight", "attn_v"),
        ("self_attn.o_proj.weight", "attn_output"),
        ("post_attention_layernorm.weight", "ffn_norm"),
        ("mlp.gate_proj.weight", "ffn_gate"),
        ("mlp.up_proj.weight", "ffn_up"),
        ("mlp.down_proj.weight", "ffn_down"),
    ];
    let mut qtensors = Vec::new();
    for (key, shape, data) in llama_tensors() {
        let (l, name) = key
            .trim_start_matches("model.layers.")
            .split_once('.')
            .unwrap();
        let g = names.iter().find(|(n, _)| *n == name).unwrap().1;
        let data = match g {
            "attn_q" => permute(&data, HEADS, D),
            "attn_k" => permute(&data, KV, D),
            _ => data,
        };
        let t = Tensor::from_vec(data, shape.as_slice(), &Device::Cpu).unwrap();
        // Mixed dtypes as real files have: norms F32, one matrix F16, one Q8_0, rest F32.
        let dtype = match g {
            "ffn_up" => GgmlDType::F16,
            "ffn_gate" => GgmlDType::Q8_0,
            _ => GgmlDType::F32,
        };
        let q = QTensor::quantize(&t, dtype).unwrap();
        qtensors.push((format!("blk.{l}.{g}.weight"), q));
    }
    let md = [
        (
            "general.architecture",
            gguf_file::Value::String("llama".into()),
        ),
        ("llama.block_count", gguf_file::Value::U32(LAYERS as u32)),
        ("llama.embedding_length", gguf_file::Value::U32(D as u32)),
        ("llama.feed_forward_length", gguf_file::Value::U32(F as u32)),
        (
            "llama.attention.head_count",
            gguf_file::Value::U32(HEADS as u32),
        ),
        (
            "llama.attention.head_count_kv",
            gguf_file::Value::U32(KV as u32),
        ),
        (
            "llama.attention.layer_norm_rms_epsilon",
            gguf_file::Value::F32(1e-5),
        ),
    ];
    let path = dir.join("m.gguf");
    let mut f = std::fs::File::create(&path).unwrap();
    let md_refs: Vec<(&str, &gguf_file::Value)> = md.iter().map(|(k, v)| (*k, v)).collect();
    let t_refs: Vec<(&str, &QTensor)> = qtensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    gguf_file::write(&mut f, &md_refs, &t_refs).unwrap();
    path
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn hf_single_and_sharded_give_the_same_layer() {
    let dir = tempfile::tempdir().unwrap();
    let a = extract_block(&hf_llama(dir.path()), Some(1)).unwrap();
    let b = extract_block(&hf_llama_sharded(dir.path()), Some(1)).unwrap();
    assert_eq!(a.config.arch, Arch::Llama);
    assert_eq!(a.config.num_kv_heads, KV);
    assert_eq!(a.tensors, b.tensors);
    let want = llama_tensors();
    let q = want
        .iter()
        .find(|t| t.0 == "model.layers.1.self_attn.q_proj.weight")
        .unwrap();
    assert_eq!(a.tensors[1].2, q.2);
    let info = inspect(&dir.path().join("sharded")).unwrap();
    assert_eq!(
        (info.num_layers, info.format.as_str()),
        (LAYERS, "safetensors-sharded")
    );
    // Only the shards holding layer 2 are read and hashed.
    let last = extract_block(&dir.path().join("sharded"), None).unwrap();
    assert_eq!(last.layer, 2);
    assert!(
        last.source_files
            .iter()
            .all(|f| !f.ends_with("model-00001-of-00002.safetensors")),
        "{:?}",
        last.source_files
    );
}

#[test]
fn gguf_equals_hf_after_undoing_the_permutation() {
    let dir = tempfile::tempdir().unwrap();
    let hf = extract_block(&hf_llama(dir.path()), Some(2)).unwrap();
    let gg = extract_block(&gguf_llama(dir.path()), Some(2)).unwrap();
    assert_eq!(hf.config, gg.config.clone());
    for (h, g) in hf.tensors.iter().zip(&gg.tensors) {
        assert_eq!(h.0, g.0);
        assert_eq!(h.1, g.1, "{}", h.0);
        let tol = match h.0.as_str() {
            "mlp.up_proj.weight" => 1e-3,   // F16
            "mlp.gate_proj.weight" => 1e-2, // Q8_0
            _ => 0.0,
        };
        assert!(
            max_diff(&h.2, &g.2) <= tol,
            "{}: {}",
            h.0,
            max_diff(&h.2, &g.2)
        );
    }
    assert_eq!(
        inspect(&dir.path().join("m.gguf")).unwrap().num_layers,
        LAYERS
    );
}

#[test]
fn opt_with_and_without_model_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = super::block_format::BlockConfig {
        arch: Arch::Opt,
        hidden_size: D,
        num_heads: HEADS,
        num_kv_heads: HEADS,
        head_dim: HD,
        intermediate_size: F,
        norm_eps: 1e-5,
    };
    let mut seed = 3;
    let layer0: Vec<(String, Vec<usize>, Vec<f32>)> = cfg
        .tensor_shapes()
        .into_iter()
        .map(|(n, s)| {
            let k = s.iter().product();
            (n.to_string(), s, rnd(&mut seed, k))
        })
        .collect();
    let mut blocks = Vec::new();
    for prefix in ["model.", ""] {
        let m = dir.path().join(format!("opt{prefix}"));
        std::fs::create_dir_all(&m).unwrap();
        let t: Vec<_> = layer0
            .iter()
            .map(|(n, s, d)| {
                (
                    format!("{prefix}decoder.layers.0.{n}"),
                    s.clone(),
                    d.clone(),
                )
            })
            .collect();
        write_safetensors(&m.join("model.safetensors"), &t);
        std::fs::write(m.join("config.json"), format!(r#"{{"model_type":"opt","hidden_size":{D},"num_attention_heads":{HEADS},"ffn_dim":{F},"num_hidden_layers":1,"do_layer_norm_before":true}}"#)).unwrap();
        blocks.push(extract_block(&m, None).unwrap());
    }
    assert_eq!(blocks[0].tensors, blocks[1].tensors);
    assert_eq!(blocks[0].config, cfg);
    // Round trip through the canonical file.
    let out = dir.path().join("b.safetensors");
    save_block(&blocks[0], &out).unwrap();
    let (c, t, meta) = load_block_file(&out).unwrap();
    assert_eq!(c, cfg);
    assert_eq!(meta["architecture"], "opt");
    for (n, s, d) in &layer0 {
        assert_eq!(&t[n], &(s.clone(), d.clone()), "{n}");
    }
}

#[test]
fn bad_checkpoints_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let hf = hf_llama(dir.path());
    // layer out of range
    let e = extract_block(&hf, Some(LAYERS)).unwrap_err();
    assert!(
        matches!(e, LlmError::Layer { .. }) && e.to_string().contains("0..=2"),
        "{e}"
    );
    // missing tensor
    let m = dir.path().join("missing");
    std::fs::create_dir_all(&m).unwrap();
    let t: Vec<_> = llama_tensors()
        .into_iter()
        .filter(|t| !t.0.ends_with("layers.2.mlp.up_proj.weight"))
        .collect();
    write_safetensors(&m.join("model.safetensors"), &t);
    llama_config(&m);
    let e = extract_block(&m, None).unwrap_err();
    assert!(
        e.to_string().contains("model.layers.2.mlp.up_proj.weight"),
        "{e}"
    );
    // wrong shape: config says a wider FFN than the tensors have
    std::fs::write(m.join("config.json"), format!(r#"{{"model_type":"llama","hidden_size":{D},"num_attention_heads":{HEADS},"num_key_value_heads":{KV},"intermediate_size":{},"num_hidden_layers":{LAYERS}}}"#, F + 1)).unwrap();
    let e = extract_block(&m, Some(0)).unwrap_err();
    assert!(
        matches!(e, LlmError::Shape { .. }) && e.to_string().contains("gate_proj"),
        "{e}"
    );
    // unknown architecture
    std::fs::write(
        m.join("config.json"),
        r#"{"model_type":"gpt2","hidden_size":32,"num_attention_heads":4,"num_hidden_layers":1}"#,
    )
    .unwrap();
    assert!(extract_block(&m, None)
        .unwrap_err()
        .to_string()
        .contains("gpt2"));
    // missing config.json
    std::fs::remove_file(m.join("config.json")).unwrap();
    assert!(inspect(&m).unwrap_err().to_string().contains("config.json"));
    // truncated safetensors
    let bytes = std::fs::read(hf.join("model.safetensors")).unwrap();
    std::fs::write(hf.join("model.safetensors"), &bytes[..bytes.len() / 3]).unwrap();
    assert!(extract_block(&hf, None).is_err());
    // not a GGUF
    let g = dir.path().join("x.gguf");
    std::fs::write(&g, b"definitely not gguf").unwrap();
    assert!(inspect(&g).unwrap_err().to_string().contains("GGUF"));
    // truncated GGUF
    let real = gguf_llama(dir.path());
    let bytes = std::fs::read(&real).unwrap();
    std::fs::write(&g, &bytes[..bytes.len() / 2]).unwrap();
    assert!(extract_block(&g, None).is_err());
}

#[test]
fn extracted_blocks_compute_the_same_function_from_every_format() {
    use crate::train::block::LlmBlock;
    let dir = tempfile::tempdir().unwrap();
    let x = Tensor::randn(0f32, 1.0, (2, 5, D), &Device::Cpu).unwrap();
    let mut outs = Vec::new();
    for path in [hf_llama(dir.path()), gguf_llama(dir.path())] {
        let b = extract_block(&path, Some(0)).unwrap();
        let out = dir.path().join("b.safetensors");
        save_block(&b, &out).unwrap();
        let (cfg, t, _) = load_block_file(&out).unwrap();
        let block = LlmBlock::from_tensors(&cfg, &t, &Device::Cpu).unwrap();
        outs.push(
            block
                .forward(&x)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap(),
        );
    }
    // Equal up to the F16/Q8_0 rounding of two matrices (the output has RMS 1); a wrong
    // q/k permutation would change the attention pattern and the output by O(1).
    assert!(
        max_diff(&outs[0], &outs[1]) < 1e-2,
        "{}",
        max_diff(&outs[0], &outs[1])
    );
}
