//! `lm4ve pipeline run --stage S --dry-run`: what the run would do, without doing it. For
//! each stage it would consider, in DAG order: a `train` stage's parameter counts, per-step
//! memory and FLOPs at its configured size (`lm4ve_stages::train::plan`); any other stage's
//! work units, or why it cannot run (a missing input). Nothing is computed, pulled or written
//! (the cache directory is opened, as `pipeline status` opens it), and no weights or shards
//! are read: the block's shape comes from its checkpoint's config.json or GGUF header.

use crate::cli::{Cli, RunArgs};
use anyhow::Result;
use lm4ve_pipeline::{Pipeline, PipelineConfig, StageCtx, UsageError};
use std::collections::BTreeMap;
use std::process::ExitCode;

pub fn dry_run(cli: &Cli, args: &RunArgs) -> Result<ExitCode> {
    let config = PipelineConfig::load_with(&cli.config, &cli.set)?;
    // A stage that cannot be built (a missing input, a checkpoint directory with only its
    // config.json) keeps its place in the DAG and is reported, not fatal: the plan of the
    // train stages after it needs only the configs.
    let tolerant = |c: &PipelineConfig, sc: &lm4ve_pipeline::StageConfig| {
        lm4ve_stages::build_stage(c, sc).map_err(|mut e| {
            if e.missing_input.is_none() {
                e.missing_input = Some(String::new());
            }
            e
        })
    };
    let p = Pipeline::new(config, cli.cache.clone(), &tolerant)?;
    let targets: Vec<String> = if args.stage == "all" {
        p.dag().order().to_vec()
    } else if args.stage.contains(['*', '?']) {
        p.config.matching(&args.stage)
    } else if p.stage(&args.stage).is_some() {
        vec![args.stage.clone()]
    } else {
        Vec::new()
    };
    if targets.is_empty() {
        return Err(UsageError(format!(
            "no stage matches `{}` in {}",
            args.stage,
            cli.config.display()
        ))
        .into());
    }
    let mut wanted = std::collections::BTreeSet::new();
    for t in &targets {
        wanted.extend(p.dag().closure(t));
    }
    let order: Vec<&String> = p
        .dag()
        .order()
        .iter()
        .filter(|s| wanted.contains(*s))
        .collect();
    let cuda = lm4ve_stages::train::device::would_use_cuda();
    let upstream = BTreeMap::new();
    let mut failed = false;
    for name in order {
        let (Some(stage), Some(sc)) = (p.stage(name), p.config.stages.get(name)) else {
            continue;
        };
        let kind = stage.kind().to_string();
        if kind == lm4ve_stages::train::stage::TRAIN_KIND {
            println!("{name:<16} train");
            match lm4ve_stages::train::dry_run::plan_train(&p.config, sc, cuda) {
                Ok(plan) => print!("{}", plan.render()),
                Err(e) => {
                    println!("  cannot plan: {e:#}");
                    failed = true;
                }
            }
            continue;
        }
        let ctx = StageCtx {
            name,
            key: "",
            cache: &p.cache,
            upstream: &upstream,
            forced: false,
        };
        match stage.plan(&ctx) {
            Ok(units) => {
                let ids: Vec<&str> = units.iter().map(|u| u.id.as_str()).collect();
                let shown = match ids.as_slice() {
                    [] => String::new(),
                    [one] => format!(" ({one})"),
                    [first, .., last] => format!(" ({first} … {last})"),
                };
                println!(
                    "{name:<16} {kind}: {} unit{}{shown}",
                    units.len(),
                    if units.len() == 1 { "" } else { "s" }
                );
            }
            Err(e) => println!(
                "{name:<16} {kind}: cannot run: {}",
                first_line(&format!("{e:#}"))
            ),
        }
    }
    println!("dry run: nothing was run");
    // A train stage whose own config is wrong would fail the real run's start: exit 2 as a
    // config error does.
    Ok(if failed {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}
