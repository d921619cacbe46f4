//! Stage keys: each stage's inputs fingerprinted through the stat cache and combined with
//! its kind, version, params and upstream keys, in DAG order.

use super::{KeyInfo, Pipeline};
use crate::config::ConfigError;
use crate::fingerprint::StatCache;
use crate::key::KeyParts;
use anyhow::Result;
use std::collections::{BTreeMap, BTreeSet};

impl Pipeline {
    /// Computes the key of every stage (in DAG order: a key needs its upstream keys).
    /// Input files are hashed only when their stat changed (or with `rehash`).
    pub fn compute_keys(&mut self, rehash: bool) -> Result<()> {
        let all = self.dag.order().to_vec();
        self.compute_keys_of(&all, rehash)
    }

    /// Keys of `stages` only (a closure: every needed stage included), so a run of one
    /// stage does not touch the inputs of unrelated ones.
    pub fn compute_keys_of(&mut self, stages: &[String], rehash: bool) -> Result<()> {
        let mut stat_cache = self.stat_cache.take(&self.cache.stat_cache_path());
        let mut keys = BTreeMap::new();
        for name in self.dag.order().iter().filter(|s| stages.contains(s)) {
            let info = self.key_of(name, &mut stat_cache, &keys, rehash)?;
            keys.insert(name.clone(), info);
        }
        // Failing to save the stat cache only costs re-hashing next time.
        if let Err(e) = stat_cache.save() {
            tracing::warn!("could not save the stat cache: {e:#}");
        }
        self.keys = keys;
        Ok(())
    }

    /// The key of one stage, its upstream keys already in `keys`.
    fn key_of(
        &self,
        name: &str,
        stat_cache: &mut StatCache,
        keys: &BTreeMap<String, KeyInfo>,
        rehash: bool,
    ) -> Result<KeyInfo> {
        let stage = &self.stages[name];
        // `inputs()` is cheap: a dataset's file list is one shared declaration.
        let inputs = stat_cache
            .fingerprint(&stage.inputs(), rehash)
            .map_err(|e| ConfigError {
                file: self.config.path.display().to_string(),
                line: None,
                message: format!("stage `{name}`: {e:#}"),
                missing_input: None,
            })?;
        let upstream = self
            .dag
            .needs(name)
            .iter()
            .map(|u| {
                (
                    u.clone(),
                    keys.get(u)
                        .map(|k: &KeyInfo| k.key.clone())
                        .unwrap_or_default(),
                )
            })
            .collect();
        let parts = KeyParts::of(stage.as_ref(), upstream, inputs.digest());
        Ok(KeyInfo {
            key: parts.key(),
            parts,
            inputs,
        })
    }

    /// What `cache gc` may decide with: the keys of every stage whose key can be computed
    /// now, and the stages whose key cannot (an input missing or unreadable, or an upstream
    /// stage's key unknown), each with why. gc keeps every artifact of an undecided stage:
    /// an unmounted dataset must not cost the artifacts built from it.
    pub fn gc_keys(&mut self) -> (BTreeSet<String>, BTreeMap<String, String>) {
        let mut stat_cache = self.stat_cache.take(&self.cache.stat_cache_path());
        let mut keys: BTreeMap<String, KeyInfo> = BTreeMap::new();
        let mut undecided: BTreeMap<String, String> = BTreeMap::new();
        for name in self.dag.order().to_vec() {
            if let Some((path, _)) = self.missing.get(&name) {
                undecided.insert(name, format!("its input {path} is missing"));
                continue;
            }
            if let Some(u) = self
                .dag
                .needs(&name)
                .iter()
                .find(|u| undecided.contains_key(*u))
            {
                undecided.insert(
                    name,
                    format!("the key of its upstream `{u}` cannot be computed"),
                );
                continue;
            }
            match self.key_of(&name, &mut stat_cache, &keys, false) {
                Ok(info) => {
                    keys.insert(name, info);
                }
                Err(e) => {
                    undecided.insert(name, format!("its inputs cannot be read ({e:#})"));
                }
            }
        }
        if let Err(e) = stat_cache.save() {
            tracing::warn!("could not save the stat cache: {e:#}");
        }
        let keep = keys.values().map(|k| k.key.clone()).collect();
        self.keys = keys;
        (keep, undecided)
    }

    pub fn key(&self, stage: &str) -> Option<&KeyInfo> {
        self.keys.get(stage)
    }

    pub fn is_fresh(&self, stage: &str) -> bool {
        self.keys
            .get(stage)
            .is_some_and(|k| self.cache.manifest_path(&k.key).exists())
    }
}
