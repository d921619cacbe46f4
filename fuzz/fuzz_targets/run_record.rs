#![no_main]
//! Run records (`runs/<stage>/<key>.json`) as a remote hands them over.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = lm4ve_pipeline::trust::parse_run_record(data, "pc_tokens", lm4ve_fuzz::KEY);
});
