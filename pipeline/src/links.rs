//! Never follow a link out: the local cache and a directory remote are trees that lm4ve
//! owns, so a symbolic link inside one is either a mistake or a trap (a link planted at
//! `artifacts/<key>` pointing at a home directory turned `cache gc --remote` into
//! `rm -r ~`: issue 16). Every path lm4ve reads, writes or deletes below such a root is
//! checked here first, one `lstat` per component below the root; the root itself may be a
//! link (an NFS mount point often is).

use std::path::{Component, Path, PathBuf};

/// Why a path below a root is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("`{0}` is a symbolic link; lm4ve does not follow links inside a cache (remove it)")]
    Link(String),
    #[error("`{0}` leaves the cache directory")]
    Outside(String),
}

/// The first component of `rel` below `root` that is a symbolic link, or an error when
/// `rel` is absolute or has `..`. Components that do not exist yet are fine (they will be
/// created as plain directories).
pub fn check_rel(root: &Path, rel: &Path) -> Result<(), LinkError> {
    let shown = || rel.display().to_string();
    let mut at = root.to_path_buf();
    for c in rel.components() {
        match c {
            Component::Normal(n) => at.push(n),
            Component::CurDir => continue,
            _ => return Err(LinkError::Outside(shown())),
        }
        match std::fs::symlink_metadata(&at) {
            Ok(m) if m.file_type().is_symlink() => {
                let inner = at.strip_prefix(root).unwrap_or(&at);
                return Err(LinkError::Link(inner.display().to_string()));
            }
            Ok(_) => {}
            // Not there (yet): nothing below it can be a link either.
            Err(_) => return Ok(()),
        }
    }
    Ok(())
}

/// [`check_rel`] for an absolute `path` that must lie below `root`.
pub fn check_path(root: &Path, path: &Path) -> Result<(), LinkError> {
    match path.strip_prefix(root) {
        Ok(rel) => check_rel(root, rel),
        Err(_) => Err(LinkError::Outside(path.display().to_string())),
    }
}

/// `root/rel` when it passes [`check_rel`].
pub fn join_checked(root: &Path, rel: &str) -> Result<PathBuf, LinkError> {
    check_rel(root, Path::new(rel))?;
    Ok(root.join(rel))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_and_dot_dots_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        let outside = d.path().join("home");
        std::fs::create_dir_all(root.join("artifacts")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("thesis.tex"), "x").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("artifacts/trap")).unwrap();
        assert!(check_rel(&root, Path::new("artifacts/ok/manifest.json")).is_ok());
        assert_eq!(
            check_rel(&root, Path::new("artifacts/trap/thesis.tex")),
            Err(LinkError::Link("artifacts/trap".into()))
        );
        assert!(check_rel(&root, Path::new("../home/thesis.tex")).is_err());
        assert!(check_rel(&root, Path::new("/etc/passwd")).is_err());
        assert!(check_path(&root, &outside.join("thesis.tex")).is_err());
        // The root itself may be a link.
        let alias = d.path().join("alias");
        std::os::unix::fs::symlink(&root, &alias).unwrap();
        assert!(check_rel(&alias, Path::new("artifacts/ok")).is_ok());
    }
}
