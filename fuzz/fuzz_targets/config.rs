#![no_main]
//! The TOML pipeline config, and every stage's typed params built from it.
use libfuzzer_sys::fuzz_target;
use lm4ve_pipeline::PipelineConfig;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = lm4ve_fuzz::scratch().join("pipeline.toml");
    if let Ok(cfg) = PipelineConfig::parse(&path, text) {
        // Issue 27: a config that loads has plain stage names only.
        for name in cfg.stages.keys() {
            assert!(
                lm4ve_pipeline::trust::is_stage_name(name),
                "accepted stage name {name:?}"
            );
        }
        for sc in cfg.stages.values() {
            if let Ok(stage) = lm4ve_stages::build_stage(&cfg, sc) {
                let _ = stage.key_params();
                let _ = stage.schema();
            }
        }
    }
});
