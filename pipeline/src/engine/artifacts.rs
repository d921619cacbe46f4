//! A stage's artifact as the engine finds and moves it: the local manifest checked before it
//! counts as fresh, the objects behind it (and behind the upstream artifacts a stage reads)
//! verified, a finished artifact pulled from the remote cache, what a run computed pushed.

use super::*;

impl Pipeline {
    /// Whether the local cache has a valid manifest for `key`: present, well-formed for
    /// that key ([`crate::trust`]), and of this stage's kind and schema. A manifest that
    /// fails is a named warning; it is removed and the artifact is computed (or pulled)
    /// again.
    pub(super) fn local_manifest_ok(&self, name: &str, key: &str) -> bool {
        let path = self.cache.manifest_path(key);
        if std::fs::symlink_metadata(&path).is_err() {
            return false;
        }
        let why = match Manifest::load_checked(&path, key) {
            Ok(m) => {
                let stage = &self.stages[name];
                if m.kind != stage.kind() || m.schema != stage.schema() {
                    "its kind or schema is not this stage's".to_string()
                } else if let Some(why) = self.objects_gone(&m, true) {
                    // The manifest is right; its units with the missing objects are
                    // computed again (the journal skips them), the rest is kept.
                    tracing::warn!("{name}: {} is incomplete: {why}; rebuilding it", short(key));
                    return false;
                } else {
                    return true;
                }
            }
            Err(e) => format!("{e:#}"),
        };
        tracing::warn!(
            "{name}: the local manifest of {} is not valid ({}); computing the artifact again",
            short(key),
            // Whole (control characters escaped): the values from the record in it are
            // already cut by the checks; cutting here cut the reason off after the path.
            crate::trust::escaped(&why, usize::MAX)
        );
        if let Err(e) = std::fs::remove_file(&path) {
            tracing::warn!("{name}: cannot remove {}: {e}", path.display());
        }
        false
    }

    /// Why an artifact whose manifest is here cannot be used as it is: an object it names
    /// is missing, was found damaged (moved aside by a verified read), or has not the size
    /// recorded (then, with `repair`, it is moved aside now). `stat` only: a no-op run
    /// reads no object.
    pub(crate) fn objects_gone(&self, m: &Manifest, repair: bool) -> Option<ObjectGone> {
        let named = m
            .shards
            .iter()
            .map(|s| (&s.blake3, s.bytes, format!("shard {}", s.path)))
            .chain(
                m.files
                    .iter()
                    .map(|f| (&f.blake3, f.bytes, format!("file {}", f.name))),
            );
        for (o, bytes, what) in named {
            let p = self.cache.object_path(o);
            match std::fs::symlink_metadata(&p) {
                Ok(meta) if meta.is_file() && meta.len() == bytes => continue,
                Ok(meta) if meta.is_file() => {
                    if repair {
                        // Wrong size: damaged for sure; the verified read moves it aside.
                        let _ = crate::verified::check_object(&self.cache, o);
                    }
                    let damage = Damage::WrongSize {
                        bytes: meta.len(),
                        recorded: bytes,
                    };
                    return Some(ObjectGone::of(o, what, damage));
                }
                _ if crate::verified::was_damaged(&self.cache, o) => {
                    return Some(ObjectGone::of(o, what, Damage::Damaged))
                }
                _ => return Some(ObjectGone::of(o, what, Damage::Missing)),
            }
        }
        None
    }

    /// Every object of the upstream artifacts handed to stage `name`, checked against its
    /// hash before the stage reads any of it (`crate::verified`).
    pub(crate) fn verify_upstream(
        &self,
        name: &str,
        upstream: &BTreeMap<String, Upstream>,
    ) -> Result<()> {
        let t0 = Instant::now();
        let mut checked = (0usize, 0u64);
        for (u, up) in upstream {
            let named: Vec<(&String, String)> = up
                .manifest
                .shards
                .iter()
                .map(|s| (&s.blake3, format!("shard {}", s.path)))
                .chain(
                    up.manifest
                        .files
                        .iter()
                        .map(|f| (&f.blake3, f.name.clone())),
                )
                .collect();
            checked.0 += named.len();
            checked.1 += up.manifest.shards.iter().map(|s| s.bytes).sum::<u64>()
                + up.manifest.files.iter().map(|f| f.bytes).sum::<u64>();
            let bad = named.par_iter().find_map_first(|(o, what)| {
                crate::verified::check_object(&self.cache, o)
                    .err()
                    .map(|e| format!("{what}: {e}"))
            });
            if let Some(why) = bad {
                return Err(StageFailed {
                    stage: name.into(),
                    message: format!(
                        "the artifact of `{u}` ({}) it reads is damaged: {why}; nothing was computed from it. Run again: `{u}` is rebuilt first (its other units are kept)",
                        short(&up.manifest.key)
                    ),
                }
                .into());
            }
        }
        tracing::debug!(
            "{name}: verified {} upstream objects ({:.1} MB) in {:.3} s",
            checked.0,
            checked.1 as f64 / 1e6,
            t0.elapsed().as_secs_f64()
        );
        Ok(())
    }

    /// What this machine's copy of stage `name` says the artifact `key` must look like
    /// (for checking a pulled artifact): its kind and schema, and — when the upstream
    /// artifacts are here — its unit ids and its meta, re-derived.
    pub fn expected<'a>(
        &'a self,
        name: &'a str,
        key: &'a str,
        upstream: Option<&'a BTreeMap<String, Upstream>>,
    ) -> crate::trust::Expected<'a> {
        let stage = self.stages[name].as_ref();
        let units = upstream.and_then(|up| {
            let ctx = StageCtx {
                name,
                key,
                cache: &self.cache,
                upstream: up,
                forced: false,
            };
            stage
                .plan(&ctx)
                .ok()
                .map(|p| p.into_iter().map(|u| u.id).collect())
        });
        let cache = &self.cache;
        crate::trust::Expected {
            files: Some(stage.files()),
            kind: stage.kind().to_string(),
            schema: stage.schema(),
            units,
            meta: upstream.map(|up| {
                Box::new(move |units: &[UnitRecord]| {
                    let ctx = StageCtx {
                        name,
                        key,
                        cache,
                        upstream: up,
                        forced: false,
                    };
                    stage.finish(&ctx, units)
                }) as Box<dyn Fn(&[UnitRecord]) -> Result<serde_json::Value> + 'a>
            }),
        }
    }

    /// Pulls the finished artifact of `name` from the remote (checked against
    /// [`Pipeline::expected`]); `Ok(None)` when the remote does not have it.
    pub fn pull_artifact(
        &self,
        name: &str,
        progress: &Progress,
    ) -> Result<Option<sync::PullReport>, crate::RemoteError> {
        let remote = self
            .remote
            .as_ref()
            .ok_or_else(|| crate::RemoteError::Local("no remote configured".into()))?;
        let key = self
            .keys
            .get(name)
            .map(|k| k.key.clone())
            .ok_or_else(|| crate::RemoteError::Local(format!("no key for stage {name}")))?;
        let upstream = self.upstream_of(name).ok();
        let expect = self.expected(name, &key, upstream.as_ref());
        sync::pull_artifact(remote, &self.cache, &key, name, &expect, progress)
    }

    /// Pulls the finished artifact from the remote, if there is one and it has it.
    pub(super) fn try_pull(&self, name: &str, key: &str, progress: &Progress) -> Option<Outcome> {
        let remote = self.remote.as_ref()?;
        match self.pull_artifact(name, progress) {
            Ok(Some(r)) => Some(Outcome::Pulled {
                objects: r.objects,
                bytes: r.bytes,
                seconds: r.seconds,
            }),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(
                    "{name}: not using {}'s copy of {}: {e}; computing it here",
                    remote.describe(),
                    short(key)
                );
                None
            }
        }
    }

    /// Pushes what `run_stage` produced, when this run pushes; a failure only warns.
    pub(super) fn push_after_run(
        &self,
        name: &str,
        key: &str,
        outcome: &Outcome,
        is_part: bool,
        progress: &Progress,
    ) -> Option<PushReport> {
        let remote = self.remote.as_ref()?;
        let computed = match outcome {
            Outcome::Built { .. } => true,
            Outcome::PartDone { units_run, .. } => *units_run > 0,
            _ => false,
        };
        if !computed || !(self.push || is_part) {
            return None;
        }
        match sync::push_artifact(remote, &self.cache, key, name, false, progress) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!(
                    "{name}: could not push {} to {}: {e}; the results are safe in the local cache, run `lm4ve cache push --stage {name}` later",
                    short(key),
                    remote.describe()
                );
                None
            }
        }
    }

    pub(super) fn upstream_of(&self, name: &str) -> Result<BTreeMap<String, Upstream>> {
        let mut up = BTreeMap::new();
        for u in self.dag.needs(name) {
            let key = &self.keys[u].key;
            let path = self.cache.manifest_path(key);
            let manifest = Manifest::load_checked(&path, key)
                .with_context(|| format!("stage `{name}` needs `{u}`, which is not built"))?;
            up.insert(
                u.clone(),
                Upstream {
                    manifest_path: path,
                    manifest,
                },
            );
        }
        Ok(up)
    }
}
