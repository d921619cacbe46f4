//! Content keys: the name of an artifact, derived only from what determines its bytes.
//!
//! A stage's key is the blake3 hash of a canonical JSON encoding of [`KeyParts`]:
//!
//! - the stage **kind** (`pc.tokens`, `train`, ...), so two kinds with equal params differ;
//! - the stage's **VERSION** constant, bumped by a developer whenever the stage's output would
//!   change for the same inputs (a bug fix in sampling, a new field in the shards);
//! - the **params** as the stage canonicalises them ([`crate::Stage::key_params`]): typed,
//!   defaults filled in, object keys sorted by `serde_json`'s ordered map. Input *locations*
//!   are left out on purpose: the same bytes under `/data/a` and `/mnt/b` are the same input,
//!   which is what lets two machines of a team share one artifact;
//! - the **keys of upstream artifacts**, by stage name, so a change anywhere upstream flows down;
//! - the **content of raw input files** ([`crate::fingerprint`]): per file its role, its path
//!   relative to the input root and its blake3.
//!
//! What does not go in, and why:
//! - comments, key order and formatting of the TOML (they do not reach the typed params);
//! - engine knobs that do not change bytes: thread count, `max_reject_fraction`, `--part`,
//!   progress and log settings. Output is byte-identical for any thread count, so a key
//!   computed on a 2-core laptop names the same bytes as one computed on a 64-core node;
//! - file mtimes and inodes: those only decide whether a file must be re-hashed (the stat cache).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Bumped if the encoding of [`KeyParts`] itself changes (invalidates every key once).
pub const KEY_SCHEME: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyParts {
    pub scheme: u32,
    pub kind: String,
    pub version: u32,
    pub params: serde_json::Value,
    pub upstream: BTreeMap<String, String>,
    /// Digest over the stage's raw input files ([`crate::fingerprint::inputs_digest`]).
    pub inputs: String,
}

impl KeyParts {
    /// The content key: 64 hex characters.
    pub fn key(&self) -> String {
        // `serde_json::Value` maps are ordered (BTreeMap), so this encoding is canonical.
        let canonical = serde_json::to_vec(self).unwrap_or_default();
        let mut h = blake3::Hasher::new();
        h.update(b"lm4ve-key\0");
        h.update(&canonical);
        h.finalize().to_hex().to_string()
    }
}

/// A short form of a key for humans (like git's abbreviated hashes).
pub fn short(key: &str) -> &str {
    &key[..key.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts() -> KeyParts {
        KeyParts {
            scheme: KEY_SCHEME,
            kind: "pc.tokens".into(),
            version: 1,
            params: serde_json::json!({"b": 1, "a": [1, 2]}),
            upstream: BTreeMap::new(),
            inputs: "00".into(),
        }
    }

    #[test]
    fn key_ignores_param_insertion_order() {
        let mut p = parts();
        let k1 = p.key();
        p.params = serde_json::json!({"a": [1, 2], "b": 1});
        assert_eq!(k1, p.key());
    }

    #[test]
    fn every_part_changes_the_key() {
        let base = parts().key();
        let mut p = parts();
        p.version = 2;
        assert_ne!(base, p.key());
        let mut p = parts();
        p.params = serde_json::json!({"b": 2, "a": [1, 2]});
        assert_ne!(base, p.key());
        let mut p = parts();
        p.upstream.insert("x".into(), "k".into());
        assert_ne!(base, p.key());
        let mut p = parts();
        p.inputs = "01".into();
        assert_ne!(base, p.key());
    }
}
