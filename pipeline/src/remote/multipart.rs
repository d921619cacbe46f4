//! S3 multipart uploads of large objects, resumable across processes through a state file
//! in the local `tmp/`.

use super::*;

impl Remote {
    /// A resumable S3 multipart upload: the upload id and each finished part are saved in
    /// `tmp/upload-<remote>-<hash>.json`, so an interrupted push continues where it stopped.
    /// Returns whether it resumed an earlier upload.
    pub(super) async fn multipart(
        &self,
        s3: &Arc<object_store::aws::AmazonS3>,
        cache: &Cache,
        blake3: &str,
        local: &Path,
        size: u64,
        bar: &ProgressBar,
    ) -> Result<bool, RemoteError> {
        let rel = object_key(blake3);
        let path = self.path(&rel);
        let state_path = cache
            .tmp_dir()
            .join(format!("upload-{}-{blake3}.json", self.spec.id()));
        let nparts = size.div_ceil(self.part_bytes) as usize;
        let data = file_bytes(local, size).map_err(|e| local_err("reading", local, e))?;
        for attempt in 0..2 {
            let saved: Option<UploadState> = std::fs::read(&state_path)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .filter(|s: &UploadState| {
                    s.size == size && s.part_bytes == self.part_bytes && s.parts.len() == nparts
                });
            let resumed = saved.is_some() && attempt == 0;
            let state = match saved.filter(|_| attempt == 0) {
                Some(s) => s,
                None => {
                    let id = s3
                        .create_multipart(&path)
                        .await
                        .map_err(|e| self.store_err("starting upload of", &rel, e))?;
                    UploadState {
                        upload_id: id,
                        size,
                        part_bytes: self.part_bytes,
                        parts: vec![None; nparts],
                    }
                }
            };
            save_state(&state_path, &state)?;
            let id = state.upload_id.clone();
            let todo: Vec<usize> = (0..nparts).filter(|i| state.parts[*i].is_none()).collect();
            let done_bytes: u64 = (0..nparts)
                .filter(|i| state.parts[*i].is_some())
                .map(|i| self.part_range(i, size).len() as u64)
                .sum();
            bar.inc(done_bytes);
            let state = Mutex::new(state);
            let uploaded = futures::stream::iter(todo)
                .map(|i| {
                    let range = self.part_range(i, size);
                    let chunk = data.slice(range.clone());
                    let (path, id, state, state_path) = (&path, &id, &state, &state_path);
                    async move {
                        let part = s3.put_part(path, id, i, PutPayload::from(chunk)).await?;
                        if let Ok(mut s) = state.lock() {
                            s.parts[i] = Some(part.content_id);
                            // Losing this save only costs re-sending the part.
                            let _ = save_state(state_path, &s);
                        }
                        bar.inc(range.len() as u64);
                        fault_tick();
                        Ok::<(), object_store::Error>(())
                    }
                })
                .buffer_unordered(self.jobs.min(4))
                .try_collect::<Vec<()>>()
                .await;
            let retry_fresh = |e: &object_store::Error| {
                resumed && matches!(e, object_store::Error::NotFound { .. })
            };
            if let Err(e) = uploaded {
                if retry_fresh(&e) {
                    // The saved upload expired or was aborted on the server: start over.
                    let _ = std::fs::remove_file(&state_path);
                    continue;
                }
                return Err(self.store_err("uploading a part of", &rel, e));
            }
            let parts: Vec<PartId> = state
                .into_inner()
                .unwrap_or_else(|p| p.into_inner())
                .parts
                .into_iter()
                .map(|p| PartId {
                    content_id: p.unwrap_or_default(),
                })
                .collect();
            match s3.complete_multipart(&path, &id, parts).await {
                Ok(_) => {
                    let _ = std::fs::remove_file(&state_path);
                    return Ok(resumed);
                }
                Err(e) if retry_fresh(&e) => {
                    let _ = std::fs::remove_file(&state_path);
                    continue;
                }
                Err(e) => return Err(self.store_err("completing upload of", &rel, e)),
            }
        }
        Err(RemoteError::Store {
            op: "uploading",
            path: rel,
            kind: self.kind_name(),
            message: "the server lost the multipart upload twice".into(),
        })
    }

    pub(super) fn part_range(&self, i: usize, size: u64) -> std::ops::Range<usize> {
        let start = i as u64 * self.part_bytes;
        let end = (start + self.part_bytes).min(size);
        start as usize..end as usize
    }
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(super) struct UploadState {
    upload_id: String,
    size: u64,
    part_bytes: u64,
    parts: Vec<Option<String>>,
}

pub(super) fn save_state(path: &Path, s: &UploadState) -> Result<(), RemoteError> {
    let bytes = serde_json::to_vec(s).map_err(|e| local_err("encoding", path, e))?;
    crate::cas::write_atomic(path, &bytes).map_err(|e| local_err("writing", path, format!("{e:#}")))
}
