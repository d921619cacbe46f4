//! Batches made ahead on a background thread, so the device does not wait on the CPU work of
//! the next batch (Point-BERT's per-step resampling, video decoding of cached clips, shard
//! reads). Batches are made and handed over in order and each from its own step's generator,
//! so what trains is the same as without prefetching.

use anyhow::Result;
use std::sync::mpsc::sync_channel;

/// Calls `make(b)` for `b` in `0..n` on a background thread, at most `depth` batches ahead,
/// and `consume(b, batch)` on this thread in order. The first error of either side stops both
/// and is returned.
pub fn prefetched<T, M, C>(n: usize, depth: usize, make: M, mut consume: C) -> Result<()>
where
    T: Send,
    M: Fn(usize) -> Result<T> + Sync,
    C: FnMut(usize, T) -> Result<()>,
{
    std::thread::scope(|scope| {
        let (tx, rx) = sync_channel::<Result<T>>(depth.max(1));
        let make = &make;
        scope.spawn(move || {
            for b in 0..n {
                let batch = make(b);
                let failed = batch.is_err();
                // The consumer hung up (it failed): stop making batches.
                if tx.send(batch).is_err() || failed {
                    return;
                }
            }
        });
        for b in 0..n {
            let batch = rx
                .recv()
                .map_err(|_| anyhow::anyhow!("the batch loader thread stopped"))??;
            consume(b, batch)?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hands_batches_over_in_order() {
        let mut seen = Vec::new();
        prefetched(
            50,
            2,
            |b| Ok(b * 10),
            |b, v| {
                seen.push((b, v));
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(seen, (0..50).map(|b| (b, b * 10)).collect::<Vec<_>>());
    }

    #[test]
    fn errors_of_either_side_stop_the_loop() {
        let e = prefetched(
            10,
            2,
            |b| {
                anyhow::ensure!(b != 3, "bad batch 3");
                Ok(b)
            },
            |_, _| Ok(()),
        )
        .unwrap_err();
        assert!(e.to_string().contains("bad batch 3"));
        let mut n = 0;
        let e = prefetched(1000, 2, Ok, |b, _| {
            n += 1;
            anyhow::ensure!(b < 4, "consumer failed");
            Ok(())
        })
        .unwrap_err();
        assert!(e.to_string().contains("consumer failed"));
        assert_eq!(n, 5);
    }
}
