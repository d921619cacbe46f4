//! AVX2 kernels of the bucketed FPS (`fps.rs`): which buckets a new center may change, and
//! the first point at the max. Written by hand because LLVM left both scalar: the bucket
//! test built its bit word one shifted bit at a time, and the argmax search was a branch per
//! bucket and per point, mispredicted once per pick (together ~40% of the FPS time).
//!
//! Each kernel does whole groups of 8 buckets and says how far it got; `fps.rs` does the
//! rest with its scalar code, which defines the result. The same f32 operations in the
//! same order as that code: `_mm256_max_ps(a, b)` is `if a > b { a } else { b }` (it
//! returns `b` on equal or NaN operands, as the scalar `fmax` does), then mul, add; no
//! fused multiply-add. Nothing here imports the rest of `pointcloud` (no import circle).
#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;

/// Lanes of an AVX2 f32 vector.
const W: usize = 8;

/// Bit `j - start` set for each bucket j of `start..start + 8 * groups` whose box bound
/// to `c` is below its max distance `bmax[j]` (`fps.rs`'s test, 8 buckets at a time).
/// `lo` and `hi` are the boxes' corners per axis. Panics if a slice is short.
#[target_feature(enable = "avx2")]
pub(super) fn need_bits(
    lo: [&[f32]; 3],
    hi: [&[f32]; 3],
    bmax: &[f32],
    c: [f32; 3],
    start: usize,
    groups: usize,
) -> u64 {
    let end = start + groups * W;
    assert!(groups <= 8 && end <= bmax.len());
    assert!(lo.iter().chain(&hi).all(|s| s.len() >= end));
    let zero = _mm256_setzero_ps();
    let mut bits = 0u64;
    for g in 0..groups {
        let j = start + g * W;
        let mut bound = zero;
        for a in 0..3 {
            let ca = _mm256_set1_ps(c[a]);
            // SAFETY: j + W <= end <= the length of every slice (asserted above).
            let (l, h) = unsafe {
                (
                    _mm256_loadu_ps(lo[a].as_ptr().add(j)),
                    _mm256_loadu_ps(hi[a].as_ptr().add(j)),
                )
            };
            let gap = _mm256_max_ps(
                _mm256_max_ps(_mm256_sub_ps(l, ca), _mm256_sub_ps(ca, h)),
                zero,
            );
            let sq = _mm256_mul_ps(gap, gap);
            // x*x, then + y*y, then + z*z: the scalar order.
            bound = if a == 0 { sq } else { _mm256_add_ps(bound, sq) };
        }
        // SAFETY: as above.
        let bm = unsafe { _mm256_loadu_ps(bmax.as_ptr().add(j)) };
        let lt = _mm256_cmp_ps::<_CMP_LT_OQ>(bound, bm);
        bits |= u64::from(_mm256_movemask_ps(lt) as u8) << (g * W);
    }
    bits
}

/// The lowest original index among the points at distance `m` in the buckets of
/// `0..done` whose max is `m` (u32::MAX if none), and `done`: the buckets searched, a
/// multiple of 8. `mind` holds `B` distances per bucket, `idx` their original indices.
#[target_feature(enable = "avx2")]
pub(super) fn first_at_max<const B: usize>(
    bmax: &[f32],
    mind: &[f32],
    idx: &[u32],
    m: f32,
) -> (u32, usize) {
    assert!(B.is_multiple_of(W) && B <= 64);
    let done = bmax.len() / W * W;
    assert!(mind.len() >= done * B && idx.len() >= done * B);
    let mv = _mm256_set1_ps(m);
    let mut best = u32::MAX;
    for g in (0..done).step_by(W) {
        // SAFETY: g + W <= done <= bmax.len().
        let v = unsafe { _mm256_loadu_ps(bmax.as_ptr().add(g)) };
        let mut hits = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_EQ_OQ>(v, mv)) as u32;
        while hits != 0 {
            let j = g + hits.trailing_zeros() as usize;
            hits &= hits - 1;
            let s = j * B;
            let mut at = 0u64;
            for k in (0..B).step_by(W) {
                // SAFETY: s + k + W <= (j + 1) * B <= done * B <= mind.len().
                let d = unsafe { _mm256_loadu_ps(mind.as_ptr().add(s + k)) };
                let eq = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_EQ_OQ>(d, mv)) as u8;
                at |= u64::from(eq) << k;
            }
            if at != 0 {
                best = best.min(idx[s + at.trailing_zeros() as usize]);
            }
        }
    }
    (best, done)
}
