//! Building the object_store backend for a remote spec (S3, WebDAV/HTTP, a directory), its
//! request timeout, and the fault injection the tests use.

use super::*;

/// How long one request may wait for the next bytes (`LM4VE_REMOTE_TIMEOUT_SECS`,
/// default 30 s) before it is retried under the retry policy (3 retries, 60 s budget).
pub(super) fn read_timeout() -> Duration {
    std::env::var("LM4VE_REMOTE_TIMEOUT_SECS")
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| *s > 0.0)
        .map(Duration::from_secs_f64)
        .unwrap_or(Duration::from_secs(30))
}

/// Test hook: `LM4VE_FAULT_ABORT_AFTER_UPLOADS=N` aborts after the N-th upload.
pub(super) fn fault_tick() {
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

pub(super) fn build(spec: &RemoteSpec) -> Result<Inner, String> {
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
