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
        post_norm: false,
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
                .forward(&x, None)
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

/// The error of a call that must fail (without Debug-printing a whole block if it did not).
fn err<T>(r: Result<T, LlmError>) -> LlmError {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e,
    }
}

/// The HF config.json of the test LLaMA with extra keys merged in.
fn llama_config_with(dir: &Path, extra: &str) {
    std::fs::write(
        dir.join("config.json"),
        format!(
            r#"{{"model_type":"llama","hidden_size":{D},"num_attention_heads":{HEADS},"num_key_value_heads":{KV},"intermediate_size":{F},"num_hidden_layers":{LAYERS},"rms_norm_eps":1e-5{extra}}}"#
        ),
    )
    .unwrap();
}

#[test]
fn inspect_reports_arch_layers_dims_and_dtypes() {
    let dir = tempfile::tempdir().unwrap();
    for (path, format) in [
        (hf_llama(dir.path()), "safetensors"),
        (
            hf_llama(dir.path()).join("model.safetensors"),
            "safetensors",
        ),
        (hf_llama_sharded(dir.path()), "safetensors-sharded"),
        (
            hf_llama_sharded(dir.path()).join("model.safetensors.index.json"),
            "safetensors-sharded",
        ),
    ] {
        let info = inspect(&path).unwrap();
        assert_eq!(info.format, format, "{}", path.display());
        assert_eq!(info.arch, Arch::Llama);
        assert_eq!(info.num_layers, LAYERS);
        let c = &info.config;
        assert_eq!(
            (
                c.hidden_size,
                c.num_heads,
                c.num_kv_heads,
                c.head_dim,
                c.intermediate_size
            ),
            (D, HEADS, KV, HD, F)
        );
        assert_eq!(c.norm_eps, 1e-5);
        assert_eq!(info.tensors, 9 * LAYERS);
        assert_eq!(info.dtypes.get("F32"), Some(&(9 * LAYERS)));
        assert!(info.bytes > (9 * LAYERS * 4) as u64);
    }
    let g = inspect(&gguf_llama(dir.path())).unwrap();
    assert_eq!((g.format.as_str(), g.num_layers), ("gguf", LAYERS));
    assert_eq!(g.dtypes.get("Q8_0"), Some(&LAYERS));
    assert_eq!(g.dtypes.get("F16"), Some(&LAYERS));
}

/// A GGUF v3 file written byte by byte as llama.cpp lays it out (not through candle's
/// writer), so the test checks our reading of GGUF's dims order independently: `ne[0]` is
/// the fastest-varying dim, i.e. a row-major [rows, cols] matrix is stored as ne = [cols, rows].
fn hand_written_gguf(path: &Path, layer: usize, f16_key: &str) {
    fn s(out: &mut Vec<u8>, v: &str) {
        out.extend((v.len() as u64).to_le_bytes());
        out.extend(v.as_bytes());
    }
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
    let prefix = format!("model.layers.{layer}.");
    let mut tensors = Vec::new();
    for (key, shape, data) in llama_tensors() {
        let Some(name) = key.strip_prefix(&prefix) else {
            continue;
        };
        let g = names.iter().find(|(n, _)| *n == name).unwrap().1;
        let data = match g {
            "attn_q" => permute(&data, HEADS, D),
            "attn_k" => permute(&data, KV, D),
            _ => data,
        };
        tensors.push((format!("blk.{layer}.{g}.weight"), shape, data));
    }
    let mut out = Vec::new();
    out.extend(b"GGUF");
    out.extend(3u32.to_le_bytes());
    out.extend((tensors.len() as u64).to_le_bytes());
    let kv: Vec<(&str, u32)> = vec![
        ("llama.block_count", LAYERS as u32),
        ("llama.embedding_length", D as u32),
        ("llama.feed_forward_length", F as u32),
        ("llama.attention.head_count", HEADS as u32),
        ("llama.attention.head_count_kv", KV as u32),
    ];
    out.extend((kv.len() as u64 + 2).to_le_bytes());
    s(&mut out, "general.architecture");
    out.extend(8u32.to_le_bytes()); // GGUF_TYPE_STRING
    s(&mut out, "llama");
    for (k, v) in kv {
        s(&mut out, k);
        out.extend(4u32.to_le_bytes()); // GGUF_TYPE_UINT32
        out.extend(v.to_le_bytes());
    }
    s(&mut out, "llama.attention.layer_norm_rms_epsilon");
    out.extend(6u32.to_le_bytes()); // GGUF_TYPE_FLOAT32
    out.extend(1e-5f32.to_le_bytes());
    let mut blobs = Vec::new();
    let mut offset = 0u64;
    for (name, shape, data) in &tensors {
        s(&mut out, name);
        out.extend((shape.len() as u32).to_le_bytes());
        for d in shape.iter().rev() {
            out.extend((*d as u64).to_le_bytes());
        }
        let (ty, mut blob): (u32, Vec<u8>) = if name.ends_with(f16_key) {
            (
                1,
                data.iter()
                    .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
                    .collect(),
            )
        } else {
            (0, data.iter().flat_map(|v| v.to_le_bytes()).collect())
        };
        out.extend(ty.to_le_bytes());
        out.extend(offset.to_le_bytes());
        while blob.len() % 32 != 0 {
            blob.push(0);
        }
        offset += blob.len() as u64;
        blobs.push(blob);
    }
    while out.len() % 32 != 0 {
        out.push(0);
    }
    for b in blobs {
        out.extend(b);
    }
    std::fs::write(path, out).unwrap();
}

#[test]
fn hand_written_gguf_reads_as_the_hf_layer() {
    let dir = tempfile::tempdir().unwrap();
    let hf = extract_block(&hf_llama(dir.path()), Some(1)).unwrap();
    let path = dir.path().join("hand.gguf");
    hand_written_gguf(&path, 1, "ffn_down.weight");
    let gg = extract_block(&path, Some(1)).unwrap();
    assert_eq!(hf.config, gg.config);
    assert_eq!(gg.source_files, vec![path.clone()]);
    for (h, g) in hf.tensors.iter().zip(&gg.tensors) {
        assert_eq!((&h.0, &h.1), (&g.0, &g.1));
        let tol = if h.0 == "mlp.down_proj.weight" {
            1e-3
        } else {
            0.0
        };
        assert!(
            max_diff(&h.2, &g.2) <= tol,
            "{}: {}",
            h.0,
            max_diff(&h.2, &g.2)
        );
    }
    // The other layers are absent from this file: asking for one names the missing key.
    let e = err(extract_block(&path, Some(0)));
    assert!(e.to_string().contains("blk.0.attn_norm.weight"), "{e}");
}

#[test]
fn hf_f16_and_bf16_weights_become_f32() {
    use candle_core::DType;
    let dir = tempfile::tempdir().unwrap();
    let want = extract_block(&hf_llama(dir.path()), Some(0)).unwrap();
    for (dtype, tol) in [(DType::F16, 1e-3), (DType::BF16, 4e-3)] {
        let m = dir.path().join(format!("{dtype:?}"));
        std::fs::create_dir_all(&m).unwrap();
        let map: HashMap<String, Tensor> = llama_tensors()
            .into_iter()
            .map(|(n, s, d)| {
                let t = Tensor::from_vec(d, s.as_slice(), &Device::Cpu).unwrap();
                (n, t.to_dtype(dtype).unwrap())
            })
            .collect();
        candle_core::safetensors::save(&map, m.join("model.safetensors")).unwrap();
        llama_config(&m);
        let info = inspect(&m).unwrap();
        assert_eq!(info.dtypes.len(), 1, "{:?}", info.dtypes);
        let got = extract_block(&m, Some(0)).unwrap();
        for (a, b) in want.tensors.iter().zip(&got.tensors) {
            assert_eq!(a.1, b.1);
            assert!(
                max_diff(&a.2, &b.2) <= tol,
                "{dtype:?} {}: {}",
                a.0,
                max_diff(&a.2, &b.2)
            );
        }
    }
}

#[test]
fn llama_block_file_round_trips_with_deterministic_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let b = extract_block(&hf_llama_sharded(dir.path()), None).unwrap();
    let bytes = b.to_safetensors_bytes().unwrap();
    for _ in 0..5 {
        // The safetensors crate writes metadata in HashMap order; ours must not vary.
        assert_eq!(b.to_safetensors_bytes().unwrap(), bytes);
    }
    let out = dir.path().join("block.safetensors");
    save_block(&b, &out).unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), bytes);
    let (cfg, t, meta) = load_block_file(&out).unwrap();
    assert_eq!(cfg, b.config);
    assert_eq!(t.len(), b.tensors.len());
    for (n, s, d) in &b.tensors {
        assert_eq!(&t[n], &(s.clone(), d.clone()), "{n}");
    }
    for (k, v) in [
        ("format", "lm4ve-block/1"),
        ("architecture", "llama"),
        ("layer", "2"),
        ("num_layers", "3"),
        ("num_kv_heads", "2"),
        ("activation", "silu"),
        ("source", "sharded"),
    ] {
        assert_eq!(meta[k], v, "{k}");
    }
    // Any safetensors reader takes it: the crate itself and candle.
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.len(), 9);
    let loaded = candle_core::safetensors::load(&out, &Device::Cpu).unwrap();
    assert_eq!(loaded["mlp.down_proj.weight"].dims(), &[D, F]);
    // A file that is not a block file is refused with the fix.
    let e = err(load_block_file(
        &hf_llama(dir.path()).join("model.safetensors"),
    ));
    assert!(e.to_string().contains("llm extract"), "{e}");
}

#[test]
fn error_messages_name_the_key_and_the_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let m = hf_llama(dir.path());
    // Out of range: the valid range is in the message, for the default (None) too.
    let e = err(extract_block(&m, Some(7))).to_string();
    assert!(
        e.contains("layer 7") && e.contains("3 layers") && e.contains("0..=2"),
        "{e}"
    );
    // Wrong shape: key, expected and got.
    llama_config_with(&m, &format!(r#","head_dim":{}"#, 2 * HD));
    let e = err(extract_block(&m, Some(0)));
    let s = e.to_string();
    assert!(matches!(e, LlmError::Shape { .. }), "{s}");
    assert!(s.contains("model.layers.0.self_attn.q_proj.weight"), "{s}");
    let (want, got) = (format!("[{}, {D}]", 2 * D), format!("[{D}, {D}]"));
    assert!(s.contains(&want) && s.contains(&got), "{s}");
    // Truncated: the header survives, the layer's data does not.
    llama_config(&m);
    let file = m.join("model.safetensors");
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() - 100]).unwrap();
    let s = err(extract_block(&m, None)).to_string();
    assert!(
        s.contains("truncated") && s.contains("model.layers.2."),
        "{s}"
    );
    // Layer 0 sits in the intact part of the file and is still readable.
    extract_block(&m, Some(0)).unwrap();
    // Cut inside the header.
    std::fs::write(&file, &bytes[..20]).unwrap();
    let s = err(inspect(&m)).to_string();
    assert!(s.contains("truncated"), "{s}");
    // Not a GGUF despite the name, and a directory with no weights.
    let g = dir.path().join("fake.gguf");
    std::fs::write(&g, b"GGU").unwrap();
    assert!(err(extract_block(&g, None)).to_string().contains("GGUF"));
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    llama_config(&empty);
    let s = err(inspect(&empty)).to_string();
    assert!(s.contains("model.safetensors"), "{s}");
    let s = err(inspect(&dir.path().join("nope"))).to_string();
    assert!(s.contains("nope"), "{s}");
}

#[test]
fn unsupported_variants_are_refused_not_misread() {
    let dir = tempfile::tempdir().unwrap();
    let m = hf_llama(dir.path());
    for (extra, needle) in [
        (r#","attention_bias":true"#, "attention_bias"),
        (r#","hidden_act":"gelu""#, "gelu"),
    ] {
        llama_config_with(&m, extra);
        let s = err(inspect(&m)).to_string();
        assert!(s.contains(needle) && s.contains("config.json"), "{s}");
    }
    std::fs::write(
        m.join("config.json"),
        r#"{"model_type":"qwen2","hidden_size":16,"num_attention_heads":4,"num_hidden_layers":3,"intermediate_size":24}"#,
    )
    .unwrap();
    assert!(err(extract_block(&m, None)).to_string().contains("qwen2"));
    // OPT's norm placement must be a boolean (opt-350m's `false` is read: see
    // `opt_post_layernorm_is_read_recorded_and_run`).
    std::fs::write(
        m.join("config.json"),
        r#"{"model_type":"opt","hidden_size":16,"num_attention_heads":4,"num_hidden_layers":3,"ffn_dim":24,"do_layer_norm_before":"no"}"#,
    )
    .unwrap();
    let s = err(inspect(&m)).to_string();
    assert!(s.contains("do_layer_norm_before"), "{s}");
    // A GGUF of another architecture.
    let g = dir.path().join("gpt2.gguf");
    let md = [(
        "general.architecture",
        gguf_file::Value::String("gpt2".into()),
    )];
    let refs: Vec<(&str, &gguf_file::Value)> = md.iter().map(|(k, v)| (*k, v)).collect();
    gguf_file::write(&mut std::fs::File::create(&g).unwrap(), &refs, &[]).unwrap();
    let s = err(inspect(&g)).to_string();
    assert!(s.contains("gpt2") && s.contains("llama"), "{s}");
}

#[test]
fn stage_hashes_only_the_files_holding_the_layer() {
    use lm4ve_pipeline::PipelineConfig;
    let dir = tempfile::tempdir().unwrap();
    let m = hf_llama_sharded(dir.path());
    let parse = |params: &str| {
        PipelineConfig::parse(
            &dir.path().join("p.toml"),
            &format!("[stages.blk]\nkind = \"llm.block\"\n[stages.blk.params]\n{params}\n"),
        )
        .unwrap()
    };
    let names = |layer: &str| -> Vec<String> {
        let c = parse(&format!("checkpoint = \"sharded\"\n{layer}"));
        let stage = crate::build_stage(&c, &c.stages["blk"]).unwrap();
        assert_eq!(stage.kind(), "llm.block");
        stage
            .inputs()
            .iter()
            .map(|i| {
                assert!(i.path.starts_with(&m));
                i.rel.clone().unwrap()
            })
            .collect()
    };
    // The split puts layer 0 and half of layer 1 in shard 1, the rest in shard 2.
    assert_eq!(
        names("layer = 0"),
        ["model-00001-of-00002.safetensors", "config.json"]
    );
    assert_eq!(
        names("layer = 1"),
        [
            "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors",
            "config.json"
        ]
    );
    assert_eq!(
        names(""),
        ["model-00002-of-00002.safetensors", "config.json"]
    );
    // Bad params are config errors naming the key, not panics.
    let c = parse("checkpoint = \"sharded\"\nlayer = 3");
    let e = crate::build_stage(&c, &c.stages["blk"])
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("0..=2"), "{e}");
    let c = parse("checkpoint = \"nowhere\"");
    let e = crate::build_stage(&c, &c.stages["blk"])
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("nowhere"), "{e}");
    let c = parse("checkpoint = \"sharded\"\nlayers = 1");
    let e = crate::build_stage(&c, &c.stages["blk"])
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("layers"), "{e}");
    // A GGUF is one input.
    gguf_llama(dir.path());
    let c = parse("checkpoint = \"m.gguf\"");
    let stage = crate::build_stage(&c, &c.stages["blk"]).unwrap();
    assert_eq!(stage.inputs().len(), 1);
}

/// The demo's real llama.cpp file (Q4_1 matrices, F32 norms), when it has been fetched.
#[test]
fn real_smollm2_gguf_when_present() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../demo-data/models/SmolLM2-135M-Instruct.Q4_1.gguf");
    if !path.exists() {
        eprintln!("skipped: {} not fetched", path.display());
        return;
    }
    let info = inspect(&path).unwrap();
    assert_eq!(info.num_layers, 30);
    let c = &info.config;
    assert_eq!(
        (
            c.hidden_size,
            c.num_heads,
            c.num_kv_heads,
            c.head_dim,
            c.intermediate_size
        ),
        (576, 9, 3, 64, 1536)
    );
    let b = extract_block(&path, None).unwrap();
    assert_eq!(b.layer, 29);
    for (n, s, d) in &b.tensors {
        assert_eq!(s.iter().product::<usize>(), d.len(), "{n}");
        assert!(d.iter().all(|v| v.is_finite()), "{n}");
        assert!(d.iter().any(|v| *v != 0.0), "{n}");
    }
}

/// Tiny OPT checkpoints written in-test with `do_layer_norm_before` true, absent (the
/// transformers default: pre-norm) and false (opt-350m: post-norm). The flag is read from
/// config.json, recorded in the block file only when post-norm (pre-norm files keep their
/// bytes), read back, and the extracted block computes the layer as transformers'
/// OPTDecoderLayer orders it (checked against the independent f64 reference of the block
/// tests).
#[test]
fn opt_post_layernorm_is_read_recorded_and_run() {
    use super::block_format::BlockConfig;
    use crate::train::block::tests::{max_abs_diff, random_input, reference};
    use crate::train::block::LlmBlock;
    let dir = tempfile::tempdir().unwrap();
    let shape_cfg = BlockConfig {
        arch: Arch::Opt,
        hidden_size: D,
        num_heads: HEADS,
        num_kv_heads: HEADS,
        head_dim: HD,
        intermediate_size: F,
        norm_eps: 1e-5,
        post_norm: false,
    };
    // Two layers with different weights, so reading the wrong one would show.
    let mut seed = 11;
    let mut tensors = Vec::new();
    for l in 0..2 {
        for (n, s) in shape_cfg.tensor_shapes() {
            let k: usize = s.iter().product();
            let mut d = rnd(&mut seed, k);
            if s.len() == 1 && n.ends_with("layer_norm.weight") {
                d.iter_mut().for_each(|v| *v += 1.0);
            }
            tensors.push((format!("model.decoder.layers.{l}.{n}"), s, d));
        }
    }
    let x = random_input(2, 5, D, 3);
    let xt = Tensor::from_slice(&x, (2, 5, D), &Device::Cpu).unwrap();
    let mut outs = Vec::new();
    let mut files = Vec::new();
    for (i, (flag, post)) in [(Some(true), false), (None, false), (Some(false), true)]
        .into_iter()
        .enumerate()
    {
        // Same leaf name, so the `source` metadata is the same for all three.
        let m = dir.path().join(format!("{i}")).join("opt");
        std::fs::create_dir_all(&m).unwrap();
        write_safetensors(&m.join("model.safetensors"), &tensors);
        let flag = flag.map_or(String::new(), |f| format!(r#","do_layer_norm_before":{f}"#));
        // opt-350m's word_embed_proj_dim (512 vs hidden 1024) concerns only the embeddings.
        std::fs::write(
            m.join("config.json"),
            format!(r#"{{"model_type":"opt","hidden_size":{D},"num_attention_heads":{HEADS},"ffn_dim":{F},"num_hidden_layers":2,"word_embed_proj_dim":{}{flag}}}"#, D / 2),
        )
        .unwrap();
        assert_eq!(inspect(&m).unwrap().config.post_norm, post);
        let b = extract_block(&m, None).unwrap();
        assert_eq!(b.layer, 1);
        assert_eq!(b.config.post_norm, post);
        let out = m.join("block.safetensors");
        save_block(&b, &out).unwrap();
        let bytes = std::fs::read(&out).unwrap();
        let has_key = bytes
            .windows(b"do_layer_norm_before".len())
            .any(|w| w == b"do_layer_norm_before");
        assert_eq!(
            has_key, post,
            "the metadata key is written only for post-norm"
        );
        let (cfg, t, meta) = load_block_file(&out).unwrap();
        assert_eq!(cfg, b.config);
        assert_eq!(
            meta.get("do_layer_norm_before").and_then(|v| v.as_str()),
            post.then_some("false")
        );
        let block = LlmBlock::from_tensors(&cfg, &t, &Device::Cpu).unwrap();
        let got: Vec<f32> = block
            .forward(&xt, None)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let want = reference(&cfg, &t, &x, 2, 5, None);
        let e = max_abs_diff(&got, &want);
        assert!(
            e < 1e-4,
            "post_norm={post}: max abs err {e} vs the reference"
        );
        outs.push(got);
        files.push(bytes);
    }
    assert_eq!(
        files[0], files[1],
        "explicit true and absent give the same file"
    );
    assert_eq!(outs[0], outs[1]);
    let d = max_diff(&outs[0], &outs[2]);
    assert!(
        d > 1e-2,
        "post-norm must compute something else, differs by {d}"
    );
    // A hand-edited file with a value other than true/false is refused (same-length edit,
    // so the header stays valid).
    let mut bytes = files[2].clone();
    let (from, to) = (
        br#""do_layer_norm_before":"false""#,
        br#""do_layer_norm_before":"maybe""#,
    );
    let at = bytes.windows(from.len()).position(|w| w == from).unwrap();
    bytes[at..at + to.len()].copy_from_slice(to);
    let p = dir.path().join("bad.safetensors");
    std::fs::write(&p, &bytes).unwrap();
    let s = err(load_block_file(&p)).to_string();
    assert!(s.contains("maybe"), "{s}");
}

/// `blocks = N`: N consecutive layers in one file (tensors under `layers.{i}.`), the last N
/// by default; a single layer keeps today's bytes, key and inputs exactly.
#[test]
fn stacked_layers_extract_round_trip_and_key() {
    use super::checkpoint::{layer_files, layers_files};
    use super::{block_file_config, extract_blocks, load_block_stack, stack_to_safetensors_bytes};
    use lm4ve_pipeline::PipelineConfig;
    let dir = tempfile::tempdir().unwrap();
    let m = hf_llama_sharded(dir.path());
    // Default: the last two layers, as the reference's first_layer = n_layers - 2.
    let stack = extract_blocks(&m, None, 2).unwrap();
    assert_eq!(
        stack.iter().map(|b| b.layer).collect::<Vec<_>>(),
        [LAYERS - 2, LAYERS - 1]
    );
    let bytes = stack_to_safetensors_bytes(&stack).unwrap();
    let out = dir.path().join("stack.safetensors");
    std::fs::write(&out, &bytes).unwrap();
    let (cfg, layers, meta) = load_block_stack(&out).unwrap();
    assert_eq!(cfg, stack[0].config);
    assert_eq!(layers.len(), 2);
    for (l, b) in layers.iter().zip(&stack) {
        for (n, s, d) in &b.tensors {
            assert_eq!(&l[n], &(s.clone(), d.clone()), "layer {} {n}", b.layer);
        }
    }
    assert_eq!(meta["blocks"], "2");
    assert_eq!(meta["layer"], (LAYERS - 2).to_string());
    assert_ne!(layers[0], layers[1], "two different layers");
    // The header alone gives the shape.
    let (hc, hn, _) = block_file_config(&out).unwrap();
    assert_eq!((hc, hn), (cfg.clone(), 2));
    // One-layer readers refuse a stack instead of running its first layer only.
    let s = err(load_block_file(&out)).to_string();
    assert!(s.contains("stack of 2 layers"), "{s}");
    // A stack of one is the single-layer file, byte for byte.
    let one = extract_block(&m, Some(1)).unwrap();
    assert_eq!(
        stack_to_safetensors_bytes(std::slice::from_ref(&one)).unwrap(),
        one.to_safetensors_bytes().unwrap()
    );
    assert_eq!(layers_files(&m, 1, 1).unwrap(), layer_files(&m, 1).unwrap());
    // Out of range: layer 2 + 2 layers > 3.
    assert!(matches!(
        extract_blocks(&m, Some(2), 2).unwrap_err(),
        LlmError::Layer { .. }
    ));
    // The stage: `blocks` enters the key only when > 1; inputs are the union of the layers'.
    let parse = |params: &str| {
        PipelineConfig::parse(
            &dir.path().join("p.toml"),
            &format!("[stages.blk]\nkind = \"llm.block\"\n[stages.blk.params]\ncheckpoint = \"sharded\"\n{params}\n"),
        )
        .unwrap()
    };
    let stage = |params: &str| {
        let c = parse(params);
        crate::build_stage(&c, &c.stages["blk"])
    };
    let key = |params: &str| stage(params).unwrap().key_params();
    assert_eq!(key(""), serde_json::json!({"layer": 2}));
    assert_eq!(key("blocks = 1"), serde_json::json!({"layer": 2}));
    assert_eq!(
        key("blocks = 2"),
        serde_json::json!({"layer": 1, "blocks": 2})
    );
    assert_eq!(
        key("layer = 0\nblocks = 3"),
        serde_json::json!({"layer": 0, "blocks": 3})
    );
    let rels = |params: &str| -> Vec<String> {
        stage(params)
            .unwrap()
            .inputs()
            .iter()
            .map(|i| i.rel.clone().unwrap())
            .collect()
    };
    assert_eq!(
        rels("layer = 0\nblocks = 3"),
        [
            "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors",
            "config.json"
        ]
    );
    for (params, needle) in [
        ("blocks = 4", "0..=2"),
        ("blocks = 0", "blocks"),
        ("layer = 2\nblocks = 2", "out of range"),
    ] {
        let e = stage(params).err().unwrap().to_string();
        assert!(e.contains(needle), "{params}: {e}");
    }
}
