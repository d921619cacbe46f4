//! Stage keys derived from params structs: a data stage's key holds its whole params struct,
//! serialized, so a param added later can never be left out of the key. Path fields are
//! skipped with `#[serde(skip_serializing)]`: the files they name enter the key through their
//! content (the stage's inputs), so moving a dataset does not invalidate its artifacts.

use serde::Serialize;

/// The serialized params plus values the stage derived from its inputs (splits present,
/// class tables, library versions).
pub fn params_key<P: Serialize>(
    params: &P,
    extra: impl IntoIterator<Item = (&'static str, serde_json::Value)>,
) -> serde_json::Value {
    let mut v = serde_json::to_value(params).unwrap_or_default();
    if let Some(obj) = v.as_object_mut() {
        for (k, x) in extra {
            obj.insert(k.to_string(), x);
        }
    }
    v
}

/// For tests: every field that enters the key changes it, and no path field enters it.
#[cfg(test)]
pub fn assert_every_field_keys<P>(paths: &[&str])
where
    P: Serialize + serde::de::DeserializeOwned + Default,
{
    let base = serde_json::to_value(P::default()).expect("params serialize");
    let key = |p: &P| params_key(p, []);
    let base_key = key(&P::default());
    let obj = base.as_object().expect("params are a struct");
    assert!(!obj.is_empty());
    for path in paths {
        assert!(
            !obj.contains_key(*path),
            "path field `{path}` is in the key"
        );
    }
    for (field, value) in obj {
        let changed = match value {
            serde_json::Value::Number(n) if n.is_u64() => {
                serde_json::json!(n.as_u64().unwrap_or(0) + 1)
            }
            serde_json::Value::Number(n) if n.is_i64() => {
                serde_json::json!(n.as_i64().unwrap_or(0) + 1)
            }
            serde_json::Value::Number(n) => serde_json::json!(n.as_f64().unwrap_or(0.0) + 0.5),
            serde_json::Value::Bool(b) => serde_json::json!(!b),
            // An unset `Option<bool>` (resolved at config time).
            serde_json::Value::Null => serde_json::json!(true),
            serde_json::Value::String(s) if s == "h5" => serde_json::json!("las"),
            serde_json::Value::String(s) if s == "tubelets" => serde_json::json!("frames"),
            serde_json::Value::String(s) => serde_json::json!(format!("{s}x")),
            other => panic!("no mutation for `{field}` = {other}"),
        };
        let mut m = base.clone();
        m[field] = changed;
        let p: P = serde_json::from_value(m).unwrap_or_else(|e| panic!("`{field}`: {e}"));
        assert_ne!(
            key(&p),
            base_key,
            "changing `{field}` does not change the key"
        );
    }
}
