//! The trust boundary: every record read from a remote or from a cache directory passes
//! through here before anything uses it.
//!
//! A cache directory is written by this machine, but also by a crashed run (half a file), by
//! a teammate's push (a remote) or by anyone with write access to a shared mount. So a record
//! is untrusted input until it is checked, and a check that fails is an error value — a named
//! warning upstream and a recompute — never a panic and never a silent use:
//!
//! - **names** that become file names are checked first: content keys and object names are
//!   64 lowercase hex characters, unit ids and split names are plain `[A-Za-z0-9._-]` words,
//!   file names come from [`KNOWN_FILES`], and a manifest's object paths are exactly the
//!   standard `../../objects/ab/<hash>` (so no `..` walks out of the cache);
//! - **sizes** from a record are bounded ([`MAX_RECORD_BYTES`], [`MAX_SHARD_BYTES`],
//!   [`MAX_FILE_BYTES`]) and summed with checked arithmetic;
//! - **consistency**: a manifest's sample counts agree with its splits and shards, and
//!   ([`rederive`]) with the unit records it was assembled from and with what this
//!   machine's copy of the stage would have written for that key (kind, schema, unit ids,
//!   the stage-specific `meta` recomputed from the unit records). Shard headers are
//!   checked against the manifest by [`crate::shard::check_shard`] once the bytes are here.
//!
//! What this does not prove: that a teammate who writes a *consistent* set of records and
//! objects computed them honestly. Hashes prove integrity, not provenance (README, "Threat
//! model").
//!
//! Two rooms: [`vocab`] is the leaf vocabulary (limits, name rules, the error type, how an
//! untrusted value is printed) that config loading, gc and the remote use without touching
//! records; [`records`] holds the validators of manifests, unit records and run records,
//! which need the artifact model.

pub mod records;
pub mod vocab;

pub use records::*;
pub use vocab::*;

#[cfg(test)]
mod tests {

    /// Issue 27: a record written and read back (pulled, resumed) keeps every float bit for
    /// bit, so a re-derived manifest equals the one computed in memory.
    #[test]
    fn floats_in_records_round_trip_exactly() {
        let mut x = 0x1234_5678_9abc_def1u64;
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let v = f64::from_bits((x >> 2) | 0x3000_0000_0000_0000) * 1e-3;
            if !v.is_finite() {
                continue;
            }
            let text = serde_json::to_string(&serde_json::json!({ "v": v })).unwrap();
            let back: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(
                back["v"].as_f64().map(f64::to_bits),
                Some(v.to_bits()),
                "{text}"
            );
        }
    }
    use super::records::*;
    use super::vocab::*;

    /// The vocabulary stays a leaf: code (not doc links) in `vocab.rs` names nothing of this
    /// crate, so loading a config never pulls in the artifact model.
    #[test]
    fn vocabulary_is_a_leaf() {
        let code = include_str!("vocab.rs")
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"));
        for line in code {
            assert!(
                !line.contains("crate::") && !line.contains("super::"),
                "vocab.rs imports from the crate: {line}"
            );
        }
    }
    use crate::artifact::{object_path_from_manifest, FileOut, Manifest, ShardOut, UnitRecord};

    fn unit(id: &str, split: &str, h: char, samples: u64) -> UnitRecord {
        UnitRecord {
            unit: id.into(),
            shards: vec![ShardOut {
                split: split.into(),
                samples,
                blake3: h.to_string().repeat(64),
                bytes: 10,
            }],
            files: Vec::new(),
            rejects: Vec::new(),
            meta: serde_json::json!({"n": samples}),
        }
    }

    fn expected(plan: Option<Vec<String>>) -> Expected<'static> {
        Expected {
            files: None,
            kind: "k".into(),
            schema: None,
            units: plan,
            meta: Some(Box::new(|u: &[UnitRecord]| {
                Ok(serde_json::json!({"units": u.len()}))
            })),
        }
    }

    fn manifest(units: &[UnitRecord]) -> Manifest {
        Manifest::assemble(
            "s",
            "k",
            &"0".repeat(64),
            None,
            units,
            serde_json::json!({"units": units.len()}),
        )
    }

    #[test]
    fn names_are_checked() {
        assert!(is_hash(&"a".repeat(64)));
        assert!(!is_hash("../../etc/passwd"));
        assert!(!is_hash(&"A".repeat(64)));
        assert!(!is_hash("01234567890é"));
        assert!(is_name("train-00003"));
        assert!(!is_name(".."));
        assert!(!is_name("a/b"));
        assert_eq!(shown("a\x1b[2Jb"), "a\\u{1b}[2Jb");
        assert_eq!(shown(&"é".repeat(100)).chars().count(), 81);
    }

    /// Issue 28: samples that repeat make byte-identical shards; one split may list the
    /// same object twice (the no-op bench's data did, and its manifest was refused on
    /// every run), with or without a plan. Two splits sharing an object stay refused.
    #[test]
    fn a_shard_repeated_within_a_split_passes_across_splits_is_refused() {
        let units = vec![
            unit("train-0", "train", 'a', 3),
            unit("train-1", "train", 'c', 3),
            unit("train-2", "train", 'a', 3),
        ];
        let m = manifest(&units);
        let bytes = serde_json::to_vec(&m).unwrap();
        let parsed = parse_manifest(&bytes, &"0".repeat(64)).unwrap();
        let plan: Vec<String> = units.iter().map(|u| u.unit.clone()).collect();
        for plan in [Some(plan), None] {
            let (rebuilt, _) = rederive(&parsed, units.clone(), &expected(plan)).unwrap();
            assert_eq!(rebuilt, m);
        }
        let crossed = manifest(&[
            unit("train-0", "train", 'a', 3),
            unit("test-0", "test", 'a', 3),
        ]);
        let e = parse_manifest(&serde_json::to_vec(&crossed).unwrap(), &"0".repeat(64))
            .unwrap_err()
            .to_string();
        assert!(e.contains("listed in splits"), "{e}");
    }

    #[test]
    fn a_good_manifest_passes_and_rederives() {
        let units = vec![
            unit("train-0", "train", 'a', 3),
            unit("test-0", "test", 'b', 2),
        ];
        let m = manifest(&units);
        let bytes = serde_json::to_vec(&m).unwrap();
        let parsed = parse_manifest(&bytes, &"0".repeat(64)).unwrap();
        let plan = Some(vec!["train-0".to_string(), "test-0".to_string()]);
        let (rebuilt, _) = rederive(&parsed, units.clone(), &expected(plan)).unwrap();
        assert_eq!(rebuilt, m);
        // Without a plan the order comes from the manifest.
        let mut rev = units.clone();
        rev.reverse();
        assert!(rederive(&parsed, rev, &expected(None)).is_ok());
    }

    /// The stage decides which files its records may name: a plain name it declares
    /// passes, one it does not is refused, and no stage's list lives in the engine.
    #[test]
    fn files_are_checked_against_what_the_stage_declares() {
        let mut u = unit("u0", "train", 'a', 1);
        u.files.push(FileOut {
            name: "confusion.png".into(),
            blake3: "c".repeat(64),
            bytes: 3,
        });
        assert!(
            check_unit(&u, "u0").is_ok(),
            "a plain name is a valid record"
        );
        let units = vec![u];
        let m = manifest(&units);
        let declared = |files: &[&str]| Expected {
            files: Some(files.iter().map(|f| f.to_string()).collect()),
            ..expected(None)
        };
        assert!(rederive(&m, units.clone(), &declared(&["confusion.png"])).is_ok());
        assert!(matches!(
            rederive(&m, units, &declared(&["curves.png"])),
            Err(TrustError::UnknownFile(_))
        ));
    }

    #[test]
    fn a_train_split_pointed_at_the_test_shard_is_refused() {
        let units = vec![
            unit("train-0", "train", 'a', 3),
            unit("test-0", "test", 'b', 2),
        ];
        let mut m = manifest(&units);
        m.shards[0].blake3 = m.shards[1].blake3.clone();
        m.shards[0].path = m.shards[1].path.clone();
        assert!(matches!(
            check_manifest(&m, &"0".repeat(64)),
            Err(TrustError::Inconsistent(_))
        ));
        // Consistently rewritten shards still disagree with the unit records.
        let mut m = manifest(&units);
        m.shards[0].blake3 = "c".repeat(64);
        m.shards[0].path = object_path_from_manifest(&m.shards[0].blake3);
        check_manifest(&m, &"0".repeat(64)).unwrap();
        assert!(rederive(&m, units.clone(), &expected(None)).is_err());
        // So does a manifest whose meta (which sets model sizes downstream) was edited.
        let mut m = manifest(&units);
        m.meta = serde_json::json!({"units": 99});
        assert!(rederive(&m, units, &expected(None)).is_err());
    }

    #[test]
    fn paths_sizes_and_files_are_checked() {
        let units = vec![unit("train-0", "train", 'a', 3)];
        let key = "0".repeat(64);
        let mut m = manifest(&units);
        m.shards[0].path = "../../../secret.txt".into();
        assert!(matches!(
            check_manifest(&m, &key),
            Err(TrustError::BadPath(_))
        ));
        let mut m = manifest(&units);
        m.samples = u64::MAX;
        assert!(check_manifest(&m, &key).is_err());
        let mut m = manifest(&units);
        m.shards[0].bytes = u64::MAX;
        assert!(check_manifest(&m, &key).is_err());
        let mut u = unit("u", "train", 'a', 1);
        u.files.push(FileOut {
            name: "../x".into(),
            blake3: "d".repeat(64),
            bytes: 1,
        });
        assert!(matches!(
            check_unit(&u, "u"),
            Err(TrustError::UnknownFile(_))
        ));
        let mut u = unit("u", "train", 'a', 1);
        u.shards[0].blake3 = "../secret.txt".into();
        assert!(check_unit(&u, "u").is_err());
        assert!(parse_manifest(b"{", &key).is_err());
        assert!(parse_manifest(b"{}", "01234567890é").is_err());
    }
}
