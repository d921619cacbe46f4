//! An `eval` stage's run, generic over the task: the trained model rebuilt as it was trained
//! (the train artifact's meta), its weights loaded, scored on the held-out split (and with
//! test-time voting where the task has it), written to `metrics.json`.

use super::assemble::{build_model, load_weights, num_classes};
use super::block::BlockMode;
use super::evaluate::evaluate;
use super::models::layers::Execution;
use super::params::EvalParams;
use super::task::Task;
use anyhow::{Context, Result};
use lm4ve_pipeline::{StageCtx, UnitOutput};

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
        let weights_path = train
            .manifest
            .file_path(&train.manifest_path, "model.safetensors")
            .context("train artifact has no model.safetensors")?;
        load_weights(&built, &weights_path, &device)?;
        // In a data-parallel launch the ranks share the test set (rank 0 stores the result).
        let coll = super::dist::current();
        let score = |set: &T::Data| {
            evaluate(
                task,
                &built.model,
                set,
                classes,
                self.batch_size,
                &device,
                &*coll,
            )
        };
        let mut metrics = score(&set)?.metrics;
        if let Some(votes) = task.begin_vote(&mut set, self.p, seed) {
            let voted = score(&set)?.metrics;
            if let Some(obj) = voted.as_object() {
                for (k, v) in obj {
                    metrics[format!("vote_{k}")] = v.clone();
                }
            }
            metrics["votes"] = votes.into();
        }
        task.annotate_eval(&set, self.p, &mut metrics);
        metrics["split"] = self.split.into();
        // The held-out score of the training run's best and last epochs (what the paper
        // reports is the best epoch's test accuracy, `ckpt-best`), next to this evaluation of
        // the last model.
        metrics["train_best_epoch"] = meta["best"].clone();
        metrics["train_last_epoch"] = meta["final"]
            .get("epoch")
            .map(|e| serde_json::json!({ "epoch": e, "score": meta["final"]["test_acc"] }))
            .unwrap_or_default();
        metrics["mode"] = serde_json::to_value(mode)?;
        out.add_file(
            "metrics.json",
            serde_json::to_string_pretty(&metrics)?.as_bytes(),
        )?;
        out.set_meta(metrics);
        Ok(())
    }
}
