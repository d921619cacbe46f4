//! The pipeline config (`configs/*.toml`): strict TOML, unknown keys are errors, paths inside
//! are relative to the config file. Stage params stay a raw table here; the stage that owns
//! them types them (this crate knows no stage kinds).

use crate::matrix;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A config problem: names the file, the line and the key, and exits with status 2.
#[derive(Debug, thiserror::Error)]
#[error("{file}{}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct ConfigError {
    pub file: String,
    pub line: Option<usize>,
    pub message: String,
    /// Set when the stage could not be built because an input it names is missing (a path
    /// that does not exist, an empty dataset folder): the engine then blocks only that stage
    /// and what depends on it instead of refusing the whole config.
    pub missing_input: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    cache: CacheConfig,
    #[serde(default)]
    stages: BTreeMap<String, toml::Spanned<RawStage>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// Local cache directory; relative to the config file. Default: `cache/` in the working directory.
    pub dir: Option<PathBuf>,
    /// The shared remote cache: `s3://bucket/prefix`, `file:///path`, `http(s)://host/path`
    /// (WebDAV), or a directory (relative to the config file).
    pub remote: Option<String>,
    /// Push what this machine computes to the remote (default: only `--part` runs push).
    pub push: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStage {
    kind: String,
    #[serde(default = "default_reject_fraction")]
    max_reject_fraction: f64,
    params: Option<toml::Spanned<toml::Table>>,
    /// Param → list of values: one stage per combination (see `matrix.rs`).
    matrix: Option<toml::Spanned<toml::Table>>,
}

fn default_reject_fraction() -> f64 {
    0.05
}

/// One `[stages.NAME]` table.
#[derive(Debug, Clone)]
pub struct StageConfig {
    pub name: String,
    pub kind: String,
    /// The stage fails (and writes no manifest) when more than this fraction of samples is rejected.
    pub max_reject_fraction: f64,
    pub params: toml::Table,
    /// Where the params table starts in the file, to point errors at a line.
    params_offset: usize,
}

#[derive(Debug, Clone)]
pub struct PipelineConfig {
    pub path: PathBuf,
    /// The directory that relative paths in the config are resolved against.
    pub base_dir: PathBuf,
    pub cache_dir: PathBuf,
    /// `[cache] remote`, as written (never printed: it may hold credentials).
    pub remote: Option<String>,
    /// `[cache] push`.
    pub push: bool,
    pub stages: BTreeMap<String, StageConfig>,
    /// The `-S` overrides this config was loaded with, as given.
    pub overrides: Vec<String>,
    text: String,
}

/// The largest config file read (a pipeline of thousands of stages is well under it).
pub const MAX_CONFIG_BYTES: u64 = 16 << 20;

impl PipelineConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::load_with(path, &[])
    }

    /// [`Self::load`] with `-S stages.NAME.params.KEY=VALUE` overrides applied first.
    pub fn load_with(path: &Path, overrides: &[String]) -> Result<Self, ConfigError> {
        let file = path.display().to_string();
        let fail = |message: String| ConfigError {
            file: file.clone(),
            line: None,
            message,
            missing_input: None,
        };
        // A config is a small regular file: `-c /dev/zero` or a FIFO would never end.
        match std::fs::metadata(path) {
            Ok(m) if !m.is_file() => {
                return Err(fail(
                    "the config is not a regular file (a directory, FIFO or device); pass a .toml file with -c/--config".into(),
                ))
            }
            Ok(m) if m.len() > MAX_CONFIG_BYTES => {
                return Err(fail(format!(
                    "the config is {} bytes, over {MAX_CONFIG_BYTES}; pass the pipeline's .toml file",
                    m.len()
                )))
            }
            _ => {}
        }
        let text = std::fs::read_to_string(path).map_err(|e| {
            fail(format!(
                "cannot read the config: {e}; pass an existing file with -c/--config"
            ))
        })?;
        Self::parse_with(path, &text, overrides)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        Self::parse_with(path, text, &[])
    }

    /// Parses a config, applies `overrides` (`stages.NAME.params.KEY=VALUE`), then expands
    /// every `[stages.NAME.matrix]` (see `matrix.rs`).
    pub fn parse_with(path: &Path, text: &str, overrides: &[String]) -> Result<Self, ConfigError> {
        let file = path.display().to_string();
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError {
            file: file.clone(),
            line: e.span().map(|s| line_of(text, s.start)),
            message: e.message().to_string(),
            missing_input: None,
        })?;
        let base_dir = path
            .parent()
            .map(|p| {
                if p.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    p
                }
            })
            .unwrap_or(Path::new("."))
            .to_path_buf();
        let remote = raw.cache.remote.filter(|r| !r.trim().is_empty());
        let push = raw.cache.push.unwrap_or(false);
        let cache_dir = match raw.cache.dir {
            Some(d) => base_dir.join(d),
            None => PathBuf::from("cache"),
        };
        let mut stages = BTreeMap::new();
        let mut matrices: BTreeMap<String, (usize, toml::Table)> = BTreeMap::new();
        for (name, spanned) in raw.stages {
            let span_start = spanned.span().start;
            if !crate::trust::is_config_stage_name(&name) {
                return Err(ConfigError {
                    file,
                    line: Some(line_of(text, span_start)),
                    message: format!(
                        "stage name `{}` is not a plain name: use 1 to {} letters, digits, `_`, `-` or `.`, starting with a letter, digit or `_` (it names folders in the cache and appears in messages)",
                        crate::trust::shown(&name),
                        crate::trust::MAX_CONFIG_STAGE_NAME
                    ),
                    missing_input: None,
                });
            }
            let st = spanned.into_inner();
            if let Some(m) = st.matrix {
                matrices.insert(name.clone(), (m.span().start, m.into_inner()));
            }
            if !(0.0..=1.0).contains(&st.max_reject_fraction) {
                return Err(ConfigError {
                    file,
                    line: Some(line_of(text, span_start)),
                    message: format!(
                        "stages.{name}.max_reject_fraction = {} is not a fraction; use a value in [0, 1]",
                        st.max_reject_fraction
                    ),
                    missing_input: None,
                });
            }
            let (params_offset, params) = match st.params {
                Some(p) => (p.span().start, p.into_inner()),
                None => (span_start, toml::Table::new()),
            };
            stages.insert(
                name.clone(),
                StageConfig {
                    name,
                    kind: st.kind,
                    max_reject_fraction: st.max_reject_fraction,
                    params,
                    params_offset,
                },
            );
        }
        if stages.is_empty() {
            return Err(ConfigError {
                file,
                line: None,
                message: "no stages: add a [stages.NAME] table with a `kind`".into(),
                missing_input: None,
            });
        }
        let err = |line: Option<usize>, message: String| ConfigError {
            file: file.clone(),
            line,
            message,
            missing_input: None,
        };
        for o in overrides {
            let (stage, key, value) = matrix::parse_override(o).map_err(|m| err(None, m))?;
            let known = stages.keys().cloned().collect::<Vec<_>>().join(", ");
            let sc = stages
                .get_mut(&stage)
                .ok_or_else(|| err(None, format!("-S {o}: no stage `{stage}`; stages: {known}")))?;
            matrix::set_param(&mut sc.params, &key, value);
        }
        let stages =
            expand(stages, &matrices).map_err(|(at, m)| err(at.map(|o| line_of(text, o)), m))?;
        Ok(PipelineConfig {
            path: path.to_path_buf(),
            base_dir,
            cache_dir,
            remote,
            push,
            stages,
            overrides: overrides.to_vec(),
            text: text.to_string(),
        })
    }

    /// The overrides that set a param of `stage` (or of the stage it was expanded from).
    pub fn overrides_of(&self, stage: &str) -> Vec<String> {
        let base = stage.split('@').next().unwrap_or(stage);
        self.overrides
            .iter()
            .filter(|o| {
                matrix::parse_override(o)
                    .map(|(s, _, _)| s == base)
                    .unwrap_or(false)
            })
            .cloned()
            .collect()
    }

    /// The stages whose names match `pattern` (`*` any run of characters, `?` one).
    pub fn matching(&self, pattern: &str) -> Vec<String> {
        self.stages
            .keys()
            .filter(|n| glob_match(pattern.as_bytes(), n.as_bytes()))
            .cloned()
            .collect()
    }

    /// Resolves a path written in the config (relative to the config file).
    pub fn resolve(&self, p: &Path) -> PathBuf {
        self.base_dir.join(p)
    }

    /// A config error about `stages.<stage>.params`, pointing at the line of `key` when found.
    pub fn param_error(&self, stage: &str, key: Option<&str>, message: String) -> ConfigError {
        let line = self.stages.get(stage).map(|s| {
            key.and_then(|k| find_key_line(&self.text, s.params_offset, k))
                .unwrap_or_else(|| line_of(&self.text, s.params_offset))
        });
        ConfigError {
            file: self.path.display().to_string(),
            line,
            message: format!("[stages.{stage}.params]: {message}"),
            missing_input: None,
        }
    }

    /// A [`Self::param_error`] for an input that is not there (`path`, as the user wrote or
    /// resolved it): only this stage and its dependents are blocked by it.
    pub fn missing_input_error(
        &self,
        stage: &str,
        key: Option<&str>,
        path: &std::path::Path,
        message: String,
    ) -> ConfigError {
        ConfigError {
            missing_input: Some(path.display().to_string()),
            ..self.param_error(stage, key, message)
        }
    }

    /// Types a stage's params: unknown keys and wrong types become config errors with a line.
    pub fn typed_params<T: serde::de::DeserializeOwned>(
        &self,
        stage: &StageConfig,
    ) -> Result<T, ConfigError> {
        T::deserialize(toml::Value::Table(stage.params.clone())).map_err(|e| {
            let msg = e.to_string();
            let key = backticked(&msg);
            self.param_error(&stage.name, key.as_deref(), msg.trim().to_string())
        })
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// The line where `key = ...` appears at or after `from`.
fn find_key_line(text: &str, from: usize, key: &str) -> Option<usize> {
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let start = offset;
        offset += line.len();
        if offset <= from {
            continue;
        }
        let t = line.trim_start();
        if let Some(rest) = t.strip_prefix(key) {
            if rest.trim_start().starts_with('=') {
                return Some(line_of(text, start));
            }
        }
    }
    None
}

fn backticked(msg: &str) -> Option<String> {
    let a = msg.find('`')?;
    let b = msg[a + 1..].find('`')?;
    Some(msg[a + 1..a + 1 + b].to_string())
}

/// `*` and `?` globbing over stage names (`train_pc@mode=none*`).
pub fn glob_match(p: &[u8], s: &[u8]) -> bool {
    match (p.first(), s.first()) {
        (None, None) => true,
        (Some(b'*'), _) => glob_match(&p[1..], s) || (!s.is_empty() && glob_match(p, &s[1..])),
        (Some(b'?'), Some(_)) => glob_match(&p[1..], &s[1..]),
        (Some(a), Some(b)) if a == b => glob_match(&p[1..], &s[1..]),
        _ => false,
    }
}

/// Replaces every stage with a matrix, and every stage that reads one, by its variants.
/// Errors carry the byte offset of the matrix they are about.
fn expand(
    mut stages: BTreeMap<String, StageConfig>,
    matrices: &BTreeMap<String, (usize, toml::Table)>,
) -> Result<BTreeMap<String, StageConfig>, (Option<usize>, String)> {
    if matrices.is_empty() {
        return Ok(stages);
    }
    let mut own = BTreeMap::new();
    for (name, (offset, m)) in matrices {
        let vs = matrix::variants(m)
            .map_err(|e| (Some(*offset), format!("[stages.{name}.matrix]: {e}")))?;
        own.insert(name.clone(), vs);
    }
    let refs: BTreeMap<String, Vec<String>> = stages
        .iter()
        .map(|(n, sc)| {
            (
                n.clone(),
                matrix::referenced(&sc.params, |s| s != n && stages.contains_key(s)),
            )
        })
        .collect();
    let plan = matrix::expand_names(&own, &refs).map_err(|e| (None, e))?;
    for (name, variants) in &plan {
        let Some(base) = stages.remove(name) else {
            continue;
        };
        for (suffix, sets) in variants {
            let mut sc = base.clone();
            sc.name = format!("{name}@{suffix}");
            if !crate::trust::is_stage_name(&sc.name) {
                return Err((
                    matrices.get(name).map(|m| m.0),
                    format!(
                        "[stages.{name}.matrix]: the variant name `{}` is not a plain name (letters, digits, . _ - @ = , and at most 128 characters); use simpler values",
                        sc.name
                    ),
                ));
            }
            for (k, v) in sets {
                sc.params.insert(k.clone(), v.clone());
            }
            // Point the params that name an expanded upstream at its matching variant.
            for (_, v) in sc.params.iter_mut() {
                let renamed = match &*v {
                    toml::Value::String(up) if up != name && plan.contains_key(up.as_str()) => {
                        Some(format!("{up}@{suffix}"))
                    }
                    _ => None,
                };
                if let Some(r) = renamed {
                    *v = toml::Value::String(r);
                }
            }
            stages.insert(sc.name.clone(), sc);
        }
    }
    Ok(stages)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct P {
        n: u32,
    }

    /// Issue 27: a stage name is a plain, printable, bounded identifier, checked at load
    /// (the fuzz target `stage_name` searches for a counterexample).
    #[test]
    fn stage_names_are_plain_identifiers() {
        let long = "x".repeat(65);
        for bad in [
            "a/b",
            "",
            ".",
            "..",
            "a b",
            "a\\nb",
            "a\\u001bb",
            "-a",
            ".a",
            "a@b",
            "a=b",
            &long,
            "é",
        ] {
            let text = format!("[cache]\n\n[stages.\"{bad}\"]\nkind = \"k\"\n");
            let e = PipelineConfig::parse(Path::new("c.toml"), &text).unwrap_err();
            assert_eq!(e.line, Some(3), "{bad:?}: {e}");
            assert!(e.to_string().contains("stage name"), "{e}");
            assert!(!e.to_string().contains('\u{1b}'), "{e}");
        }
        for good in [
            "pc_tokens",
            "train_pc-2",
            "llm.block_15",
            "_x",
            &"y".repeat(64),
        ] {
            let text = format!("[stages.\"{good}\"]\nkind = \"k\"\n");
            let c = PipelineConfig::parse(Path::new("c.toml"), &text).unwrap();
            assert!(c.stages.contains_key(good));
            assert!(crate::trust::is_stage_name(good));
        }
    }

    #[test]
    fn unknown_top_level_key_names_the_line() {
        let e = PipelineConfig::parse(Path::new("c.toml"), "[cache]\ndir = \"x\"\nbogus = 1\n")
            .unwrap_err();
        assert_eq!(e.line, Some(3), "{e}");
        assert!(e.to_string().contains("bogus"), "{e}");
    }

    #[test]
    fn unknown_param_names_line_and_key() {
        let text = "[stages.a]\nkind = \"k\"\n[stages.a.params]\nn = 1\nnn = 2\n";
        let c = PipelineConfig::parse(Path::new("c.toml"), text).unwrap();
        let e = c.typed_params::<P>(&c.stages["a"]).unwrap_err();
        assert_eq!(e.line, Some(5), "{e}");
        assert!(e.to_string().contains("nn"), "{e}");
    }

    #[test]
    fn paths_resolve_against_the_config_dir() {
        let c = PipelineConfig::parse(
            Path::new("configs/demo.toml"),
            "[cache]\ndir = \"../cache\"\n[stages.a]\nkind = \"k\"\n",
        )
        .unwrap();
        assert_eq!(c.cache_dir, Path::new("configs/../cache"));
    }
}
