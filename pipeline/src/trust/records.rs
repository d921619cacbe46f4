//! The record validators: a manifest, a unit record or a run record read from a cache directory
//! or a remote is parsed with a size cap, its names, paths and sizes are checked with the
//! vocabulary ([`super::vocab`]), and [`rederive`] rebuilds a manifest from its unit records and
//! the stage's expectations and accepts it only when the two agree.

use super::vocab::{
    check_file_name, check_hash, check_name, check_size, is_stage_name, shown, TrustError,
    MAX_FILE_BYTES, MAX_RECORD_BYTES, MAX_SHARD_BYTES,
};
use crate::artifact::{object_path_from_manifest, Manifest, UnitRecord, MANIFEST_FORMAT};
use crate::shard::Schema;
use std::collections::BTreeMap;

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
