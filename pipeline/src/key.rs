//! Content keys: the name of an artifact, derived only from what determines its bytes.
//!
//! A stage's key is the blake3 hash of a canonical JSON encoding of [`KeyParts`]:
//!
//! - the key **scheme** ([`KEY_SCHEME`]), bumped if this encoding itself ever changes;
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
//! Where the params come from, per stage (each data stage serializes its whole params struct,
//! `lm4ve_stages::keyed`, so a param added later cannot be left out):
//! - `pc.tokens`, `av.tokens`, `ssv2.tokens`: every param except the paths, plus what the
//!   inputs decided (the splits present, the class table); `ssv2.tokens` adds the **linked
//!   FFmpeg library versions** (libavcodec, libavformat, libswscale), because the decoder and
//!   the scaler decide the frames as much as the params do — this is the one part of the
//!   environment that enters a key;
//! - `llm.block`: the resolved layer index (the checkpoint's files enter as inputs, only the
//!   ones that hold that layer);
//! - `train`: the params with the task's defaults filled in and the model config resolved;
//!   `attention`, `checkpoint_blocks` and `precision` only when set away from their defaults;
//! - `eval`: the split and the batch size.
//!
//! A study variant (`NAME@k=v`, `matrix.rs`) is an ordinary stage: its key is that of the
//! same stage written out by hand. `-S` overrides enter through the params they set.
//!
//! **When an input is re-hashed** (the stat cache, `cache/stat-cache.bin`, like git's index):
//! a file's blake3 is reused only if its size, mtime (ns), ctime (ns) and inode all equal the
//! cached ones **and** its mtime is more than 2 s in the past (the racy window: a file
//! written within the same mtime tick as a look at it could change again without its stat
//! changing). Anything else, or `--rehash`, hashes the file again. The stat cache only saves
//! work; it never changes a key.
//!
//! What does not go in, and why:
//! - comments, key order and formatting of the TOML (they do not reach the typed params);
//! - engine knobs that do not change bytes: thread count, `max_reject_fraction`, `--part`,
//!   progress and log settings. Output is byte-identical for any thread count, so a key
//!   computed on a 2-core laptop names the same bytes as one computed on a 64-core node;
//! - file mtimes and inodes: those only decide whether a file must be re-hashed (the stat cache).
//!
//! Artifacts are a pure function of their key: no wall-clock time, host name or thread count
//! is written into any artifact byte (manifests, unit records, shards, files). Those go into
//! run records (`runs/<stage>/<key>.json`) and logs, which are not part of the artifact.
//!
//! **Device and floating point.** Token stages are integer/bit-exact work and give the same
//! bytes on every machine and for any thread count (tested). Training is floating point:
//! matmul and reduction order can differ between a CPU build and a CUDA build (and between
//! BLAS backends), so two *devices* can produce different weights for one key. We decided
//! **not** to put the device kind into the key — a team with one GPU machine and many CPU
//! machines must be able to share one trained artifact, and evaluation on a CPU of weights
//! trained on a GPU is the normal case. Instead, **the first artifact published for a key
//! wins**: a push of a key whose manifest the remote already has is a no-op that says so
//! (`already on the remote; kept the copy published first`), a pull always takes the
//! remote's copy as a whole (manifest, unit records and objects agree with each other), and
//! downstream keys depend on upstream *keys*, not bytes, so every machine that pulls sees
//! one consistent history. On one device the trainer is deterministic for a given thread
//! count and `tests/cache_trust.rs` checks that two caches get byte-identical artifacts.

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
    /// The parts of `stage`'s key under today's scheme: what the stage says of itself, its
    /// upstreams' keys and the digest of its input files. The engine and the golden-key
    /// test build them here, so neither can drift from the other.
    pub fn of(
        stage: &dyn crate::Stage,
        upstream: BTreeMap<String, String>,
        inputs: String,
    ) -> Self {
        KeyParts {
            scheme: KEY_SCHEME,
            kind: stage.kind().to_string(),
            version: stage.version(),
            params: stage.key_params(),
            upstream,
            inputs,
        }
    }

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

/// A short form of a key for humans (like git's abbreviated hashes): its first 12
/// characters. Keys read from records are untrusted and may not be ASCII, so this cuts on
/// a character boundary (a byte slice `&key[..12]` inside `é` was a panic: issue 16).
pub fn short(key: &str) -> &str {
    match key.char_indices().nth(12) {
        Some((i, _)) => &key[..i],
        None => key,
    }
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
    fn short_cuts_on_a_character_boundary() {
        assert_eq!(short("01234567890é123"), "01234567890é");
        assert_eq!(short("éééééééééééééé").chars().count(), 12);
        assert_eq!(short("abc"), "abc");
        assert_eq!(short(&"a".repeat(64)), "a".repeat(12));
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
