#![no_main]
//! Argoverse vector maps (`pruned_argoverse_<CITY>_<ID>_vector_map.xml`).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = lm4ve_stages::argoverse::map::parse_vector_map(text);
    }
});
