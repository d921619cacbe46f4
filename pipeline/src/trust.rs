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

use crate::artifact::{object_path_from_manifest, Manifest, UnitRecord, MANIFEST_FORMAT};
use crate::shard::Schema;
use std::collections::BTreeMap;

/// Largest record (manifest, unit record, run record, rejects list) read from anywhere.
pub const MAX_RECORD_BYTES: u64 = 64 << 20;
/// Largest shard object a record may announce (a shard holds a few thousand samples).
pub const MAX_SHARD_BYTES: u64 = 16 << 30;
/// Largest named file a record may announce (a 7B-parameter checkpoint with its AdamW
/// moments is ~84 GB in f32).
pub const MAX_FILE_BYTES: u64 = 128 << 30;

/// The files a stage stores unless it declares its own ([`crate::Stage::files`]). A record
/// naming a file that is not a plain name is refused here; one naming a plain file its stage
/// does not declare is refused where the stage is known ([`rederive`]), and
/// [`crate::stage::UnitOutput::add_file`] refuses to write one, so a new stage output fails
/// loudly in its first test until its stage declares it. No engine edit is needed for it.
pub const KNOWN_FILES: &[&str] = &[
    "block.safetensors",
    "checkpoint.safetensors",
    "model.safetensors",
    "metrics.jsonl",
    "metrics.json",
    "curves.png",
];

/// Why a record was refused. Every variant names what was wrong; values taken from the
/// record are escaped and shortened ([`shown`]) before they reach a terminal.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TrustError {
    #[error("record is {size} bytes, over the {cap}-byte limit for records")]
    TooLarge { size: u64, cap: u64 },
    #[error("not a valid record: {0}")]
    Parse(String),
    #[error("{what} `{value}` is not 64 lowercase hex characters")]
    NotAHash { what: &'static str, value: String },
    #[error("{what} `{value}` is not a plain name ([A-Za-z0-9._-], at most 128 characters)")]
    BadName { what: &'static str, value: String },
    #[error("object path `{0}` is not the standard ../../objects/ab/<hash> of its object")]
    BadPath(String),
    #[error("file name `{0}` is not one lm4ve writes")]
    UnknownFile(String),
    #[error("{what} of {size} bytes is over the {cap}-byte limit")]
    ObjectTooLarge { what: String, size: u64, cap: u64 },
    #[error("inconsistent: {0}")]
    Inconsistent(String),
}

/// A value from an untrusted record, fit to print: control characters escaped (no terminal
/// escape sequences pass), at most 80 characters (cut on a character boundary).
pub fn shown(s: &str) -> String {
    escaped(s, 80)
}

/// `s` with control characters escaped, cut after `max` characters.
pub fn escaped(s: &str, max: usize) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i == max {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// 64 lowercase hex characters: a content key or an object name.
pub fn is_hash(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A word that is safe as a file name and in a path: unit ids, split and stage names.
pub fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// A stage name: a [`is_name`] word, or a study variant `base@k1=v1,k2=v2` (see
/// `matrix.rs`); `@`, `=` and `,` are as safe as the rest in a file name, a URL path segment
/// and an object-store key.
/// The longest stage name a config may give (matrix variants add their suffix to it).
pub const MAX_CONFIG_STAGE_NAME: usize = 64;

/// A stage name as a config writes it: `[A-Za-z0-9_][A-Za-z0-9_.-]*`, at most
/// [`MAX_CONFIG_STAGE_NAME`] bytes (no `/`, no spaces, no control characters, not `.`).
pub fn is_config_stage_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_CONFIG_STAGE_NAME
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(c))
}

pub fn is_stage_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.@=,".contains(&b))
}

pub fn check_hash(what: &'static str, s: &str) -> Result<(), TrustError> {
    if is_hash(s) {
        Ok(())
    } else {
        Err(TrustError::NotAHash {
            what,
            value: shown(s),
        })
    }
}

pub fn check_name(what: &'static str, s: &str) -> Result<(), TrustError> {
    if is_name(s) {
        Ok(())
    } else {
        Err(TrustError::BadName {
            what,
            value: shown(s),
        })
    }
}

fn check_size(what: impl FnOnce() -> String, size: u64, cap: u64) -> Result<(), TrustError> {
    if size > cap {
        return Err(TrustError::ObjectTooLarge {
            what: what(),
            size,
            cap,
        });
    }
    Ok(())
}

/// A file name a record may carry: a plain name (no path, no `..`); which names a stage
/// writes is checked against the stage ([`Expected::files`]).
fn check_file_name(name: &str) -> Result<(), TrustError> {
    if is_name(name) {
        Ok(())
    } else {
        Err(TrustError::UnknownFile(shown(name)))
    }
}

fn parse<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, TrustError> {
    if bytes.len() as u64 > MAX_RECORD_BYTES {
        return Err(TrustError::TooLarge {
            size: bytes.len() as u64,
            cap: MAX_RECORD_BYTES,
        });
    }
    serde_json::from_slice(bytes).map_err(|e| TrustError::Parse(shown(&e.to_string())))
}

fn sum(what: &str, a: u64, b: u64) -> Result<u64, TrustError> {
    a.checked_add(b)
        .ok_or_else(|| TrustError::Inconsistent(format!("{what} overflows")))
}

/// A manifest from bytes, checked on its own: format, key (must be `key`), names, paths,
/// sizes, and that samples = Σ splits = Σ shard samples per split.
pub fn parse_manifest(bytes: &[u8], key: &str) -> Result<Manifest, TrustError> {
    check_hash("content key", key)?;
    let m: Manifest = parse(bytes)?;
    check_manifest(&m, key)?;
    Ok(m)
}

/// [`parse_manifest`] for a manifest already parsed.
pub fn check_manifest(m: &Manifest, key: &str) -> Result<(), TrustError> {
    if m.format != MANIFEST_FORMAT {
        return Err(TrustError::Parse(format!(
            "format `{}` is not {MANIFEST_FORMAT}",
            shown(&m.format)
        )));
    }
    check_hash("manifest key", &m.key)?;
    if m.key != key {
        return Err(TrustError::Inconsistent(format!(
            "it is the manifest of {}, not of {}",
            crate::key::short(&m.key),
            crate::key::short(key)
        )));
    }
    if !is_stage_name(&m.stage) {
        return Err(TrustError::BadName {
            what: "stage name",
            value: shown(&m.stage),
        });
    }
    let mut per_split: BTreeMap<&str, u64> = BTreeMap::new();
    let mut objects: BTreeMap<&str, &str> = BTreeMap::new();
    for s in &m.shards {
        check_hash("shard object", &s.blake3)?;
        check_name("split", &s.split)?;
        if s.path != object_path_from_manifest(&s.blake3) {
            return Err(TrustError::BadPath(shown(&s.path)));
        }
        check_size(|| format!("shard {}", s.blake3), s.bytes, MAX_SHARD_BYTES)?;
        // Within a split the same shard may repeat: samples that repeat (a dataset with
        // periodic or duplicated objects) make byte-identical shards, stored once (issue
        // 28: the no-op bench's own manifest was refused for it on every run). A shard
        // listed in two splits is a record pointing one split at another's data.
        match objects.insert(s.blake3.as_str(), s.split.as_str()) {
            Some(split) if split != s.split => {
                return Err(TrustError::Inconsistent(format!(
                    "shard {} is listed in splits `{}` and `{}`",
                    s.blake3,
                    shown(split),
                    shown(&s.split)
                )));
            }
            _ => {}
        }
        let e = per_split.entry(s.split.as_str()).or_insert(0);
        *e = sum("split samples", *e, s.samples)?;
    }
    // File names repeat legitimately (every training unit writes its own
    // checkpoint.safetensors); their objects are checked like shards'.
    for f in &m.files {
        check_hash("file object", &f.blake3)?;
        check_file_name(&f.name)?;
        if f.path != object_path_from_manifest(&f.blake3) {
            return Err(TrustError::BadPath(shown(&f.path)));
        }
        check_size(|| format!("file {}", f.name), f.bytes, MAX_FILE_BYTES)?;
    }
    let splits: BTreeMap<&str, u64> = m.splits.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    if splits != per_split {
        return Err(TrustError::Inconsistent(
            "the split sample counts do not add up to the shards' counts".into(),
        ));
    }
    let total = m
        .splits
        .values()
        .try_fold(0u64, |a, b| sum("samples", a, *b))?;
    if total != m.samples {
        return Err(TrustError::Inconsistent(format!(
            "samples = {} but the splits add up to {total}",
            m.samples
        )));
    }
    if let Some(schema) = &m.schema {
        crate::shard::check_schema(schema).map_err(TrustError::Inconsistent)?;
    }
    Ok(())
}

/// A unit record from bytes, checked: its id (must be `id`), object names, split names,
/// file names and sizes.
pub fn parse_unit(bytes: &[u8], id: &str) -> Result<UnitRecord, TrustError> {
    let rec: UnitRecord = parse(bytes)?;
    check_unit(&rec, id)?;
    Ok(rec)
}

pub fn check_unit(rec: &UnitRecord, id: &str) -> Result<(), TrustError> {
    check_name("unit id", id)?;
    if rec.unit != id {
        return Err(TrustError::Inconsistent(format!(
            "the record of unit {} names unit `{}`",
            shown(id),
            shown(&rec.unit)
        )));
    }
    for s in &rec.shards {
        check_hash("shard object", &s.blake3)?;
        check_name("split", &s.split)?;
        check_size(|| format!("shard {}", s.blake3), s.bytes, MAX_SHARD_BYTES)?;
    }
    for f in &rec.files {
        check_hash("file object", &f.blake3)?;
        check_file_name(&f.name)?;
        check_size(|| format!("file {}", f.name), f.bytes, MAX_FILE_BYTES)?;
    }
    Ok(())
}

/// A run record from bytes: it must name `stage` and `key`.
pub fn parse_run_record(
    bytes: &[u8],
    stage: &str,
    key: &str,
) -> Result<crate::record::RunRecord, TrustError> {
    let rec: crate::record::RunRecord = parse(bytes)?;
    if rec.stage != stage || rec.key != key {
        return Err(TrustError::Inconsistent(format!(
            "the run record names stage `{}` and key {}",
            shown(&rec.stage),
            crate::key::short(&rec.key)
        )));
    }
    Ok(rec)
}

/// What this machine's copy of a stage says an artifact of a key must look like.
pub struct Expected<'a> {
    /// The stage kind (`pc.tokens`): part of the key, so a manifest of another kind is not
    /// the artifact of this key.
    pub kind: String,
    pub schema: Option<Schema>,
    /// The unit ids of the stage's plan, in plan order, when they can be derived here (the
    /// plan may need upstream artifacts this machine does not have yet).
    pub units: Option<Vec<String>>,
    /// The files the stage declares ([`crate::Stage::files`]); a record naming another is
    /// refused. None: not checked here.
    pub files: Option<Vec<String>>,
    /// Recomputes the manifest's `meta` from the unit records (the stage's `finish`).
    #[allow(clippy::type_complexity)]
    pub meta: Option<Box<dyn Fn(&[UnitRecord]) -> anyhow::Result<serde_json::Value> + 'a>>,
}

/// Re-derives the manifest from its unit records and the stage's expectations, the way the
/// engine assembles it after a run, and returns it when it equals `m` (its `stage` name
/// aside: the key does not depend on what a config calls a stage). `units` are every unit
/// record of the artifact, in any order.
pub fn rederive(
    m: &Manifest,
    units: Vec<UnitRecord>,
    expect: &Expected<'_>,
) -> Result<(Manifest, Vec<UnitRecord>), TrustError> {
    if m.kind != expect.kind {
        return Err(TrustError::Inconsistent(format!(
            "kind `{}`, but the stage is {}",
            shown(&m.kind),
            expect.kind
        )));
    }
    if m.schema != expect.schema {
        return Err(TrustError::Inconsistent(
            "its schema is not the one the stage writes".into(),
        ));
    }
    if let Some(files) = &expect.files {
        let named = m
            .files
            .iter()
            .map(|f| &f.name)
            .chain(units.iter().flat_map(|u| u.files.iter().map(|f| &f.name)));
        for name in named {
            if !files.contains(name) {
                return Err(TrustError::UnknownFile(shown(name)));
            }
        }
    }
    let mut by_id: BTreeMap<String, UnitRecord> =
        units.into_iter().map(|u| (u.unit.clone(), u)).collect();
    let order: Vec<String> = match &expect.units {
        Some(plan) => {
            if let Some(extra) = by_id.keys().find(|k| !plan.contains(k)) {
                return Err(TrustError::Inconsistent(format!(
                    "unit {} is not in the stage's plan",
                    shown(extra)
                )));
            }
            plan.clone()
        }
        // No plan here: the order in which the manifest lists the units' objects.
        None => {
            // Every position of each object: an object listed twice (identical shards of
            // one split) is claimed once per unit, units taken in id order, so two units
            // with the same shard keep their places instead of tying at the first one.
            let mut places: BTreeMap<&str, std::collections::VecDeque<usize>> = BTreeMap::new();
            let listed = m.shards.iter().map(|s| s.blake3.as_str());
            for (i, h) in listed
                .chain(m.files.iter().map(|f| f.blake3.as_str()))
                .enumerate()
            {
                places.entry(h).or_default().push_back(i);
            }
            let mut ids: Vec<(usize, String)> = by_id
                .values()
                .map(|u| {
                    let at = u
                        .objects()
                        .filter_map(|h| places.get_mut(h).and_then(|q| q.pop_front()))
                        .min()
                        .unwrap_or(usize::MAX);
                    (at, u.unit.clone())
                })
                .collect();
            ids.sort();
            ids.into_iter().map(|x| x.1).collect()
        }
    };
    let mut ordered = Vec::with_capacity(order.len());
    for id in &order {
        match by_id.remove(id) {
            Some(u) => ordered.push(u),
            None => {
                return Err(TrustError::Inconsistent(format!(
                    "the record of unit {} is missing",
                    shown(id)
                )))
            }
        }
    }
    let meta = match &expect.meta {
        Some(f) => f(&ordered).map_err(|e| {
            TrustError::Inconsistent(format!("its meta cannot be re-derived: {e:#}"))
        })?,
        None => m.meta.clone(),
    };
    let rebuilt = Manifest::assemble(&m.stage, &m.kind, &m.key, m.schema.clone(), &ordered, meta);
    if let Some(field) = first_difference(&rebuilt, m) {
        return Err(TrustError::Inconsistent(format!(
            "its {field} do not match its unit records and the stage"
        )));
    }
    Ok((rebuilt, ordered))
}

fn first_difference(a: &Manifest, b: &Manifest) -> Option<&'static str> {
    if a.shards != b.shards {
        Some("shards")
    } else if a.files != b.files {
        Some("files")
    } else if a.splits != b.splits || a.samples != b.samples {
        Some("sample counts")
    } else if a.rejects != b.rejects {
        Some("reject counts")
    } else if a.meta != b.meta {
        Some("meta (class counts, model sizes)")
    } else if a != b {
        Some("fields")
    } else {
        None
    }
}

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
    use super::*;
    use crate::artifact::{FileOut, ShardOut};

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
