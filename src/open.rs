//! Opening the pipeline a command works on: the config (with `-S` overrides), its stages,
//! and the remote cache it shares (`--remote` / `LM4VE_REMOTE`, else the config's
//! `[cache] remote`). Used by every command module; imports none of them.

use crate::cli::Cli;
use anyhow::Result;
use lm4ve_pipeline::{ConfigError, Pipeline, PipelineConfig, Remote, UsageError};

pub(crate) fn open(cli: &Cli) -> Result<Pipeline> {
    let config = PipelineConfig::load_with(&cli.config, &cli.set)?;
    let mut p = Pipeline::new(config, cli.cache.clone(), &lm4ve_stages::build_stage)?;
    let remote = resolve_remote(cli, &p.config)?;
    let push = p.config.push;
    p.set_remote(remote, push);
    Ok(p)
}

/// The remote this command uses: `--remote URL` / `LM4VE_REMOTE` (`none`: no remote), else
/// `[cache] remote` (relative directories resolve against the config file).
pub fn resolve_remote(cli: &Cli, config: &PipelineConfig) -> Result<Option<Remote>> {
    // A bare `--remote` (as in `cache verify --remote`) names no URL: then the environment's
    // LM4VE_REMOTE, which the bare flag shadowed while parsing, still applies.
    // `--remote` may be given twice (`lm4ve --remote URL cache verify --remote`): the last
    // URL counts.
    let env = std::env::var("LM4VE_REMOTE").ok();
    let given = cli
        .remote
        .iter()
        .rev()
        .map(|u| u.trim())
        .find(|u| !u.is_empty());
    let url = given.or(env.as_deref().map(str::trim));
    match url {
        Some("none") => Ok(None),
        Some(url) if !url.is_empty() => Remote::open(url, None).map(Some).map_err(|e| {
            UsageError(format!(
                "--remote / LM4VE_REMOTE: {e} (use s3://BUCKET/PREFIX, file:///PATH, https://HOST/PATH, an absolute directory, or `none`)"
            ))
            .into()
        }),
        _ => match &config.remote {
            Some(url) => Remote::open(url, Some(&config.base_dir))
                .map(Some)
                .map_err(|e| {
                    ConfigError {
                        file: config.path.display().to_string(),
                        line: None,
                        message: format!("[cache] remote: {e}"),
                        missing_input: None,
                    }
                    .into()
                }),
            None => Ok(None),
        },
    }
}
