//! Building one stage's artifact (`Pipeline::run_stage`), in four steps: take the build
//! lock and adopt a finished artifact; plan the units and gather those already finished
//! (journal, remote); execute the rest; assemble the manifest and write the run record.

use super::*;

impl Pipeline {
    /// Builds one stage's artifact: lock and adopt, plan and gather finished units, execute
    /// the rest, assemble and record.
    pub(super) fn run_stage(
        &self,
        name: &str,
        force: bool,
        part: Option<Part>,
        assemble: bool,
        pull_units: bool,
        progress: &Progress,
    ) -> Result<Outcome> {
        let started = Instant::now();
        let started_unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let key = self.keys[name].key.clone();
        let key = key.as_str();
        let Some(_lock) = self.lock_and_adopt(name, key, part, force)? else {
            return Ok(Outcome::BuiltElsewhere);
        };
        let upstream = self.upstream_of(name)?;
        self.verify_upstream(name, &upstream)?;
        let ctx = StageCtx {
            name,
            key,
            cache: &self.cache,
            upstream: &upstream,
            // A forced `--part` run computes its units into the artifact's own journal
            // (the assembling run needs them there; `lock_and_adopt` cleared it).
            forced: force && part.is_none(),
        };
        let (units, mut done, reused, units_pulled) =
            self.plan_and_gather(name, key, &ctx, part, force || !pull_units, progress)?;
        let units_run = self.execute(
            name, key, &ctx, &units, &mut done, reused, part, assemble, progress,
        )?;
        if done.len() < units.len() {
            return Ok(Outcome::PartDone {
                units_run,
                units_pulled,
                units_done: done.len(),
                units_total: units.len(),
            });
        }
        self.assemble_and_record(
            name,
            key,
            &ctx,
            &units,
            done,
            (units_run, reused, units_pulled),
            (started, started_unix),
        )
    }

    /// A data-parallel rank above 0: plans the stage's units as rank 0 does (same journal),
    /// computes the unfinished ones alongside it and keeps nothing; rank 0 commits each.
    /// Returns how many units it ran.
    pub(super) fn run_replica(&self, name: &str, progress: &Progress) -> Result<usize> {
        let key = self.keys[name].key.clone();
        let upstream = self.upstream_of(name)?;
        self.verify_upstream(name, &upstream)?;
        let ctx = StageCtx {
            name,
            key: &key,
            cache: &self.cache,
            upstream: &upstream,
            forced: false,
        };
        let stage = self.stages[name].as_ref();
        let failed = |e: anyhow::Error| StageFailed {
            stage: name.into(),
            message: format!("{e:#}"),
        };
        let units = stage.plan(&ctx).map_err(failed)?;
        check_unit_ids(name, &units)?;
        let journal = Journal::new(&self.cache, &key);
        let pending: Vec<&UnitPlan> = units
            .iter()
            .filter(|u| journal.get(&u.id).is_none())
            .collect();
        let bar = progress.bar(
            pending.iter().map(|u| u.work).sum(),
            &format!("{name} {}", short(&key)),
        );
        for unit in &pending {
            let mut out = UnitOutput::discarding().allowing(stage.files());
            stage
                .run_unit(&ctx, unit, &mut out)
                .map_err(|e| StageFailed {
                    stage: name.into(),
                    message: format!("unit {}: {e:#}", unit.id),
                })?;
            bar.inc(unit.work);
        }
        bar.finish_and_clear();
        Ok(pending.len())
    }

    /// Takes the artifact's (or the part's) build lock and adopts what is already there:
    /// `None` when another process finished the artifact while we waited for the lock.
    fn lock_and_adopt(
        &self,
        name: &str,
        key: &str,
        part: Option<Part>,
        force: bool,
    ) -> Result<Option<crate::lock::FileLock>> {
        let lock_name = match part {
            None => key.to_string(),
            Some(p) => format!("{key}.part-{}-of-{}", p.index, p.count),
        };
        let lock = crate::lock::acquire(&self.cache.locks_dir(), &lock_name, || {
            tracing::info!(
                "{name}: another lm4ve process is building {}; waiting",
                short(key)
            );
        })?;
        // `--force` recomputes beside the old artifact, which stays whole (and readable)
        // until the new one replaces it at the end (`assemble_and_record`); a killed forced
        // run leaves the old artifact as it was, and the next forced run resumes its
        // staged units.
        if force && part.is_some() {
            // A forced part of a cluster run: the parts and the assembling run meet in the
            // journal, so it is cleared as before (no staging for a part).
            let _ = std::fs::remove_file(self.cache.manifest_path(key));
            Journal::new(&self.cache, key).clear()?;
        } else if !force && self.local_manifest_ok(name, key) {
            return Ok(None);
        }
        Ok(Some(lock))
    }

    /// The stage's work units and those already finished: in the local journal, or (for
    /// units this run would compute, unless `no_pulls`) on the remote, pulled and checked.
    #[allow(clippy::type_complexity)]
    fn plan_and_gather(
        &self,
        name: &str,
        key: &str,
        ctx: &StageCtx,
        part: Option<Part>,
        no_pulls: bool,
        progress: &Progress,
    ) -> Result<(Vec<UnitPlan>, BTreeMap<String, UnitRecord>, usize, usize)> {
        let stage = self.stages[name].as_ref();
        let journal = Journal::for_run(&self.cache, key, ctx.forced);
        let units = stage.plan(ctx).map_err(|e| StageFailed {
            stage: name.into(),
            message: format!("{e:#}"),
        })?;
        check_unit_ids(name, &units)?;
        let mut done: BTreeMap<String, UnitRecord> = BTreeMap::new();
        for u in &units {
            if let Some(rec) = journal.get(&u.id) {
                done.insert(u.id.clone(), rec);
            }
        }
        // What this run resumes from (shards, checkpoints) is read: check it first. A
        // damaged object is moved aside and its unit computed again.
        let damaged: Vec<(String, String)> = done
            .par_iter()
            .filter_map(|(id, rec)| {
                rec.objects()
                    .find_map(|o| crate::verified::check_object(&self.cache, o).err())
                    .map(|e| (id.clone(), e.to_string()))
            })
            .collect();
        for (id, why) in damaged {
            tracing::warn!("{name}: finished unit {id} cannot be used: {why}; computing it again");
            journal.forget(&id);
            done.remove(&id);
        }
        let reused = done.len();
        // Units other machines finished (e.g. other `--part`s) come from the remote.
        let mut units_pulled = 0;
        if let (Some(remote), false) = (&self.remote, no_pulls) {
            let wanted: std::collections::BTreeSet<String> = units
                .iter()
                .filter(|u| !done.contains_key(&u.id))
                .filter(|u| part.is_none_or(|p| p.owns(&u.id)))
                .map(|u| u.id.clone())
                .collect();
            if !wanted.is_empty() {
                let schema = stage.schema();
                match sync::pull_units(
                    remote,
                    &self.cache,
                    key,
                    name,
                    &wanted,
                    schema.as_ref(),
                    progress,
                ) {
                    Ok(pulled) => {
                        for why in &pulled.refused {
                            tracing::warn!(
                                "{name}: refused from {}: {why}; computing that unit here",
                                remote.describe()
                            );
                        }
                        units_pulled = pulled.records.len();
                        for rec in pulled.records {
                            done.insert(rec.unit.clone(), rec);
                        }
                    }
                    Err(e) => tracing::warn!(
                        "{name}: could not read finished units from {}: {e}; computing them here",
                        remote.describe()
                    ),
                }
            }
        }
        Ok((units, done, reused, units_pulled))
    }

    /// Computes the units this run owns that are not finished yet, committing each to the
    /// journal as it completes. Returns how many it ran.
    #[allow(clippy::too_many_arguments)]
    fn execute(
        &self,
        name: &str,
        key: &str,
        ctx: &StageCtx,
        units: &[UnitPlan],
        done: &mut BTreeMap<String, UnitRecord>,
        reused: usize,
        part: Option<Part>,
        assemble: bool,
        progress: &Progress,
    ) -> Result<usize> {
        let stage = self.stages[name].as_ref();
        let journal = Journal::for_run(&self.cache, key, ctx.forced);
        let pending: Vec<&UnitPlan> = units
            .iter()
            .filter(|u| !done.contains_key(&u.id))
            .filter(|u| part.is_none_or(|p| p.owns(&u.id)))
            .collect();
        if part.is_none() && !pending.is_empty() && (assemble || !done.is_empty()) {
            let ids: Vec<&str> = pending.iter().map(|u| u.id.as_str()).collect();
            let shown = ids.iter().take(8).copied().collect::<Vec<_>>().join(", ");
            let more = if ids.len() > 8 {
                format!(" and {} more", ids.len() - 8)
            } else {
                String::new()
            };
            let msg = format!(
                "{} of {} units of {} are not finished locally{}: {shown}{more}",
                ids.len(),
                units.len(),
                short(key),
                if self.remote.is_some() {
                    " or on the remote"
                } else {
                    ""
                },
            );
            if assemble {
                return Err(StageFailed {
                    stage: name.into(),
                    message: format!(
                        "cannot assemble: {msg}; run the parts that own them (--part i/n) or run without --assemble to compute them here"
                    ),
                }
                .into());
            }
            tracing::info!("{name}: {msg}; computing them here");
        }
        if reused > 0 && !pending.is_empty() {
            tracing::info!(
                "{name}: resuming {}: {reused} of {} units already done",
                short(key),
                units.len()
            );
        }
        let bar = progress.bar(
            pending.iter().map(|u| u.work).sum(),
            &format!("{name} {}", short(key)),
        );
        let mut units_run = 0;
        for unit in pending {
            let mut out = UnitOutput::new(&self.cache).allowing(stage.files());
            stage
                .run_unit(ctx, unit, &mut out)
                .map_err(|e| StageFailed {
                    stage: name.into(),
                    message: format!("unit {}: {e:#}", unit.id),
                })?;
            let rec = UnitRecord {
                unit: unit.id.clone(),
                shards: out.shards,
                files: out.files,
                rejects: out.rejects,
                meta: out.meta,
            };
            journal.commit(&rec)?;
            done.insert(unit.id.clone(), rec);
            units_run += 1;
            bar.inc(unit.work);
        }
        bar.finish_and_clear();
        Ok(units_run)
    }

    /// Assembles the manifest from the finished units (in plan order), checks the reject
    /// limit, writes the manifest last and the run record after it.
    #[allow(clippy::too_many_arguments)]
    fn assemble_and_record(
        &self,
        name: &str,
        key: &str,
        ctx: &StageCtx,
        units: &[UnitPlan],
        mut done: BTreeMap<String, UnitRecord>,
        counts: (usize, usize, usize),
        started: (Instant, u64),
    ) -> Result<Outcome> {
        let (units_run, reused, units_pulled) = counts;
        let (started, started_unix) = started;
        let info = &self.keys[name];
        let stage = self.stages[name].as_ref();
        // A forced run assembles the new artifact in its staging directory and swaps it in.
        let dir = if ctx.forced {
            crate::artifact::staging_dir(&self.cache, key)
        } else {
            self.cache.artifact_dir(key)
        };
        let manifest_path = dir.join("manifest.json");
        let ordered: Vec<UnitRecord> = units.iter().filter_map(|u| done.remove(&u.id)).collect();
        let rejects: Vec<&Reject> = ordered.iter().flat_map(|u| &u.rejects).collect();
        let mut rejects_jsonl = String::new();
        for r in &rejects {
            rejects_jsonl.push_str(&serde_json::to_string(r)?);
            rejects_jsonl.push('\n');
        }
        let rejects_path = dir.join("rejects.jsonl");
        self.cache
            .write_file(&rejects_path, rejects_jsonl.as_bytes())?;
        let meta = stage.finish(ctx, &ordered).map_err(|e| StageFailed {
            stage: name.into(),
            message: format!("{e:#}"),
        })?;
        let manifest = Manifest::assemble(name, stage.kind(), key, stage.schema(), &ordered, meta);
        let seen = manifest.samples + manifest.rejects;
        let limit = self.config.stages[name].max_reject_fraction;
        if seen > 0 && manifest.rejects as f64 > limit * seen as f64 {
            let first: Vec<String> = rejects
                .iter()
                .take(3)
                .map(|r| format!("{} [{}]: {}", r.file, r.sample, r.reason))
                .collect();
            return Err(StageFailed {
                stage: name.into(),
                message: format!(
                    "{} of {seen} samples rejected (limit {:.1}%), e.g.\n  {}\nall reasons: {}\nfix the inputs, or raise `max_reject_fraction` in [stages.{name}] (finished units are kept)",
                    manifest.rejects,
                    limit * 100.0,
                    first.join("\n  "),
                    rejects_path.display()
                ),
            }
            .into());
        }
        // The manifest goes last: only now is the artifact visible as complete.
        self.cache
            .write_file(&manifest_path, &serde_json::to_vec_pretty(&manifest)?)?;
        if ctx.forced {
            crate::artifact::swap_in_staged(&self.cache, key)?;
        }
        let record = RunRecord {
            stage: name.into(),
            key: key.into(),
            key_parts: info.parts.clone(),
            inputs: info.inputs.to_files(),
            samples: manifest.samples,
            rejects: manifest.rejects,
            shards: manifest.shards.len(),
            bytes: manifest.shards.iter().map(|s| s.bytes).sum::<u64>()
                + manifest.files.iter().map(|f| f.bytes).sum::<u64>(),
            units_run,
            units_reused: reused,
            started_unix,
            seconds: started.elapsed().as_secs_f64(),
            threads: rayon::current_num_threads(),
            tool_version: env!("CARGO_PKG_VERSION").into(),
            host: host_name(),
            overrides: self.config.overrides_of(name),
        };
        record.save(&self.cache)?;
        Ok(Outcome::Built {
            units_run,
            units_reused: reused,
            units_pulled,
            samples: manifest.samples,
            rejects: manifest.rejects,
            seconds: record.seconds,
        })
    }
}
