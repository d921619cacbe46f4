//! One thread count for every CPU pool the binary runs (issue 28). `-j` sizes rayon's global
//! pool in main; two more pools do not look at it:
//! - candle's barrier pool (its element-wise ops: add, mul, exp, …) sizes itself from
//!   `CANDLE_NUM_THREADS`, else `RAYON_NUM_THREADS`, else the physical cores, so `-j 1` still
//!   ran two threads on 2 cores; and its waiting thread spins (on a loaded 2-core machine 44%
//!   of a demo training run's CPU time: BENCHMARKS.md, "where the training step's time goes").
//! - Intel MKL (the `mkl` build) runs its OpenMP team on every core, and sums in a different
//!   order per thread count: the cache promises byte-identical training artifacts for any
//!   `-j` (pipeline/src/key.rs; tests/cache_trust.rs runs -j 1 against -j 2), and with MKL
//!   following -j that test failed, in MKL's strict reproducible mode too (AUTO, AVX2 and
//!   AVX512 with STRICT, and COMPATIBLE: BENCHMARKS.md). So MKL runs one thread whatever `-j`
//!   says (candle's element-wise pool still follows it: that one keeps the bytes), in its
//!   reproducible mode, which also keeps runs apart identical whatever the buffers' alignment.
//!   `MKL_NUM_THREADS=N` buys threaded matmuls (`make bench-block-mkl` sets it to its thread count);
//!   artifacts then depend on N, still not on `-j`.
//!
//! A user's own environment setting wins everywhere.

/// Sizes candle's pools like rayon's global one: the barrier pool reads `CANDLE_NUM_THREADS`,
/// its matmul split and its own rayon pool read `RAYON_NUM_THREADS`. Call before any thread
/// exists and before candle's first op (candle reads them once).
pub fn size_candle_pool(threads: usize) {
    for var in ["CANDLE_NUM_THREADS", "RAYON_NUM_THREADS"] {
        if std::env::var_os(var).is_none() {
            std::env::set_var(var, threads.max(1).to_string());
        }
    }
}

#[cfg(feature = "mkl")]
mod ffi {
    use std::os::raw::c_int;
    // mkl_service.h (statically linked through candle's intel-mkl-src).
    extern "C" {
        pub fn MKL_Set_Num_Threads(nth: c_int);
        pub fn MKL_CBWR_Set(settings: c_int) -> c_int;
    }
    // mkl_types.h
    pub const MKL_CBWR_AUTO: c_int = 2;
    pub const MKL_CBWR_STRICT: c_int = 0x10000;
    pub const MKL_CBWR_SUCCESS: c_int = 0;
}

/// Gives MKL one thread and turns on its conditional numerical reproducibility on the fastest
/// code branch of this CPU (AUTO, strict). Environment settings (`MKL_NUM_THREADS`,
/// `MKL_CBWR`) are left to win.
#[cfg(feature = "mkl")]
pub fn configure_mkl() {
    if std::env::var_os("MKL_NUM_THREADS").is_none() {
        // SAFETY: a plain setter of MKL's global thread count, called before any MKL work.
        unsafe { ffi::MKL_Set_Num_Threads(1) };
    }
    if std::env::var_os("MKL_CBWR").is_none() {
        // SAFETY: a plain setter of MKL's global CNR mode, called before any MKL work.
        let status = unsafe { ffi::MKL_CBWR_Set(ffi::MKL_CBWR_AUTO | ffi::MKL_CBWR_STRICT) };
        if status != ffi::MKL_CBWR_SUCCESS {
            tracing::warn!(
                "MKL refused its reproducible mode (status {status}): training artifacts may differ between runs; set MKL_CBWR=AVX2 to choose a branch"
            );
        }
    }
}

#[cfg(not(feature = "mkl"))]
pub fn configure_mkl() {}
