//! The shared remote cache: the same objects and records as the local cache
//! ([`crate::cas`]), kept in a place several machines reach — a shared directory (NFS),
//! an S3-compatible object store, or a WebDAV server — so a lab preprocesses a dataset once
//! and a cluster can spread one stage over many machines (`--part i/n`).
//!
//! Layout on the remote (the local layout, minus what is per machine):
//!
//! ```text
//! objects/ab/<blake3>                 immutable blobs, verified by blake3 when pulled
//! artifacts/<key>/units/<unit>.json   one record per finished work unit
//! artifacts/<key>/rejects.jsonl       pushed just before the manifest
//! artifacts/<key>/manifest.json       pushed last: the artifact is complete iff it exists
//! runs/<stage>/<key>.json             run records (no URL, no credentials: see below)
//! ```
//!
//! Why it is safe without locks across machines:
//! - **Every write is atomic.** An S3 PUT (and a completed multipart upload) appears whole
//!   or not at all; nginx's WebDAV PUT writes a temp file and renames it; the directory
//!   backend writes a staging file and renames it. No reader sees half an object.
//! - **Records go after what they name.** A push uploads objects, then unit records, then
//!   the manifest ([`sync::push_artifact`]); so a record on the remote never names a missing
//!   object, and a push killed at any point leaves a consistent remote that the next push
//!   completes (it skips what is already there).
//! - **Same key, same bytes.** Two machines that compute one key write identical objects and
//!   records, so a race between them changes nothing.
//! - **Nothing pulled is trusted.** Each object is hashed while it streams into the local
//!   `tmp/` and only renamed into `objects/` when its blake3 matches its name; a bad one is
//!   refused, reported, remembered (the next push from this process re-uploads it), and the
//!   stage computes it instead.
//!
//! Transfers run `LM4VE_TRANSFERS` at a time (default 8) on a small tokio runtime owned by
//! the [`Remote`]; the rest of the engine stays synchronous. On S3, objects larger than
//! `LM4VE_MULTIPART_BYTES` (default 64 MiB) go up as multipart uploads whose upload id and
//! finished parts are saved in the local `tmp/`, so a push killed in the middle of a 2 GB
//! checkpoint resumes at the next missing part. The other backends upload whole objects
//! (atomically) and resume at the next object.
//!
//! The remote URL can carry credentials (`https://user:pw@host/…`) and says where a lab keeps
//! its data, so it is never printed, logged or written into run records: messages call it
//! "the s3 remote", and error texts from the storage client are scrubbed
//! ([`RemoteSpec::redact`]). S3 credentials come from the usual `AWS_*` variables
//! (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`,
//! `AWS_ENDPOINT_URL` for S3-compatible servers), else from the `AWS_PROFILE` (default
//! `default`) of `~/.aws/credentials` and `~/.aws/config`, else from the instance's role.
//!
//! For the fault-injection tests, `LM4VE_FAULT_ABORT_AFTER_UPLOADS=N` aborts the process
//! (no cleanup, like `kill -9`) right after the N-th object or multipart part is uploaded.

mod spec;
pub mod sync;

pub use spec::{RemoteKind, RemoteSpec};

use crate::cas::Cache;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use indicatif::ProgressBar;
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path as StorePath;
use object_store::{GetResultPayload, ObjectStore, ObjectStoreExt, PutPayload};
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

/// What can go wrong with a remote. Messages never contain the remote's URL.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("bad remote: {why}")]
    BadUrl { why: String },
    #[error("cannot open the {kind} remote: {message}")]
    Open { kind: &'static str, message: String },
    #[error("{op} `{path}` on the {kind} remote failed: {message}")]
    Store {
        op: &'static str,
        path: String,
        kind: &'static str,
        message: String,
    },
    #[error("object {blake3} from the {kind} remote is corrupt ({why}); refused")]
    Corrupt {
        blake3: String,
        kind: &'static str,
        why: String,
    },
    #[error("object {blake3} is missing on the {kind} remote although a record names it")]
    Missing { blake3: String, kind: &'static str },
    #[error("`{path}` on the {kind} remote is not valid: {why}")]
    BadRecord {
        path: String,
        kind: &'static str,
        why: String,
    },
    #[error("{failed} of {total} objects could not be pulled; first: {first}")]
    Pull {
        failed: usize,
        total: usize,
        first: String,
    },
    #[error("`{path}` on the {kind} remote: {why}")]
    Refused {
        path: String,
        kind: &'static str,
        why: String,
    },
    #[error("local cache: {0}")]
    Local(String),
    #[error("not asked: the {kind} remote failed earlier in this run")]
    Down { kind: &'static str },
}

impl RemoteError {
    /// A refused object (bad hash or missing), as opposed to a transport problem.
    pub fn is_bad_object(&self) -> bool {
        matches!(
            self,
            RemoteError::Corrupt { .. } | RemoteError::Missing { .. } | RemoteError::Refused { .. }
        )
    }
}

fn local_err(what: &str, path: &Path, e: impl std::fmt::Display) -> RemoteError {
    RemoteError::Local(format!("{what} {}: {e}", path.display()))
}

/// One object of [`Remote::check_objects`]: its hash, and whether it is sound.
pub type Checked = (String, Result<(), RemoteError>);

/// One file on the remote, from a listing.
#[derive(Debug, Clone)]
pub struct Listed {
    /// Path relative to the remote's root (`objects/ab/<hash>`).
    pub rel: String,
    pub size: u64,
    pub modified: SystemTime,
}

/// Counts of one [`Remote::push_objects`] call.
#[derive(Debug, Default, Clone, Copy)]
pub struct PushCounts {
    pub uploaded: usize,
    pub present: usize,
    pub bytes: u64,
    /// Multipart uploads that continued an interrupted earlier push.
    pub resumed: usize,
    /// Objects present but old, uploaded again so remote gc counts them as young.
    pub refreshed: usize,
}

/// A remote cache. Cheap to create: the storage client is built on first use, so a run
/// whose stages are all local never touches the network.
pub struct Remote {
    spec: RemoteSpec,
    jobs: usize,
    part_bytes: u64,
    inner: OnceLock<Result<Inner, String>>,
    /// Objects this process found corrupt or missing on the remote: pushes re-upload them.
    bad: Mutex<BTreeSet<String>>,
    /// Set when a request failed after the client's retries: later calls fail at once
    /// instead of waiting through the same retries again (the run computes locally).
    down: OnceLock<String>,
    /// Directory remotes: paths refused because they are (or go through) symbolic links.
    links: Mutex<BTreeSet<String>>,
}

struct Inner {
    rt: tokio::runtime::Runtime,
    store: Arc<dyn ObjectStore>,
    s3: Option<Arc<object_store::aws::AmazonS3>>,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Remote({} remote)", self.spec.kind().name())
    }
}

/// Files at least this big are memory-mapped for upload instead of read into memory.
const MMAP_MIN: u64 = 1 << 20;
const DEFAULT_PART_BYTES: u64 = 64 << 20;

pub(crate) fn object_rel(blake3: &str) -> String {
    format!("objects/{}/{blake3}", &blake3[..2.min(blake3.len())])
}

impl Remote {
    /// Parses the remote; `base_dir` resolves a relative directory (from a config file).
    pub fn open(url: &str, base_dir: Option<&Path>) -> Result<Remote, RemoteError> {
        let spec = RemoteSpec::parse(url, base_dir)?;
        if spec.cleartext_credentials() {
            tracing::warn!(
                "the http remote's URL has a user name and password, and http:// sends them in clear text to anyone on the path; use https://"
            );
        }
        let env_num = |k: &str| {
            std::env::var(k)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        Ok(Remote {
            spec,
            jobs: env_num("LM4VE_TRANSFERS").unwrap_or(8).clamp(1, 256) as usize,
            part_bytes: env_num("LM4VE_MULTIPART_BYTES")
                .unwrap_or(DEFAULT_PART_BYTES)
                .max(1024),
            inner: OnceLock::new(),
            bad: Mutex::new(BTreeSet::new()),
            down: OnceLock::new(),
            links: Mutex::new(BTreeSet::new()),
        })
    }

    pub fn kind(&self) -> RemoteKind {
        self.spec.kind()
    }

    /// "the s3 remote": how messages name it.
    pub fn describe(&self) -> String {
        format!("the {} remote", self.spec.kind().name())
    }

    pub fn spec(&self) -> &RemoteSpec {
        &self.spec
    }

    fn kind_name(&self) -> &'static str {
        self.spec.kind().name()
    }

    fn inner(&self) -> Result<&Inner, RemoteError> {
        if self.down.get().is_some() {
            return Err(RemoteError::Down {
                kind: self.kind_name(),
            });
        }
        self.inner
            .get_or_init(|| build(&self.spec))
            .as_ref()
            .map_err(|m| RemoteError::Open {
                kind: self.kind_name(),
                message: m.clone(),
            })
    }

    fn path(&self, rel: &str) -> StorePath {
        if self.spec.prefix.is_empty() {
            StorePath::from(rel)
        } else {
            StorePath::from(format!("{}/{rel}", self.spec.prefix))
        }
    }

    fn rel_of(&self, loc: &StorePath) -> Option<String> {
        let s = loc.as_ref();
        if self.spec.prefix.is_empty() {
            Some(s.to_string())
        } else {
            s.strip_prefix(self.spec.prefix.as_str())
                .and_then(|r| r.strip_prefix('/'))
                .map(str::to_string)
        }
    }

    fn store_err(&self, op: &'static str, rel: &str, e: object_store::Error) -> RemoteError {
        // The first line: servers append whole HTML error pages.
        let text = e.to_string();
        let first = text.lines().next().unwrap_or_default();
        RemoteError::Store {
            op,
            path: crate::trust::shown(rel),
            kind: self.kind_name(),
            message: server_text(&self.spec.redact(first)),
        }
    }

    /// Directory remotes: refuses `rel` when it is or goes through a symbolic link (or
    /// leaves the root), and remembers it for [`Remote::refused_links`].
    fn check_link(&self, rel: &str) -> Result<(), RemoteError> {
        let Some(root) = self.dir_root() else {
            return Ok(());
        };
        crate::links::check_rel(&root, Path::new(rel)).map_err(|e| {
            let path = match &e {
                crate::links::LinkError::Link(p) | crate::links::LinkError::Outside(p) => {
                    p.clone()
                }
            };
            if let Ok(mut l) = self.links.lock() {
                if l.insert(path.clone()) {
                    tracing::warn!(
                        "{}: {}; not listed, read, written or deleted",
                        self.describe(),
                        crate::trust::shown(&e.to_string())
                    );
                }
            }
            RemoteError::Refused {
                path: crate::trust::shown(&path),
                kind: self.kind_name(),
                why: "a symbolic link (or a path out of the remote); lm4ve never follows links on a directory remote".into(),
            }
        })
    }

    /// The root directory of a directory remote.
    fn dir_root(&self) -> Option<PathBuf> {
        (self.spec.kind == RemoteKind::Dir).then(|| PathBuf::from(&self.spec.location))
    }

    /// Paths of a directory remote refused so far because they are symbolic links.
    pub fn refused_links(&self) -> Vec<String> {
        self.links
            .lock()
            .map(|l| l.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Remembers a failed request (see `down`); passes the result through.
    fn watch<T>(&self, r: Result<T, RemoteError>) -> Result<T, RemoteError> {
        if let Err(e @ (RemoteError::Store { .. } | RemoteError::Open { .. })) = &r {
            let _ = self.down.set(e.to_string());
        }
        r
    }

    fn mark_bad(&self, blake3: &str) {
        if let Ok(mut b) = self.bad.lock() {
            b.insert(blake3.to_string());
        }
    }

    fn is_bad(&self, blake3: &str) -> bool {
        self.bad.lock().map(|b| b.contains(blake3)).unwrap_or(false)
    }

    fn unmark_bad(&self, blake3: &str) {
        if let Ok(mut b) = self.bad.lock() {
            b.remove(blake3);
        }
    }

    /// Objects this process refused (corrupt or missing on the remote).
    pub fn refused_objects(&self) -> Vec<String> {
        self.bad
            .lock()
            .map(|b| b.iter().cloned().collect())
            .unwrap_or_default()
    }

    // ---- small files -------------------------------------------------------------------

    /// A small file (a record); `None` when the remote does not have it.
    pub fn get_small(&self, rel: &str) -> Result<Option<Vec<u8>>, RemoteError> {
        let inner = self.watch(self.inner())?;
        self.watch(inner.rt.block_on(self.a_get_small(inner, rel.to_string())))
    }

    /// Reads a record, at most [`crate::trust::MAX_RECORD_BYTES`]: a record that is larger
    /// is refused as soon as that many bytes have arrived (no unbounded buffering).
    async fn a_get_small(
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
    async fn a_head(
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
    fn list_dir(&self, root: &Path, rel_prefix: &str) -> Result<Vec<Listed>, RemoteError> {
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

    fn watch_err(&self, e: RemoteError) -> RemoteError {
        let _ = self.down.set(e.to_string());
        e
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
                    } else if self.is_bad(h) {
                        // Refused earlier in this process: do not fetch it again.
                        Err(RemoteError::Corrupt {
                            blake3: h.clone(),
                            kind: self.kind_name(),
                            why: "refused earlier in this run".into(),
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
    async fn fetch(
        &self,
        inner: &Inner,
        blake3: &str,
        size: u64,
        cache: Option<&Cache>,
        bar: &ProgressBar,
    ) -> Result<(), RemoteError> {
        let rel = object_rel(blake3);
        let corrupt = |why: String| {
            self.mark_bad(blake3);
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
            self.mark_bad(blake3);
            return Err(e);
        }
        let got = match patient(self, "reading", &rel, inner.store.get(&self.path(&rel))).await {
            Ok(g) => g,
            Err(object_store::Error::NotFound { .. }) => {
                self.mark_bad(blake3);
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

    async fn push_one(
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
        let rel = object_rel(blake3);
        self.check_link(&rel)?;
        let redo = force || self.is_bad(blake3);
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
    fn touch(&self, rel: &str, modified: SystemTime) -> bool {
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

    /// A resumable S3 multipart upload: the upload id and each finished part are saved in
    /// `tmp/upload-<remote>-<hash>.json`, so an interrupted push continues where it stopped.
    /// Returns whether it resumed an earlier upload.
    async fn multipart(
        &self,
        s3: &Arc<object_store::aws::AmazonS3>,
        cache: &Cache,
        blake3: &str,
        local: &Path,
        size: u64,
        bar: &ProgressBar,
    ) -> Result<bool, RemoteError> {
        let rel = object_rel(blake3);
        let path = self.path(&rel);
        let state_path = cache
            .tmp_dir()
            .join(format!("upload-{}-{blake3}.json", self.spec.id()));
        let nparts = size.div_ceil(self.part_bytes) as usize;
        let data = file_bytes(local, size).map_err(|e| local_err("reading", local, e))?;
        for attempt in 0..2 {
            let saved: Option<UploadState> = std::fs::read(&state_path)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .filter(|s: &UploadState| {
                    s.size == size && s.part_bytes == self.part_bytes && s.parts.len() == nparts
                });
            let resumed = saved.is_some() && attempt == 0;
            let state = match saved.filter(|_| attempt == 0) {
                Some(s) => s,
                None => {
                    let id = s3
                        .create_multipart(&path)
                        .await
                        .map_err(|e| self.store_err("starting upload of", &rel, e))?;
                    UploadState {
                        upload_id: id,
                        size,
                        part_bytes: self.part_bytes,
                        parts: vec![None; nparts],
                    }
                }
            };
            save_state(&state_path, &state)?;
            let id = state.upload_id.clone();
            let todo: Vec<usize> = (0..nparts).filter(|i| state.parts[*i].is_none()).collect();
            let done_bytes: u64 = (0..nparts)
                .filter(|i| state.parts[*i].is_some())
                .map(|i| self.part_range(i, size).len() as u64)
                .sum();
            bar.inc(done_bytes);
            let state = Mutex::new(state);
            let uploaded = futures::stream::iter(todo)
                .map(|i| {
                    let range = self.part_range(i, size);
                    let chunk = data.slice(range.clone());
                    let (path, id, state, state_path) = (&path, &id, &state, &state_path);
                    async move {
                        let part = s3.put_part(path, id, i, PutPayload::from(chunk)).await?;
                        if let Ok(mut s) = state.lock() {
                            s.parts[i] = Some(part.content_id);
                            // Losing this save only costs re-sending the part.
                            let _ = save_state(state_path, &s);
                        }
                        bar.inc(range.len() as u64);
                        fault_tick();
                        Ok::<(), object_store::Error>(())
                    }
                })
                .buffer_unordered(self.jobs.min(4))
                .try_collect::<Vec<()>>()
                .await;
            let retry_fresh = |e: &object_store::Error| {
                resumed && matches!(e, object_store::Error::NotFound { .. })
            };
            if let Err(e) = uploaded {
                if retry_fresh(&e) {
                    // The saved upload expired or was aborted on the server: start over.
                    let _ = std::fs::remove_file(&state_path);
                    continue;
                }
                return Err(self.store_err("uploading a part of", &rel, e));
            }
            let parts: Vec<PartId> = state
                .into_inner()
                .unwrap_or_else(|p| p.into_inner())
                .parts
                .into_iter()
                .map(|p| PartId {
                    content_id: p.unwrap_or_default(),
                })
                .collect();
            match s3.complete_multipart(&path, &id, parts).await {
                Ok(_) => {
                    let _ = std::fs::remove_file(&state_path);
                    return Ok(resumed);
                }
                Err(e) if retry_fresh(&e) => {
                    let _ = std::fs::remove_file(&state_path);
                    continue;
                }
                Err(e) => return Err(self.store_err("completing upload of", &rel, e)),
            }
        }
        Err(RemoteError::Store {
            op: "uploading",
            path: rel,
            kind: self.kind_name(),
            message: "the server lost the multipart upload twice".into(),
        })
    }

    fn part_range(&self, i: usize, size: u64) -> std::ops::Range<usize> {
        let start = i as u64 * self.part_bytes;
        let end = (start + self.part_bytes).min(size);
        start as usize..end as usize
    }
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct UploadState {
    upload_id: String,
    size: u64,
    part_bytes: u64,
    parts: Vec<Option<String>>,
}

fn save_state(path: &Path, s: &UploadState) -> Result<(), RemoteError> {
    let bytes = serde_json::to_vec(s).map_err(|e| local_err("encoding", path, e))?;
    crate::cas::write_atomic(path, &bytes).map_err(|e| local_err("writing", path, format!("{e:#}")))
}

/// The bytes of a local object for upload: read when small, memory-mapped when large.
fn file_bytes(path: &Path, size: u64) -> std::io::Result<Bytes> {
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
fn copy_hashing(
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
struct TmpGuard(Option<PathBuf>);

impl TmpGuard {
    fn disarm(mut self) {
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

/// Text from a server or a storage client, fit for a terminal: control characters
/// (terminal escape sequences) escaped, at most 300 characters.
fn server_text(text: &str) -> String {
    crate::trust::escaped(text, 300)
}

/// How long unreferenced remote objects are kept by `cache gc --remote`
/// (`LM4VE_REMOTE_GC_GRACE_SECS`, default a day): machines share no lock, and a push in
/// flight uploads objects before the records that name them.
pub fn gc_grace() -> Duration {
    std::env::var("LM4VE_REMOTE_GC_GRACE_SECS")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(24 * 3600))
}

/// How long one request may wait for the next bytes (`LM4VE_REMOTE_TIMEOUT_SECS`,
/// default 30 s) before it is retried under the retry policy (3 retries, 60 s budget).
fn read_timeout() -> Duration {
    std::env::var("LM4VE_REMOTE_TIMEOUT_SECS")
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| *s > 0.0)
        .map(Duration::from_secs_f64)
        .unwrap_or(Duration::from_secs(30))
}

/// Awaits a request, saying what it waits for when it takes more than a few seconds (a
/// stalled server otherwise looks like a hung lm4ve).
async fn patient<T>(
    remote: &Remote,
    op: &str,
    rel: &str,
    fut: impl std::future::Future<Output = T>,
) -> T {
    tokio::pin!(fut);
    let mut waited = 0u64;
    loop {
        match tokio::time::timeout(Duration::from_secs(5), &mut fut).await {
            Ok(v) => return v,
            Err(_) => {
                waited += 5;
                tracing::info!(
                    "waiting for {} ({op} {}): no answer for {waited} s; it is retried, then given up on after {:.0} s without bytes",
                    remote.describe(),
                    crate::trust::shown(rel),
                    read_timeout().as_secs_f64()
                );
            }
        }
    }
}

/// Test hook: `LM4VE_FAULT_ABORT_AFTER_UPLOADS=N` aborts after the N-th upload.
fn fault_tick() {
    static LIMIT: OnceLock<Option<u64>> = OnceLock::new();
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let limit = LIMIT.get_or_init(|| {
        std::env::var("LM4VE_FAULT_ABORT_AFTER_UPLOADS")
            .ok()
            .and_then(|v| v.parse().ok())
    });
    if let Some(n) = limit {
        if COUNT.fetch_add(1, Ordering::SeqCst) + 1 >= *n {
            eprintln!(
                "lm4ve: LM4VE_FAULT_ABORT_AFTER_UPLOADS={n} reached; aborting (fault injection)"
            );
            std::process::abort();
        }
    }
}

fn build(spec: &RemoteSpec) -> Result<Inner, String> {
    // reqwest is built without a default TLS provider; ring's is enough (and needs no cmake).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(2, 4);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name("lm4ve-remote")
        .enable_all()
        .build()
        .map_err(|e| format!("starting the transfer runtime: {e}"))?;
    let retry = object_store::RetryConfig {
        max_retries: 3,
        retry_timeout: Duration::from_secs(60),
        ..Default::default()
    };
    let client = |allow_http: bool| {
        // No total timeout (a 2 GB object takes a while) but a read timeout: a server that
        // accepts and then says nothing fails that request, which the retry policy above
        // retries; then the run computes locally.
        object_store::ClientOptions::new()
            .with_timeout_disabled()
            .with_read_timeout(read_timeout())
            .with_connect_timeout(Duration::from_secs(10))
            .with_allow_http(allow_http)
    };
    let redact = |e: object_store::Error| spec.redact(&e.to_string());
    let (store, s3): (Arc<dyn ObjectStore>, _) = match spec.kind {
        RemoteKind::Dir => {
            std::fs::create_dir_all(&spec.location).map_err(|e| {
                format!(
                    "cannot create the remote directory: {}",
                    spec.redact(&e.to_string())
                )
            })?;
            let fs = object_store::local::LocalFileSystem::new_with_prefix(&spec.location)
                .map_err(redact)?
                .with_fsync(true)
                .with_automatic_cleanup(true);
            (Arc::new(fs), None)
        }
        RemoteKind::Http => {
            let mut options = client(spec.location.starts_with("http://"));
            if let Some(auth) = spec.authorization() {
                let mut value = object_store::HeaderValue::from_str(&auth)
                    .map_err(|_| "the user name or password in the URL is not valid".to_string())?;
                value.set_sensitive(true);
                let mut headers = object_store::HeaderMap::new();
                headers.insert("authorization", value);
                options = options.with_default_headers(headers);
            }
            let store = object_store::http::HttpBuilder::new()
                .with_url(spec.location.clone())
                .with_client_options(options)
                .with_retry(retry)
                .build()
                .map_err(redact)?;
            (Arc::new(store), None)
        }
        RemoteKind::S3 => {
            use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey as K};
            let mut b = AmazonS3Builder::from_env().with_bucket_name(spec.location.clone());
            if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
                if let Some(p) = spec::aws_profile() {
                    if let (Some(k), Some(s)) = (p.access_key_id, p.secret_access_key) {
                        b = b.with_access_key_id(k).with_secret_access_key(s);
                        if let Some(t) = p.session_token {
                            b = b.with_token(t);
                        }
                    }
                    if b.get_config_value(&K::Region).is_none() {
                        if let Some(r) = p.region {
                            b = b.with_region(r);
                        }
                    }
                    if b.get_config_value(&K::Endpoint).is_none() {
                        if let Some(e) = p.endpoint_url {
                            b = b.with_endpoint(e);
                        }
                    }
                }
            }
            let http = b
                .get_config_value(&K::Endpoint)
                .is_some_and(|e| e.starts_with("http://"));
            let store = Arc::new(
                b.with_client_options(client(http))
                    .with_retry(retry)
                    .build()
                    .map_err(redact)?,
            );
            (store.clone() as Arc<dyn ObjectStore>, Some(store))
        }
    };
    Ok(Inner { rt, store, s3 })
}
