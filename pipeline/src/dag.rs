//! The stage graph: topological order (ties broken by name, so the order is stable),
//! cycle detection, and the set of stages a target needs.

use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DagError {
    #[error("stage `{stage}` needs `{missing}`, which is not a stage in the config; add [stages.{missing}] or fix the name")]
    Unknown { stage: String, missing: String },
    #[error("the stages form a cycle: {0}; a stage cannot (indirectly) need itself")]
    Cycle(String),
}

/// `edges[stage]` = the stages it needs.
#[derive(Debug, Clone)]
pub struct Dag {
    edges: BTreeMap<String, Vec<String>>,
    order: Vec<String>,
}

impl Dag {
    pub fn new(mut edges: BTreeMap<String, Vec<String>>) -> Result<Self, DagError> {
        // A stage naming one upstream twice (`data` and `block` both "pc_tokens") needs it
        // once: counted twice it would look like a cycle.
        for needs in edges.values_mut() {
            let mut seen = BTreeSet::new();
            needs.retain(|n| seen.insert(n.clone()));
        }
        for (stage, needs) in &edges {
            for n in needs {
                if !edges.contains_key(n) {
                    return Err(DagError::Unknown {
                        stage: stage.clone(),
                        missing: n.clone(),
                    });
                }
            }
        }
        // Kahn's algorithm over a BTreeSet: deterministic order.
        let mut indeg: BTreeMap<&str, usize> =
            edges.iter().map(|(k, v)| (k.as_str(), v.len())).collect();
        let mut ready: BTreeSet<&str> = indeg
            .iter()
            .filter(|(_, d)| **d == 0)
            .map(|(k, _)| *k)
            .collect();
        let mut order = Vec::new();
        while let Some(s) = ready.pop_first() {
            order.push(s.to_string());
            for (k, v) in &edges {
                if v.iter().any(|n| n == s) {
                    let d = indeg.entry(k.as_str()).or_insert(0);
                    *d -= 1;
                    if *d == 0 {
                        ready.insert(k.as_str());
                    }
                }
            }
        }
        if order.len() != edges.len() {
            let stuck: Vec<_> = indeg
                .iter()
                .filter(|(_, d)| **d > 0)
                .map(|(k, _)| k.to_string())
                .collect();
            return Err(DagError::Cycle(stuck.join(" → ")));
        }
        Ok(Dag { edges, order })
    }

    /// Every stage, needed ones first.
    pub fn order(&self) -> &[String] {
        &self.order
    }

    pub fn needs(&self, stage: &str) -> &[String] {
        self.edges.get(stage).map(Vec::as_slice).unwrap_or(&[])
    }

    /// `target` and everything it needs, in topological order.
    pub fn closure(&self, target: &str) -> Vec<String> {
        let mut want = BTreeSet::new();
        let mut stack = vec![target.to_string()];
        while let Some(s) = stack.pop() {
            if want.insert(s.clone()) {
                stack.extend(self.needs(&s).iter().cloned());
            }
        }
        self.order
            .iter()
            .filter(|s| want.contains(*s))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dag(e: &[(&str, &[&str])]) -> Result<Dag, DagError> {
        Dag::new(
            e.iter()
                .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
                .collect(),
        )
    }

    #[test]
    fn orders_and_closes() {
        let d = dag(&[
            ("train", &["tok", "llm"]),
            ("tok", &[]),
            ("llm", &[]),
            ("eval", &["train"]),
        ])
        .unwrap();
        assert_eq!(d.order(), ["llm", "tok", "train", "eval"]);
        assert_eq!(d.closure("train"), ["llm", "tok", "train"]);
    }

    #[test]
    fn cycle_and_unknown_are_errors() {
        assert!(matches!(
            dag(&[("a", &["b"]), ("b", &["a"])]),
            Err(DagError::Cycle(_))
        ));
        assert!(matches!(
            dag(&[("a", &["zz"])]),
            Err(DagError::Unknown { .. })
        ));
    }
}
