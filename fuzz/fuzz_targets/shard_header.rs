#![no_main]
//! The shard container (SHARDS.md): header, offset index, every sample frame.
use libfuzzer_sys::fuzz_target;
use lm4ve_pipeline::shard::{check_shard, ShardReader};

fuzz_target!(|data: &[u8]| {
    let p = lm4ve_fuzz::file("shard", data);
    if let Ok(mut r) = ShardReader::open(&p) {
        for i in 0..r.len().min(64) {
            let _ = r.read(i);
        }
        let _ = r.read(r.len());
        let _ = check_shard(&p, r.len() as u64, None);
    }
});
