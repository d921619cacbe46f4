//! The training loop of a `train` stage, generic over the task: build the model from the
//! upstream artifacts, restore the previous work unit's checkpoint, run
//! `epochs_per_checkpoint` epochs (forward, loss, backward, loss scaling, clipping, AdamW),
//! evaluate each epoch, and write the checkpoint, and after the last unit the model, metrics
//! and curves. Nothing here knows which task it trains.

use super::assemble::{build_model, num_classes, sorted_vars};
use super::checkpoint;
use super::data::prefetch::prefetched;
use super::dist::grads::broadcast_vars;
use super::ema::{ModelEma, EMA_MODEL_FILE};
use super::evaluate::evaluate;
use super::groups::{is_running_stat, params_for};
use super::models::layers::{step_rng, Execution};
use super::ops::precision::LossScaler;
use super::ops::recompute::GradSink;
use super::optim::AdamW;
use super::params::TrainParams;
use super::sampler;
use super::schedule::{
    schedule_for, AfterSteps, EpochCosine, Schedule, WarmupPass, DEIT_WARMUP_LR,
};
use super::step::backward_and_step;
use super::task::{best_epoch, EpochMetrics, Task};
use crate::plot::{curves_png, Series};
use anyhow::{Context, Result};
use candle_core::DType;
use candle_nn::VarMap;
use lm4ve_pipeline::{StageCtx, UnitOutput, UnitPlan};
use std::time::Instant;

/// The unit file holding the weights of the best epoch so far, written by a unit in which
/// a new best epoch happened (the final unit copies the overall best to
/// [`BEST_MODEL_FILE`]).
pub const BEST_UNIT_FILE: &str = "best-weights.safetensors";
/// The artifact's best-epoch weights (`model.safetensors` is the last epoch's).
pub const BEST_MODEL_FILE: &str = "model-best.safetensors";

/// Batches made ahead of the one training (enough to hide a resampling or a shard read behind
/// a step; each holds one batch of inputs in memory).
const PREFETCH_BATCHES: usize = 2;

/// One `train` stage's run: its task, name, params and typed model config.
pub struct TrainJob<'a, T: Task> {
    pub task: &'a T,
    pub name: &'a str,
    pub p: &'a TrainParams,
    pub model: &'a T::Config,
}

/// The positions of a global batch of `n` samples that rank `rank` of `world` makes: a
/// contiguous share, the first `n % world` ranks one sample more.
pub fn rank_rows(n: usize, rank: usize, world: usize) -> std::ops::Range<usize> {
    let (base, extra) = (n / world, n % world);
    let start = rank * base + rank.min(extra);
    start..start + base + usize::from(rank < extra)
}

/// A generator purpose of rank `rank`'s own stream (dropout, drop-path): rank 0 keeps the
/// plain purpose, so a job of one draws what it always drew.
fn rank_purpose(purpose: &str, rank: usize) -> String {
    if rank == 0 {
        purpose.to_string()
    } else {
        format!("{purpose}.rank{rank}")
    }
}

impl<T: Task> TrainJob<'_, T> {
    /// The `init` checkpoint or the `init_stage` artifact's `model.safetensors`, loaded into
    /// the encoder (the first unit only; later ones resume from their checkpoint).
    fn load_init(
        &self,
        ctx: &StageCtx,
        varmap: &VarMap,
    ) -> Result<Option<super::init::InitReport>> {
        let (path, from_stage) = match (&self.p.init, &self.p.init_stage) {
            (Some(path), _) => (path.clone(), None),
            (None, Some(stage)) => {
                let up = ctx
                    .upstream
                    .get(stage)
                    .with_context(|| format!("init_stage `{stage}` is not built"))?;
                let path = up
                    .manifest
                    .file_path(&up.manifest_path, "model.safetensors")
                    .with_context(|| {
                        format!("init_stage `{stage}`: its artifact has no model.safetensors")
                    })?;
                (path, Some(stage))
            }
            (None, None) => return Ok(None),
        };
        let fam = self
            .task
            .init_family()
            .context("`init` is not supported for this task")?;
        let mut report = super::init::load_into(&path, fam, &sorted_vars(varmap)?)?;
        if let Some(stage) = from_stage {
            // The cache object's name says nothing; the stage does.
            report.file = format!("{stage}/model.safetensors");
        }
        Ok(Some(report))
    }

    /// The weights of the run's best epoch `epoch`: this unit's snapshot (unit `k`), or the
    /// snapshot of the earlier unit that epoch belongs to.
    fn best_weights(
        &self,
        ctx: &StageCtx,
        epoch: usize,
        k: usize,
        here: Option<&[u8]>,
    ) -> Result<Vec<u8>> {
        let unit = epoch / self.p.epochs_per_checkpoint.max(1);
        if unit == k {
            return here
                .map(<[u8]>::to_vec)
                .context("the best epoch is in this unit but its weights were not kept");
        }
        let id = TrainParams::unit_id(unit);
        let path = ctx.unit_file(&id, BEST_UNIT_FILE).with_context(|| {
            format!("unit {id} holds the best epoch ({epoch}) but its {BEST_UNIT_FILE} is missing from the journal")
        })?;
        std::fs::read(&path).with_context(|| format!("reading {}", path.display()))
    }

    /// One work unit: `epochs_per_checkpoint` epochs from the previous unit's checkpoint.
    pub fn train_unit(&self, ctx: &StageCtx, unit: &UnitPlan, out: &mut UnitOutput) -> Result<()> {
        // Freed tensors stay in the heap for the next step (heap.rs; once per process).
        super::heap::keep_freed_memory();
        let task = self.task;
        let k: usize = unit
            .id
            .trim_start_matches("ckpt-")
            .parse()
            .context("unit id")?;
        let device = super::device::device()?;
        let coll = super::dist::current();
        let (rank, world) = (coll.rank(), coll.world_size());
        if coll.is_joined() {
            // Every rank reads the journal; rank 0 commits. Agreeing here also waits for rank
            // 0 to have committed the unit before (it reaches this after committing).
            let at = coll.broadcast_u64(k as u64)?;
            anyhow::ensure!(
                at == k as u64,
                "rank {rank} of {world} is at unit {k}, rank 0 at unit {at}: the ranks read different caches; every rank must use the same cache directory (a shared filesystem)"
            );
            anyhow::ensure!(
                self.p.batch_size.is_multiple_of(world),
                "batch_size = {} (the global batch) does not split evenly over {world} ranks; use a multiple of {world}",
                self.p.batch_size
            );
        }
        let data = &ctx.upstream[&self.p.data];
        let classes = if task.is_classification() {
            num_classes(data)?
        } else {
            0
        };
        let mut train = task.load(data, "train")?;
        task.prepare_train(&mut train, self.p, self.model)?;
        let test = task.load(data, task.eval_split())?;
        let (train_len, test_len) = (task.len(&train), task.len(&test));
        anyhow::ensure!(train_len > 0, "the data artifact has no `train` samples");
        anyhow::ensure!(
            train_len >= world,
            "{train_len} training samples cannot be shared by {world} ranks; use fewer ranks"
        );
        let block_up = self.p.block.as_ref().and_then(|b| ctx.upstream.get(b));
        let mut built = build_model(
            task,
            self.model,
            task.shape_of(&train),
            classes,
            self.p.mode,
            self.p.mlp_hidden,
            block_up,
            self.p.seed,
            &device,
        )?;
        // Pretrained encoder weights, once: later units restore everything from the previous
        // unit's checkpoint.
        let init = if k == 0 {
            self.load_init(ctx, &built.varmap)?
        } else {
            None
        };
        if let Some(report) = &init {
            tracing::info!("{}: {}", self.name, report.summary());
        }
        let sink = GradSink::default();
        task.configure(
            &mut built.model,
            &Execution {
                attn: self.p.attention,
                checkpoint: self.p.checkpoint_blocks.then(|| sink.clone()),
                precision: self.p.precision,
            },
        );
        let mut scaler = self
            .p
            .precision
            .filter(|p| p.needs_loss_scaling())
            .map(|_| LossScaler::default());
        let vit_depth = task.layer_decay_depth(self.model);
        let mut opt = AdamW::new(params_for(
            self.p,
            &built.varmap,
            &built.block_vars,
            vit_depth,
        )?)?;
        let all_vars = sorted_vars(&built.varmap)?;
        let mut history: Vec<EpochMetrics> = Vec::new();
        if k > 0 {
            let prev = TrainParams::unit_id(k - 1);
            let path = ctx
                .unit_file(&prev, "checkpoint.safetensors")
                .with_context(|| format!("checkpoint {prev} is missing from the journal"))?;
            checkpoint::restore(
                &path,
                &device,
                all_vars.iter().chain(built.block_vars.iter()),
                &mut opt,
                scaler.as_mut(),
            )?;
            for j in 0..k {
                if let Some(r) = ctx.unit_record(&TrainParams::unit_id(j)) {
                    if let Ok(h) =
                        serde_json::from_value::<Vec<EpochMetrics>>(r.meta["epochs"].clone())
                    {
                        history.extend(h);
                    }
                }
            }
        }
        // Rank 0's parameters (and BatchNorm statistics) on every rank: they start equal by
        // construction (same seed, same checkpoint); this makes it so whatever happened.
        broadcast_vars(
            &*coll,
            all_vars
                .iter()
                .chain(built.block_vars.iter())
                .map(|(_, v)| v),
        )?;
        // The model's moving average (DeiT's model EMA), when on: a copy of the model as
        // training starts, or the average the previous unit left.
        let mut ema = match (self.p.model_ema, k) {
            (None, _) => None,
            (Some(decay), 0) => Some(ModelEma::start(
                decay,
                all_vars.iter().chain(built.block_vars.iter()),
            )?),
            (Some(decay), _) => {
                let prev = TrainParams::unit_id(k - 1);
                let path = ctx
                    .unit_file(&prev, "checkpoint.safetensors")
                    .with_context(|| format!("checkpoint {prev} is missing from the journal"))?;
                Some(ModelEma::restore(
                    decay,
                    &path,
                    &device,
                    all_vars.iter().chain(built.block_vars.iter()),
                )?)
            }
        };
        let epoch_len = sampler::epoch_len(train_len, self.p);
        let per_epoch = if epoch_len >= self.p.batch_size {
            epoch_len / self.p.batch_size
        } else {
            1
        };
        let total_steps = (per_epoch * self.p.epochs) as u64;
        let warmup_steps = (per_epoch * self.p.warmup_epochs) as u64;
        let first_epoch = k * self.p.epochs_per_checkpoint;
        let last_epoch = (first_epoch + self.p.epochs_per_checkpoint).min(self.p.epochs);
        let (peak, floor) = self.p.schedule_lrs();
        // StreamingForecasting's warm-up pass, when the schedule has one: before epoch 0,
        // iterations `i = 0..=steps` of epoch 0's order (its loader is not re-seeded before
        // the pass, so the pass reads what epoch 0 then reads again), at
        // `start + (lr − start)·i/steps`, cut short by the end of one pass over the data; the
        // epochs then continue from the pass's last lr (`lr` itself unless the data ran out).
        let pass = self
            .p
            .warmup_steps
            .map(|w| WarmupPass::new(w.steps, w.start_ratio, peak, per_epoch));
        let pass_steps = pass.as_ref().map_or(0, |w| w.steps);
        let schedule: Box<dyn Schedule> = if self.p.epoch_schedule {
            Box::new(EpochCosine {
                epochs: self.p.epochs,
                warmup: self.p.warmup_epochs,
                warmup_lr: DEIT_WARMUP_LR,
                lr: peak,
                min_lr: floor,
            })
        } else if let Some(w) = &pass {
            // The decay (or the cosine) from the pass's last lr, its steps after the pass's.
            Box::new(AfterSteps {
                steps: w.steps,
                then: schedule_for(
                    self.p.lr_steps.as_ref(),
                    total_steps,
                    0,
                    w.final_lr(),
                    floor,
                ),
            })
        } else {
            schedule_for(
                self.p.lr_steps.as_ref(),
                total_steps,
                warmup_steps,
                peak,
                floor,
            )
        };
        // One pass of `steps` batches of `order` (an epoch, or the warm-up pass) at the lr
        // `lr_at(step)`: forward, loss, backward, step, average. Returns the summed loss,
        // hits and samples over the ranks, and the last lr.
        let run_pass = |order: &[usize],
                        steps: usize,
                        lr_at: &dyn Fn(u64) -> f64,
                        opt: &mut AdamW,
                        scaler: &mut Option<LossScaler>,
                        ema: &mut Option<ModelEma>|
         -> Result<(f64, u64, u64, f64)> {
            let (mut loss_sum, mut right, mut seen) = (0f64, 0u64, 0u64);
            let mut lr = 0.0;
            let batch_idx = |b: usize| -> Vec<usize> {
                order
                    .iter()
                    .skip(b * self.p.batch_size)
                    .take(self.p.batch_size)
                    .copied()
                    .collect()
            };
            // Every step's generators come from its number, so batches can be made ahead.
            let first_step = opt.step;
            let make = |b: usize| {
                let mut aug = step_rng(self.p.seed, "augment", first_step + b as u64);
                let idx = batch_idx(b);
                let rows = rank_rows(idx.len(), rank, world);
                task.train_batch(&train, &idx, rows, &mut aug, &device)
            };
            prefetched(steps, PREFETCH_BATCHES, make, |b, batch| {
                let global = batch_idx(b).len();
                let n = rank_rows(global, rank, world).len();
                let step = opt.step;
                debug_assert_eq!(step, first_step + b as u64);
                lr = lr_at(step);
                let mut drop = step_rng(self.p.seed, &rank_purpose("dropout", rank), step);
                let out = task.forward(&built.model, &batch, Some(&mut drop))?;
                let (loss, hits) = task.loss(&out, &batch, self.p.label_smoothing)?;
                // Ranks' means weighted by their share, so the averaged gradient is the
                // global batch's mean even when the batch does not split evenly.
                let weight = (n * world) as f64 / global as f64;
                let to_step = if weight == 1.0 {
                    loss.clone()
                } else {
                    (&loss * weight)?
                };
                backward_and_step(
                    &to_step,
                    opt,
                    scaler.as_mut(),
                    &sink,
                    &*coll,
                    self.p.grad_clip,
                    lr,
                )?;
                if let Some(ema) = ema.as_mut() {
                    ema.update(all_vars.iter().chain(built.block_vars.iter()))?;
                }
                let lv = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
                anyhow::ensure!(lv.is_finite(), "loss became {lv} at step {step}; lower lr (OPT blocks below 1.3B need ~5x lower, PAPER.md §2)");
                loss_sum += lv * n as f64;
                right += hits;
                seen += n as u64;
                Ok(())
            })?;
            if coll.is_joined() {
                let mut sums = [loss_sum, right as f64, seen as f64];
                coll.all_reduce_sum_host(&mut sums)?;
                (loss_sum, right, seen) = (sums[0], sums[1] as u64, sums[2] as u64);
                // BatchNorm statistics are each rank's own (as in DDP); rank 0's are the
                // model's, as DDP broadcasts its buffers.
                broadcast_vars(
                    &*coll,
                    all_vars
                        .iter()
                        .filter(|(n, _)| is_running_stat(n))
                        .map(|(_, v)| v),
                )?;
            }
            Ok((loss_sum, right, seen, lr))
        };
        let epoch_order = |epoch: usize| {
            sampler::epoch_order(
                train_len,
                self.p,
                &mut step_rng(self.p.seed, "shuffle", epoch as u64),
            )
        };
        let mut warmup_record = None;
        if let (Some(w), 0) = (&pass, k) {
            let t0 = Instant::now();
            let (loss_sum, _, seen, lr) = run_pass(
                &epoch_order(0),
                w.steps as usize,
                &|step| w.lr(step),
                &mut opt,
                &mut scaler,
                &mut ema,
            )?;
            let loss = loss_sum / seen.max(1) as f64;
            tracing::info!(
                "{}: warm-up pass, {} steps, lr {:.3e} → {lr:.3e}, loss {loss:.4}",
                self.name,
                w.steps,
                w.lr(0)
            );
            warmup_record = Some(serde_json::json!({
                "steps": w.steps, "loss": loss, "last_lr": lr,
                "seconds": t0.elapsed().as_secs_f64(),
            }));
        }
        debug_assert!(k == 0 || opt.step >= pass_steps);
        let mut new_metrics = Vec::new();
        // The weights of this unit's newest best epoch (by the held-out score, the first of
        // equal epochs: the reference's `ckpt-best` rule), serialized when it happened.
        let mut best_bytes: Option<Vec<u8>> = None;
        for epoch in first_epoch..last_epoch {
            let t0 = Instant::now();
            let (loss_sum, right, seen, lr) = run_pass(
                &epoch_order(epoch),
                per_epoch,
                &|step| schedule.lr(step, epoch),
                &mut opt,
                &mut scaler,
                &mut ema,
            )?;
            let held = if test_len == 0 {
                None
            } else {
                Some(evaluate(
                    task,
                    &built.model,
                    &test,
                    classes,
                    self.p.batch_size,
                    &device,
                    &*coll,
                )?)
            };
            let m = EpochMetrics {
                epoch,
                step: opt.step,
                lr,
                loss: loss_sum / seen.max(1) as f64,
                train_acc: right as f64 / seen.max(1) as f64,
                test_acc: held.as_ref().map_or(0.0, |h| h.score),
                detail: held.as_ref().and_then(|h| task.epoch_detail(h)),
                seconds: t0.elapsed().as_secs_f64(),
            };
            tracing::info!("{}", task.epoch_log(self.name, &m));
            new_metrics.push(m);
            let is_best = held.is_some()
                && best_epoch(history.iter().chain(new_metrics.iter()))
                    .is_some_and(|b| b.epoch == epoch);
            if is_best {
                let ck = checkpoint::save(
                    all_vars.iter().chain(built.block_vars.iter()),
                    &opt,
                    scaler.as_ref(),
                )?;
                best_bytes = Some(checkpoint::to_bytes(&checkpoint::model_weights(&ck))?);
            }
        }
        let mut ck = checkpoint::save(
            all_vars.iter().chain(built.block_vars.iter()),
            &opt,
            scaler.as_ref(),
        )?;
        let weights = checkpoint::model_weights(&ck);
        if let Some(ema) = &ema {
            ema.save_into(&mut ck)?;
        }
        out.add_file("checkpoint.safetensors", &checkpoint::to_bytes(&ck)?)?;
        history.extend(new_metrics.iter().cloned());
        if let Some(bytes) = &best_bytes {
            out.add_file(BEST_UNIT_FILE, bytes)?;
        }
        if k + 1 == self.p.units() {
            out.add_file("model.safetensors", &checkpoint::to_bytes(&weights)?)?;
            if let Some(ema) = &ema {
                out.add_file(
                    EMA_MODEL_FILE,
                    &checkpoint::to_bytes(&ema.weights(&weights)?)?,
                )?;
            }
            // No held-out split, no best: the scores are placeholders.
            if let Some(best) = best_epoch(history.iter()).filter(|_| test_len > 0) {
                let bytes = self.best_weights(ctx, best.epoch, k, best_bytes.as_deref())?;
                out.add_file(BEST_MODEL_FILE, &bytes)?;
            }
            let mut jsonl = String::new();
            for m in &history {
                jsonl.push_str(&serde_json::to_string(m)?);
                jsonl.push('\n');
            }
            out.add_file("metrics.jsonl", jsonl.as_bytes())?;
            // x = epoch number (1-based, the epoch just finished).
            let col = |f: fn(&EpochMetrics) -> f64| {
                history
                    .iter()
                    .map(|m| (m.epoch as f64 + 1.0, f(m)))
                    .collect::<Vec<_>>()
            };
            let (train_name, held_name) = task.curve_names();
            let curves = curves_png(
                &format!("{}: training curves", self.name),
                &Series {
                    name: "training loss",
                    points: col(|m| m.loss),
                    held_out: false,
                },
                &[
                    Series {
                        name: train_name,
                        points: col(|m| m.train_acc),
                        held_out: false,
                    },
                    Series {
                        name: held_name,
                        points: col(|m| m.test_acc),
                        held_out: true,
                    },
                ],
            )?;
            out.add_file("curves.png", &curves)?;
            for (name, png) in task.extra_plots(self.name, &history)? {
                out.add_file(name, &png)?;
            }
        }
        let mut meta = serde_json::json!({ "epochs": new_metrics });
        if let Some(w) = warmup_record {
            meta["warmup_pass"] = w;
        }
        if let Some(report) = init {
            meta["init"] = serde_json::to_value(report)?;
        }
        out.set_meta(meta);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_share_a_batch_in_order() {
        assert_eq!(rank_rows(8, 0, 1), 0..8);
        assert_eq!(rank_rows(8, 0, 2), 0..4);
        assert_eq!(rank_rows(8, 1, 2), 4..8);
        let parts: Vec<_> = (0..3).map(|r| rank_rows(7, r, 3)).collect();
        assert_eq!(parts, vec![0..3, 3..5, 5..7]);
        assert_eq!(rank_purpose("dropout", 0), "dropout");
        assert_ne!(rank_purpose("dropout", 1), "dropout");
    }
}
