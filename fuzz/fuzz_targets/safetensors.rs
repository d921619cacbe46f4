#![no_main]
//! safetensors headers: a Hugging Face checkpoint (with a fixed config.json beside it) and
//! lm4ve's own block file.
use libfuzzer_sys::fuzz_target;
use lm4ve_stages::llm::checkpoint::{extract_block, inspect, load_block_file};

const CONFIG: &str = r#"{"model_type": "llama", "hidden_size": 32, "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 48, "num_hidden_layers": 2, "rms_norm_eps": 1e-5}"#;

fuzz_target!(|data: &[u8]| {
    lm4ve_fuzz::file("config.json", CONFIG.as_bytes());
    let p = lm4ve_fuzz::file("model.safetensors", data);
    let _ = inspect(&p);
    let _ = extract_block(&p, None);
    let _ = load_block_file(&p);
});
