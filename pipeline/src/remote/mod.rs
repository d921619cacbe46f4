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

mod backend;
mod multipart;
mod objects;
mod spec;
mod transport;
use backend::*;

use objects::*;
pub mod sync;

pub use spec::{RemoteKind, RemoteSpec};

use crate::cas::Cache;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use indicatif::ProgressBar;
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path as StorePath;
use object_store::{GetResultPayload, ObjectStore, ObjectStoreExt, PutPayload};
use std::collections::{BTreeMap, BTreeSet};
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
    bad: Mutex<BTreeMap<String, String>>,
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

/// An object's key on a remote, relative to the remote's root (`objects/xx/<hash>`).
pub(crate) fn object_key(blake3: &str) -> String {
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
            bad: Mutex::new(BTreeMap::new()),
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
            // The path (the remote's, untrusted) is cut, the reason after it never is.
            let cut = match &e {
                crate::links::LinkError::Link(p) => {
                    crate::links::LinkError::Link(crate::trust::shown(p))
                }
                crate::links::LinkError::Outside(p) => {
                    crate::links::LinkError::Outside(crate::trust::shown(p))
                }
            };
            if let Ok(mut l) = self.links.lock() {
                if l.insert(path.clone()) {
                    tracing::warn!(
                        "{}: {cut}; not listed, read, written or deleted",
                        self.describe()
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
