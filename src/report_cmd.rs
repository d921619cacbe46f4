//! `lm4ve pipeline report`: the metrics of every built `eval` stage, grouped by variant (the
//! stage name without `@…` plus its matrix values, `seed` left out by default) with mean ± std
//! and n over the runs of a group; with `--plot DIR` bar charts, the held-out curves, and from
//! each eval's predictions a confusion matrix or four forecast scenes (`predictions_cmd`).
//! `pipeline export STAGE --out DIR`: an artifact's files under readable names (an eval's
//! `predictions-*.parquet` among them).

use crate::cli::{CheckpointArg, Cli, ReportFormat};
use anyhow::{Context, Result};
use lm4ve_pipeline::{Manifest, UsageError};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// One built eval artifact: its group, its numeric metrics, and the held-out score per epoch
/// of the training run it evaluates (from that run's `metrics.jsonl`).
struct Row {
    group: String,
    metrics: BTreeMap<String, f64>,
    curve: Vec<(f64, f64)>,
}

/// (epoch, held-out score) of a train artifact's metrics.jsonl.
fn held_out_curve(p: &lm4ve_pipeline::Pipeline, train_stage: &str) -> Vec<(f64, f64)> {
    let Some(key) = p.key(train_stage).map(|k| k.key.clone()) else {
        return Vec::new();
    };
    let path = p.cache.manifest_path(&key);
    let Ok(m) = Manifest::load(&path) else {
        return Vec::new();
    };
    let Some(file) = m.file_path(&path, "metrics.jsonl") else {
        return Vec::new();
    };
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| Some((v["epoch"].as_f64()? + 1.0, v["test_acc"].as_f64()?)))
        .collect()
}

/// Splits `base@k1=v1,k2=v2` into base and the pairs.
fn variant(name: &str) -> (&str, Vec<(&str, &str)>) {
    match name.split_once('@') {
        None => (name, Vec::new()),
        Some((base, rest)) => (
            base,
            rest.split(',')
                .filter_map(|kv| kv.split_once('='))
                .collect(),
        ),
    }
}

/// The numeric leaves of a metrics object, dotted (`k6.min_fde`); bookkeeping fields skipped.
fn numeric_leaves(prefix: &str, v: &serde_json::Value, out: &mut BTreeMap<String, f64>) {
    match v {
        serde_json::Value::Number(n) => {
            if let Some(x) = n.as_f64() {
                out.insert(prefix.to_string(), x);
            }
        }
        serde_json::Value::Object(o) => {
            for (k, x) in o {
                // Counts and epoch numbers are bookkeeping, not results; `checkpoints`
                // holds every kept weights' metrics, of which the top level is one.
                if matches!(
                    k.as_str(),
                    "samples" | "views" | "classes" | "per_class" | "epoch" | "checkpoints"
                ) {
                    continue;
                }
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                numeric_leaves(&p, x, out);
            }
        }
        _ => {}
    }
}

/// The metrics of one eval artifact to report: the top level (the task's paper protocol,
/// `reported`), or with `--checkpoint` that checkpoint's metrics (`checkpoints.best|last`;
/// an eval from before both were kept has only the last, its top level).
fn report_root(meta: &serde_json::Value, checkpoint: Option<CheckpointArg>) -> &serde_json::Value {
    let name = match checkpoint {
        None => return meta,
        Some(CheckpointArg::Best) => "best",
        Some(CheckpointArg::Last) => "last",
        Some(CheckpointArg::Ema) => "ema",
    };
    match meta.get("checkpoints") {
        Some(c) => c.get(name).unwrap_or(&serde_json::Value::Null),
        None if name == "last" => meta,
        None => &serde_json::Value::Null,
    }
}

/// What `--plot` draws of one eval: the predictions file of the checkpoint reported (or
/// `--checkpoint`'s), and the data stage it scored (None: not built, no scenes to draw).
fn eval_plot(
    p: &lm4ve_pipeline::Pipeline,
    name: &str,
    m: &Manifest,
    path: &Path,
    checkpoint: Option<CheckpointArg>,
) -> Option<crate::predictions_cmd::EvalPlot> {
    let which = match checkpoint {
        Some(CheckpointArg::Best) => "best",
        Some(CheckpointArg::Last) => "last",
        Some(CheckpointArg::Ema) => "ema",
        None => m.meta["reported"]["checkpoint"].as_str().unwrap_or("last"),
    };
    let file = m.file_path(path, &format!("predictions-{which}.parquet"))?;
    let data = p
        .config
        .stages
        .get(name)
        .and_then(|sc| sc.params.get("data"))
        .and_then(|v| v.as_str())
        .and_then(|d| p.key(d))
        .map(|k| p.cache.manifest_path(&k.key))
        .and_then(|mp| {
            Manifest::load(&mp)
                .ok()
                .map(|manifest| lm4ve_pipeline::Upstream {
                    manifest_path: mp,
                    manifest,
                })
        });
    Some(crate::predictions_cmd::EvalPlot {
        eval: name.to_string(),
        checkpoint: which.to_string(),
        file,
        data,
        split: m.meta["split"].as_str().unwrap_or_default().to_string(),
    })
}

/// Mean and sample standard deviation (n − 1; 0 for one run).
pub fn mean_std(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    if xs.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let mean = xs.iter().sum::<f64>() / n;
    let var = if xs.len() > 1 {
        xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, var.sqrt())
}

pub fn report(
    cli: &Cli,
    format: ReportFormat,
    across: &[String],
    filter: Option<&str>,
    checkpoint: Option<CheckpointArg>,
    plot: Option<&Path>,
) -> Result<ExitCode> {
    let mut p = crate::open::open(cli)?;
    let evals: Vec<String> = p
        .config
        .stages
        .values()
        .filter(|s| s.kind == "eval")
        .filter(|s| {
            filter
                .is_none_or(|f| lm4ve_pipeline::config::glob_match(f.as_bytes(), s.name.as_bytes()))
        })
        .map(|s| s.name.clone())
        .collect();
    let all: Vec<String> = p.dag().order().to_vec();
    p.compute_keys_of(&all, false)?;
    let mut rows = Vec::new();
    let mut drawn = Vec::new();
    let mut missing = Vec::new();
    for name in &evals {
        let key = p.key(name).map(|k| k.key.clone()).unwrap_or_default();
        let path = p.cache.manifest_path(&key);
        if !path.exists() {
            missing.push(name.clone());
            continue;
        }
        let m = Manifest::load(&path)?;
        let (base, pairs) = variant(name);
        let kept: Vec<String> = pairs
            .iter()
            .filter(|(k, _)| !across.iter().any(|a| a == k))
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let group = if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}@{}", kept.join(","))
        };
        let mut metrics = BTreeMap::new();
        numeric_leaves("", report_root(&m.meta, checkpoint), &mut metrics);
        let train_stage = p
            .config
            .stages
            .get(name)
            .and_then(|sc| sc.params.get("train"))
            .and_then(|v| v.as_str())
            .map(str::to_string);
        let curve = train_stage
            .map(|t| held_out_curve(&p, &t))
            .unwrap_or_default();
        if plot.is_some() {
            drawn.extend(eval_plot(&p, name, &m, &path, checkpoint));
        }
        rows.push(Row {
            group,
            metrics,
            curve,
        });
    }
    if rows.is_empty() {
        return Err(UsageError(format!(
            "no built eval stage to report{}; run `lm4ve -c {} pipeline run` first",
            if missing.is_empty() {
                String::new()
            } else {
                format!(" ({} not built)", missing.len())
            },
            cli.config.display()
        ))
        .into());
    }
    // group → metric → values
    let mut groups: BTreeMap<String, BTreeMap<String, Vec<f64>>> = BTreeMap::new();
    for r in &rows {
        let g = groups.entry(r.group.clone()).or_default();
        for (k, v) in &r.metrics {
            g.entry(k.clone()).or_default().push(*v);
        }
    }
    let metric_names: Vec<String> = {
        let mut s: Vec<String> = groups.values().flat_map(|g| g.keys().cloned()).collect();
        s.sort();
        s.dedup();
        s
    };
    let stats = |g: &BTreeMap<String, Vec<f64>>, m: &str| g.get(m).map(|v| (mean_std(v), v.len()));
    match format {
        ReportFormat::Json => {
            let v: serde_json::Value = groups
                .iter()
                .map(|(g, ms)| {
                    let o: serde_json::Map<String, serde_json::Value> = ms
                        .iter()
                        .map(|(m, xs)| {
                            let ((mean, std), n) = (mean_std(xs), xs.len());
                            (
                                m.clone(),
                                serde_json::json!({"mean": mean, "std": std, "n": n, "values": xs}),
                            )
                        })
                        .collect();
                    (g.clone(), serde_json::Value::Object(o))
                })
                .collect::<serde_json::Map<_, _>>()
                .into();
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        ReportFormat::Csv => {
            println!("group,metric,mean,std,n");
            for (g, ms) in &groups {
                for m in &metric_names {
                    if let Some(((mean, std), n)) = stats(ms, m) {
                        println!("{g},{m},{mean},{std},{n}");
                    }
                }
            }
        }
        ReportFormat::Markdown | ReportFormat::Table => {
            let md = matches!(format, ReportFormat::Markdown);
            let header: Vec<String> = std::iter::once("variant".to_string())
                .chain(metric_names.iter().cloned())
                .collect();
            let mut lines: Vec<Vec<String>> = vec![header];
            for (g, ms) in &groups {
                let mut line = vec![g.clone()];
                for m in &metric_names {
                    line.push(match stats(ms, m) {
                        Some(((mean, std), n)) => format!("{mean:.4} ± {std:.4} (n={n})"),
                        None => "—".into(),
                    });
                }
                lines.push(line);
            }
            let widths: Vec<usize> = (0..lines[0].len())
                .map(|c| {
                    lines
                        .iter()
                        .map(|l| l[c].chars().count())
                        .max()
                        .unwrap_or(0)
                })
                .collect();
            for (i, l) in lines.iter().enumerate() {
                let cells: Vec<String> = l
                    .iter()
                    .zip(&widths)
                    .map(|(c, w)| format!("{c:<w$}"))
                    .collect();
                if md {
                    println!("| {} |", cells.join(" | "));
                    if i == 0 {
                        println!(
                            "|{}|",
                            widths
                                .iter()
                                .map(|w| "-".repeat(w + 2))
                                .collect::<Vec<_>>()
                                .join("|")
                        );
                    }
                } else {
                    println!("{}", cells.join("  "));
                }
            }
        }
    }
    if let Some(dir) = plot {
        write_plots(dir, &groups, &metric_names, &rows, &drawn)?;
    }
    if !missing.is_empty() {
        eprintln!("not built yet (left out): {}", missing.join(", "));
    }
    Ok(ExitCode::SUCCESS)
}

/// One bar chart (PNG and SVG) per metric, and the held-out curves of every group (mean over
/// its runs per epoch) on one figure.
fn write_plots(
    dir: &Path,
    groups: &BTreeMap<String, BTreeMap<String, Vec<f64>>>,
    metric_names: &[String],
    rows: &[Row],
    drawn: &[crate::predictions_cmd::EvalPlot],
) -> Result<()> {
    use lm4ve_stages::plot::{bars, lines_png, Bar, Series};
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let safe = |m: &str| m.replace(|c: char| !c.is_ascii_alphanumeric() && c != '_', "-");
    let mut written = Vec::new();
    for m in metric_names {
        let bs: Vec<Bar> = groups
            .iter()
            .filter_map(|(g, ms)| {
                let xs = ms.get(m)?;
                let (mean, std) = mean_std(xs);
                Some(Bar {
                    label: g.clone(),
                    mean,
                    std,
                    n: xs.len(),
                })
            })
            .collect();
        let (png, svg) = bars(m, m, &bs)?;
        for (ext, bytes) in [("png", png), ("svg", svg.into_bytes())] {
            let f = dir.join(format!("{}.{ext}", safe(m)));
            std::fs::write(&f, bytes).with_context(|| format!("writing {}", f.display()))?;
            written.push(f);
        }
    }
    // Held-out score per epoch, averaged over each group's runs.
    let mut per_group: BTreeMap<&str, BTreeMap<u64, Vec<f64>>> = BTreeMap::new();
    for r in rows {
        for &(e, v) in &r.curve {
            per_group
                .entry(r.group.as_str())
                .or_default()
                .entry(e as u64)
                .or_default()
                .push(v);
        }
    }
    if !per_group.is_empty() {
        let series: Vec<Series> = per_group
            .iter()
            .map(|(g, by_epoch)| Series {
                name: g,
                points: by_epoch
                    .iter()
                    .map(|(e, vs)| (*e as f64, mean_std(vs).0))
                    .collect(),
                held_out: true,
            })
            .collect();
        let png = lines_png(
            "held-out score per epoch, mean over each group's runs",
            "epoch",
            "held-out score (top-1, or 1 − miss rate)",
            &series,
        )?;
        let f = dir.join("curves.png");
        std::fs::write(&f, png).with_context(|| format!("writing {}", f.display()))?;
        written.push(f);
    }
    written.extend(crate::predictions_cmd::plots(dir, drawn));
    eprintln!("wrote {} plots to {}", written.len(), dir.display());
    Ok(())
}

/// Writes the artifact's files under readable names into `out` (`model.safetensors`,
/// `metrics.json`, checkpoints numbered by unit: `checkpoint-00000.safetensors`, …).
pub fn export(cli: &Cli, stage: &str, out: &Path) -> Result<ExitCode> {
    let mut p = crate::open::open(cli)?;
    if p.stage(stage).is_none() {
        return Err(UsageError(format!("no stage `{stage}` in {}", cli.config.display())).into());
    }
    let closure = p.dag().closure(stage);
    p.compute_keys_of(&closure, false)?;
    let key = p.key(stage).map(|k| k.key.clone()).unwrap_or_default();
    let path = p.cache.manifest_path(&key);
    anyhow::ensure!(
        path.exists(),
        "`{stage}` is not built for the current config; run `lm4ve -c {} pipeline run --stage {stage}`",
        cli.config.display()
    );
    let mut inputs: Vec<(String, PathBuf)> = vec![
        ("the cache".into(), p.cache.root().to_path_buf()),
        ("the config".into(), cli.config.clone()),
    ];
    for s in &closure {
        for spec in p.stage(s).map(|st| st.inputs()).unwrap_or_default() {
            inputs.push((format!("an input of `{s}`"), spec.path.clone()));
        }
    }
    let named: Vec<(&str, &Path)> = inputs
        .iter()
        .map(|(w, p)| (w.as_str(), p.as_path()))
        .collect();
    crate::guard::refuse_overlap("--out", out, &named)?;
    let m = Manifest::load_checked(&path, &key)?;
    // Exported bytes are checked against their names first (a damaged object is moved
    // aside and the stage shows stale).
    for o in m
        .shards
        .iter()
        .map(|s| &s.blake3)
        .chain(m.files.iter().map(|f| &f.blake3))
    {
        lm4ve_pipeline::verified::check_object(&p.cache, o).map_err(|e| {
            anyhow::anyhow!(
                "{e}; run `lm4ve -c {} pipeline run --stage {stage}` to rebuild it",
                cli.config.display()
            )
        })?;
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let dir = path.parent().context("manifest without a folder")?;
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut written = Vec::new();
    for f in &m.files {
        let n = seen.entry(f.name.clone()).or_default();
        let count = m.files.iter().filter(|g| g.name == f.name).count();
        let name = if count > 1 {
            // Several units wrote this name (checkpoints): number them in unit order.
            let (stem, ext) = f.name.rsplit_once('.').unwrap_or((&f.name, ""));
            format!("{stem}-{n:05}.{ext}")
        } else {
            f.name.clone()
        };
        *n += 1;
        std::fs::copy(dir.join(&f.path), out.join(&name))
            .with_context(|| format!("copying {} to {}", f.name, out.join(&name).display()))?;
        written.push(name);
    }
    std::fs::copy(&path, out.join("manifest.json"))?;
    println!(
        "{stage}: wrote {} and manifest.json to {}",
        written.join(", "),
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}
