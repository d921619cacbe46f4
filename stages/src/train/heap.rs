//! Keep freed memory for reuse instead of handing it back to the kernel (issue 28).
//!
//! A CPU training step allocates and frees tensors of several megabytes, hundreds of them, and
//! the next step asks for the same sizes again. glibc's malloc serves such sizes with `mmap`
//! (its threshold adapts only up to 32 MiB, and a single tensor above it always goes there)
//! and gives the top of its heap back with `brk` once 128 KiB lie free, so each step paid for
//! the kernel mapping fresh zeroed pages again: on the demo's `train_av` (one thread) a quarter
//! of the run was page faults, zeroing and `munmap` (75 s → 57 s for one epoch with the heap
//! kept; BENCHMARKS.md, "The demo, end to end"). PyTorch users meet the same and swap in
//! jemalloc or tcmalloc; three `mallopt` calls do it here.
//!
//! What it costs: the process keeps its peak heap until it exits (one epoch of `train_av`:
//! 460 → 585 MiB peak RSS), so it is set when training (or a training bench) starts, not for
//! every command: a no-op `pipeline run` over 200,000 files stays at glibc's defaults (with the
//! heap kept its peak RSS went 99 → 113 MiB). Nothing it computes changes: the allocator
//! decides where bytes live, never their values. A user's own `MALLOC_*` environment settings
//! win (glibc reads them before `main`), so this only runs when none is set.

/// Above this size glibc would `mmap` a block, and `munmap` it on free: 1 GiB (the largest
/// value `mallopt` takes is a C int), so tensors come from the heap and are reused.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_ABOVE: libc::c_int = 1 << 30;
/// Free memory at the top of the heap given back to the kernel only beyond this: 1 GiB.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_ABOVE: libc::c_int = 1 << 30;
/// What the heap grows by beyond a request (fewer `brk` calls): 64 MiB.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const GROW_BY: libc::c_int = 64 << 20;

/// Sets glibc's malloc to keep freed memory (see the module doc), once per process; a later
/// call does nothing. Elsewhere (musl, macOS) the system allocator is left as it is.
pub fn keep_freed_memory() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let user_tuned = std::env::vars_os()
            .any(|(k, _)| k.to_string_lossy().starts_with("MALLOC_") || k == "GLIBC_TUNABLES");
        if !user_tuned {
            set_glibc_parameters();
        }
    });
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn set_glibc_parameters() {
    // SAFETY: mallopt only sets malloc's parameters, under glibc's own arena lock; other
    // threads may allocate meanwhile. A rejected value (0 returned) leaves glibc's default:
    // correct, only slower.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_ABOVE);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_ABOVE);
        libc::mallopt(libc::M_TOP_PAD, GROW_BY);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_glibc_parameters() {}
