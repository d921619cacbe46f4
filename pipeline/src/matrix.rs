//! Studies in the config: a stage's `[stages.NAME.matrix]` (param → list of values) expands
//! into one stage per combination, named `NAME@k1=v1,k2=v2` (keys sorted), and every stage
//! whose params name an expanded stage follows the expansion under the same suffix (an `eval`
//! of `train_pc` becomes `eval_pc@mode=frozen,seed=1`, reading `train_pc@mode=frozen,seed=1`).
//! An expanded stage is an ordinary stage: its key is that of the same stage written out by
//! hand, so the cache is shared with hand-written equivalents, and adding one value to a list
//! builds exactly the new combinations.
//!
//! `-S stages.NAME.params.KEY=VALUE` (`pipeline run/status/show/dag`) sets one param before
//! the expansion; VALUE is TOML (`1e-3`, `"frozen"`, `[1, 2]`; a bare word is a string).

use std::collections::BTreeMap;

/// One variant: its name suffix (`k1=v1,k2=v2`) and the params it sets.
type Variant = (String, Vec<(String, toml::Value)>);

/// How a value appears in a stage name: strings bare, everything else as TOML.
fn render(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Every combination of a matrix (keys in sorted order, values in the order written).
pub fn variants(matrix: &toml::Table) -> Result<Vec<Variant>, String> {
    let mut out: Vec<Variant> = vec![(String::new(), Vec::new())];
    for (k, vals) in matrix {
        let toml::Value::Array(vals) = vals else {
            return Err(format!(
                "matrix.{k} must be a list of values, e.g. {k} = [1, 2]"
            ));
        };
        if vals.is_empty() {
            return Err(format!("matrix.{k} is empty"));
        }
        let mut next = Vec::with_capacity(out.len() * vals.len());
        for (suffix, sets) in &out {
            for v in vals {
                let part = format!("{k}={}", render(v));
                let suffix = if suffix.is_empty() {
                    part
                } else {
                    format!("{suffix},{part}")
                };
                let mut sets = sets.clone();
                sets.push((k.clone(), v.clone()));
                next.push((suffix, sets));
            }
        }
        out = next;
    }
    Ok(out)
}

/// Parses `stages.NAME.params.KEY=VALUE` into (stage, key path under params, value).
pub fn parse_override(s: &str) -> Result<(String, Vec<String>, toml::Value), String> {
    let (lhs, rhs) = s
        .split_once('=')
        .ok_or_else(|| format!("-S {s}: expected stages.NAME.params.KEY=VALUE"))?;
    let parts: Vec<&str> = lhs.trim().split('.').collect();
    if parts.len() < 4 || parts[0] != "stages" || parts[2] != "params" {
        return Err(format!(
            "-S {s}: only stage params can be set: stages.NAME.params.KEY=VALUE"
        ));
    }
    let rhs = rhs.trim();
    let value = match format!("v = {rhs}").parse::<toml::Table>() {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or(toml::Value::String(rhs.to_string())),
        // Not TOML: a bare word (`-S ...mode=none`) is the string itself.
        Err(_) => toml::Value::String(rhs.to_string()),
    };
    Ok((
        parts[1].to_string(),
        parts[3..].iter().map(|p| p.to_string()).collect(),
        value,
    ))
}

/// Sets `path` (under a params table) to `value`, creating nested tables.
pub fn set_param(params: &mut toml::Table, path: &[String], value: toml::Value) {
    match path {
        [] => {}
        [last] => {
            params.insert(last.clone(), value);
        }
        [first, rest @ ..] => {
            let entry = params
                .entry(first.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if !entry.is_table() {
                *entry = toml::Value::Table(toml::Table::new());
            }
            if let toml::Value::Table(t) = entry {
                set_param(t, rest, value);
            }
        }
    }
}

/// Names of the stages (among `names`) that a params table refers to by a string value.
pub fn referenced<'a>(params: &toml::Table, names: impl Fn(&str) -> bool + 'a) -> Vec<String> {
    let mut out: Vec<String> = params
        .iter()
        .filter_map(|(_, v)| v.as_str())
        .filter(|s| names(s))
        .map(str::to_string)
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The expansion plan: for each stage that becomes several, its variants' suffixes and the
/// params they set. Stages that follow an upstream's expansion get that upstream's suffixes.
pub fn expand_names(
    own: &BTreeMap<String, Vec<Variant>>,
    refs: &BTreeMap<String, Vec<String>>,
) -> Result<BTreeMap<String, Vec<Variant>>, String> {
    let mut plan = own.clone();
    // Propagate downstream until nothing changes (chains: train → eval → report).
    loop {
        let mut changed = false;
        for (stage, ups) in refs {
            if plan.contains_key(stage) {
                continue;
            }
            let expanded: Vec<&String> = ups.iter().filter(|u| plan.contains_key(*u)).collect();
            match expanded.as_slice() {
                [] => {}
                [up] => {
                    let vs: Vec<Variant> = plan[*up]
                        .iter()
                        .map(|(suffix, _)| (suffix.clone(), Vec::new()))
                        .collect();
                    plan.insert(stage.clone(), vs);
                    changed = true;
                }
                many => {
                    return Err(format!(
                    "stage `{stage}` reads several expanded stages ({}); give it its own matrix",
                    many.iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
                }
            }
        }
        if !changed {
            return Ok(plan);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variants_are_the_product_in_sorted_key_order() {
        let m: toml::Table = "seed = [0, 1]\nmode = [\"frozen\", \"none\"]"
            .parse()
            .unwrap();
        let names: Vec<String> = variants(&m).unwrap().into_iter().map(|v| v.0).collect();
        assert_eq!(
            names,
            [
                "mode=frozen,seed=0",
                "mode=frozen,seed=1",
                "mode=none,seed=0",
                "mode=none,seed=1"
            ]
        );
        let bad: toml::Table = "seed = 1".parse().unwrap();
        assert!(variants(&bad).unwrap_err().contains("list"));
    }

    #[test]
    fn overrides_are_typed_like_toml() {
        let (s, k, v) = parse_override("stages.train_pc.params.lr=1e-3").unwrap();
        assert_eq!(
            (s.as_str(), k, v),
            ("train_pc", vec!["lr".to_string()], toml::Value::Float(1e-3))
        );
        let (_, _, v) = parse_override("stages.t.params.mode=none").unwrap();
        assert_eq!(v, toml::Value::String("none".into()));
        let (_, k, v) = parse_override("stages.t.params.model.depth=4").unwrap();
        assert_eq!(
            (k, v),
            (
                vec!["model".to_string(), "depth".to_string()],
                toml::Value::Integer(4)
            )
        );
        assert!(parse_override("cache.dir=x").is_err());
        assert!(parse_override("stages.t.params.lr").is_err());
    }
}
