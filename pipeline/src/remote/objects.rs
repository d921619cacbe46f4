//! Moving objects between the local cache and the remote: verified pulls (hashed while
//! streaming, renamed into place only when the hash matches), checks, pushes, and the bad
//! objects this process has seen.

use super::*;

impl Remote {
    /// Remembers a refused object and why (said again when it is asked for again).
    pub(super) fn mark_bad(&self, blake3: &str, why: &str) {
        if let Ok(mut b) = self.bad.lock() {
            b.insert(blake3.to_string(), why.to_string());
        }
    }

    /// Why this process refused the object, if it did.
    pub(super) fn bad_reason(&self, blake3: &str) -> Option<String> {
        self.bad.lock().ok().and_then(|b| b.get(blake3).cloned())
    }

    pub(super) fn unmark_bad(&self, blake3: &str) {
        if let Ok(mut b) = self.bad.lock() {
            b.remove(blake3);
        }
    }

    /// Objects this process refused (corrupt or missing on the remote).
    pub fn refused_objects(&self) -> Vec<String> {
        self.bad
            .lock()
            .map(|b| b.keys().cloned().collect())
            .unwrap_or_default()
    }

    // ---- objects -----------------------------------------------------------------------

    /// Pulls objects into the local cache, `jobs` at a time, each verified by blake3 before
    /// it is renamed into `objects/`. Per object: `Ok(true)` pulled, `Ok(false)` already
    /// local, `Err` refused (corrupt or missing; remembered for the next push) or failed.
    pub fn pull_objects(
        &self,
        cache: &Cache,
        objects: &[(String, u64)],
        bar: &ProgressBar,
    ) -> Vec<(String, Result<bool, RemoteError>)> {
        let inner = match self.inner() {
            Ok(i) => i,
            Err(e) => {
                let msg = e.to_string();
                return objects
                    .iter()
                    .map(|(h, _)| {
                        (
                            h.clone(),
                            Err(RemoteError::Open {
                                kind: self.kind_name(),
                                message: msg.clone(),
                            }),
                        )
                    })
                    .collect();
            }
        };
        inner.rt.block_on(async {
            futures::stream::iter(objects.iter())
                .map(|(h, size)| async move {
                    let r = if cache.has_object(h) {
                        bar.inc(*size);
                        Ok(false)
                    } else if let Some(why) = self.bad_reason(h) {
                        // Refused earlier in this process: do not fetch it again, and say
                        // why it was refused (a link is not corruption).
                        Err(RemoteError::Refused {
                            path: object_key(h),
                            kind: self.kind_name(),
                            why: format!("refused earlier in this run: {why}"),
                        })
                    } else {
                        self.fetch(inner, h, *size, Some(cache), bar)
                            .await
                            .map(|_| true)
                    };
                    (h.clone(), r)
                })
                .buffer_unordered(self.jobs)
                .collect()
                .await
        })
    }

    /// Downloads and hashes remote objects without keeping them (`cache verify --remote`).
    pub fn check_objects(
        &self,
        objects: &[(String, u64)],
        bar: &ProgressBar,
    ) -> Result<Vec<Checked>, RemoteError> {
        let inner = self.inner()?;
        Ok(inner.rt.block_on(async {
            futures::stream::iter(objects.iter())
                .map(|(h, size)| async move {
                    (h.clone(), self.fetch(inner, h, *size, None, bar).await)
                })
                .buffer_unordered(self.jobs)
                .collect()
                .await
        }))
    }

    /// Streams one object, hashing it; with a cache, into `tmp/` and then into `objects/`.
    /// At most `size` bytes (what the record announces) are read: an object that goes on
    /// longer is refused at that point, and the temp file is removed on every failure.
    pub(super) async fn fetch(
        &self,
        inner: &Inner,
        blake3: &str,
        size: u64,
        cache: Option<&Cache>,
        bar: &ProgressBar,
    ) -> Result<(), RemoteError> {
        let rel = object_key(blake3);
        let corrupt = |why: String| {
            self.mark_bad(blake3, &format!("corrupt ({why})"));
            RemoteError::Corrupt {
                blake3: blake3.to_string(),
                kind: self.kind_name(),
                why,
            }
        };
        if !crate::trust::is_hash(blake3) {
            return Err(corrupt("not an object name".into()));
        }
        if size > crate::trust::MAX_FILE_BYTES {
            return Err(corrupt(format!(
                "announced as {size} bytes, over the limit"
            )));
        }
        if let Err(e) = self.check_link(&rel) {
            self.mark_bad(blake3, &e.to_string());
            return Err(e);
        }
        let got = match patient(self, "reading", &rel, inner.store.get(&self.path(&rel))).await {
            Ok(g) => g,
            Err(object_store::Error::NotFound { .. }) => {
                self.mark_bad(blake3, "missing on the remote");
                return Err(RemoteError::Missing {
                    blake3: blake3.to_string(),
                    kind: self.kind_name(),
                });
            }
            Err(e) => return Err(self.store_err("reading", &rel, e)),
        };
        let (guard, out) = match cache {
            Some(c) => {
                let (path, file) = c
                    .new_tmp_file()
                    .map_err(|e| RemoteError::Local(format!("{e:#}")))?;
                (TmpGuard(Some(path)), Some(file))
            }
            None => (TmpGuard(None), None),
        };
        let hashed = match got.payload {
            GetResultPayload::File(file, _) => {
                let bar = bar.clone();
                tokio::task::spawn_blocking(move || copy_hashing(file, out, &bar, size))
                    .await
                    .map_err(|e| RemoteError::Local(format!("copy task: {e}")))?
                    .map_err(|e| RemoteError::Local(format!("copying {rel}: {e}")))
            }
            GetResultPayload::Stream(mut stream) => {
                let mut out = out.map(|f| std::io::BufWriter::with_capacity(1 << 20, f));
                let mut h = blake3::Hasher::new();
                let mut n = 0u64;
                let mut result = Ok(());
                while let Some(chunk) = stream.next().await {
                    match chunk {
                        Ok(c) => {
                            n = n.saturating_add(c.len() as u64);
                            if n > size {
                                // Count it as read so the size check below refuses it.
                                break;
                            }
                            h.update(&c);
                            bar.inc(c.len() as u64);
                            if let Some(o) = out.as_mut() {
                                if let Err(e) = o.write_all(&c) {
                                    result = Err(RemoteError::Local(format!("writing {rel}: {e}")));
                                    break;
                                }
                            }
                        }
                        Err(e) => {
                            result = Err(self.store_err("reading", &rel, e));
                            break;
                        }
                    }
                }
                match (result, out) {
                    (Err(e), _) => Err(e),
                    (Ok(()), None) => Ok((h.finalize().to_hex().to_string(), n)),
                    (Ok(()), Some(_)) if n > size => Ok((String::new(), n)),
                    (Ok(()), Some(o)) => {
                        let file = o
                            .into_inner()
                            .map_err(|e| RemoteError::Local(format!("writing {rel}: {e}")))?;
                        tokio::task::spawn_blocking(move || file.sync_all())
                            .await
                            .map_err(|e| RemoteError::Local(format!("sync task: {e}")))?
                            .map_err(|e| RemoteError::Local(format!("syncing {rel}: {e}")))?;
                        Ok((h.finalize().to_hex().to_string(), n))
                    }
                }
            }
        };
        let (hash, n) = hashed?;
        if n != size {
            return Err(corrupt(if n > size {
                format!("more than the {size} bytes its record announces")
            } else {
                format!("{n} bytes, the record says {size}")
            }));
        }
        if hash != blake3 {
            return Err(corrupt(format!(
                "its bytes hash to {}",
                crate::key::short(&hash)
            )));
        }
        if let (Some(c), Some(p)) = (cache, guard.0.clone()) {
            let c = c.clone();
            let h = blake3.to_string();
            tokio::task::spawn_blocking(move || c.adopt_object(&p, &h))
                .await
                .map_err(|e| RemoteError::Local(format!("rename task: {e}")))?
                .map_err(|e| RemoteError::Local(format!("{e:#}")))?;
            guard.disarm();
        }
        Ok(())
    }

    /// Uploads local objects the remote lacks, `jobs` at a time (skips those present with
    /// the right size, unless `force` or this process found them bad). Stops at the first
    /// failure; what was uploaded stays (objects are harmless without records).
    pub fn push_objects(
        &self,
        cache: &Cache,
        objects: &[String],
        force: bool,
        bar: &ProgressBar,
    ) -> Result<PushCounts, RemoteError> {
        if objects.is_empty() {
            return Ok(PushCounts::default());
        }
        let inner = self.inner()?;
        let counts = Mutex::new(PushCounts::default());
        inner.rt.block_on(async {
            futures::stream::iter(objects.iter())
                .map(|h| self.push_one(inner, cache, h, force, bar, &counts))
                .buffer_unordered(self.jobs)
                .try_collect::<Vec<()>>()
                .await
        })?;
        Ok(counts.into_inner().unwrap_or_default())
    }

    pub(super) async fn push_one(
        &self,
        inner: &Inner,
        cache: &Cache,
        blake3: &str,
        force: bool,
        bar: &ProgressBar,
        counts: &Mutex<PushCounts>,
    ) -> Result<(), RemoteError> {
        let local = cache.object_path(blake3);
        // Never upload what a link in the local cache points at.
        let meta = std::fs::symlink_metadata(&local)
            .map_err(|e| local_err("object missing from the local cache:", &local, e))?;
        if !meta.is_file() {
            return Err(local_err(
                "refusing to push",
                &local,
                "not a regular file (a symbolic link?)",
            ));
        }
        let size = meta.len();
        let rel = object_key(blake3);
        self.check_link(&rel)?;
        let redo = force || self.bad_reason(blake3).is_some();
        let present = if redo {
            None
        } else {
            self.a_head(inner, &rel).await?
        };
        let mut refreshed = false;
        if let Some((n, modified)) = present.filter(|p| p.0 == size) {
            let _ = n;
            // The records this push writes next will name this object: make it young, so a
            // `cache gc --remote` running now does not take it for an unreferenced leftover.
            if self.touch(&rel, modified) {
                bar.inc(size);
                if let Ok(mut c) = counts.lock() {
                    c.present += 1;
                }
                return Ok(());
            }
            refreshed = true;
        }
        let resumed = match (&inner.s3, size > self.part_bytes) {
            (Some(s3), true) => self.multipart(s3, cache, blake3, &local, size, bar).await?,
            _ => {
                let data = file_bytes(&local, size).map_err(|e| local_err("reading", &local, e))?;
                inner
                    .store
                    .put(&self.path(&rel), PutPayload::from(data))
                    .await
                    .map_err(|e| self.store_err("uploading", &rel, e))?;
                bar.inc(size);
                fault_tick();
                false
            }
        };
        self.unmark_bad(blake3);
        if let Ok(mut c) = counts.lock() {
            if refreshed {
                c.present += 1;
                c.refreshed += 1;
            } else {
                c.uploaded += 1;
            }
            c.bytes += size;
            c.resumed += resumed as usize;
        }
        Ok(())
    }

    /// Makes an object that a push found present look recently written, so remote gc's
    /// grace period covers it. A directory remote sets the file's mtime; an object store
    /// cannot, so an object older than half the grace period is uploaded again (same
    /// bytes, atomically). Returns `false` when the caller must re-upload.
    pub(super) fn touch(&self, rel: &str, modified: SystemTime) -> bool {
        if let Some(root) = self.dir_root() {
            return crate::links::join_checked(&root, rel)
                .ok()
                .is_some_and(|p| crate::cas::touch(&p).is_ok());
        }
        let age = SystemTime::now()
            .duration_since(modified)
            .unwrap_or_default();
        age < gc_grace() / 2
    }
}

/// The bytes of a local object for upload: read when small, memory-mapped when large.
pub(super) fn file_bytes(path: &Path, size: u64) -> std::io::Result<Bytes> {
    if size < MMAP_MIN {
        return Ok(Bytes::from(std::fs::read(path)?));
    }
    let file = std::fs::File::open(path)?;
    // SAFETY: cache objects are immutable. They are written once under tmp/ and renamed
    // into objects/; nothing writes to an object file in place, and a concurrent writer of
    // the same hash renames a new inode over the name, which leaves this mapping intact.
    let map = unsafe { memmap2::Mmap::map(&file)? };
    Ok(Bytes::from_owner(map))
}

/// Copies a file while hashing it (the directory backend hands back open files).
/// Reads at most `limit + 1` bytes, so an endless source (a link to /dev/zero) stops at
/// once and its count shows it was too long.
pub(super) fn copy_hashing(
    src: std::fs::File,
    mut dst: Option<std::fs::File>,
    bar: &ProgressBar,
    limit: u64,
) -> std::io::Result<(String, u64)> {
    let mut src = src.take(limit.saturating_add(1));
    let mut buf = vec![0u8; 1 << 20];
    let mut h = blake3::Hasher::new();
    let mut n = 0u64;
    loop {
        let k = src.read(&mut buf)?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        if let Some(d) = dst.as_mut() {
            d.write_all(&buf[..k])?;
        }
        n += k as u64;
        bar.inc(k as u64);
    }
    if let Some(d) = dst {
        d.sync_all()?;
    }
    Ok((h.finalize().to_hex().to_string(), n))
}

/// A download's temp file, removed when dropped unless it was adopted into `objects/`:
/// every early return (a refused object, a transport error, a full disk) cleans up.
pub(super) struct TmpGuard(Option<PathBuf>);

impl TmpGuard {
    pub(super) fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for TmpGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}
