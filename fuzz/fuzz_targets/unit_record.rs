#![no_main]
//! Unit records (`artifacts/<key>/units/<id>.json`), checked and re-assembled.
use libfuzzer_sys::fuzz_target;
use lm4ve_pipeline::trust::{parse_unit, rederive, Expected};
use lm4ve_pipeline::Manifest;

fuzz_target!(|data: &[u8]| {
    if let Ok(u) = parse_unit(data, "train-00000") {
        let m = Manifest::assemble(
            "s",
            "k",
            lm4ve_fuzz::KEY,
            None,
            std::slice::from_ref(&u),
            serde_json::Value::Null,
        );
        let expect = Expected {
            kind: "k".into(),
            schema: None,
            units: None,
            files: None,
            meta: None,
        };
        let _ = rederive(&m, vec![u], &expect);
    }
});
