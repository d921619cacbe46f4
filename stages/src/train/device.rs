//! Where training runs: `--device cpu|cuda|auto`, chosen once by the binary. A missing GPU or
//! driver is a clear error, never a panic (cudarc panics when libcuda cannot be loaded, so
//! the probe runs under catch_unwind).

use anyhow::Result;
use candle_core::Device;
use std::sync::OnceLock;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DevicePref {
    Auto,
    Cpu,
    Cuda,
}

static PREF: OnceLock<DevicePref> = OnceLock::new();
/// The GPU of this process: its local rank in a data-parallel job, else 0.
static ORDINAL: OnceLock<usize> = OnceLock::new();
/// The CUDA device, made once: every stage (and NCCL) must share its stream.
static CUDA: OnceLock<Device> = OnceLock::new();

/// Called once by the binary before any stage runs; later calls are ignored.
pub fn set_preference(p: DevicePref) {
    let _ = PREF.set(p);
}

/// Which GPU this process trains on (a data-parallel job's local rank); before any stage runs.
pub fn set_ordinal(ordinal: usize) {
    let _ = ORDINAL.set(ordinal);
}

fn try_cuda() -> std::result::Result<Device, String> {
    if !cfg!(feature = "cuda") {
        return Err("this lm4ve was built without CUDA; rebuild with `cargo build --release --features cuda` (see README)".into());
    }
    if let Some(d) = CUDA.get() {
        return Ok(d.clone());
    }
    let ordinal = ORDINAL.get().copied().unwrap_or(0);
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let r = std::panic::catch_unwind(|| Device::new_cuda(ordinal));
    std::panic::set_hook(hook);
    match r {
        Ok(Ok(d)) => Ok(CUDA.get_or_init(|| d).clone()),
        Ok(Err(e)) => Err(format!("no usable CUDA device {ordinal}: {e}")),
        Err(_) => Err("no CUDA driver found (libcuda could not be loaded); install the NVIDIA driver or use --device cpu".into()),
    }
}

pub fn device() -> Result<Device> {
    match PREF.get().copied().unwrap_or(DevicePref::Auto) {
        DevicePref::Cpu => Ok(Device::Cpu),
        DevicePref::Cuda => try_cuda().map_err(|e| anyhow::anyhow!("--device cuda: {e}")),
        DevicePref::Auto => Ok(try_cuda().unwrap_or(Device::Cpu)),
    }
}

/// Whether a run would train on CUDA (for dry runs, which build no model on the device):
/// `--device cuda` yes, `cpu` no, `auto` when this build has CUDA and a device answers.
pub fn would_use_cuda() -> bool {
    match PREF.get().copied().unwrap_or(DevicePref::Auto) {
        DevicePref::Cpu => false,
        DevicePref::Cuda => true,
        DevicePref::Auto => cfg!(feature = "cuda") && try_cuda().is_ok(),
    }
}
