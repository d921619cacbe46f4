#![no_main]
//! Argoverse 1.1 scenario CSVs.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = lm4ve_stages::argoverse::csv::parse_scenario(data, 20, 50);
    let _ = lm4ve_stages::argoverse::csv::parse_scenario(data, 2, 3);
});
