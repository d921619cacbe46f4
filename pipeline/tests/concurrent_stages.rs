//! `--concurrent-stages K`: independent stages build side by side, a stage waits for what it
//! needs, the reports keep the DAG order, a failure lets the others finish and fails the run,
//! and the cache ends byte-identical to a one-at-a-time run.

use anyhow::Result;
use lm4ve_pipeline::shard::{encode_sample, Dtype, Field, ShardWriter};
use lm4ve_pipeline::{
    ConfigError, Outcome, Pipeline, PipelineConfig, Progress, RunOptions, Stage, StageConfig,
    StageCtx, UnitOutput, UnitPlan, Upstream,
};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the stages saw while they ran: how many ran at once at most, and the order in
/// which they started and ended.
#[derive(Default)]
struct Witness {
    running: AtomicUsize,
    most_at_once: AtomicUsize,
    events: Mutex<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WorkParams {
    value: u8,
    #[serde(default)]
    after: Vec<String>,
    #[serde(default)]
    fail: bool,
    /// What `cost_hint` answers.
    #[serde(default)]
    cost: Option<f64>,
}

/// One unit that takes a while (so that stages started together overlap) and writes a
/// one-sample shard.
struct Work {
    name: String,
    params: WorkParams,
    witness: Arc<Witness>,
}

impl Stage for Work {
    fn kind(&self) -> &str {
        "test.work"
    }
    fn version(&self) -> u32 {
        1
    }
    fn key_params(&self) -> serde_json::Value {
        serde_json::json!({"value": self.params.value, "fail": self.params.fail})
    }
    fn upstream(&self) -> Vec<String> {
        self.params.after.clone()
    }
    fn schema(&self) -> Option<Vec<Field>> {
        Some(vec![Field::new("x", Dtype::Uint8, &[1])])
    }
    fn cost_hint(&self, upstream: &BTreeMap<String, Upstream>) -> Option<f64> {
        let built: Vec<&str> = upstream.keys().map(String::as_str).collect();
        self.witness
            .events
            .lock()
            .unwrap()
            .push(format!("hint {} after {built:?}", self.name));
        self.params.cost
    }
    fn plan(&self, _: &StageCtx) -> Result<Vec<UnitPlan>> {
        Ok(vec![UnitPlan {
            id: "only".into(),
            work: 1,
        }])
    }
    fn run_unit(&self, _: &StageCtx, _: &UnitPlan, out: &mut UnitOutput) -> Result<()> {
        let w = &self.witness;
        w.events
            .lock()
            .unwrap()
            .push(format!("start {}", self.name));
        let now = w.running.fetch_add(1, Ordering::SeqCst) + 1;
        w.most_at_once.fetch_max(now, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(300));
        w.running.fetch_sub(1, Ordering::SeqCst);
        w.events.lock().unwrap().push(format!("end {}", self.name));
        if self.params.fail {
            anyhow::bail!("injected failure");
        }
        let schema = self.schema().unwrap();
        let mut sw = ShardWriter::new(schema.clone());
        sw.push_encoded(encode_sample(&schema, &[&[self.params.value]], 3)?);
        out.add_shard("train", 1, &sw.finish())?;
        Ok(())
    }
}

/// a and b independent; c needs a; d needs b and c.
fn pipeline(dir: &Path, witness: &Arc<Witness>, fail_b: bool) -> Pipeline {
    let stages = format!(
        "[stages.a]\nkind = \"test.work\"\n[stages.a.params]\nvalue = 1\n\
         [stages.b]\nkind = \"test.work\"\n[stages.b.params]\nvalue = 2\nfail = {fail_b}\n\
         [stages.c]\nkind = \"test.work\"\n[stages.c.params]\nvalue = 3\nafter = [\"a\"]\n\
         [stages.d]\nkind = \"test.work\"\n[stages.d.params]\nvalue = 4\nafter = [\"b\", \"c\"]\n"
    );
    pipeline_of(dir, witness, &stages)
}

/// The `test.work` stages `stages` (TOML tables) over a cache in `dir`.
fn pipeline_of(dir: &Path, witness: &Arc<Witness>, stages: &str) -> Pipeline {
    let text = format!("[cache]\ndir = \"cache\"\n{stages}");
    let path = dir.join("p.toml");
    std::fs::write(&path, text).unwrap();
    let witness = witness.clone();
    let factory =
        move |config: &PipelineConfig, sc: &StageConfig| -> Result<Box<dyn Stage>, ConfigError> {
            Ok(Box::new(Work {
                name: sc.name.clone(),
                params: config.typed_params(sc)?,
                witness: witness.clone(),
            }))
        };
    Pipeline::new(PipelineConfig::load(&path).unwrap(), None, &factory).unwrap()
}

fn at_once(k: usize) -> RunOptions {
    RunOptions {
        concurrent_stages: k,
        ..Default::default()
    }
}

/// Every file under the cache's artifacts and objects, with its bytes (run records hold
/// times and host names, so they are left out).
fn artifacts(cache: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for sub in ["artifacts", "objects"] {
        let mut stack = vec![cache.join(sub)];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    let rel = p.strip_prefix(cache).unwrap().display().to_string();
                    out.insert(rel, std::fs::read(&p).unwrap());
                }
            }
        }
    }
    out
}

#[test]
fn independent_stages_build_side_by_side_and_dependents_wait() {
    let dir = tempfile::tempdir().unwrap();
    let witness = Arc::new(Witness::default());
    let mut p = pipeline(dir.path(), &witness, false);
    let reports = p.run(&at_once(2), &Progress::new(true)).unwrap();
    let names: Vec<&str> = reports.iter().map(|r| r.stage.as_str()).collect();
    assert_eq!(names, ["a", "b", "c", "d"], "reports in DAG order");
    assert!(reports
        .iter()
        .all(|r| matches!(r.outcome, Outcome::Built { .. })));
    assert_eq!(witness.most_at_once.load(Ordering::SeqCst), 2);
    let events = witness.events.lock().unwrap().clone();
    let at = |e: &str| events.iter().position(|x| x == e).unwrap();
    // a and b started together; c only after a ended; d only after b and c ended.
    assert!(at("start b") < at("end a"), "{events:?}");
    assert!(at("end a") < at("start c"), "{events:?}");
    assert!(
        at("end b") < at("start d") && at("end c") < at("start d"),
        "{events:?}"
    );

    // The same artifacts, byte for byte, as one stage at a time.
    let seq_dir = tempfile::tempdir().unwrap();
    let seq_witness = Arc::new(Witness::default());
    let mut seq = pipeline(seq_dir.path(), &seq_witness, false);
    seq.run(&at_once(1), &Progress::new(true)).unwrap();
    assert_eq!(seq_witness.most_at_once.load(Ordering::SeqCst), 1);
    assert_eq!(
        artifacts(&dir.path().join("cache")),
        artifacts(&seq_dir.path().join("cache"))
    );

    // A second run finds everything fresh.
    let again = p.run(&at_once(2), &Progress::new(true)).unwrap();
    assert!(again.iter().all(|r| r.outcome == Outcome::Fresh));
}

#[test]
fn a_failed_stage_lets_the_running_one_finish_and_fails_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let witness = Arc::new(Witness::default());
    let mut p = pipeline(dir.path(), &witness, true);
    let err = p.run(&at_once(2), &Progress::new(true)).unwrap_err();
    assert!(format!("{err:#}").contains("injected failure"), "{err:#}");
    let events = witness.events.lock().unwrap().clone();
    // a (beside the failing b) finished; d (needs b) never started.
    assert!(events.contains(&"end a".to_string()), "{events:?}");
    assert!(!events.contains(&"start d".to_string()), "{events:?}");
    // What finished is kept: a rerun without the failure finds a fresh.
    let witness2 = Arc::new(Witness::default());
    let mut p2 = pipeline(dir.path(), &witness2, false);
    let reports = p2.run(&at_once(2), &Progress::new(true)).unwrap();
    assert_eq!(reports[0].stage, "a");
    assert_eq!(reports[0].outcome, Outcome::Fresh);
}

#[test]
fn unhinted_stages_start_first_then_the_costliest() {
    // p, q, r, s independent, t needs q; two at a time. In DAG order p and q would start
    // first and p would not end last.
    let dir = tempfile::tempdir().unwrap();
    let witness = Arc::new(Witness::default());
    let work = |name: &str, value: u8, extra: &str| {
        format!("[stages.{name}]\nkind = \"test.work\"\n[stages.{name}.params]\nvalue = {value}\n{extra}")
    };
    let stages = [
        work("p", 1, "cost = 1.0\n"),
        work("q", 2, ""),
        work("r", 3, "cost = 5.0\n"),
        work("s", 4, "cost = 2.0\n"),
        work("t", 5, "cost = 4.0\nafter = [\"q\"]\n"),
    ]
    .concat();
    let mut p = pipeline_of(dir.path(), &witness, &stages);
    let reports = p.run(&at_once(2), &Progress::new(true)).unwrap();
    let names: Vec<&str> = reports.iter().map(|r| r.stage.as_str()).collect();
    assert_eq!(names, ["p", "q", "r", "s", "t"], "reports in DAG order");
    let events = witness.events.lock().unwrap().clone();
    let starts: Vec<&str> = events
        .iter()
        .filter_map(|e| e.strip_prefix("start "))
        .collect();
    // q (no hint) and r (the costliest) first; whichever ends first, p (the cheapest) last.
    let mut first_two = starts[..2].to_vec();
    first_two.sort();
    assert_eq!(first_two, ["q", "r"], "{events:?}");
    assert_eq!(starts.last(), Some(&"p"), "{events:?}");
    // A stage is asked for its hint once its upstream is built, and sees it.
    assert!(
        events.contains(&"hint t after [\"q\"]".to_string()),
        "{events:?}"
    );
    let at = |e: &str| events.iter().position(|x| x == e).unwrap();
    assert!(at("end q") < at("hint t after [\"q\"]"), "{events:?}");
}
