//! Where a remote cache lives: the URL a user writes (`[cache] remote`, `--remote`,
//! `LM4VE_REMOTE`) parsed into one of three kinds, plus the S3 credential lookup.
//!
//! The URL itself is treated as private: it can carry credentials (`https://user:pw@host/…`)
//! and a lab's bucket layout, so nothing here implements `Display` for it. Messages name the
//! remote by its kind ("the s3 remote"), and [`RemoteSpec::redact`] scrubs URLs and the
//! directory root out of error texts that come back from the storage client.

use super::RemoteError;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteKind {
    /// An S3-compatible object store (`s3://bucket/prefix`).
    S3,
    /// An HTTP server that speaks WebDAV (PUT, DELETE, MKCOL, PROPFIND).
    Http,
    /// A shared directory (`file:///mnt/nfs/cache`, or a plain path).
    Dir,
}

impl RemoteKind {
    pub fn name(self) -> &'static str {
        match self {
            RemoteKind::S3 => "s3",
            RemoteKind::Http => "http",
            RemoteKind::Dir => "directory",
        }
    }
}

/// A parsed remote location. Deliberately not `Display`: see the module docs.
#[derive(Clone, PartialEq, Eq)]
pub struct RemoteSpec {
    pub(crate) kind: RemoteKind,
    /// S3: the bucket. HTTP: the base URL (may hold credentials). Dir: the absolute path.
    pub(crate) location: String,
    /// The key prefix (S3: inside the bucket; HTTP: the URL path), no leading/trailing `/`.
    pub(crate) prefix: String,
    /// HTTP only: `user:password` from the URL, sent as Basic authentication.
    pub(crate) basic_auth: Option<(String, String)>,
}

impl std::fmt::Debug for RemoteSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RemoteSpec({} remote)", self.kind.name())
    }
}

impl RemoteSpec {
    /// Parses `s3://bucket/prefix`, `file:///abs/path`, `http(s)://host/path`, or a plain
    /// directory path. A relative path is resolved against `base_dir` (the config file's
    /// directory) when one is given, and refused otherwise (on the command line a bare word
    /// is more likely a typo than a directory).
    pub fn parse(url: &str, base_dir: Option<&Path>) -> Result<Self, RemoteError> {
        let url = url.trim();
        let bad = |why: &str| RemoteError::BadUrl {
            why: why.to_string(),
        };
        if url.is_empty() {
            return Err(bad("the remote is empty"));
        }
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(bad("an s3 remote needs a bucket: s3://BUCKET/PREFIX"));
            }
            let prefix = prefix.trim_matches('/').to_string();
            if prefix.split('/').any(|p| p == "." || p == "..") {
                return Err(bad("an s3 prefix cannot contain `.` or `..` segments"));
            }
            return Ok(RemoteSpec {
                kind: RemoteKind::S3,
                location: bucket.to_string(),
                prefix,
                basic_auth: None,
            });
        }
        if url.starts_with("http://") || url.starts_with("https://") {
            let host = url.split_once("://").map(|x| x.1).unwrap_or("");
            if host.is_empty() || host.starts_with('/') {
                return Err(bad("an http remote needs a host: https://HOST/PATH"));
            }
            // The store is rooted at the origin and the path is our prefix: WebDAV listings
            // name entries by absolute path, so keys and listings then agree.
            let (scheme, rest) = url.split_once("://").unwrap_or(("https", url));
            let (origin, path) = rest.split_once('/').unwrap_or((rest, ""));
            let prefix = percent_decode(path.trim_matches('/'));
            if prefix.split('/').any(|p| p == "." || p == "..") {
                return Err(bad(
                    "an http remote path cannot contain `.` or `..` segments",
                ));
            }
            // The HTTP client does not turn URL user info into a header: we do.
            let (basic_auth, host) = match origin.rsplit_once('@') {
                Some((user, host)) => {
                    let (u, p) = user.split_once(':').unwrap_or((user, ""));
                    (Some((percent_decode(u), percent_decode(p))), host)
                }
                None => (None, origin),
            };
            if host.is_empty() {
                return Err(bad("an http remote needs a host: https://HOST/PATH"));
            }
            return Ok(RemoteSpec {
                kind: RemoteKind::Http,
                location: format!("{scheme}://{host}"),
                prefix,
                basic_auth,
            });
        }
        let path = if let Some(rest) = url.strip_prefix("file://") {
            if !rest.starts_with('/') {
                return Err(bad("a file remote needs an absolute path: file:///PATH"));
            }
            PathBuf::from(percent_decode(rest))
        } else if url.contains("://") {
            return Err(bad(
                "unknown scheme; use s3://BUCKET/PREFIX, file:///PATH or http(s)://HOST/PATH",
            ));
        } else {
            let p = PathBuf::from(url);
            if p.is_absolute() {
                p
            } else {
                match base_dir {
                    Some(b) => b.join(p),
                    None => {
                        return Err(bad(
                            "not a remote URL; use s3://BUCKET/PREFIX, file:///PATH, http(s)://HOST/PATH or an absolute directory",
                        ))
                    }
                }
            }
        };
        let path = std::path::absolute(&path).unwrap_or(path);
        Ok(RemoteSpec {
            kind: RemoteKind::Dir,
            location: path.to_string_lossy().into_owned(),
            prefix: String::new(),
            basic_auth: None,
        })
    }

    pub fn kind(&self) -> RemoteKind {
        self.kind
    }

    /// `Authorization` header value for an HTTP remote with credentials in its URL.
    pub(crate) fn authorization(&self) -> Option<String> {
        let (u, p) = self.basic_auth.as_ref()?;
        Some(format!("Basic {}", base64(format!("{u}:{p}").as_bytes())))
    }

    /// An http:// remote with a user name or password in its URL: Basic authentication
    /// sends them readable to anyone between here and the server.
    pub fn cleartext_credentials(&self) -> bool {
        self.kind == RemoteKind::Http
            && self.basic_auth.is_some()
            && self.location.starts_with("http://")
    }

    /// A stable, non-reversible name for this remote (file names of resumable uploads).
    pub fn id(&self) -> String {
        let mut h = blake3::Hasher::new();
        h.update(self.kind.name().as_bytes());
        h.update(b"\0");
        h.update(self.location.as_bytes());
        h.update(b"\0");
        h.update(self.prefix.as_bytes());
        h.finalize().to_hex()[..16].to_string()
    }

    /// Removes anything that could name the remote from a message: every `scheme://…`
    /// token, the bucket and prefix, the directory root.
    pub fn redact(&self, text: &str) -> String {
        let mut out = redact_urls(text);
        let mut needles: Vec<&str> = Vec::new();
        // The storage client names files by their resolved path (links and `..` resolved),
        // which is not the path the user gave: hide both.
        let resolved = match self.kind {
            RemoteKind::Dir => std::fs::canonicalize(&self.location)
                .ok()
                .map(|p| p.to_string_lossy().into_owned()),
            _ => None,
        };
        if let Some(r) = &resolved {
            needles.push(r.as_str());
        }
        match self.kind {
            RemoteKind::Dir => needles.push(self.location.as_str()),
            RemoteKind::S3 => {
                needles.push(self.prefix.as_str());
                needles.push(self.location.as_str());
            }
            RemoteKind::Http => {
                needles.push(self.prefix.as_str());
                needles.push(self.location.as_str());
                if let Some((u, p)) = &self.basic_auth {
                    needles.push(u.as_str());
                    needles.push(p.as_str());
                }
            }
        }
        for n in needles {
            if n.len() >= 3 {
                out = out.replace(n, "<remote>");
            }
        }
        out
    }
}

/// Replaces each `scheme://rest` token with `<url>`.
fn redact_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let head = &rest[..i];
        let start = head
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '+' || c == '-' || c == '.'))
            .map(|j| j + 1)
            .unwrap_or(0);
        out.push_str(&head[..start]);
        out.push_str("<url>");
        let tail = &rest[i + 3..];
        let end = tail
            .find(|c: char| c.is_whitespace() || "\"'<>()`,".contains(c))
            .unwrap_or(tail.len());
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

fn base64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Credentials and settings of an AWS profile (`~/.aws/credentials`, `~/.aws/config`),
/// used when no `AWS_ACCESS_KEY_ID` is in the environment. Only the static keys, the
/// region and `endpoint_url` are read; SSO and `credential_process` profiles are not.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct AwsProfile {
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
    pub region: Option<String>,
    pub endpoint_url: Option<String>,
}

pub(crate) fn aws_profile() -> Option<AwsProfile> {
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let name = std::env::var("AWS_PROFILE").unwrap_or_else(|_| "default".into());
    let creds_path = std::env::var_os("AWS_SHARED_CREDENTIALS_FILE")
        .map(PathBuf::from)
        .or_else(|| home.as_ref().map(|h| h.join(".aws/credentials")));
    let config_path = std::env::var_os("AWS_CONFIG_FILE")
        .map(PathBuf::from)
        .or_else(|| home.as_ref().map(|h| h.join(".aws/config")));
    let creds = creds_path.and_then(|p| std::fs::read_to_string(p).ok());
    let config = config_path.and_then(|p| std::fs::read_to_string(p).ok());
    if creds.is_none() && config.is_none() {
        return None;
    }
    let p = profile_from(&name, creds.as_deref(), config.as_deref());
    (p != AwsProfile::default()).then_some(p)
}

fn profile_from(name: &str, creds: Option<&str>, config: Option<&str>) -> AwsProfile {
    let mut p = AwsProfile::default();
    let mut apply = |k: &str, v: &str| {
        let v = Some(v.to_string());
        match k {
            "aws_access_key_id" => p.access_key_id = v,
            "aws_secret_access_key" => p.secret_access_key = v,
            "aws_session_token" => p.session_token = v,
            "region" => p.region = v,
            "endpoint_url" => p.endpoint_url = v,
            _ => {}
        }
    };
    // In `config`, sections are `[default]` or `[profile NAME]`; in `credentials`, `[NAME]`.
    if let Some(text) = config {
        let want = if name == "default" {
            "default".to_string()
        } else {
            format!("profile {name}")
        };
        ini_section(text, &want, &mut apply);
    }
    if let Some(text) = creds {
        ini_section(text, name, &mut apply);
    }
    p
}

fn ini_section(text: &str, section: &str, f: &mut impl FnMut(&str, &str)) {
    let mut inside = false;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            inside = s.trim() == section;
            continue;
        }
        if inside {
            if let Some((k, v)) = line.split_once('=') {
                f(k.trim(), v.trim());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_kinds() {
        let s = RemoteSpec::parse("s3://lab-bucket/lm4ve/cache/", None).unwrap();
        assert_eq!(
            (s.kind, s.location.as_str(), s.prefix.as_str()),
            (RemoteKind::S3, "lab-bucket", "lm4ve/cache")
        );
        let s = RemoteSpec::parse("s3://b", None).unwrap();
        assert_eq!(s.prefix, "");
        let s = RemoteSpec::parse("https://u:p%40ss@host:8443/dav/lm4ve/", None).unwrap();
        assert_eq!(
            (s.kind, s.location.as_str(), s.prefix.as_str()),
            (RemoteKind::Http, "https://host:8443", "dav/lm4ve")
        );
        assert_eq!(s.basic_auth, Some(("u".into(), "p@ss".into())));
        // RFC 7617's example.
        assert_eq!(
            base64(b"Aladdin:open sesame"),
            "QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
        assert_eq!(base64(b"ab"), "YWI=");
        let s = RemoteSpec::parse("file:///mnt/nfs/my%20cache", None).unwrap();
        assert_eq!(
            (s.kind, s.location.as_str()),
            (RemoteKind::Dir, "/mnt/nfs/my cache")
        );
        let s = RemoteSpec::parse("shared", Some(Path::new("/cfg"))).unwrap();
        assert_eq!(s.location, "/cfg/shared");
        for bad in [
            "",
            "s3://",
            "s3:///x",
            "ftp://x",
            "file://rel",
            "http://",
            "shared",
        ] {
            assert!(RemoteSpec::parse(bad, None).is_err(), "{bad}");
        }
    }

    #[test]
    fn redaction_hides_urls_buckets_and_roots() {
        let s = RemoteSpec::parse("s3://secret-bucket/team", None).unwrap();
        let msg = "error sending request for url (http://127.0.0.1:9/secret-bucket/team/objects/ab): refused";
        let r = s.redact(msg);
        assert!(
            !r.contains("secret-bucket") && !r.contains("127.0.0.1"),
            "{r}"
        );
        assert!(r.contains("refused"), "{r}");
        let d = RemoteSpec::parse("/mnt/nfs/labcache", None).unwrap();
        let r = d.redact("Unable to open file /mnt/nfs/labcache/objects/ab/cd: denied");
        assert!(!r.contains("labcache"), "{r}");
        // A resolved path (through a link) is hidden too.
        let tmp = tempfile::tempdir().unwrap();
        let real = tmp.path().join("real-lab-cache");
        std::fs::create_dir_all(&real).unwrap();
        std::os::unix::fs::symlink(&real, tmp.path().join("alias")).unwrap();
        let d = RemoteSpec::parse(&tmp.path().join("alias").display().to_string(), None).unwrap();
        let resolved = std::fs::canonicalize(&real).unwrap();
        let r = d.redact(&format!("Unable to open {}/objects/x", resolved.display()));
        assert!(!r.contains("real-lab-cache"), "{r}");
        assert!(RemoteSpec::parse("http://u:p@h/x", None)
            .unwrap()
            .cleartext_credentials());
        assert!(!RemoteSpec::parse("https://u:p@h/x", None)
            .unwrap()
            .cleartext_credentials());
        let h = RemoteSpec::parse("https://user:pw@dav.example/x", None).unwrap();
        let r = h.redact("HTTP error for https://user:pw@dav.example/x/objects: 500");
        assert!(!r.contains("pw@") && !r.contains("dav.example"), "{r}");
        assert!(format!("{h:?}").contains("http remote"));
    }

    #[test]
    fn aws_profiles_read_credentials_and_config() {
        let creds = "[default]\naws_access_key_id = AK\naws_secret_access_key = SK\n[other]\naws_access_key_id = OK\n";
        let config = "[default]\nregion = eu-west-1\n[profile other]\nregion = us-west-2\nendpoint_url = http://127.0.0.1:9000\n";
        let d = profile_from("default", Some(creds), Some(config));
        assert_eq!(d.access_key_id.as_deref(), Some("AK"));
        assert_eq!(d.secret_access_key.as_deref(), Some("SK"));
        assert_eq!(d.region.as_deref(), Some("eu-west-1"));
        let o = profile_from("other", Some(creds), Some(config));
        assert_eq!(o.access_key_id.as_deref(), Some("OK"));
        assert_eq!(o.region.as_deref(), Some("us-west-2"));
        assert_eq!(o.endpoint_url.as_deref(), Some("http://127.0.0.1:9000"));
    }
}
