//! The engine with small in-test stages: staleness flows downstream, resume after a failed
//! unit, rejects limits, status reasons.

use anyhow::Result;
use lm4ve_pipeline::shard::{encode_sample, Dtype, Field, ShardReader, ShardWriter};
use lm4ve_pipeline::{
    ConfigError, Outcome, Pipeline, PipelineConfig, Progress, RunOptions, Stage, StageConfig,
    StageCtx, UnitOutput, UnitPlan,
};
use serde::Deserialize;
use std::path::Path;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GenParams {
    value: u8,
    units: usize,
    #[serde(default)]
    bad_every: usize,
    /// Not in the key: lets a test fail one unit, then re-run the same artifact.
    #[serde(default)]
    fail_at: Option<usize>,
}

struct Gen(GenParams);

impl Stage for Gen {
    fn kind(&self) -> &str {
        "test.gen"
    }
    fn version(&self) -> u32 {
        1
    }
    fn key_params(&self) -> serde_json::Value {
        serde_json::json!({"value": self.0.value, "units": self.0.units, "bad_every": self.0.bad_every})
    }
    fn schema(&self) -> Option<Vec<Field>> {
        Some(vec![Field::new("x", Dtype::Uint8, &[2])])
    }
    fn plan(&self, _: &StageCtx) -> Result<Vec<UnitPlan>> {
        Ok((0..self.0.units)
            .map(|i| UnitPlan {
                id: format!("u-{i:03}"),
                work: 4,
            })
            .collect())
    }
    fn run_unit(&self, _: &StageCtx, unit: &UnitPlan, out: &mut UnitOutput) -> Result<()> {
        let i: usize = unit.id[2..].parse()?;
        if self.0.fail_at == Some(i) {
            anyhow::bail!("injected failure");
        }
        let schema = self.schema().unwrap();
        let mut w = ShardWriter::new(schema.clone());
        for s in 0..4usize {
            if self.0.bad_every > 0 && (i * 4 + s).is_multiple_of(self.0.bad_every) {
                out.reject("gen", &format!("{i}/{s}"), "injected bad sample");
                continue;
            }
            w.push_encoded(encode_sample(
                &schema,
                &[&[self.0.value, (i * 4 + s) as u8]],
                3,
            )?);
        }
        let n = w.len() as u64;
        out.add_shard("train", n, &w.finish())?;
        Ok(())
    }
}

/// Sums the upstream shards into one file.
struct Sum {
    from: String,
    scale: u64,
}

impl Stage for Sum {
    fn kind(&self) -> &str {
        "test.sum"
    }
    fn version(&self) -> u32 {
        1
    }
    fn key_params(&self) -> serde_json::Value {
        serde_json::json!({"scale": self.scale})
    }
    fn upstream(&self) -> Vec<String> {
        vec![self.from.clone()]
    }
    fn plan(&self, _: &StageCtx) -> Result<Vec<UnitPlan>> {
        Ok(vec![UnitPlan {
            id: "sum".into(),
            work: 1,
        }])
    }
    fn run_unit(&self, ctx: &StageCtx, _: &UnitPlan, out: &mut UnitOutput) -> Result<()> {
        let up = &ctx.upstream[&self.from];
        let mut total = 0u64;
        for p in up.manifest.shard_paths(&up.manifest_path, None) {
            let mut r = ShardReader::open(&p)?;
            for i in 0..r.len() {
                total += r.read(i)?.fields[0].iter().map(|b| *b as u64).sum::<u64>();
            }
        }
        out.add_file("metrics.json", (total * self.scale).to_string().as_bytes())?;
        Ok(())
    }
}

fn factory(config: &PipelineConfig, sc: &StageConfig) -> Result<Box<dyn Stage>, ConfigError> {
    match sc.kind.as_str() {
        "test.gen" => Ok(Box::new(Gen(config.typed_params(sc)?))),
        "test.sum" => {
            #[derive(Deserialize)]
            struct P {
                from: String,
                scale: u64,
            }
            let p: P = config.typed_params(sc)?;
            Ok(Box::new(Sum {
                from: p.from,
                scale: p.scale,
            }))
        }
        k => Err(config.param_error(&sc.name, None, format!("unknown kind {k}"))),
    }
}

fn pipeline(dir: &Path, value: u8, scale: u64, extra: &str) -> Pipeline {
    let text = format!(
        "[cache]\ndir = \"cache\"\n[stages.gen]\nkind = \"test.gen\"\n[stages.gen.params]\nvalue = {value}\nunits = 5\n{extra}\n\n[stages.sum]\nkind = \"test.sum\"\n[stages.sum.params]\nfrom = \"gen\"\nscale = {scale}\n"
    );
    let path = dir.join("p.toml");
    std::fs::write(&path, &text).unwrap();
    Pipeline::new(PipelineConfig::load(&path).unwrap(), None, &factory).unwrap()
}

fn run(p: &mut Pipeline) -> Vec<(String, Outcome)> {
    p.run(&RunOptions::default(), &Progress::new(true))
        .unwrap()
        .into_iter()
        .map(|r| (r.stage, r.outcome))
        .collect()
}

fn built(o: &Outcome) -> bool {
    matches!(o, Outcome::Built { .. })
}

#[test]
fn staleness_flows_downstream_only() {
    let dir = tempfile::tempdir().unwrap();
    let r = run(&mut pipeline(dir.path(), 1, 1, ""));
    assert!(built(&r[0].1) && built(&r[1].1));
    let r = run(&mut pipeline(dir.path(), 1, 1, ""));
    assert_eq!(r[0].1, Outcome::Fresh);
    assert_eq!(r[1].1, Outcome::Fresh);
    // Downstream param: only the downstream stage re-runs.
    let r = run(&mut pipeline(dir.path(), 1, 2, ""));
    assert_eq!(r[0].1, Outcome::Fresh);
    assert!(built(&r[1].1));
    // Upstream param: both re-run; status first says why.
    let mut p = pipeline(dir.path(), 3, 2, "");
    let st = p.status(false).unwrap();
    assert!(st[0].reason.contains("param value: 1 → 3"), "{:?}", st[0]);
    assert!(st[1].reason.contains("upstream gen"), "{:?}", st[1]);
    let r = run(&mut p);
    assert!(built(&r[0].1) && built(&r[1].1));
    // The downstream stage read the new upstream shards.
    let key = p.key("sum").unwrap().key.clone();
    let m = lm4ve_pipeline::Manifest::load(&p.cache.manifest_path(&key)).unwrap();
    let sum = std::fs::read_to_string(
        m.file_path(&p.cache.manifest_path(&key), "metrics.json")
            .unwrap(),
    )
    .unwrap();
    let want: u64 = (0..20u64).map(|i| 3 + i).sum::<u64>() * 2;
    assert_eq!(sum, want.to_string());
}

#[test]
fn a_failed_unit_keeps_the_finished_ones_and_the_rerun_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = pipeline(dir.path(), 7, 1, "fail_at = 3");
    let err = p
        .run(
            &RunOptions {
                target: Some("gen".into()),
                ..Default::default()
            },
            &Progress::new(true),
        )
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("unit u-003: injected failure"),
        "{err:#}"
    );
    let st = p.status(false).unwrap();
    assert!(
        st[0].reason.contains("interrupted: 3 units done"),
        "{:?}",
        st[0]
    );
    let mut p = pipeline(dir.path(), 7, 1, "");
    let r = p
        .run(
            &RunOptions {
                target: Some("gen".into()),
                ..Default::default()
            },
            &Progress::new(true),
        )
        .unwrap();
    match &r[0].outcome {
        Outcome::Built {
            units_run,
            units_reused,
            ..
        } => {
            assert_eq!((*units_run, *units_reused), (2, 3));
        }
        o => panic!("{o:?}"),
    }
}

#[test]
fn rejects_within_the_limit_are_recorded_beyond_it_fail() {
    let dir = tempfile::tempdir().unwrap();
    // 20 samples, every 5th bad = 4 rejects = 20% > default 5% limit.
    let text = "bad_every = 5";
    let mk = |limit: &str| {
        let t = format!(
            "[cache]\ndir = \"{}\"\n[stages.gen]\nkind = \"test.gen\"\n{limit}\n[stages.gen.params]\nvalue = 1\nunits = 5\n{text}\n",
            dir.path().join("cache").display()
        );
        let path = dir.path().join("r.toml");
        std::fs::write(&path, t).unwrap();
        Pipeline::new(PipelineConfig::load(&path).unwrap(), None, &factory).unwrap()
    };
    let err = mk("")
        .run(&RunOptions::default(), &Progress::new(true))
        .unwrap_err();
    assert!(
        format!("{err}").contains("4 of 20 samples rejected"),
        "{err}"
    );
    // Raising the limit assembles from the journal without recomputing.
    let r = mk("max_reject_fraction = 0.25")
        .run(&RunOptions::default(), &Progress::new(true))
        .unwrap();
    match &r[0].outcome {
        Outcome::Built {
            units_run, rejects, ..
        } => assert_eq!((*units_run, *rejects), (0, 4)),
        o => panic!("{o:?}"),
    }
}

/// Every file under `dir`, with its bytes.
fn tree(dir: &Path) -> std::collections::BTreeMap<std::path::PathBuf, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.insert(p.clone(), std::fs::read(&p).unwrap_or_default());
            }
        }
    }
    out
}

/// A data-parallel rank above 0 runs the target's unfinished units and writes nothing (no
/// lock file, journal entry, object or manifest); a launch that would build upstream stages,
/// or asks for --part / --force / every stage, is refused on every rank.
#[test]
fn data_parallel_replicas_compute_without_writing() {
    use lm4ve_pipeline::DataParallel;
    let dir = tempfile::tempdir().unwrap();
    let mut p = pipeline(dir.path(), 2, 1, "");
    let dp = |rank| RunOptions {
        target: Some("sum".into()),
        data_parallel: Some(DataParallel { rank, world: 2 }),
        ..Default::default()
    };
    // Upstream `gen` is not built: refused, naming it and the fix.
    let err = p.run(&dp(1), &Progress::new(true)).unwrap_err();
    assert!(
        format!("{err:#}").contains("`gen` (needed by `sum`) is not built"),
        "{err:#}"
    );
    for bad in [
        RunOptions {
            target: None,
            ..dp(0)
        },
        RunOptions {
            force: true,
            ..dp(0)
        },
        RunOptions {
            target: Some("s*".into()),
            ..dp(0)
        },
    ] {
        assert!(p.run(&bad, &Progress::new(true)).is_err());
    }
    p.run(
        &RunOptions {
            target: Some("gen".into()),
            ..Default::default()
        },
        &Progress::new(true),
    )
    .unwrap();
    let before = tree(&dir.path().join("cache"));
    let r = p.run(&dp(1), &Progress::new(true)).unwrap();
    assert_eq!(r[0].outcome, Outcome::Fresh, "upstream");
    assert_eq!(
        r[1].outcome,
        Outcome::Replica {
            rank: 1,
            units_run: 1
        }
    );
    let after = tree(&dir.path().join("cache"));
    let changed: Vec<_> = after
        .iter()
        .filter(|(k, v)| before.get(*k) != Some(v))
        .map(|(k, _)| k.clone())
        .collect();
    assert!(changed.is_empty(), "a replica wrote {changed:?}");
    // Rank 0 stores the artifact; a replica then finds it fresh.
    let r = p.run(&dp(0), &Progress::new(true)).unwrap();
    assert!(built(&r[1].outcome));
    let r = p.run(&dp(1), &Progress::new(true)).unwrap();
    assert_eq!(r[1].outcome, Outcome::Fresh);
}

fn run_target(p: &mut Pipeline, target: &str, force: bool) -> anyhow::Result<Vec<Outcome>> {
    Ok(p.run(
        &RunOptions {
            target: Some(target.into()),
            force,
            ..Default::default()
        },
        &Progress::new(true),
    )?
    .into_iter()
    .map(|r| r.outcome)
    .collect())
}

/// Issue 27 (3): `--force` builds the new artifact beside the old one; a run that dies
/// half-way leaves the old artifact whole and in use.
#[test]
fn a_forced_run_that_dies_leaves_the_old_artifact_intact() {
    let dir = tempfile::tempdir().unwrap();
    run(&mut pipeline(dir.path(), 7, 1, ""));
    let mut p = pipeline(dir.path(), 7, 1, "fail_at = 3");
    let key = p.key("gen").map(|k| k.key.clone());
    let before = tree(&dir.path().join("cache").join("artifacts"));
    assert!(run_target(&mut p, "gen", true).is_err());
    let key = key.unwrap_or_else(|| p.key("gen").unwrap().key.clone());
    // The old manifest and every unit record are as they were.
    assert_eq!(tree(&dir.path().join("cache").join("artifacts")), before);
    let m = lm4ve_pipeline::Manifest::load(&p.cache.manifest_path(&key)).unwrap();
    for s in m.shard_paths(&p.cache.manifest_path(&key), None) {
        ShardReader::open(&s).unwrap();
    }
    let st = p.status(false).unwrap();
    assert_eq!(st[0].state, lm4ve_pipeline::engine::State::Fresh, "{st:?}");
    // A forced run that finishes swaps the new artifact in (same bytes here).
    let mut p = pipeline(dir.path(), 7, 1, "");
    let r = run_target(&mut p, "gen", true).unwrap();
    assert!(built(&r[0]), "{r:?}");
    assert_eq!(tree(&dir.path().join("cache").join("artifacts")), before);
    assert!(!dir
        .path()
        .join("cache/tmp")
        .join(format!("force-{key}"))
        .exists());
}

/// Issue 27 (2): a damaged upstream object is caught before the downstream stage reads it;
/// status says so; a plain re-run repairs it.
#[test]
fn a_damaged_upstream_shard_is_refused_then_repaired() {
    let dir = tempfile::tempdir().unwrap();
    run(&mut pipeline(dir.path(), 7, 1, ""));
    let mut p = pipeline(dir.path(), 7, 2, "");
    let key = p.key("gen").map(|k| k.key.clone());
    p.compute_keys(false).unwrap();
    let key = key.unwrap_or_else(|| p.key("gen").unwrap().key.clone());
    let m = lm4ve_pipeline::Manifest::load(&p.cache.manifest_path(&key)).unwrap();
    let shard = p.cache.object_path(&m.shards[2].blake3);
    let mut bytes = std::fs::read(&shard).unwrap();
    let n = bytes.len();
    bytes[n - 2] ^= 1;
    std::fs::write(&shard, &bytes).unwrap();
    let err = run_target(&mut p, "sum", false).unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("damaged") && msg.contains("`gen`"), "{msg}");
    let st = p.status(false).unwrap();
    assert_eq!(st[0].state, lm4ve_pipeline::engine::State::Stale, "{st:?}");
    assert!(st[0].reason.contains("damaged"), "{st:?}");
    let r = run_target(&mut p, "sum", false).unwrap();
    assert!(built(&r[0]) && built(&r[1]), "{r:?}");
    let want: u64 = (0..20u64).map(|i| 7 + i).sum::<u64>() * 2;
    let key = p.key("sum").unwrap().key.clone();
    let m = lm4ve_pipeline::Manifest::load(&p.cache.manifest_path(&key)).unwrap();
    let got = std::fs::read_to_string(
        m.file_path(&p.cache.manifest_path(&key), "metrics.json")
            .unwrap(),
    )
    .unwrap();
    assert_eq!(got, want.to_string());
}
