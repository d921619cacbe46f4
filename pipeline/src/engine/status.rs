//! `pipeline status`: per stage fresh, stale (and why, by comparing the key's parts with the
//! last run record's) or missing.

use super::reason::{joined, StaleReason};
use super::{KeyInfo, Pipeline, StageStatus, State};
use crate::artifact::Journal;
use crate::record::RunRecord;
use crate::remote::sync;
use anyhow::Result;
use std::collections::BTreeMap;

impl StageStatus {
    fn new(name: &str, state: State, reasons: Vec<StaleReason>, key: String) -> Self {
        StageStatus {
            stage: name.to_string(),
            state,
            reason: joined(&reasons),
            reasons,
            key,
        }
    }
}

impl Pipeline {
    /// Per stage: fresh, stale (and why) or missing.
    pub fn status(&mut self, rehash: bool) -> Result<Vec<StageStatus>> {
        self.compute_keys(rehash)?;
        let mut out: Vec<StageStatus> = Vec::new();
        for name in self.dag.order() {
            let info = &self.keys[name];
            let key = info.key.clone();
            if let Some(why) = self.blocked(name) {
                out.push(StageStatus::new(name, State::Missing, vec![why], key));
                continue;
            }
            let gone = if self.cache.manifest_path(&key).exists() {
                crate::artifact::Manifest::load_checked(&self.cache.manifest_path(&key), &key)
                    .ok()
                    .and_then(|m| self.objects_gone(&m, false))
            } else {
                None
            };
            if let Some(why) = gone {
                let reasons = vec![StaleReason::ObjectGone(why)];
                out.push(StageStatus::new(name, State::Stale, reasons, key));
                continue;
            }
            if self.cache.manifest_path(&key).exists() {
                out.push(StageStatus::new(name, State::Fresh, Vec::new(), key));
                continue;
            }
            let mut reasons = Vec::new();
            let partial = Journal::new(&self.cache, &key).count();
            if partial > 0 {
                reasons.push(StaleReason::Interrupted {
                    units_done: partial,
                });
            }
            let latest = RunRecord::latest(&self.cache, name);
            if let Some(rec) = &latest {
                reasons.extend(explain(rec, info, &out));
                if reasons.is_empty() {
                    reasons.push(StaleReason::RemovedFromCache);
                }
            }
            if let Some(remote) = &self.remote {
                match sync::has_artifact(remote, &key) {
                    Ok(true) => reasons.push(StaleReason::OnRemote {
                        remote: remote.describe(),
                    }),
                    Ok(false) => {}
                    Err(e) => tracing::warn!("{name}: cannot ask {}: {e}", remote.describe()),
                }
            }
            let state = if latest.is_some() || partial > 0 {
                State::Stale
            } else {
                if reasons.is_empty() {
                    reasons.push(StaleReason::NeverBuilt);
                }
                State::Missing
            };
            out.push(StageStatus::new(name, state, reasons, key));
        }
        Ok(out)
    }
}

/// Why the current key differs from the last run's: params, code version, inputs, upstream.
pub(super) fn explain(rec: &RunRecord, now: &KeyInfo, earlier: &[StageStatus]) -> Vec<StaleReason> {
    let mut reasons = Vec::new();
    let (old, new) = (&rec.key_parts, &now.parts);
    if old.kind != new.kind {
        reasons.push(StaleReason::KindChanged {
            from: old.kind.clone(),
            to: new.kind.clone(),
        });
    }
    if old.version != new.version {
        reasons.push(StaleReason::CodeVersionChanged {
            from: old.version,
            to: new.version,
        });
    }
    diff_json("", &old.params, &new.params, &mut reasons);
    let before: BTreeMap<(&str, &str), &str> = rec
        .inputs
        .iter()
        .map(|f| ((f.role.as_str(), f.rel.as_str()), f.blake3.as_str()))
        .collect();
    let after: BTreeMap<(&str, &str), String> = now
        .inputs
        .iter()
        .map(|f| {
            let hex = blake3::Hash::from_bytes(*f.blake3).to_hex().to_string();
            ((f.role, f.rel), hex)
        })
        .collect();
    let mut changes = Vec::new();
    let role = |k: &(&str, &str)| k.0.to_string();
    let path = |k: &(&str, &str)| k.1.to_string();
    for (k, h) in &after {
        match before.get(k) {
            None => changes.push(StaleReason::InputAdded {
                role: role(k),
                path: path(k),
            }),
            Some(o) if *o != h.as_str() => changes.push(StaleReason::InputChanged {
                role: role(k),
                path: path(k),
            }),
            _ => {}
        }
    }
    for k in before.keys() {
        if !after.contains_key(k) {
            changes.push(StaleReason::InputRemoved {
                role: role(k),
                path: path(k),
            });
        }
    }
    let n = changes.len();
    reasons.extend(changes.into_iter().take(5));
    if n > 5 {
        reasons.push(StaleReason::MoreInputChanges { count: n - 5 });
    }
    for (up, key) in &new.upstream {
        if old.upstream.get(up) != Some(key) {
            let built = earlier
                .iter()
                .find(|s| &s.stage == up)
                .is_none_or(|s| s.state == State::Fresh);
            reasons.push(StaleReason::UpstreamChanged {
                upstream: up.clone(),
                built,
            });
        }
    }
    reasons
}

pub(super) fn diff_json(
    path: &str,
    old: &serde_json::Value,
    new: &serde_json::Value,
    out: &mut Vec<StaleReason>,
) {
    use serde_json::Value;
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match a.get(k) {
                    Some(o) => diff_json(&p, o, v, out),
                    None => out.push(StaleReason::ParamAdded {
                        param: p,
                        value: v.clone(),
                    }),
                }
            }
            for k in a.keys() {
                if !b.contains_key(k) {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    out.push(StaleReason::ParamRemoved { param: p });
                }
            }
        }
        (a, b) if a != b => out.push(StaleReason::ParamChanged {
            param: if path.is_empty() { "params" } else { path }.to_string(),
            from: a.clone(),
            to: b.clone(),
        }),
        _ => {}
    }
}
