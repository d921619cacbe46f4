//! When each stage of a run builds: one at a time in DAG order (the default), or, with
//! `--concurrent-stages K`, up to K independent stages side by side, each starting as soon as
//! every stage it needs is built. Why: a small model's CPU training does not scale to every
//! core (candle's element-wise pool spends more time waiting for its second thread than the
//! thread saves: BENCHMARKS.md, "The demo, end to end"), so two trainings on one thread each
//! finish sooner than the same two one after the other on two threads. The bytes a stage
//! writes do not depend on this (nor on its thread count: `tests/cache_trust.rs`).

use super::*;
use std::sync::mpsc;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Progressing {
    Waiting,
    Running,
    Done,
    Failed,
}

impl Pipeline {
    /// Brings every stage of `todo` (in DAG order, blocked stages already left out) up to
    /// date; the reports come back in that order whatever order the stages finished in.
    pub(super) fn run_todo(
        &self,
        todo: &[String],
        opts: &RunOptions,
        progress: &Progress,
    ) -> Result<Vec<StageReport>> {
        // Data-parallel ranks must run the same stage at the same time, and `--part` names
        // one stage: both keep the sequential order.
        let at_once = opts.concurrent_stages.max(1);
        if at_once == 1 || opts.data_parallel.is_some() || opts.part.is_some() || todo.len() < 2 {
            return todo
                .iter()
                .map(|name| self.bring_up_to_date(name, opts, progress))
                .collect();
        }
        let position: BTreeMap<&str, usize> = todo
            .iter()
            .enumerate()
            .map(|(i, s)| (s.as_str(), i))
            .collect();
        // Upstream stages outside `todo` are fresh or were never asked for: not waited on.
        let needs: Vec<Vec<usize>> = todo
            .iter()
            .map(|s| {
                self.dag
                    .needs(s)
                    .iter()
                    .filter_map(|u| position.get(u.as_str()).copied())
                    .collect()
            })
            .collect();
        // Each stage's cost hint, asked once, when it is first ready (its upstream built).
        let mut hints: Vec<Option<Option<f64>>> = vec![None; todo.len()];
        let mut state = vec![Progressing::Waiting; todo.len()];
        let mut reports: Vec<Option<StageReport>> = vec![None; todo.len()];
        let mut first_error: Option<anyhow::Error> = None;
        std::thread::scope(|scope| {
            let (done_tx, done_rx) = mpsc::channel::<(usize, Result<StageReport>)>();
            let mut running = 0;
            loop {
                // After a failure nothing new starts; what runs finishes (its units are kept
                // either way), then the run fails naming the first failure.
                if first_error.is_none() {
                    let ready: Vec<usize> = (0..todo.len())
                        .filter(|&i| {
                            state[i] == Progressing::Waiting
                                && needs[i].iter().all(|&u| state[u] == Progressing::Done)
                        })
                        .collect();
                    for &i in &ready {
                        if hints[i].is_none() {
                            let hint = self.cost_hint(&todo[i]);
                            if let Some(h) = hint {
                                tracing::info!("{}: ready, cost hint {h:.3e}", todo[i]);
                            }
                            hints[i] = Some(hint);
                        }
                    }
                    let hint_of = |i: usize| hints[i].flatten();
                    for i in start_order(&ready, hint_of) {
                        if running == at_once {
                            break;
                        }
                        state[i] = Progressing::Running;
                        running += 1;
                        let done_tx = done_tx.clone();
                        let name = &todo[i];
                        scope.spawn(move || {
                            let report = self.bring_up_to_date(name, opts, progress);
                            // The receiver outlives every sender in this scope.
                            let _ = done_tx.send((i, report));
                        });
                    }
                }
                if running == 0 {
                    break;
                }
                let Ok((i, report)) = done_rx.recv() else {
                    break;
                };
                running -= 1;
                match report {
                    Ok(r) => {
                        state[i] = Progressing::Done;
                        reports[i] = Some(r);
                    }
                    Err(e) => {
                        state[i] = Progressing::Failed;
                        first_error.get_or_insert(e);
                    }
                }
            }
        });
        if let Some(e) = first_error {
            return Err(e);
        }
        Ok(reports.into_iter().flatten().collect())
    }

    /// The stage's cost hint ([`Stage::cost_hint`]); None when it has none or its upstream
    /// cannot be read (the stage's own run then says why).
    fn cost_hint(&self, name: &str) -> Option<f64> {
        let upstream = self.upstream_of(name).ok()?;
        self.stages[name]
            .cost_hint(&upstream)
            .filter(|c| c.is_finite() && *c >= 0.0)
    }

    /// One stage of a run: fresh, pulled from the remote, or built here.
    fn bring_up_to_date(
        &self,
        name: &str,
        opts: &RunOptions,
        progress: &Progress,
    ) -> Result<StageReport> {
        let is_target = match opts.target.as_deref() {
            Some(t) if is_glob(t) => crate::config::glob_match(t.as_bytes(), name.as_bytes()),
            Some(t) => t == name,
            None => false,
        };
        let key = self.keys[name].key.clone();
        let fresh = self.local_manifest_ok(name, &key);
        let forced = opts.force && (is_target || opts.target.is_none());
        if fresh && !forced {
            return Ok(StageReport {
                stage: name.to_string(),
                key,
                outcome: Outcome::Fresh,
                pushed: None,
            });
        }
        if let (Some(dp), false) = (opts.data_parallel, is_target) {
            // Ranks must agree on what they run: only the target runs, together.
            return Err(UsageError(format!(
                "rank {} of a data-parallel job of {}: `{name}` (needed by `{}`) is not built; a data-parallel launch only trains: build it first with one process, `lm4ve pipeline run --stage {name}`",
                dp.rank,
                dp.world,
                opts.target.as_deref().unwrap_or_default()
            ))
            .into());
        }
        if let Some(dp) = opts.data_parallel.filter(|dp| dp.rank > 0) {
            let units_run = self.run_replica(name, progress)?;
            return Ok(StageReport {
                stage: name.to_string(),
                key,
                outcome: Outcome::Replica {
                    rank: dp.rank,
                    units_run,
                },
                pushed: None,
            });
        }
        // A data-parallel rank 0 computes what its replicas compute: no pulls.
        if !forced && opts.data_parallel.is_none() {
            if let Some(outcome) = self.try_pull(name, &key, progress) {
                return Ok(StageReport {
                    stage: name.to_string(),
                    key,
                    outcome,
                    pushed: None,
                });
            }
        }
        let part = if is_target { opts.part } else { None };
        if opts.part.is_some() && !is_target {
            return Err(UsageError(format!(
                "--part needs the stages before `{}` built; `{name}` is not: run `lm4ve pipeline run --stage {name}` first",
                opts.target.as_deref().unwrap_or_default()
            ))
            .into());
        }
        let assemble = opts.assemble && (is_target || opts.target.is_none());
        let pull_units = opts.data_parallel.is_none();
        let outcome = self.run_stage(name, opts.force, part, assemble, pull_units, progress)?;
        let pushed = self.push_after_run(name, &key, &outcome, part.is_some(), progress);
        Ok(StageReport {
            stage: name.to_string(),
            key,
            outcome,
            pushed,
        })
    }
}

/// The order in which the `ready` stages (positions in DAG order) start: those without a cost
/// hint first, in DAG order (data preparation and evaluations: short, and they unblock
/// others), then the costliest first, ties in DAG order.
fn start_order(ready: &[usize], hint: impl Fn(usize) -> Option<f64>) -> Vec<usize> {
    let mut order = ready.to_vec();
    order.sort_by(|&a, &b| match (hint(a), hint(b)) {
        (None, None) => a.cmp(&b),
        (None, Some(_)) => std::cmp::Ordering::Less,
        (Some(_), None) => std::cmp::Ordering::Greater,
        (Some(x), Some(y)) => y.total_cmp(&x).then(a.cmp(&b)),
    });
    order
}

#[cfg(test)]
mod tests {
    use super::start_order;

    #[test]
    fn unhinted_stages_start_first_then_the_costliest() {
        let hints = [Some(1.0), None, Some(5.0), Some(5.0), None, Some(2.0)];
        let order = start_order(&[0, 1, 2, 3, 4, 5], |i| hints[i]);
        assert_eq!(order, vec![1, 4, 2, 3, 5, 0]);
    }
}
