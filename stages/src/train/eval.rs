//! An `eval` stage's run, generic over the task: the trained model rebuilt as it was trained
//! (the train artifact's meta), and each of its kept weights — the last epoch's and the best
//! epoch's — loaded and scored on the held-out split (and with test-time voting where the
//! task has it), written to `metrics.json`: the top level is the checkpoint the task's paper
//! protocol reports ([`super::task::Reported`]), both are under `checkpoints`. Each scored
//! checkpoint's per-sample predictions go to `predictions-last.parquet` /
//! `predictions-best.parquet` ([`super::predictions`]; with voting, the voted ones).

use super::assemble::{build_model, load_weights, num_classes};
use super::block::BlockMode;
use super::ema::EMA_MODEL_FILE;
use super::evaluate::evaluate_rows;
use super::models::layers::Execution;
use super::params::EvalParams;
use super::predictions::file_name;
use super::task::{Checkpoint, Evaluation, Task};
use super::trainer::BEST_MODEL_FILE;
use anyhow::{Context, Result};
use lm4ve_pipeline::{StageCtx, UnitOutput};

/// The voting seed of run `r` of `vote_runs`: run 0 draws what a single voting run always
/// drew.
fn vote_seed(seed: u64, r: usize) -> u64 {
    if r == 0 {
        seed
    } else {
        let h = blake3::hash(format!("{seed}:vote-run:{r}").as_bytes());
        let mut b = [0u8; 8];
        b.copy_from_slice(&h.as_bytes()[..8]);
        u64::from_le_bytes(b)
    }
}

/// One `eval` stage's run: its task, params, the split and batch size it scores with.
pub struct EvalJob<'a, T: Task> {
    pub task: &'a T,
    pub p: &'a EvalParams,
    pub split: &'a str,
    pub batch_size: usize,
}

impl<T: Task> EvalJob<'_, T> {
    pub fn eval_unit(&self, ctx: &StageCtx, out: &mut UnitOutput) -> Result<()> {
        let task = self.task;
        let device = super::device::device()?;
        let train = &ctx.upstream[&self.p.train];
        let meta = &train.manifest.meta;
        anyhow::ensure!(
            meta.get("model").is_some(),
            "`train` must name a train stage (its manifest has no model config)"
        );
        let cfg: T::Config = serde_json::from_value(meta["model"].clone()).map_err(|e| {
            anyhow::anyhow!(
                "the train stage's model does not fit `data`: [model] of a {} model: {e}",
                task.model_title()
            )
        })?;
        let mode: BlockMode =
            serde_json::from_value(meta["mode"].clone()).context("train manifest lacks mode")?;
        let seed = meta["seed"].as_u64().unwrap_or(0);
        let data = &ctx.upstream[&self.p.data];
        let classes = if task.is_classification() {
            num_classes(data)?
        } else {
            0
        };
        let block_up = self.p.block.as_ref().and_then(|b| ctx.upstream.get(b));
        if mode != BlockMode::None && block_up.is_none() {
            anyhow::bail!(
                "the model was trained with a {mode:?} block: set `block` to the llm.block stage"
            );
        }
        let mut set = task.load(data, self.split)?;
        anyhow::ensure!(task.len(&set) > 0, "split `{}` has no samples", self.split);
        task.prepare_eval(&mut set, self.p);
        let mlp_hidden = meta["mlp_hidden"].as_u64().map(|h| h as usize);
        let mut built = build_model(
            task,
            &cfg,
            task.shape_of(&set),
            classes,
            mode,
            mlp_hidden,
            block_up,
            seed,
            &device,
        )?;
        // Run the model as it was trained (attention and precision; no checkpointing needed
        // without a backward).
        task.configure(
            &mut built.model,
            &Execution {
                attn: serde_json::from_value(meta["attention"].clone()).unwrap_or_default(),
                checkpoint: None,
                precision: serde_json::from_value(meta["precision"].clone()).unwrap_or(None),
            },
        );
        let last_path = train
            .manifest
            .file_path(&train.manifest_path, "model.safetensors")
            .context("train artifact has no model.safetensors")?;
        let epoch_of = |v: &serde_json::Value| v.get("epoch").and_then(|e| e.as_u64());
        let (best_epoch, last_epoch) = (epoch_of(&meta["best"]), epoch_of(&meta["final"]));
        // The best epoch's weights, when the run kept them (an artifact from before they
        // were kept has only the last) and they are not the last epoch's own.
        let best_path = train
            .manifest
            .file_path(&train.manifest_path, BEST_MODEL_FILE)
            .filter(|_| best_epoch.is_some());
        let same = best_epoch == last_epoch;
        let mut weights = vec![(Checkpoint::Last, last_path.clone(), last_epoch)];
        if let (Some(path), false) = (&best_path, same) {
            weights.push((Checkpoint::Best, path.clone(), best_epoch));
        }
        // The model's moving average (`model_ema`), scored beside them: DeiT keeps it and
        // reports the model's own accuracy, so it is never the top level.
        if let Some(path) = train
            .manifest
            .file_path(&train.manifest_path, EMA_MODEL_FILE)
        {
            weights.push((Checkpoint::Ema, path, last_epoch));
        }
        // In a data-parallel launch the ranks share the test set (rank 0 stores the result).
        let coll = super::dist::current();
        let score = |set: &T::Data| {
            evaluate_rows(
                task,
                &built.model,
                set,
                classes,
                self.batch_size,
                &device,
                &*coll,
                true,
            )
        };
        let mut per: Vec<(Checkpoint, serde_json::Value, Option<u64>)> = Vec::new();
        // Each checkpoint's per-sample predictions (flat rows, `predictions::rows`).
        let mut predicted: Vec<Vec<Vec<f64>>> = Vec::new();
        for (which, path, epoch) in &weights {
            load_weights(&built, path, &device)?;
            let (ev, rows) = score(&set)?;
            per.push((*which, ev.metrics, *epoch));
            predicted.push(rows);
        }
        // Test-time voting, for each set of weights: `vote_runs` runs of `vote` views, the
        // best run's numbers kept (the reference's test prints the best of 9).
        let runs = self.p.vote_runs.unwrap_or(1).max(1);
        if task.begin_vote(&mut set, self.p, seed).is_some() {
            for (((_, path, _), (_, metrics, _)), rows) in
                weights.iter().zip(per.iter_mut()).zip(predicted.iter_mut())
            {
                load_weights(&built, path, &device)?;
                let mut best_run: Option<(Evaluation, Vec<Vec<f64>>)> = None;
                let mut scores = Vec::with_capacity(runs);
                for r in 0..runs {
                    let votes = task.begin_vote(&mut set, self.p, vote_seed(seed, r));
                    let voted = score(&set)?;
                    scores.push(voted.0.score);
                    if best_run.as_ref().is_none_or(|b| voted.0.score > b.0.score) {
                        best_run = Some(voted);
                    }
                    metrics["votes"] = votes.unwrap_or(0).into();
                }
                // With voting, the predictions are the voted ones of the run kept.
                if let Some((voted, voted_rows)) = best_run {
                    *rows = voted_rows;
                    if let Some(obj) = voted.metrics.as_object() {
                        for (k, v) in obj {
                            metrics[format!("vote_{k}")] = v.clone();
                        }
                    }
                }
                if runs > 1 {
                    metrics["vote_runs"] = runs.into();
                    metrics["vote_run_scores"] = scores.into();
                }
            }
        }
        for (_, m, epoch) in per.iter_mut() {
            task.annotate_eval(&set, self.p, m);
            m["epoch"] = (*epoch).into();
        }
        let find = |c: Checkpoint| {
            per.iter()
                .find(|(w, _, _)| *w == c)
                .map(|(_, m, _)| m.clone())
        };
        let last = find(Checkpoint::Last).unwrap_or_default();
        // The best epoch is the last one: the same weights, scored once.
        let best =
            find(Checkpoint::Best).or_else(|| (same && best_path.is_some()).then(|| last.clone()));
        let reported = task.reported();
        let (chosen, note) = match (reported.checkpoint, &best) {
            (Checkpoint::Best, Some(b)) => (b.clone(), reported.why.to_string()),
            (Checkpoint::Best, None) => (
                last.clone(),
                format!("{} — the train artifact keeps no best-epoch weights (trained before they were kept, or no held-out split), so this is the last epoch", reported.why),
            ),
            // No task reports the average (DeiT reports the model's own accuracy).
            (Checkpoint::Last | Checkpoint::Ema, _) => (last.clone(), reported.why.to_string()),
        };
        let chosen_name = if best.is_none() {
            Checkpoint::Last
        } else {
            reported.checkpoint
        };
        // The top level is the paper's protocol (what `pipeline report` shows); both sets of
        // weights are under `checkpoints`.
        let mut metrics = chosen;
        metrics["reported"] = serde_json::json!({
            "checkpoint": chosen_name.name(),
            "protocol": note,
        });
        let mut both = serde_json::json!({ "last": last });
        if let Some(b) = best {
            both["best"] = b;
        }
        if let Some(e) = find(Checkpoint::Ema) {
            both["ema"] = e;
        }
        metrics["checkpoints"] = both;
        metrics["split"] = self.split.into();
        // The held-out score of the training run's best and last epochs, as the trainer
        // measured them each epoch.
        metrics["train_best_epoch"] = meta["best"].clone();
        metrics["train_last_epoch"] = meta["final"]
            .get("epoch")
            .map(|e| serde_json::json!({ "epoch": e, "score": meta["final"]["test_acc"] }))
            .unwrap_or_default();
        metrics["mode"] = serde_json::to_value(mode)?;
        // Rank 0 stores the artifact; the predictions are the whole split's on every rank.
        for (i, (which, _, _)) in weights.iter().enumerate() {
            let rows = &predicted[i];
            if rows.is_empty() {
                continue;
            }
            if let Some(bytes) = task.predictions_file(data, self.split, &set, rows)? {
                out.add_file(file_name(*which), &bytes)?;
                // The best epoch is the last one: the same predictions under both names.
                if *which == Checkpoint::Last && same && best_path.is_some() {
                    out.add_file(file_name(Checkpoint::Best), &bytes)?;
                }
            }
        }
        out.add_file(
            "metrics.json",
            serde_json::to_string_pretty(&metrics)?.as_bytes(),
        )?;
        out.set_meta(metrics);
        Ok(())
    }
}
