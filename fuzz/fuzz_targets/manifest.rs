#![no_main]
//! Manifests as a remote or a cache directory hands them over (crate::trust).
use libfuzzer_sys::fuzz_target;
use lm4ve_pipeline::trust::{parse_manifest, rederive, Expected};

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = parse_manifest(data, lm4ve_fuzz::KEY) {
        let expect = Expected {
            kind: m.kind.clone(),
            schema: m.schema.clone(),
            units: None,
            // Any file name the record carries: the name checks alone are fuzzed here.
            files: None,
            meta: None,
        };
        let _ = rederive(&m, Vec::new(), &expect);
        let _ = lm4ve_pipeline::key::short(&m.key);
    }
    // The same bytes under any key: the key check must not be the only guard.
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = parse_manifest(data, text);
        let _ = lm4ve_pipeline::key::short(text);
    }
});
