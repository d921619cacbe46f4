//! One function per command: load the config, call the engine, print for humans or JSON.

use crate::cli::{CacheCmd, Cli, Command, DemoDataArgs, PipelineCmd, RunArgs};
use anyhow::{Context, Result};
use lm4ve_pipeline::engine::State;
use lm4ve_pipeline::key::short;
use lm4ve_pipeline::{
    maintenance, ConfigError, Manifest, Outcome, PipelineConfig, Progress, RunOptions, StageFailed,
    UsageError,
};
use std::process::ExitCode;

/// 2 for bad usage or config, 1 for everything else (a stage failed, IO trouble).
pub fn exit_status(e: &anyhow::Error) -> u8 {
    if e.downcast_ref::<ConfigError>().is_some() || e.downcast_ref::<UsageError>().is_some() {
        2
    } else {
        1
    }
}

pub fn dispatch(cli: &Cli) -> Result<ExitCode> {
    match &cli.command {
        Command::Pipeline(cmd) => match cmd {
            PipelineCmd::Run(args) => run(cli, args),
            PipelineCmd::Status { json, rehash } => status(cli, *json, *rehash),
            PipelineCmd::Show { stage, json } => show_matching(cli, stage, *json),
            PipelineCmd::Dag => dag(cli),
            PipelineCmd::Report {
                format,
                across,
                stage,
                checkpoint,
                plot,
            } => crate::report_cmd::report(
                cli,
                *format,
                across,
                stage.as_deref(),
                *checkpoint,
                plot.as_deref(),
            ),
            PipelineCmd::Export { stage, out } => crate::report_cmd::export(cli, stage, out),
            PipelineCmd::Submit {
                stage,
                out,
                checkpoint,
                predictions,
            } => {
                let source = match (predictions, stage) {
                    (Some(file), _) => crate::submit_cmd::Source::File(file),
                    (None, Some(stage)) => crate::submit_cmd::Source::Stage(stage),
                    (None, None) => {
                        return Err(UsageError(
                            "submit: name an eval stage or --predictions FILE".into(),
                        )
                        .into())
                    }
                };
                crate::submit_cmd::submit(cli, source, out, *checkpoint)
            }
        },
        Command::Cache(CacheCmd::Verify) if cli.remote_flag => crate::remote_cmd::verify(cli),
        Command::Cache(CacheCmd::Verify) => verify(cli),
        Command::Cache(CacheCmd::Gc { dry_run, keep_days }) if cli.remote_flag => {
            crate::remote_cmd::gc(cli, *dry_run, *keep_days)
        }
        Command::Cache(CacheCmd::Gc { dry_run, keep_days }) => gc(cli, *dry_run, *keep_days),
        Command::Cache(CacheCmd::Push { stage, force }) => {
            crate::remote_cmd::push(cli, stage.as_deref(), *force)
        }
        Command::Cache(CacheCmd::Pull { stage }) => crate::remote_cmd::pull(cli, stage.as_deref()),
        Command::DemoData(args) => demo_data(args),
        Command::Llm(cmd) => crate::llm_cmd::run(cmd),
        Command::BenchTrain(args) => crate::bench_cmd::run(args),
        Command::BenchAllreduce(args) => crate::bench_cmd::allreduce(args),
        Command::BenchResample(args) => crate::bench_cmd::resample(args),
        Command::BenchVideoFrames(args) => crate::bench_video::run(args),
        Command::BenchImageLoader(args) => crate::bench_image::run(args),
    }
}

fn run(cli: &Cli, args: &RunArgs) -> Result<ExitCode> {
    if args.dry_run {
        return crate::plan_cmd::dry_run(cli, args);
    }
    let (_job, data_parallel) = crate::job::join_job()?;
    let mut p = crate::open::open(cli)?;
    if args.push {
        p.set_push(true);
    }
    let opts = RunOptions {
        target: (args.stage != "all").then(|| args.stage.clone()),
        force: args.force,
        rehash: args.rehash,
        part: args.part,
        assemble: args.assemble,
        data_parallel,
        concurrent_stages: args.concurrent_stages.into(),
    };
    let reports = p.run(&opts, &Progress::new(cli.quiet))?;
    let mut ran = 0;
    let mut fresh = 0;
    let mut pulled = 0;
    let remote_name = p.remote().map(|r| r.describe()).unwrap_or_default();
    for r in &reports {
        let k = short(&r.key);
        match &r.outcome {
            Outcome::Pulled {
                objects,
                bytes,
                seconds,
            } => {
                pulled += 1;
                println!(
                    "{:<16} pulled  {k}  from {remote_name}: {objects} objects, {:.1} MB, verified, {seconds:.2} s",
                    r.stage,
                    *bytes as f64 / 1e6
                );
            }
            Outcome::Fresh => {
                fresh += 1;
                println!("{:<16} fresh   {k}  (cached, nothing to do)", r.stage);
            }
            Outcome::BuiltElsewhere => {
                fresh += 1;
                println!(
                    "{:<16} fresh   {k}  (built by another process while we waited)",
                    r.stage
                );
            }
            Outcome::Built {
                units_run,
                units_reused,
                units_pulled,
                samples,
                rejects,
                seconds,
            } => {
                ran += 1;
                println!(
                    "{:<16} built   {k}  {samples} samples, {rejects} rejects, {units_run} units run, {units_reused} resumed{}, {seconds:.2} s",
                    r.stage,
                    pulled_units(*units_pulled, &remote_name)
                );
            }
            Outcome::Replica { rank, units_run } => {
                ran += 1;
                println!(
                    "{:<16} rank {rank}  {k}  {units_run} units run with rank 0 (rank 0 stores them)",
                    r.stage
                );
            }
            Outcome::PartDone {
                units_run,
                units_pulled,
                units_done,
                units_total,
            } => {
                ran += 1;
                println!(
                    "{:<16} part    {k}  {units_run} units run{}; {units_done}/{units_total} units of the stage done{}",
                    r.stage,
                    pulled_units(*units_pulled, &remote_name),
                    if units_done < units_total {
                        "; when every part is done, run without --part to assemble"
                    } else {
                        ""
                    }
                );
            }
        }
        if let Some(pushed) = &r.pushed {
            println!(
                "{:<16} {}",
                "",
                crate::remote_cmd::push_summary(pushed, &remote_name)
            );
        }
    }
    let pulled = if pulled > 0 {
        format!(", {pulled} pulled")
    } else {
        String::new()
    };
    if ran == 0 && pulled.is_empty() {
        println!("nothing to do: 0 stages run, {fresh} up to date");
    } else {
        println!("{ran} stages run{pulled}, {fresh} up to date");
    }
    Ok(ExitCode::SUCCESS)
}

fn pulled_units(n: usize, remote: &str) -> String {
    if n > 0 {
        format!(", {n} pulled from {remote}")
    } else {
        String::new()
    }
}

fn status(cli: &Cli, json: bool, rehash: bool) -> Result<ExitCode> {
    let mut p = crate::open::open(cli)?;
    let statuses = p.status(rehash)?;
    if json {
        let v: Vec<serde_json::Value> = statuses
            .iter()
            .map(|s| {
                serde_json::json!({"stage": s.stage, "state": s.state, "reason": s.reason, "reasons": s.reasons, "key": s.key})
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        for s in &statuses {
            let state = match s.state {
                State::Fresh => "fresh",
                State::Stale => "stale",
                State::Missing => "missing",
            };
            let reason = if s.reason.is_empty() {
                String::new()
            } else {
                format!("  {}", s.reason)
            };
            println!("{:<16} {state:<8} {}{reason}", s.stage, short(&s.key));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `show` of one stage, or of every stage a glob (`'train_pc@mode=none*'`) matches.
fn show_matching(cli: &Cli, pattern: &str, json: bool) -> Result<ExitCode> {
    if !pattern.contains(['*', '?']) {
        return show(cli, pattern, json);
    }
    let config = PipelineConfig::load_with(&cli.config, &cli.set)?;
    let names = config.matching(pattern);
    if names.is_empty() {
        return Err(UsageError(format!(
            "no stage matches `{pattern}` in {}",
            cli.config.display()
        ))
        .into());
    }
    for (i, name) in names.iter().enumerate() {
        if i > 0 && !json {
            println!();
        }
        show(cli, name, json)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn show(cli: &Cli, stage: &str, json: bool) -> Result<ExitCode> {
    let mut p = crate::open::open(cli)?;
    if p.stage(stage).is_none() {
        return Err(UsageError(format!("no stage `{stage}` in {}", cli.config.display())).into());
    }
    let closure = p.dag().closure(stage);
    p.compute_keys_of(&closure, false)?;
    let key = p.key(stage).map(|k| k.key.clone()).unwrap_or_default();
    let path = p.cache.manifest_path(&key);
    if !path.exists() {
        return Err(StageFailed {
            stage: stage.into(),
            message: format!(
                "not built for the current config (key {}); run `lm4ve -c {} pipeline run --stage {stage}`",
                short(&key),
                cli.config.display()
            ),
        }
        .into());
    }
    let m = Manifest::load_checked(&path, &key)?;
    let rejects_path = p.cache.artifact_dir(&key).join("rejects.jsonl");
    let shard_paths: Vec<String> = m
        .shard_paths(&path, None)
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    if json {
        let v = serde_json::json!({
            "stage": stage,
            "key": key,
            "manifest": path.display().to_string(),
            "samples": m.samples,
            "rejects": m.rejects,
            "shards": m.shards.len(),
            "splits": m.splits,
            "rejects_file": rejects_path.display().to_string(),
            "shard_paths": shard_paths,
            "schema": m.schema,
            "meta": m.meta,
            "predictions": crate::predictions_cmd::listing(&m, &path),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("stage     {stage} ({})", m.kind);
        println!("key       {key}");
        println!("manifest  {}", path.display());
        println!(
            "samples   {} ({})",
            m.samples,
            m.splits
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        println!("rejects   {} ({})", m.rejects, rejects_path.display());
        println!("shards    {}", m.shards.len());
        if let Some(schema) = &m.schema {
            for f in schema {
                println!("  field   {} {} {:?}", f.name, f.dtype, f.shape);
            }
        }
        for f in &m.files {
            println!(
                "file      {} ({} bytes) {}",
                f.name,
                f.bytes,
                path.parent()
                    .map(|d| d.join(&f.path).display().to_string())
                    .unwrap_or_default()
            );
        }
        for line in crate::predictions_cmd::show_lines(&m, &path) {
            println!("{line}");
        }
        for line in lm4ve_stages::train::registry::metrics_summary(&m.meta) {
            println!("{line}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn dag(cli: &Cli) -> Result<ExitCode> {
    let p = crate::open::open(cli)?;
    for name in p.dag().order() {
        let kind = p
            .stage(name)
            .map(|s| s.kind().to_string())
            .unwrap_or_default();
        let needs = p.dag().needs(name);
        if needs.is_empty() {
            println!("{name} [{kind}]");
        } else {
            println!("{name} [{kind}] <- {}", needs.join(", "));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn verify(cli: &Cli) -> Result<ExitCode> {
    let cache_dir = match &cli.cache {
        Some(c) => c.clone(),
        None => PipelineConfig::load(&cli.config)
            .map(|c| c.cache_dir)
            .unwrap_or_else(|_| "cache".into()),
    };
    let cache = lm4ve_pipeline::Cache::open(&cache_dir)?;
    let report = maintenance::verify(&cache)?;
    for (path, user) in &report.corrupt {
        println!(
            "CORRUPT {} ({user}): contents do not match its hash; delete it and run the stage again (`lm4ve pipeline run` rebuilds what is missing)",
            path.display()
        );
    }
    for (manifest, object) in &report.missing {
        println!(
            "MISSING object {object} named by {}; run the stage again (`lm4ve pipeline run`): it rebuilds the units that wrote it",
            manifest.display()
        );
    }
    for (path, why) in &report.bad_shards {
        println!(
            "CORRUPT shard {}: {why}; delete it and re-run the stage",
            path.display()
        );
    }
    for why in &report.bad_records {
        println!("BAD record {why}; the next run ignores it and recomputes");
    }
    for link in &report.links {
        println!(
            "LINK {}: a symbolic link inside the cache; lm4ve does not follow it (remove it)",
            lm4ve_pipeline::trust::escaped(&link.display().to_string(), 4096)
        );
    }
    for p in &report.stray {
        println!(
            "STRAY {}: not part of the cache layout; lm4ve does not read it (remove it)",
            lm4ve_pipeline::trust::escaped(&p.display().to_string(), 4096)
        );
    }
    println!(
        "checked {} objects ({:.1} MB): {} corrupt, {} missing, {} bad shards, {} bad records, {} links, {} stray",
        report.objects,
        report.bytes as f64 / 1e6,
        report.corrupt.len(),
        report.missing.len(),
        report.bad_shards.len(),
        report.bad_records.len(),
        report.links.len(),
        report.stray.len()
    );
    Ok(if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn gc(cli: &Cli, dry_run: bool, keep_days: f64) -> Result<ExitCode> {
    let mut p = crate::open::open(cli)?;
    // A stage whose key cannot be computed (an input missing, e.g. an unmounted dataset)
    // keeps all its artifacts: gc deletes only what it can decide about.
    let (keep, undecided) = p.gc_keys();
    let opts = maintenance::GcOptions {
        dry_run,
        keep_days,
        undecided,
    };
    let r = maintenance::gc_with(&p.cache, &keep, &opts)?;
    if dry_run && !r.removed.is_empty() {
        println!("would remove:");
        for (key, stage) in &r.removed {
            println!("  {}  {}", short(key), lm4ve_pipeline::trust::shown(stage));
        }
    }
    println!(
        "{}{} artifacts and {} objects ({:.1} MB) removed, {} objects kept",
        if dry_run { "dry run: " } else { "" },
        r.artifacts_removed,
        r.objects_removed,
        r.bytes_freed as f64 / 1e6,
        r.objects_kept
    );
    if r.stat_rows.dropped > 0 {
        println!(
            "stat cache: {} {} rows of files deleted from their directories, {} kept",
            if dry_run { "would drop" } else { "dropped" },
            r.stat_rows.dropped,
            r.stat_rows.kept
        );
    }
    for (key, stage, why) in &r.undecided {
        println!(
            "KEPT {} (stage {}): {why}; gc cannot tell whether the config still uses it (restore the input, then gc again)",
            short(key),
            lm4ve_pipeline::trust::shown(stage)
        );
    }
    for why in &r.refused {
        println!("REFUSED {why}: not followed, not deleted (remove it by hand)");
    }
    if r.artifacts_recent > 0 {
        println!(
            "kept {} artifacts of runs younger than {keep_days} days",
            r.artifacts_recent
        );
    }
    if r.runs_active {
        println!(
            "another lm4ve process is using this cache: kept what it may be writing ({} recent unreferenced objects)",
            r.objects_young
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn demo_data(args: &DemoDataArgs) -> Result<ExitCode> {
    use lm4ve_stages::pointcloud::demo::{write_demo_scanobjectnn, DemoPcConfig};
    use lm4ve_stages::ssv2::demo::{write_demo_ssv2, DemoSsv2Config};
    let pc_dir = args.out.join("scanobjectnn");
    std::fs::create_dir_all(&pc_dir).with_context(|| format!("creating {}", pc_dir.display()))?;
    let cfg = DemoPcConfig {
        seed: args.seed,
        train_per_class: args.pc_train_per_class,
        test_per_class: args.pc_test_per_class,
        ..DemoPcConfig::default()
    };
    let (train, test) = write_demo_scanobjectnn(&pc_dir, &cfg)?;
    println!(
        "wrote {}: {train} training and {test} test point clouds (ScanObjectNN h5)",
        pc_dir.display()
    );
    let video_dir = args.out.join("ssv2");
    let t0 = std::time::Instant::now();
    let v = write_demo_ssv2(
        &video_dir,
        &DemoSsv2Config {
            seed: args.seed,
            train_per_class: args.video_train_per_class,
            validation_per_class: args.video_val_per_class,
            ..DemoSsv2Config::default()
        },
    )?;
    println!(
        "wrote {}: {} train and {} validation clips, {} frames, {:.1} MB (SSv2 webm, VP9), {:.1} s",
        video_dir.display(),
        v.train,
        v.validation,
        v.frames,
        v.bytes as f64 / 1e6,
        t0.elapsed().as_secs_f64()
    );
    let av_dir = args.out.join("argoverse");
    let t0 = std::time::Instant::now();
    let av = lm4ve_stages::argoverse::demo::write_demo_argoverse(
        &av_dir,
        &lm4ve_stages::argoverse::demo::DemoAvConfig {
            seed: args.seed,
            train: args.av_train,
            val: args.av_val,
            grid: args.av_grid,
            ..Default::default()
        },
    )?;
    let maps: Vec<String> = av
        .cities
        .iter()
        .map(|(c, n)| format!("{c} ({n} lanes)"))
        .collect();
    println!(
        "wrote {}: {} train and {} val scenarios, vector maps for {} (Argoverse 1.1 CSV + XML), {:.1} s",
        av_dir.display(),
        av.train,
        av.val,
        maps.join(", "),
        t0.elapsed().as_secs_f64()
    );
    if args.av2_train + args.av2_val > 0 {
        let dir = args.out.join("argoverse2");
        let t0 = std::time::Instant::now();
        use lm4ve_stages::argoverse::av2::synth;
        for (split, n, base) in [
            ("train", args.av2_train, 0u64),
            ("val", args.av2_val, 1 << 32),
        ] {
            for i in 0..n as u64 {
                // Scenes of a busy AV2 scenario: ~40 tracks, ~80 lane segments (a released one: 40–60 tracks, ~70 lanes).
                let s = synth::scene(args.seed.wrapping_add(base + i), 40, 80, true);
                synth::write(&dir.join(split), &s).map_err(anyhow::Error::msg)?;
            }
        }
        println!(
            "wrote {}: {} train and {} val scenarios (Argoverse 2 parquet + map JSON), {:.1} s",
            dir.display(),
            args.av2_train,
            args.av2_val,
            t0.elapsed().as_secs_f64()
        );
    }
    let img_dir = args.out.join("imagenet");
    let t0 = std::time::Instant::now();
    let im = lm4ve_stages::images::demo::write_demo_imagenet(
        &img_dir,
        &lm4ve_stages::images::demo::DemoImagesConfig {
            seed: args.seed,
            train_per_class: args.image_train_per_class,
            val_per_class: args.image_val_per_class,
        },
    )?;
    println!(
        "wrote {}: {} train and {} val images, {:.1} MB (ImageNet folder layout, JPEG + PNG, one \
         truncated), {:.1} s",
        img_dir.display(),
        im.train,
        im.val,
        im.bytes as f64 / 1e6,
        t0.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}
