//! The Something-Something-v2 label files, in their published schema:
//! - `labels.json`: `{"Approaching something with your camera": "0", ...}` — class name →
//!   index (a string in the release; a JSON integer is accepted too). 174 classes.
//! - `something-something-v2-{train,validation}.json`: `[{"id": "78687", "label": "...",
//!   "template": "Holding [something] next to [something]", "placeholders": [...]}, ...]`.
//!   The class of an annotation is its `template` with the brackets removed.
//!
//! A file that cannot be read or parsed is an error naming the file (the input as a whole is
//! wrong); a single annotation that cannot be used (non-integer id, template not in
//! labels.json) is kept with the reason, so the stage can reject that one clip by name.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

/// Class names by index, and the index of every name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Labels {
    pub classes: Vec<String>,
    pub index: BTreeMap<String, i64>,
}

/// One annotation of a split file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Annotation {
    /// The id as written (SSv2: a decimal string); names the clip file `<id>.<ext>`.
    pub id: String,
    pub template: String,
    /// The class (template without brackets) index, or why there is none.
    pub label: Result<i64, String>,
    /// The id as an integer, or why it is not one.
    pub video_id: Result<i64, String>,
}

/// SSv2's class name for a template: `"Moving [something] up"` → `"Moving something up"`.
pub fn template_class(template: &str) -> String {
    template.replace(['[', ']'], "")
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// Reads `labels.json`; indices must be exactly 0..n-1, each once.
pub fn read_labels(path: &Path) -> Result<Labels, String> {
    let text = read(path)?;
    let raw: BTreeMap<String, serde_json::Value> = serde_json::from_str(&text).map_err(|e| {
        format!(
            "{}: not an SSv2 labels.json (an object of class name → index): {e}",
            path.display()
        )
    })?;
    let mut index = BTreeMap::new();
    let mut by_index: BTreeMap<i64, String> = BTreeMap::new();
    for (name, v) in raw {
        let i = match &v {
            serde_json::Value::String(s) => s.trim().parse::<i64>().ok(),
            serde_json::Value::Number(n) => n.as_i64(),
            _ => None,
        }
        .filter(|i| *i >= 0)
        .ok_or_else(|| {
            format!(
                "{}: class `{name}` has index {v}; indices are non-negative integers (\"0\", \"1\", ...)",
                path.display()
            )
        })?;
        if let Some(other) = by_index.insert(i, name.clone()) {
            return Err(format!(
                "{}: classes `{other}` and `{name}` share index {i}",
                path.display()
            ));
        }
        index.insert(name, i);
    }
    if by_index.is_empty() {
        return Err(format!("{}: no classes", path.display()));
    }
    let n = by_index.len() as i64;
    if let Some((&i, name)) = by_index.iter().find(|(&i, _)| i >= n) {
        return Err(format!(
            "{}: class `{name}` has index {i} but there are only {n} classes; indices must be 0..{}",
            path.display(),
            n - 1
        ));
    }
    Ok(Labels {
        classes: by_index.into_values().collect(),
        index,
    })
}

#[derive(Deserialize)]
struct RawAnnotation {
    id: serde_json::Value,
    template: Option<String>,
    // `label` and `placeholders` are part of the schema but carry nothing the stage uses.
}

/// Reads a split file (`something-something-v2-train.json` / `-validation.json`).
pub fn read_annotations(path: &Path, labels: &Labels) -> Result<Vec<Annotation>, String> {
    let text = read(path)?;
    let raw: Vec<RawAnnotation> = serde_json::from_str(&text).map_err(|e| {
        format!(
            "{}: not an SSv2 annotation file (a list of {{\"id\", \"label\", \"template\", \"placeholders\"}}): {e}",
            path.display()
        )
    })?;
    Ok(raw
        .into_iter()
        .map(|a| {
            let id = match &a.id {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let video_id = id.trim().parse::<i64>().map_err(|_| {
                format!("video id `{id}` is not an integer (the shards store it as int64)")
            });
            let template = a.template.unwrap_or_default();
            let class = template_class(&template);
            let label = labels.index.get(&class).copied().ok_or_else(|| {
                if template.is_empty() {
                    "annotation has no `template`".to_string()
                } else {
                    format!("template `{template}` (class `{class}`) is not in labels.json")
                }
            });
            Annotation {
                id,
                template,
                label,
                video_id,
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_published_schema() {
        let dir = tempfile::tempdir().unwrap();
        let l = dir.path().join("labels.json");
        std::fs::write(
            &l,
            r#"{"Moving something up": "1", "Approaching something with your camera": "0"}"#,
        )
        .unwrap();
        let labels = read_labels(&l).unwrap();
        assert_eq!(
            labels.classes,
            vec![
                "Approaching something with your camera",
                "Moving something up"
            ]
        );
        let a = dir.path().join("train.json");
        std::fs::write(
            &a,
            r#"[{"id":"78687","label":"moving cup up","template":"Moving [something] up","placeholders":["cup"]},
                {"id":"x1","label":"l","template":"Moving [something] up","placeholders":["cup"]},
                {"id":"5","label":"l","template":"Dropping [something]","placeholders":["cup"]},
                {"id":12,"label":"l","template":"Approaching [something] with your camera","placeholders":[]}]"#,
        )
        .unwrap();
        let anns = read_annotations(&a, &labels).unwrap();
        assert_eq!(anns.len(), 4);
        assert_eq!(anns[0].video_id, Ok(78687));
        assert_eq!(anns[0].label, Ok(1));
        assert!(anns[1].video_id.as_ref().unwrap_err().contains("x1"));
        assert!(anns[2]
            .label
            .as_ref()
            .unwrap_err()
            .contains("Dropping [something]"));
        assert_eq!((anns[3].id.as_str(), anns[3].label.clone()), ("12", Ok(0)));
    }

    #[test]
    fn bad_label_files_name_the_file_and_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let l = dir.path().join("labels.json");
        for (text, needle) in [
            (r#"{"a": "0", "b": "0"}"#, "share index 0"),
            (r#"{"a": "0", "b": "2"}"#, "only 2 classes"),
            (r#"{"a": "x"}"#, "non-negative integers"),
            (r#"[1, 2]"#, "not an SSv2 labels.json"),
            (r#"{}"#, "no classes"),
        ] {
            std::fs::write(&l, text).unwrap();
            let e = read_labels(&l).unwrap_err();
            assert!(e.contains(needle) && e.contains("labels.json"), "{e}");
        }
        let e = read_labels(&dir.path().join("missing.json")).unwrap_err();
        assert!(e.contains("missing.json"), "{e}");
    }
}
