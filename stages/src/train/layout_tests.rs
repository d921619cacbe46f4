//! The shape of `train/` that `mod.rs` promises: no import circle between its files, no
//! source file (tests aside) much over 600 lines, and the generic rooms naming no task.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

fn is_test_file(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.contains("test"))
}

/// `task/pointcloud.rs` → "task/pointcloud"; `task/mod.rs` → "task"; `mod.rs` → "".
fn module_of(rel: &Path) -> String {
    let s = rel.with_extension("").to_string_lossy().replace('\\', "/");
    match s.strip_suffix("/mod") {
        Some(m) => m.to_string(),
        None if s == "mod" => String::new(),
        None => s,
    }
}

/// The source without its `#[cfg(test)] mod tests { … }` (the tests may import anything).
fn without_tests(src: &str) -> &str {
    src.find("#[cfg(test)]\nmod tests {")
        .or_else(|| src.find("#[cfg(test)]\npub(crate) mod tests {"))
        .map_or(src, |i| &src[..i])
}

/// The modules of `train/` a file's `super::…`, `self::…` and `crate::train::…` paths name.
fn imports(module: &str, src: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = src.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let rest = &src[i..];
        let starts = ["super::", "self::", "crate::train::"];
        let Some(p) = starts.iter().find(|p| rest.starts_with(**p)) else {
            i += rest.chars().next().map_or(1, char::len_utf8);
            continue;
        };
        let boundary = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(rest.len());
        let path = &rest[..end];
        i += end.max(p.len());
        if !boundary {
            continue;
        }
        let mut parts: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
        let base: Vec<&str> = if parts[0] == "crate" {
            parts.drain(..2);
            Vec::new()
        } else {
            let mut b: Vec<&str> = module.split('/').filter(|s| !s.is_empty()).collect();
            while let Some(&first) = parts.first() {
                match first {
                    "super" => {
                        b.pop();
                    }
                    "self" => {}
                    _ => break,
                }
                parts.remove(0);
            }
            b
        };
        let found = (1..=parts.len()).rev().find_map(|n| {
            let m = base
                .iter()
                .chain(&parts[..n])
                .copied()
                .collect::<Vec<_>>()
                .join("/");
            modules.contains(&m).then_some(m)
        });
        let m = found.unwrap_or_else(|| base.join("/"));
        if !m.is_empty() && m != module && modules.contains(&m) {
            out.insert(m);
        }
    }
    out
}

fn train_sources() -> BTreeMap<String, (PathBuf, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/train");
    let mut files = Vec::new();
    sources(&root, &mut files);
    files
        .into_iter()
        .filter(|p| !is_test_file(p))
        .map(|p| {
            let rel = p.strip_prefix(&root).unwrap().to_path_buf();
            let src = std::fs::read_to_string(&p).unwrap();
            (module_of(&rel), (rel, src))
        })
        .collect()
}

#[test]
fn no_import_circle_between_the_files_of_train() {
    let files = train_sources();
    let modules: BTreeSet<String> = files.keys().cloned().collect();
    let graph: BTreeMap<&str, BTreeSet<String>> = files
        .iter()
        .map(|(m, (_, src))| (m.as_str(), imports(m, without_tests(src), &modules)))
        .collect();
    // Depth-first search for a back edge.
    fn visit<'a>(
        m: &'a str,
        graph: &'a BTreeMap<&str, BTreeSet<String>>,
        state: &mut BTreeMap<&'a str, u8>,
        path: &mut Vec<&'a str>,
    ) -> Option<Vec<String>> {
        state.insert(m, 1);
        path.push(m);
        for next in graph.get(m).into_iter().flatten() {
            match state.get(next.as_str()) {
                Some(1) => {
                    let at = path.iter().position(|p| *p == next).unwrap_or(0);
                    let mut c: Vec<String> = path[at..].iter().map(|s| s.to_string()).collect();
                    c.push(next.clone());
                    return Some(c);
                }
                Some(_) => {}
                None => {
                    if let Some(c) = visit(next, graph, state, path) {
                        return Some(c);
                    }
                }
            }
        }
        path.pop();
        state.insert(m, 2);
        None
    }
    let mut state = BTreeMap::new();
    for m in graph.keys() {
        if !state.contains_key(m) {
            let cycle = visit(m, &graph, &mut state, &mut Vec::new());
            assert!(
                cycle.is_none(),
                "import circle: {}",
                cycle.unwrap().join(" → ")
            );
        }
    }
    // The check sees a circle when there is one.
    let toy: BTreeSet<String> = ["a", "b"].iter().map(|s| s.to_string()).collect();
    assert_eq!(imports("a", "use super::b::X;", &toy).len(), 1);
}

#[test]
fn no_source_file_of_train_is_much_over_600_lines_and_the_generic_rooms_name_no_task() {
    for (m, (rel, src)) in train_sources() {
        let lines = without_tests(&src).lines().count();
        assert!(lines <= 650, "{}: {lines} lines", rel.display());
        let generic = [
            "trainer",
            "eval",
            "evaluate",
            "assemble",
            "plan",
            "plan/cost",
            "bench",
            "stage",
            "step",
            "groups",
            "params",
        ];
        if generic.contains(&m.as_str()) {
            // Code, not comments: a doc may say which tasks exist.
            let code: String = without_tests(&src)
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .collect::<Vec<_>>()
                .join("\n");
            for name in [
                "PointCloud",
                "Forecasting",
                "task::video",
                "PointBert",
                "VectorNet",
                "VideoVit",
            ] {
                assert!(
                    !code.contains(name),
                    "{}: the generic room names `{name}`",
                    rel.display()
                );
            }
        }
    }
}
