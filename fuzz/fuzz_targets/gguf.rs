#![no_main]
//! GGUF checkpoints: header, metadata, tensor infos (`llm inspect`, `llm extract`).
use libfuzzer_sys::fuzz_target;
use lm4ve_stages::llm::checkpoint::{extract_block, inspect};

fuzz_target!(|data: &[u8]| {
    let p = lm4ve_fuzz::file("model.gguf", data);
    let _ = inspect(&p);
    let _ = extract_block(&p, None);
});
