//! The remote-cache commands: `cache push`, `cache pull`, `cache verify --remote`,
//! `cache gc --remote` (which remote a command uses is decided in `open.rs`). The remote's
//! URL is never printed: it can hold credentials; output names it by kind ("the s3 remote").

use crate::cli::Cli;
use anyhow::Result;
use lm4ve_pipeline::key::short;
use lm4ve_pipeline::remote::sync::{self, PushReport};
use lm4ve_pipeline::{Pipeline, Progress, Remote, UsageError};
use std::collections::BTreeSet;
use std::process::ExitCode;

/// The pipeline with its remote, or a usage error when there is none.
fn open_with_remote(cli: &Cli) -> Result<Pipeline> {
    let p = crate::open::open(cli)?;
    if p.remote().is_none() {
        return Err(UsageError(format!(
            "no remote cache: pass --remote URL, set LM4VE_REMOTE, or add `remote = \"s3://BUCKET/PREFIX\"` under [cache] in {}",
            cli.config.display()
        ))
        .into());
    }
    Ok(p)
}

fn remote_of(p: &Pipeline) -> Result<&Remote> {
    p.remote()
        .ok_or_else(|| UsageError("no remote cache configured".into()).into())
}

fn stages_of(p: &Pipeline, stage: Option<&str>) -> Result<Vec<String>> {
    match stage {
        None | Some("all") => Ok(p.dag().order().to_vec()),
        Some(s) if p.stage(s).is_some() => Ok(vec![s.to_string()]),
        Some(s) => Err(UsageError(format!(
            "no stage `{s}` in {}; stages: {}",
            p.config.path.display(),
            p.dag().order().join(", ")
        ))
        .into()),
    }
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// One line about a push, for `cache push` and for `pipeline run` with push on.
pub fn push_summary(r: &PushReport, remote: &str) -> String {
    if r.already {
        // key.rs: the first artifact published for a key wins.
        return format!(
            "already on {remote}; nothing pushed (the copy published first is kept, key.rs)"
        );
    }
    let mut s = format!(
        "pushed to {remote}: {} objects ({}) uploaded, {} already there, {} unit records",
        r.objects_uploaded,
        mb(r.bytes),
        r.objects_present,
        r.units
    );
    if r.resumed > 0 {
        s.push_str(&format!(", {} interrupted uploads resumed", r.resumed));
    }
    if r.refreshed > 0 {
        s.push_str(&format!(
            ", {} old objects uploaded again so remote gc spares them",
            r.refreshed
        ));
    }
    s.push_str(if r.manifest {
        ", manifest (complete)"
    } else {
        " (partial: no manifest yet)"
    });
    s.push_str(&format!(", {:.2} s", r.seconds));
    s
}

/// The pipeline with its remote, the stages a transfer command acts on, and the content
/// keys of those stages (and of what they depend on) computed.
fn open_for_transfer(cli: &Cli, stage: Option<&str>) -> Result<(Pipeline, Vec<String>)> {
    let mut p = open_with_remote(cli)?;
    let stages = stages_of(&p, stage)?;
    let closure: Vec<String> = stages
        .iter()
        .flat_map(|s| p.dag().closure(s))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    p.compute_keys_of(&closure, false)?;
    Ok((p, stages))
}

pub fn push(cli: &Cli, stage: Option<&str>, force: bool) -> Result<ExitCode> {
    let (p, stages) = open_for_transfer(cli, stage)?;
    let _guard = p.hold_off_gc()?;
    let progress = Progress::new(cli.quiet);
    let remote = remote_of(&p)?;
    let name = remote.describe();
    let mut failed = 0;
    for s in &stages {
        let key = p.key(s).map(|k| k.key.clone()).unwrap_or_default();
        let local_units = lm4ve_pipeline::artifact::Journal::new(&p.cache, &key).count();
        if !p.cache.manifest_path(&key).exists() && local_units == 0 {
            println!(
                "{s:<16} skipped {}  not in the local cache (run `lm4ve pipeline run --stage {s}` first)",
                short(&key)
            );
            continue;
        }
        match sync::push_artifact(remote, &p.cache, &key, s, force, &progress) {
            Ok(r) => println!(
                "{s:<16} pushed  {}  {}",
                short(&key),
                push_summary(&r, &name)
            ),
            Err(e) => {
                failed += 1;
                eprintln!("error: {s}: pushing {} to {name}: {e}", short(&key));
            }
        }
    }
    Ok(if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

pub fn pull(cli: &Cli, stage: Option<&str>) -> Result<ExitCode> {
    let (p, stages) = open_for_transfer(cli, stage)?;
    let _guard = p.hold_off_gc()?;
    let progress = Progress::new(cli.quiet);
    let remote = remote_of(&p)?;
    let name = remote.describe();
    let mut failed = 0;
    for s in &stages {
        let key = p.key(s).map(|k| k.key.clone()).unwrap_or_default();
        let k = short(&key);
        if p.cache.manifest_path(&key).exists() {
            println!("{s:<16} fresh   {k}  (already in the local cache)");
            continue;
        }
        match p.pull_artifact(s, &progress) {
            Ok(Some(r)) => {
                println!(
                    "{s:<16} pulled  {k}  from {name}: {} objects, {}, verified, {:.2} s",
                    r.objects,
                    mb(r.bytes),
                    r.seconds
                );
                continue;
            }
            Ok(None) => {}
            Err(e) => {
                failed += 1;
                eprintln!("error: {s}: pulling {k} from {name}: {e}");
                continue;
            }
        }
        // No finished artifact: take the finished units (what `--part` runs published).
        let wanted = match sync::remote_units(remote, &key) {
            Ok(w) => w,
            Err(e) => {
                failed += 1;
                eprintln!("error: {s}: listing units of {k} on {name}: {e}");
                continue;
            }
        };
        if wanted.is_empty() {
            println!("{s:<16} missing {k}  not on {name}");
            continue;
        }
        let schema = p.stage(s).and_then(|st| st.schema());
        match sync::pull_units(
            remote,
            &p.cache,
            &key,
            s,
            &wanted,
            schema.as_ref(),
            &progress,
        ) {
            Ok(u) => {
                for why in &u.refused {
                    eprintln!("warning: {s}: refused from {name}: {why}");
                }
                println!(
                    "{s:<16} partial {k}  {} finished units pulled from {name} ({} objects, {}); `lm4ve pipeline run --stage {s}` finishes it",
                    u.records.len(),
                    u.report.objects,
                    mb(u.report.bytes)
                );
            }
            Err(e) => {
                failed += 1;
                eprintln!("error: {s}: pulling units of {k} from {name}: {e}");
            }
        }
    }
    Ok(if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

pub fn verify(cli: &Cli) -> Result<ExitCode> {
    let p = open_with_remote(cli)?;
    let remote = remote_of(&p)?;
    let name = remote.describe();
    let report = sync::verify(remote, &Progress::new(cli.quiet))?;
    for (object, user, why) in &report.corrupt {
        println!(
            "CORRUPT remote object {object} ({user}): {why}; push a good copy with `lm4ve cache push --force` from a machine that has it"
        );
    }
    for (record, object) in &report.missing {
        println!(
            "MISSING remote object {object} named by {record}; `lm4ve cache push --force` from a machine that has it"
        );
    }
    for why in &report.bad_records {
        println!("BAD record: {why}");
    }
    for link in remote.refused_links() {
        println!("REFUSED {link}: a symbolic link on {name}; not followed");
    }
    println!(
        "checked {} objects ({}) on {name}: {} corrupt, {} missing, {} bad records",
        report.objects,
        mb(report.bytes),
        report.corrupt.len(),
        report.missing.len(),
        report.bad_records.len()
    );
    // A refused link is damage too: what it hides was not checked.
    Ok(if report.ok() && remote.refused_links().is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

pub fn gc(cli: &Cli, dry_run: bool, keep_days: f64) -> Result<ExitCode> {
    let mut p = open_with_remote(cli)?;
    // The remote serves every machine: gc it only with every key of a complete config.
    let (keep, undecided) = p.gc_keys();
    if !undecided.is_empty() {
        let list: Vec<String> = undecided
            .iter()
            .map(|(s, why)| format!("`{}`: {why}", lm4ve_pipeline::trust::shown(s)))
            .collect();
        return Err(lm4ve_pipeline::UsageError(format!(
            "cache gc --remote needs the key of every stage of {}, and these cannot be computed now:\n  {}\nnothing was removed; restore the inputs (or gc from a machine that has them)",
            cli.config.display(),
            list.join("\n  ")
        ))
        .into());
    }
    let remote = remote_of(&p)?;
    // Unreferenced remote objects younger than this are kept: machines share no lock, and
    // a push in flight uploads objects before the records that name them.
    let grace = lm4ve_pipeline::remote::gc_grace();
    let r = sync::gc(remote, &keep, keep_days, grace, dry_run)?;
    if dry_run && !r.removed.is_empty() {
        println!("would remove from {}:", remote.describe());
        for (key, stage, age) in &r.removed {
            println!(
                "  {}  {:<24} {:.1} days old",
                short(key),
                lm4ve_pipeline::trust::shown(stage),
                age.as_secs_f64() / 86_400.0
            );
        }
    }
    for link in remote.refused_links() {
        println!(
            "REFUSED {link}: a symbolic link on {}; not followed, not deleted (remove it by hand)",
            remote.describe()
        );
    }
    println!(
        "{}{}: {} artifacts removed, {} kept; {} objects ({}) removed, {} kept, {} unreferenced but younger than {} h kept",
        if dry_run { "dry run: " } else { "" },
        remote.describe(),
        r.artifacts_removed,
        r.artifacts_kept,
        r.objects_removed,
        mb(r.bytes_freed),
        r.objects_kept,
        r.objects_young,
        grace.as_secs() / 3600
    );
    Ok(ExitCode::SUCCESS)
}
