//! Reading, writing, listing and deleting single records and objects on the remote, with
//! retries, timeouts and the no-links rule of directory remotes.

use super::*;

impl Remote {
    // ---- small files -------------------------------------------------------------------

    /// A small file (a record); `None` when the remote does not have it.
    pub fn get_small(&self, rel: &str) -> Result<Option<Vec<u8>>, RemoteError> {
        let inner = self.watch(self.inner())?;
        self.watch(inner.rt.block_on(self.a_get_small(inner, rel.to_string())))
    }

    /// Reads a record, at most [`crate::trust::MAX_RECORD_BYTES`]: a record that is larger
    /// is refused as soon as that many bytes have arrived (no unbounded buffering).
    pub(super) async fn a_get_small(
        &self,
        inner: &Inner,
        rel: String,
    ) -> Result<Option<Vec<u8>>, RemoteError> {
        self.check_link(&rel)?;
        let cap = crate::trust::MAX_RECORD_BYTES;
        let got = patient(self, "reading", &rel, inner.store.get(&self.path(&rel))).await;
        let mut stream = match got {
            Ok(r) => r.into_stream(),
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.store_err("reading", &rel, e)),
        };
        let mut out = Vec::new();
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(c) => {
                    if out.len() as u64 + c.len() as u64 > cap {
                        return Err(RemoteError::BadRecord {
                            path: rel.clone(),
                            kind: self.kind_name(),
                            why: format!("over {cap} bytes: not a record"),
                        });
                    }
                    out.extend_from_slice(&c);
                }
                Err(object_store::Error::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(self.store_err("reading", &rel, e)),
            }
        }
        Ok(Some(out))
    }

    /// Several small files at once, in the order asked.
    pub fn get_many(&self, rels: &[String]) -> Result<Vec<Option<Vec<u8>>>, RemoteError> {
        let inner = self.inner()?;
        inner.rt.block_on(async {
            futures::stream::iter(rels.iter().cloned())
                .map(|rel| self.a_get_small(inner, rel))
                .buffered(self.jobs)
                .try_collect()
                .await
        })
    }

    /// Writes small files (records), `jobs` at a time; each write is atomic.
    pub fn put_many(&self, files: Vec<(String, Vec<u8>)>) -> Result<(), RemoteError> {
        if files.is_empty() {
            return Ok(());
        }
        let inner = self.inner()?;
        inner.rt.block_on(async {
            futures::stream::iter(files)
                .map(|(rel, bytes)| async move {
                    self.check_link(&rel)?;
                    inner
                        .store
                        .put(&self.path(&rel), PutPayload::from(bytes))
                        .await
                        .map_err(|e| self.store_err("writing", &rel, e))?;
                    fault_tick();
                    Ok::<(), RemoteError>(())
                })
                .buffer_unordered(self.jobs)
                .try_collect::<Vec<()>>()
                .await
                .map(|_| ())
        })
    }

    pub fn put_small(&self, rel: &str, bytes: Vec<u8>) -> Result<(), RemoteError> {
        self.put_many(vec![(rel.to_string(), bytes)])
    }

    /// The size of a file on the remote, `None` when absent.
    pub fn head(&self, rel: &str) -> Result<Option<u64>, RemoteError> {
        let inner = self.watch(self.inner())?;
        self.watch(inner.rt.block_on(self.a_head(inner, rel)))
            .map(|m| m.map(|m| m.0))
    }

    /// Size and modification time of a file on the remote, `None` when absent.
    pub(super) async fn a_head(
        &self,
        inner: &Inner,
        rel: &str,
    ) -> Result<Option<(u64, SystemTime)>, RemoteError> {
        self.check_link(rel)?;
        match patient(self, "checking", rel, inner.store.head(&self.path(rel))).await {
            Ok(m) => Ok(Some((m.size, SystemTime::from(m.last_modified)))),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.store_err("checking", rel, e)),
        }
    }

    /// Deletes files; ones already gone are fine.
    pub fn delete_many(&self, rels: &[String]) -> Result<(), RemoteError> {
        if rels.is_empty() {
            return Ok(());
        }
        let inner = self.inner()?;
        inner.rt.block_on(async {
            futures::stream::iter(rels.iter())
                .map(|rel| async move {
                    if self.check_link(rel).is_err() {
                        // Reported by check_link; never delete through a link.
                        return Ok(());
                    }
                    match inner.store.delete(&self.path(rel)).await {
                        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                        Err(e) => Err(self.store_err("deleting", rel, e)),
                    }
                })
                .buffer_unordered(self.jobs)
                .try_collect::<Vec<()>>()
                .await
                .map(|_| ())
        })
    }

    /// Every file under `rel_prefix` (recursively). A missing prefix is an empty list.
    pub fn list(&self, rel_prefix: &str) -> Result<Vec<Listed>, RemoteError> {
        let inner = self.watch(self.inner())?;
        if let Some(root) = self.dir_root() {
            return self.list_dir(&root, rel_prefix);
        }
        let root = self.path(rel_prefix.trim_end_matches('/'));
        let metas: Vec<object_store::ObjectMeta> = self.watch(inner.rt.block_on(async {
            if self.kind() == RemoteKind::Http {
                // WebDAV servers (nginx) refuse `Depth: infinity`: walk one level at a time.
                let mut out = Vec::new();
                let mut dirs = vec![root.clone()];
                while let Some(dir) = dirs.pop() {
                    match inner.store.list_with_delimiter(Some(&dir)).await {
                        Ok(r) => {
                            out.extend(r.objects);
                            dirs.extend(r.common_prefixes);
                        }
                        Err(object_store::Error::NotFound { .. }) => {}
                        Err(e) => return Err(self.store_err("listing", rel_prefix, e)),
                    }
                }
                Ok(out)
            } else {
                match inner.store.list(Some(&root)).try_collect::<Vec<_>>().await {
                    Ok(v) => Ok(v),
                    Err(object_store::Error::NotFound { .. }) => Ok(Vec::new()),
                    Err(e) => Err(self.store_err("listing", rel_prefix, e)),
                }
            }
        }))?;
        let mut out: Vec<Listed> = metas
            .into_iter()
            .filter_map(|m| {
                Some(Listed {
                    rel: self.rel_of(&m.location)?,
                    size: m.size,
                    modified: SystemTime::from(m.last_modified),
                })
            })
            .collect();
        out.sort_by(|a, b| a.rel.cmp(&b.rel));
        Ok(out)
    }

    /// Lists a directory remote without following links (object_store's local backend
    /// follows them, which lists — and lets gc delete — files outside the remote). Links
    /// are reported ([`Remote::refused_links`]) and left out; so are staging files.
    pub(super) fn list_dir(
        &self,
        root: &Path,
        rel_prefix: &str,
    ) -> Result<Vec<Listed>, RemoteError> {
        let prefix = rel_prefix.trim_end_matches('/');
        let start = root.join(prefix);
        if self.check_link(prefix).is_err() {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for entry in walkdir::WalkDir::new(&start)
            .follow_links(false)
            .sort_by_file_name()
        {
            let entry = match entry {
                Ok(e) => e,
                Err(e)
                    if e.io_error().map(|io| io.kind()) == Some(std::io::ErrorKind::NotFound) =>
                {
                    continue
                }
                Err(e) => {
                    return Err(self.watch_err(RemoteError::Store {
                        op: "listing",
                        path: prefix.to_string(),
                        kind: self.kind_name(),
                        message: server_text(&self.spec.redact(&e.to_string())),
                    }))
                }
            };
            let Ok(rel) = entry.path().strip_prefix(root) else {
                continue;
            };
            let rel = rel.to_string_lossy().replace('\\', "/");
            let ft = entry.file_type();
            if ft.is_symlink() {
                let _ = self.check_link(&rel);
                continue;
            }
            let name = entry.file_name().to_string_lossy();
            // object_store's staging files (`<name>#<n>`) are uploads in progress.
            if !ft.is_file() || name.contains('#') {
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue };
            out.push(Listed {
                rel,
                size: meta.len(),
                modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            });
        }
        out.sort_by(|a, b| a.rel.cmp(&b.rel));
        Ok(out)
    }

    pub(super) fn watch_err(&self, e: RemoteError) -> RemoteError {
        let _ = self.down.set(e.to_string());
        e
    }
}
