#![no_main]
//! Stage names as a config spells them (issue 27): whatever the bytes, a config either
//! fails to load with a message, or every stage it yields has a plain name (no `/`, no
//! space, no control character, not `.`, bounded), so no name reaches the file system or a
//! terminal raw. Also the name check itself, on the raw bytes.
use libfuzzer_sys::fuzz_target;
use lm4ve_pipeline::{trust, PipelineConfig};

fuzz_target!(|data: &[u8]| {
    let Ok(name) = std::str::from_utf8(data) else {
        return;
    };
    if trust::is_config_stage_name(name) {
        assert!(trust::is_stage_name(name));
        assert!(!name.contains(['/', '\\', ' ', '\0']) && name != "." && name != "..");
    }
    // The name as a quoted TOML key, with a matrix so expanded names are exercised too.
    let key: String = name.chars().flat_map(|c| c.escape_default()).collect();
    let text = format!(
        "[stages.\"{key}\"]\nkind = \"pc.tokens\"\n[stages.\"{key}\".params]\nformat = \"h5\"\n[stages.\"{key}\".matrix]\nnum_points = [1, 2]\n"
    );
    let path = lm4ve_fuzz::scratch().join("names.toml");
    if let Ok(cfg) = PipelineConfig::parse(&path, &text) {
        for n in cfg.stages.keys() {
            assert!(trust::is_stage_name(n), "accepted stage name {n:?}");
        }
    }
});
