//! The trust boundary's vocabulary: the limits on what a record may announce, the rules a name
//! must follow before it becomes part of a path, the error every refusal is, and how a value
//! from an untrusted record is printed. A leaf: it imports nothing from this crate, so the
//! config loader and the maintenance commands use it without the artifact model.

/// Largest record (manifest, unit record, run record, rejects list) read from anywhere.
pub const MAX_RECORD_BYTES: u64 = 64 << 20;
/// Largest shard object a record may announce (a shard holds a few thousand samples).
pub const MAX_SHARD_BYTES: u64 = 16 << 30;
/// Largest named file a record may announce (a 7B-parameter checkpoint with its AdamW
/// moments is ~84 GB in f32).
pub const MAX_FILE_BYTES: u64 = 128 << 30;

/// The files a stage stores unless it declares its own ([`crate::Stage::files`]). A record
/// naming a file that is not a plain name is refused here; one naming a plain file its stage
/// does not declare is refused where the stage is known ([`rederive`]), and
/// [`crate::stage::UnitOutput::add_file`] refuses to write one, so a new stage output fails
/// loudly in its first test until its stage declares it. No engine edit is needed for it.
pub const KNOWN_FILES: &[&str] = &[
    "block.safetensors",
    "checkpoint.safetensors",
    "model.safetensors",
    "metrics.jsonl",
    "metrics.json",
    "curves.png",
];

/// Why a record was refused. Every variant names what was wrong; values taken from the
/// record are escaped and shortened ([`shown`]) before they reach a terminal.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TrustError {
    #[error("record is {size} bytes, over the {cap}-byte limit for records")]
    TooLarge { size: u64, cap: u64 },
    #[error("not a valid record: {0}")]
    Parse(String),
    #[error("{what} `{value}` is not 64 lowercase hex characters")]
    NotAHash { what: &'static str, value: String },
    #[error("{what} `{value}` is not a plain name ([A-Za-z0-9._-], at most 128 characters)")]
    BadName { what: &'static str, value: String },
    #[error("object path `{0}` is not the standard ../../objects/ab/<hash> of its object")]
    BadPath(String),
    #[error("file name `{0}` is not one lm4ve writes")]
    UnknownFile(String),
    #[error("{what} of {size} bytes is over the {cap}-byte limit")]
    ObjectTooLarge { what: String, size: u64, cap: u64 },
    #[error("inconsistent: {0}")]
    Inconsistent(String),
}

/// A value from an untrusted record, fit to print: control characters escaped (no terminal
/// escape sequences pass), at most 80 characters (cut on a character boundary).
pub fn shown(s: &str) -> String {
    escaped(s, 80)
}

/// `s` with control characters escaped, cut after `max` characters.
pub fn escaped(s: &str, max: usize) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i == max {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// 64 lowercase hex characters: a content key or an object name.
pub fn is_hash(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A word that is safe as a file name and in a path: unit ids, split and stage names.
pub fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// The longest stage name a config may give (matrix variants add their suffix to it).
pub const MAX_CONFIG_STAGE_NAME: usize = 64;

/// A stage name as a config writes it: `[A-Za-z0-9_][A-Za-z0-9_.-]*`, at most
/// [`MAX_CONFIG_STAGE_NAME`] bytes (no `/`, no spaces, no control characters, not `.`).
pub fn is_config_stage_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_CONFIG_STAGE_NAME
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(c))
}

/// A stage name: a [`is_name`] word, or a study variant `base@k1=v1,k2=v2` (see
/// `matrix.rs`); `@`, `=` and `,` are as safe as the rest in a file name, a URL path segment
/// and an object-store key.
pub fn is_stage_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.@=,".contains(&b))
}

pub fn check_hash(what: &'static str, s: &str) -> Result<(), TrustError> {
    if is_hash(s) {
        Ok(())
    } else {
        Err(TrustError::NotAHash {
            what,
            value: shown(s),
        })
    }
}

pub fn check_name(what: &'static str, s: &str) -> Result<(), TrustError> {
    if is_name(s) {
        Ok(())
    } else {
        Err(TrustError::BadName {
            what,
            value: shown(s),
        })
    }
}

pub(crate) fn check_size(
    what: impl FnOnce() -> String,
    size: u64,
    cap: u64,
) -> Result<(), TrustError> {
    if size > cap {
        return Err(TrustError::ObjectTooLarge {
            what: what(),
            size,
            cap,
        });
    }
    Ok(())
}

/// A file name a record may carry: a plain name (no path, no `..`); which names a stage
/// writes is checked against the stage ([`Expected::files`]).
pub(crate) fn check_file_name(name: &str) -> Result<(), TrustError> {
    if is_name(name) {
        Ok(())
    } else {
        Err(TrustError::UnknownFile(shown(name)))
    }
}
