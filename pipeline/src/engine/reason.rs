//! Why a stage is not fresh, as data: `pipeline status --json` gives each reason with its
//! fields (as cargo's `DirtyReason` does for a crate), so a tool can act on "param lr
//! changed" without parsing English; `Display` gives the sentence people read, unchanged
//! from when reasons were strings.

use crate::key::short;
use serde::Serialize;
use std::fmt;

/// One reason a stage's artifact is stale or missing. Serialised with a `reason` tag in
/// snake case: `{"reason": "param_changed", "param": "lr", "from": 0.001, "to": 0.0005}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum StaleReason {
    /// An input file of this stage (`upstream` None) or of an upstream stage is missing.
    MissingInput {
        upstream: Option<String>,
        path: String,
    },
    /// The manifest is here but an object it names is not usable.
    ObjectGone(ObjectGone),
    /// Units were finished before a run stopped; the next run resumes.
    Interrupted {
        units_done: usize,
    },
    KindChanged {
        from: String,
        to: String,
    },
    CodeVersionChanged {
        from: u32,
        to: u32,
    },
    /// `param` is a dotted path into the stage's params (`augment.mixup`).
    ParamAdded {
        param: String,
        value: serde_json::Value,
    },
    ParamRemoved {
        param: String,
    },
    ParamChanged {
        param: String,
        from: serde_json::Value,
        to: serde_json::Value,
    },
    InputAdded {
        role: String,
        path: String,
    },
    InputChanged {
        role: String,
        path: String,
    },
    InputRemoved {
        role: String,
        path: String,
    },
    /// Input changes beyond the first five listed.
    MoreInputChanges {
        count: usize,
    },
    /// An upstream stage's key changed; `built` says whether its new artifact exists.
    UpstreamChanged {
        upstream: String,
        built: bool,
    },
    /// The key is the last run's, but its artifact is gone (gc, a hand-deleted folder).
    RemovedFromCache,
    /// The artifact is on the team's remote; the next run pulls it.
    OnRemote {
        remote: String,
    },
    NeverBuilt,
}

/// An object a manifest names that cannot be used: what it is, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ObjectGone {
    /// The object's content hash.
    pub object: String,
    /// What the manifest calls it (`shard ../../objects/ab/…`, `file model.safetensors`).
    pub what: String,
    pub damage: Damage,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Damage {
    /// Present with another size than recorded.
    WrongSize {
        bytes: u64,
        recorded: u64,
    },
    /// Moved aside by a verified read whose hash did not match.
    Damaged,
    Missing,
}

impl ObjectGone {
    pub fn of(object: &str, what: String, damage: Damage) -> Self {
        ObjectGone {
            object: object.to_string(),
            what,
            damage,
        }
    }
}

impl fmt::Display for ObjectGone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (o, what) = (short(&self.object), &self.what);
        match &self.damage {
            Damage::WrongSize { bytes, recorded } => write!(
                f,
                "object {o} ({what}) damaged: {bytes} bytes, recorded {recorded}"
            ),
            Damage::Damaged => write!(f, "object {o} ({what}) damaged"),
            Damage::Missing => write!(f, "object {o} ({what}) missing"),
        }
    }
}

impl fmt::Display for StaleReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use StaleReason::*;
        match self {
            MissingInput {
                upstream: None,
                path,
            } => write!(f, "missing input: {path}"),
            MissingInput {
                upstream: Some(s),
                path,
            } => write!(f, "missing input of `{s}`: {path}"),
            ObjectGone(g) => write!(f, "{g}; the next run rebuilds what is gone"),
            Interrupted { units_done } => {
                write!(
                    f,
                    "interrupted: {units_done} units done, run again to resume"
                )
            }
            KindChanged { from, to } => write!(f, "kind {from} → {to}"),
            CodeVersionChanged { from, to } => write!(f, "code version {from} → {to}"),
            ParamAdded { param, value } => write!(f, "param {param} added: {value}"),
            ParamRemoved { param } => write!(f, "param {param} removed"),
            ParamChanged { param, from, to } => write!(f, "param {param}: {from} → {to}"),
            InputAdded { role, path } => write!(f, "input {role} added: {path}"),
            InputChanged { role, path } => write!(f, "input {role} changed: {path}"),
            InputRemoved { role, path } => write!(f, "input {role} removed: {path}"),
            MoreInputChanges { count } => write!(f, "and {count} more input changes"),
            UpstreamChanged { upstream, built } => {
                let state = if *built {
                    "changed"
                } else {
                    "changed and is not built"
                };
                write!(f, "upstream {upstream} {state}")
            }
            RemovedFromCache => f.write_str("artifact is no longer in the cache (removed by gc?)"),
            OnRemote { remote } => write!(f, "on {remote} (the next run pulls it)"),
            NeverBuilt => f.write_str("never built"),
        }
    }
}

/// The reasons as one line, as `status` prints them.
pub fn joined(reasons: &[StaleReason]) -> String {
    reasons
        .iter()
        .map(|r| r.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The sentence people read is the one `status` printed before reasons were typed.
    #[test]
    fn text_is_the_sentence_of_before() {
        let cases = [
            (
                StaleReason::ParamChanged {
                    param: "num_points".into(),
                    from: json!(1024),
                    to: json!(512),
                },
                "param num_points: 1024 → 512",
            ),
            (
                StaleReason::UpstreamChanged {
                    upstream: "pc_tokens".into(),
                    built: false,
                },
                "upstream pc_tokens changed and is not built",
            ),
            (
                StaleReason::Interrupted { units_done: 3 },
                "interrupted: 3 units done, run again to resume",
            ),
            (
                StaleReason::MissingInput {
                    upstream: Some("pc_tokens".into()),
                    path: "/data/x.h5".into(),
                },
                "missing input of `pc_tokens`: /data/x.h5",
            ),
        ];
        for (r, text) in cases {
            assert_eq!(r.to_string(), text);
        }
    }

    /// The JSON a tool reads: a `reason` tag and the fields, values as JSON values.
    #[test]
    fn json_carries_the_fields() {
        let r = StaleReason::ParamChanged {
            param: "lr".into(),
            from: json!(0.001),
            to: json!(0.0005),
        };
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            json!({"reason": "param_changed", "param": "lr", "from": 0.001, "to": 0.0005})
        );
        let g = StaleReason::ObjectGone(ObjectGone {
            object: "ab".repeat(32),
            what: "file model.safetensors".into(),
            damage: Damage::WrongSize {
                bytes: 3,
                recorded: 9,
            },
        });
        let v = serde_json::to_value(&g).unwrap();
        assert_eq!(v["reason"], "object_gone");
        assert_eq!(v["damage"]["kind"], "wrong_size");
        assert_eq!(v["damage"]["recorded"], 9);
        assert!(g
            .to_string()
            .ends_with("recorded 9; the next run rebuilds what is gone"));
    }
}
