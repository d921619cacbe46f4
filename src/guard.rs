//! Outputs never overwrite inputs: a command that writes a file or folder the user names
//! (`llm extract`, `llm apply`, `pipeline export`) refuses one that is, or lies inside, one
//! of its inputs or the cache.

use lm4ve_pipeline::UsageError;
use std::path::{Path, PathBuf};

/// The absolute, link-resolved form of `p`, even when `p` (or its tail) does not exist yet:
/// the longest existing prefix is canonicalized and the rest appended.
fn resolved(p: &Path) -> PathBuf {
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(p)
    };
    let mut head = abs.clone();
    let mut tail = Vec::new();
    loop {
        if let Ok(c) = std::fs::canonicalize(&head) {
            let mut out = c;
            for t in tail.iter().rev() {
                out.push(t);
            }
            return out;
        }
        match (head.file_name().map(|n| n.to_os_string()), head.parent()) {
            (Some(name), Some(parent)) => {
                tail.push(name);
                head = parent.to_path_buf();
            }
            _ => return abs,
        }
    }
}

/// Refuses (exit 2) an output `out` that is, or is inside, one of `inputs` (each named by
/// what it is: "the checkpoint", "the cache").
pub fn refuse_overlap(flag: &str, out: &Path, inputs: &[(&str, &Path)]) -> anyhow::Result<()> {
    let o = resolved(out);
    for (what, input) in inputs {
        let i = resolved(input);
        if o == i || o.starts_with(&i) {
            let how = if o == i { "is" } else { "is inside" };
            return Err(UsageError(format!(
                "{flag} {} {how} {what} ({}); lm4ve never writes over its inputs or into the cache: choose another path",
                out.display(),
                input.display()
            ))
            .into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_and_inside_are_refused() {
        let d = std::env::temp_dir();
        let input = d.join("lm4ve-guard-input");
        assert!(refuse_overlap("--out", &input, &[("the input", &input)]).is_err());
        assert!(refuse_overlap("--out", &input.join("x/y"), &[("the input", &input)]).is_err());
        assert!(refuse_overlap(
            "--out",
            &d.join("lm4ve-guard-other"),
            &[("the input", &input)]
        )
        .is_ok());
    }
}
