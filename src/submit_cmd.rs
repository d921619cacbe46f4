//! `lm4ve pipeline submit EVAL --out FILE`: a forecasting eval's predictions
//! (`predictions-<checkpoint>.parquet` in its artifact) → the challenge's submission file,
//! Argoverse 1.1's h5 or Argoverse 2's parquet (`lm4ve_stages::argoverse::submit`). The
//! eval's data stage says which challenge; `--out`'s extension must agree. `--predictions
//! FILE` converts a predictions file directly (one exported with `pipeline export`).

use crate::cli::{CheckpointArg, Cli};
use anyhow::{Context, Result};
use lm4ve_pipeline::{Manifest, UsageError};
use lm4ve_stages::argoverse::submit::{predictions_file, read_predictions, Challenge};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// What to convert: an eval stage's artifact or a predictions file.
pub enum Source<'a> {
    Stage(&'a str),
    File(&'a Path),
}

fn challenge_of_out(out: &Path) -> Result<Challenge> {
    Challenge::of_file(out).ok_or_else(|| {
        UsageError(format!(
            "--out {}: name the submission file `.h5` (Argoverse 1.1, argoverse-api's h5) or `.parquet` (Argoverse 2, av2's ChallengeSubmission)",
            out.display()
        ))
        .into()
    })
}

pub fn submit(
    cli: &Cli,
    source: Source,
    out: &Path,
    checkpoint: Option<CheckpointArg>,
) -> Result<ExitCode> {
    let want = challenge_of_out(out)?;
    let (pred_path, what) = match source {
        Source::File(path) => {
            crate::guard::refuse_overlap("--out", out, &[("the predictions file", path)])?;
            (path.to_path_buf(), path.display().to_string())
        }
        Source::Stage(stage) => stage_predictions(cli, stage, want, checkpoint, out)?,
    };
    let forecasts = read_predictions(&pred_path)?;
    // Written beside the target and renamed: a failed rule or a crash leaves no half file.
    let tmp = tmp_name(out);
    if let Err(e) = want.write(&tmp, &forecasts) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e.context(format!("{what}: no submission written")));
    }
    std::fs::rename(&tmp, out).with_context(|| format!("moving {} into place", out.display()))?;
    let modes = forecasts
        .iter()
        .map(|f| f.trajectories.len())
        .max()
        .unwrap_or(0);
    println!(
        "{what}: wrote {} scenarios (up to {modes} modes, {} steps, world coordinates) to {} — the {} challenge's format",
        forecasts.len(),
        want.steps(),
        out.display(),
        want.name()
    );
    Ok(ExitCode::SUCCESS)
}

fn tmp_name(out: &Path) -> PathBuf {
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    out.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// The predictions file of eval `stage`'s artifact for the checkpoint asked for (default:
/// the one its metrics.json reports), after checking the stage forecasts `want`'s release.
fn stage_predictions(
    cli: &Cli,
    stage: &str,
    want: Challenge,
    checkpoint: Option<CheckpointArg>,
    out: &Path,
) -> Result<(PathBuf, String)> {
    let mut p = crate::open::open(cli)?;
    let config = cli.config.display().to_string();
    let sc = p
        .config
        .stages
        .get(stage)
        .ok_or_else(|| UsageError(format!("no stage `{stage}` in {config}")))?;
    if sc.kind != "eval" {
        return Err(UsageError(format!(
            "`{stage}` is a {} stage; submit takes the eval stage of a forecasting task (its predictions)",
            sc.kind
        ))
        .into());
    }
    let data = sc.params.get("data").and_then(|d| d.as_str()).unwrap_or("");
    let data_kind = p
        .config
        .stages
        .get(data)
        .map(|d| d.kind.as_str())
        .unwrap_or("");
    let Some(release) = Challenge::of_data_kind(data_kind) else {
        return Err(UsageError(format!(
            "`{stage}` evaluates `{data}` ({data_kind}); submissions are for forecasting on av.tokens (Argoverse 1.1) or av2.tokens (Argoverse 2)"
        ))
        .into());
    };
    if release != want {
        return Err(UsageError(format!(
            "`{stage}` forecasts {}, but --out {} names the {} format; use `.{}`",
            release.name(),
            out.display(),
            want.name(),
            if release == Challenge::Av1 {
                "h5"
            } else {
                "parquet"
            }
        ))
        .into());
    }
    let closure = p.dag().closure(stage);
    p.compute_keys_of(&closure, false)?;
    let key = p.key(stage).map(|k| k.key.clone()).unwrap_or_default();
    let path = p.cache.manifest_path(&key);
    anyhow::ensure!(
        path.exists(),
        "`{stage}` is not built for the current config; run `lm4ve -c {config} pipeline run --stage {stage}`"
    );
    crate::guard::refuse_overlap(
        "--out",
        out,
        &[("the cache", p.cache.root()), ("the config", &cli.config)],
    )?;
    let m = Manifest::load_checked(&path, &key)?;
    let reported = m.meta["reported"]["checkpoint"].as_str().unwrap_or("last");
    let ck = match checkpoint {
        Some(CheckpointArg::Best) => "best",
        Some(CheckpointArg::Last) => "last",
        Some(CheckpointArg::Ema) => "ema",
        None => reported,
    };
    let name = predictions_file(ck);
    let Some(file) = m.files.iter().find(|f| f.name == name) else {
        let why = if ck == "best" {
            "the train artifact kept no best-epoch weights apart from the last; use --checkpoint last"
        } else {
            "an eval built before evals wrote their predictions; rebuild it with `pipeline run --force --stage` it"
        };
        anyhow::bail!("`{stage}`'s artifact has no {name} ({why})");
    };
    lm4ve_pipeline::verified::check_object(&p.cache, &file.blake3).map_err(|e| {
        anyhow::anyhow!("{e}; run `lm4ve -c {config} pipeline run --stage {stage}` to rebuild it")
    })?;
    let split = m.meta["split"].as_str().unwrap_or("?");
    if split != "test" {
        eprintln!(
            "note: `{stage}` forecasts the `{split}` split; the challenge scores `test` (an eval with params.split = \"test\")"
        );
    }
    let dir = path.parent().context("manifest without a folder")?;
    Ok((
        dir.join(&file.path),
        format!("{stage} ({split} split, {ck} weights)"),
    ))
}
