//! Every repository path the README and SHARDS.md cite in backticks exists, so a reader who
//! follows one lands on a file (a renamed module fails here, not in a user's hands).

use std::path::Path;

const ROOTS: &[&str] = &[
    "stages/",
    "pipeline/",
    "src/",
    "scripts/",
    "tests/",
    "benches/",
    "configs/",
    "docs/",
    "fuzz/",
    "cache/",
];

/// The backticked spans of `text` that start with a repository folder.
fn cited_paths(text: &str) -> Vec<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .filter(|s| ROOTS.iter().any(|r| s.starts_with(r)))
        .filter(|s| !s.contains(' ') && !s.contains('<') && !s.contains('{'))
        .map(|s| s.trim_end_matches([',', '.', ':', ')']).to_string())
        .collect()
}

/// A cited path exists; a `*` matches within one folder level (the folder must exist).
fn exists(root: &Path, cited: &str) -> bool {
    match cited.split_once('*') {
        None => root.join(cited.trim_end_matches('/')).exists(),
        Some((head, _)) => {
            let (dir, prefix) = head.rsplit_once('/').unwrap_or(("", head));
            std::fs::read_dir(root.join(dir)).is_ok_and(|entries| {
                entries.flatten().any(|e| {
                    e.file_name()
                        .to_str()
                        .is_some_and(|n| n.starts_with(prefix))
                })
            })
        }
    }
}

#[test]
fn every_path_the_readme_and_shards_cite_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut missing = Vec::new();
    let mut checked = 0;
    for doc in ["README.md", "SHARDS.md"] {
        let text = std::fs::read_to_string(root.join(doc)).unwrap();
        for p in cited_paths(&text) {
            checked += 1;
            if !exists(root, &p) {
                missing.push(format!("{doc}: `{p}`"));
            }
        }
    }
    assert!(
        checked > 20,
        "only {checked} paths found: the scan is broken"
    );
    assert!(
        missing.is_empty(),
        "cited but not there:\n{}",
        missing.join("\n")
    );
}
