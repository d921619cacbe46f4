//! Meta's original checkpoints on the fixtures `scripts/fixtures/encoder_ckpts.py` writes
//! (`tests/fixtures/llama_meta*`): two model-parallel ranks of a tiny LLaMA, its Hugging Face
//! copy (q/k rows permuted by transformers' converter formula), and the output of the
//! reference's own frozen module (LM4VisualEncoding's `LLaMATransformer`, last layer) on one
//! input. Meta, HF and GGUF copies of one layer must give the same block.

use super::checkpoint::{extract_block, inspect, load_block_file, save_block, ExtractedBlock};
use crate::train::block::LlmBlock;
use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name)
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// The block's output on `x` through the canonical file, as the trainer runs it.
fn run(block: &ExtractedBlock, x: &Tensor, dir: &Path) -> Vec<f32> {
    let out = dir.join("block.safetensors");
    save_block(block, &out).unwrap();
    let (cfg, t, _) = load_block_file(&out).unwrap();
    LlmBlock::from_tensors(&cfg, &t, &Device::Cpu)
        .unwrap()
        .forward(x, None)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// llama.cpp's converter (HF → GGUF) for q/k rows: HF row `h·hd + j·hd/2 + i` → `h·hd + 2i + j`.
fn llama_cpp_permute(data: &[f32], heads: usize, cols: usize) -> Vec<f32> {
    let hd = data.len() / cols / heads;
    let half = hd / 2;
    let mut out = vec![0f32; data.len()];
    for h in 0..heads {
        for j in 0..2 {
            for i in 0..half {
                let (f, g) = (h * hd + j * half + i, h * hd + 2 * i + j);
                out[g * cols..(g + 1) * cols].copy_from_slice(&data[f * cols..(f + 1) * cols]);
            }
        }
    }
    out
}

/// A GGUF holding one block (as layer `layer` of `layers`), from canonical tensors.
fn write_gguf(path: &Path, b: &ExtractedBlock) {
    let c = &b.config;
    let mut q = Vec::new();
    for t in super::block_format::tensors_of(c.arch) {
        let (_, shape, data) = b.tensors.iter().find(|x| x.0 == t.name).unwrap();
        let data = match t.name {
            "self_attn.q_proj.weight" => llama_cpp_permute(data, c.num_heads, c.hidden_size),
            "self_attn.k_proj.weight" => llama_cpp_permute(data, c.num_kv_heads, c.hidden_size),
            _ => data.clone(),
        };
        let tensor = Tensor::from_vec(data, shape.as_slice(), &Device::Cpu).unwrap();
        q.push((
            format!("blk.{}.{}.weight", b.layer, t.gguf.unwrap()),
            QTensor::quantize(&tensor, GgmlDType::F32).unwrap(),
        ));
    }
    let u = |v: usize| gguf_file::Value::U32(v as u32);
    let md = [
        (
            "general.architecture",
            gguf_file::Value::String("llama".into()),
        ),
        ("llama.block_count", u(b.num_layers)),
        ("llama.embedding_length", u(c.hidden_size)),
        ("llama.feed_forward_length", u(c.intermediate_size)),
        ("llama.attention.head_count", u(c.num_heads)),
        ("llama.attention.head_count_kv", u(c.num_kv_heads)),
        (
            "llama.attention.layer_norm_rms_epsilon",
            gguf_file::Value::F32(c.norm_eps as f32),
        ),
    ];
    let md: Vec<(&str, &gguf_file::Value)> = md.iter().map(|(k, v)| (*k, v)).collect();
    let t: Vec<(&str, &QTensor)> = q.iter().map(|(k, v)| (k.as_str(), v)).collect();
    gguf_file::write(&mut std::fs::File::create(path).unwrap(), &md, &t).unwrap();
}

#[test]
fn meta_checkpoint_gives_the_reference_modules_output() {
    let dir = tempfile::tempdir().unwrap();
    let path = fixture("llama_meta");
    let want =
        candle_core::safetensors::load(path.join("expected.safetensors"), &Device::Cpu).unwrap();
    let b = extract_block(&path, None).unwrap();
    assert_eq!((b.layer, b.num_layers), (1, 2));
    let c = &b.config;
    assert_eq!(
        (
            c.hidden_size,
            c.num_heads,
            c.num_kv_heads,
            c.intermediate_size
        ),
        (32, 4, 4, 96)
    );
    assert_eq!(c.norm_eps, 1e-6);
    let got = run(&b, &want["x"], dir.path());
    let y: Vec<f32> = want["y"].flatten_all().unwrap().to_vec1().unwrap();
    let d = max_diff(&got, &y);
    eprintln!("Meta LLaMA block vs the reference's LLaMATransformer: max abs diff {d:.3e}");
    assert!(d < 1e-4, "{d}");
    // Both ranks and params.json are what the layer is made of.
    let names: Vec<String> = b
        .source_files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        ["consolidated.00.pth", "consolidated.01.pth", "params.json"]
    );
}

#[test]
fn meta_hf_and_gguf_copies_of_a_layer_give_the_same_block() {
    let dir = tempfile::tempdir().unwrap();
    let x = Tensor::randn(0f32, 1.0, (2, 7, 32), &Device::Cpu).unwrap();
    for (name, layer) in [("llama_meta", 0), ("llama_meta", 1), ("llama_meta_gqa", 1)] {
        let meta = extract_block(&fixture(name), Some(layer)).unwrap();
        let hf = extract_block(&fixture(name).join("hf"), Some(layer)).unwrap();
        assert_eq!(meta.config, hf.config, "{name}");
        // Same values (both f16 or both bf16 in the files), q/k rows in HF order.
        assert_eq!(meta.tensors, hf.tensors, "{name} layer {layer}");
        // The canonical files differ only in `source`.
        let mut renamed = meta.clone();
        renamed.source = hf.source.clone();
        assert_eq!(
            renamed.to_safetensors_bytes().unwrap(),
            hf.to_safetensors_bytes().unwrap()
        );
        let g = dir.path().join(format!("{name}.gguf"));
        write_gguf(&g, &hf);
        let gg = extract_block(&g, Some(layer)).unwrap();
        assert_eq!(gg.config, meta.config);
        assert_eq!(gg.tensors, meta.tensors, "{name} GGUF layer {layer}");
        let (a, b) = (run(&meta, &x, dir.path()), run(&hf, &x, dir.path()));
        assert_eq!(a, b);
    }
    let gqa = extract_block(&fixture("llama_meta_gqa"), None).unwrap();
    // ffn_dim_multiplier 1.3, multiple_of 16: 16·⌈int(1.3·int(8·32/3)) / 16⌉ = 112.
    assert_eq!(
        (gqa.config.num_kv_heads, gqa.config.intermediate_size),
        (2, 112)
    );
    assert_eq!(gqa.config.norm_eps, 1e-5);
}

#[test]
fn meta_checkpoints_inspect_and_key_their_files() {
    use lm4ve_pipeline::PipelineConfig;
    for p in [
        fixture("llama_meta"),
        fixture("llama_meta/params.json"),
        fixture("llama_meta/consolidated.01.pth"),
    ] {
        let info = inspect(&p).unwrap();
        assert_eq!(
            (info.format.as_str(), info.num_layers),
            ("meta-pth", 2),
            "{}",
            p.display()
        );
        // Per rank: 9 tensors and a rope table per layer, embeddings, norm, output, rope.
        assert_eq!(info.tensors, 2 * (2 * 10 + 4));
        assert_eq!(info.dtypes.get("F16"), Some(&info.tensors));
    }
    let gqa = inspect(&fixture("llama_meta_gqa")).unwrap();
    assert_eq!(gqa.dtypes.get("BF16"), Some(&gqa.tensors));
    // The stage hashes both ranks and params.json.
    let dir = tempfile::tempdir().unwrap();
    let c = PipelineConfig::parse(
        &dir.path().join("p.toml"),
        &format!(
            "[stages.blk]\nkind = \"llm.block\"\n[stages.blk.params]\ncheckpoint = {:?}\nlayer = 0\n",
            fixture("llama_meta").display().to_string()
        ),
    )
    .unwrap();
    let stage = crate::build_stage(&c, &c.stages["blk"]).unwrap();
    let rels: Vec<String> = stage
        .inputs()
        .iter()
        .map(|i| i.rel.clone().unwrap())
        .collect();
    assert_eq!(
        rels,
        ["consolidated.00.pth", "consolidated.01.pth", "params.json"]
    );
}

#[test]
fn broken_meta_checkpoints_are_clear_errors() {
    let src = fixture("llama_meta");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("7B");
    std::fs::create_dir_all(&d).unwrap();
    let copy = |f: &str| std::fs::copy(src.join(f), d.join(f)).unwrap();
    // params.json alone.
    copy("params.json");
    let e = extract_block(&d, None).unwrap_err().to_string();
    assert!(e.contains("consolidated") && e.contains("7B"), "{e}");
    // One of two ranks: the slices are half as tall as params.json says.
    copy("consolidated.00.pth");
    let e = extract_block(&d, Some(1)).unwrap_err().to_string();
    assert!(
        e.contains("consolidated.00.pth")
            && e.contains("layers.1.attention.wq.weight")
            && e.contains("[16, 32]")
            && e.contains("[32, 32]"),
        "{e}"
    );
    // A truncated rank.
    let bytes = std::fs::read(src.join("consolidated.01.pth")).unwrap();
    std::fs::write(d.join("consolidated.01.pth"), &bytes[..bytes.len() / 2]).unwrap();
    let e = extract_block(&d, Some(1)).unwrap_err().to_string();
    assert!(e.contains("consolidated.01.pth"), "{e}");
    // Not a zip at all.
    std::fs::write(d.join("consolidated.01.pth"), b"not a checkpoint").unwrap();
    let e = inspect(&d).unwrap_err().to_string();
    assert!(
        e.contains("consolidated.01.pth") && e.contains("neither a PyTorch checkpoint"),
        "{e}"
    );
    // Ranks without params.json.
    copy("consolidated.01.pth");
    std::fs::remove_file(d.join("params.json")).unwrap();
    let e = inspect(&d).unwrap_err().to_string();
    assert!(e.contains("params.json"), "{e}");
    // A params.json that does not fit the weights.
    std::fs::write(
        d.join("params.json"),
        r#"{"dim": 32, "multiple_of": 64, "n_heads": 4, "n_layers": 2, "norm_eps": 1e-6}"#,
    )
    .unwrap();
    let e = extract_block(&d, Some(0)).unwrap_err().to_string();
    assert!(
        e.contains("feed_forward.w1") && e.contains("params.json"),
        "{e}"
    );
    std::fs::write(d.join("params.json"), r#"{"dim": 32}"#).unwrap();
    let e = inspect(&d).unwrap_err().to_string();
    assert!(e.contains("n_heads"), "{e}");
    // Layer out of range names the range.
    copy("params.json");
    let e = extract_block(&d, Some(2)).unwrap_err().to_string();
    assert!(e.contains("0..=1"), "{e}");
}
