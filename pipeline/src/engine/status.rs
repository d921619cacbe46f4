//! `pipeline status`: per stage fresh, stale (and why, by comparing the key's parts with the
//! last run record's) or missing.

use super::{KeyInfo, Pipeline, StageStatus, State};
use crate::artifact::Journal;
use crate::record::RunRecord;
use crate::remote::sync;
use anyhow::Result;
use std::collections::BTreeMap;

impl Pipeline {
    /// Per stage: fresh, stale (and why) or missing.
    pub fn status(&mut self, rehash: bool) -> Result<Vec<StageStatus>> {
        self.compute_keys(rehash)?;
        let mut out: Vec<StageStatus> = Vec::new();
        for name in self.dag.order() {
            let info = &self.keys[name];
            let key = info.key.clone();
            if let Some(why) = self.blocked_by(name, false) {
                out.push(StageStatus {
                    stage: name.clone(),
                    state: State::Missing,
                    reason: why,
                    key,
                });
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
                out.push(StageStatus {
                    stage: name.clone(),
                    state: State::Stale,
                    reason: format!("{why}; the next run rebuilds what is gone"),
                    key,
                });
                continue;
            }
            if self.cache.manifest_path(&key).exists() {
                out.push(StageStatus {
                    stage: name.clone(),
                    state: State::Fresh,
                    reason: String::new(),
                    key,
                });
                continue;
            }
            let mut reasons = Vec::new();
            let partial = Journal::new(&self.cache, &key).count();
            if partial > 0 {
                reasons.push(format!(
                    "interrupted: {partial} units done, run again to resume"
                ));
            }
            let latest = RunRecord::latest(&self.cache, name);
            if let Some(rec) = &latest {
                reasons.extend(explain(rec, info, &out));
                if reasons.is_empty() {
                    reasons.push("artifact is no longer in the cache (removed by gc?)".into());
                }
            }
            if let Some(remote) = &self.remote {
                match sync::has_artifact(remote, &key) {
                    Ok(true) => {
                        reasons.push(format!("on {} (the next run pulls it)", remote.describe()))
                    }
                    Ok(false) => {}
                    Err(e) => tracing::warn!("{name}: cannot ask {}: {e}", remote.describe()),
                }
            }
            let state = if latest.is_some() || partial > 0 {
                State::Stale
            } else {
                if reasons.is_empty() {
                    reasons.push("never built".into());
                }
                State::Missing
            };
            out.push(StageStatus {
                stage: name.clone(),
                state,
                reason: reasons.join("; "),
                key,
            });
        }
        Ok(out)
    }
}

/// Why the current key differs from the last run's: params, code version, inputs, upstream.
pub(super) fn explain(rec: &RunRecord, now: &KeyInfo, earlier: &[StageStatus]) -> Vec<String> {
    let mut reasons = Vec::new();
    let (old, new) = (&rec.key_parts, &now.parts);
    if old.kind != new.kind {
        reasons.push(format!("kind {} → {}", old.kind, new.kind));
    }
    if old.version != new.version {
        reasons.push(format!("code version {} → {}", old.version, new.version));
    }
    diff_json("", &old.params, &new.params, &mut reasons);
    let before: BTreeMap<(&str, &str), &str> = rec
        .inputs
        .iter()
        .map(|f| ((f.role.as_str(), f.rel.as_str()), f.blake3.as_str()))
        .collect();
    let after: BTreeMap<(&str, &str), &str> = now
        .inputs
        .iter()
        .map(|f| ((f.role.as_str(), f.rel.as_str()), f.blake3.as_str()))
        .collect();
    let mut changes = Vec::new();
    for (k, h) in &after {
        match before.get(k) {
            None => changes.push(format!("input {} added: {}", k.0, k.1)),
            Some(o) if o != h => changes.push(format!("input {} changed: {}", k.0, k.1)),
            _ => {}
        }
    }
    for k in before.keys() {
        if !after.contains_key(k) {
            changes.push(format!("input {} removed: {}", k.0, k.1));
        }
    }
    let n = changes.len();
    reasons.extend(changes.into_iter().take(5));
    if n > 5 {
        reasons.push(format!("and {} more input changes", n - 5));
    }
    for (up, key) in &new.upstream {
        if old.upstream.get(up) != Some(key) {
            let state = earlier
                .iter()
                .find(|s| &s.stage == up)
                .map(|s| match s.state {
                    State::Fresh => "changed",
                    _ => "changed and is not built",
                })
                .unwrap_or("changed");
            reasons.push(format!("upstream {up} {state}"));
        }
    }
    reasons
}

pub(super) fn diff_json(
    path: &str,
    old: &serde_json::Value,
    new: &serde_json::Value,
    out: &mut Vec<String>,
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
                    None => out.push(format!("param {p} added: {v}")),
                }
            }
            for k in a.keys() {
                if !b.contains_key(k) {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    out.push(format!("param {p} removed"));
                }
            }
        }
        (a, b) if a != b => out.push(format!(
            "param {}: {a} → {b}",
            if path.is_empty() { "params" } else { path }
        )),
        _ => {}
    }
}
