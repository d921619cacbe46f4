//! The order in which an epoch visits the training samples.
//!
//! By default a permutation of the training set. With DeiT's repeated-augmentation sampler
//! (`RASampler`, LM4VisualEncoding `image_classification/utils.py`, on by default in its
//! `main.py`), each sample of the permutation takes `repeated_aug` consecutive positions, and
//! the epoch keeps the first `⌊n / 256⌋ · 256` positions: an epoch is as long as the dataset,
//! but shows about a third of it, three times, each copy augmented on its own. The reference
//! deals the repeated list out to the ranks round-robin; the union of the ranks' k-th batches
//! is positions `[k·B, (k+1)·B)` of the list, which is the global batch lm4ve takes, so the
//! steps see the same samples at any number of ranks. Differences, on purpose: the permutation
//! comes from the run's seed through ChaCha8, not torch's generator, and a training set under
//! 256 samples keeps all its `n` positions (the reference's epoch would be empty).

use crate::train::params::TrainParams;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

/// The reference cuts each epoch to a multiple of this many positions.
const RA_MULTIPLE: usize = 256;

/// How many positions an epoch's order has, for a training set of `n`.
pub fn epoch_len(n: usize, p: &TrainParams) -> usize {
    if p.ra_sampler && n >= RA_MULTIPLE {
        n / RA_MULTIPLE * RA_MULTIPLE
    } else {
        n
    }
}

/// The sample order of one epoch over a training set of `n`, drawn from `rng` only.
pub fn epoch_order(n: usize, p: &TrainParams, rng: &mut ChaCha8Rng) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(rng);
    if !p.ra_sampler {
        return order;
    }
    let repeats = p.repeated_aug.max(1);
    order
        .into_iter()
        .flat_map(|i| std::iter::repeat_n(i, repeats))
        .take(epoch_len(n, p))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::params::{TrainParams, TrainToml};
    use crate::train::recipe::RA_REPEATS;
    use crate::train::task::image::Image;
    use crate::train::task::pointcloud::PointCloud;
    use rand::SeedableRng;

    fn params(
        task: &dyn crate::train::recipe::TaskRecipe,
        extra: serde_json::Value,
    ) -> TrainParams {
        let mut v = serde_json::json!({"data": "d"});
        if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
            o.extend(e.clone());
        }
        let t: TrainToml = serde_json::from_value(v).unwrap();
        TrainParams::resolve(t, task)
    }

    /// As `RASampler.__iter__` with one replica: each sample of the permutation three times
    /// in a row, cut to a multiple of 256; every sample at most once per epoch otherwise.
    #[test]
    fn repeated_sampler_takes_each_sample_three_times_in_a_row() {
        let p = params(&Image, serde_json::json!({}));
        assert!(p.ra_sampler);
        assert_eq!(p.repeated_aug, RA_REPEATS);
        let order = epoch_order(1000, &p, &mut ChaCha8Rng::seed_from_u64(1));
        assert_eq!(order.len(), 768);
        for triple in order.chunks(3) {
            assert!(triple.iter().all(|&i| i == triple[0]), "{triple:?}");
        }
        let distinct: std::collections::BTreeSet<_> = order.iter().collect();
        assert_eq!(distinct.len(), 256);
        // Under 256 samples the epoch keeps every position (the reference's would be empty).
        assert_eq!(
            epoch_order(50, &p, &mut ChaCha8Rng::seed_from_u64(1)).len(),
            50
        );
    }

    /// Off (`repeated_aug = 1`, or a task without the sampler): the permutation of before,
    /// drawn the same way, so existing runs keep their bytes.
    #[test]
    fn without_it_the_order_is_the_permutation_of_before() {
        for p in [
            params(&Image, serde_json::json!({"repeated_aug": 1})),
            params(&PointCloud, serde_json::json!({})),
        ] {
            assert!(!p.ra_sampler);
            let got = epoch_order(100, &p, &mut ChaCha8Rng::seed_from_u64(7));
            let mut want: Vec<usize> = (0..100).collect();
            want.shuffle(&mut ChaCha8Rng::seed_from_u64(7));
            assert_eq!(got, want);
        }
    }
}
