//! The collective operations data-parallel training needs, behind one interface with a
//! backend per device: NCCL on CUDA (`nccl`), MPI on CPUs (`mpi`), and the job of one
//! process (`Single`, every operation the identity).

use anyhow::Result;
use candle_core::Tensor;

/// One process's handle on its job's collectives. Every rank must call the same operations in
/// the same order with tensors of the same shape (as with torch.distributed).
pub trait Collective: Send + Sync {
    fn rank(&self) -> usize;
    fn world_size(&self) -> usize;
    /// What carries the collectives ("nccl", "mpi", "none"), for logs.
    fn backend(&self) -> &'static str;
    /// Whether this process communicates at all: false only for the job of one nobody
    /// joined (a joined job of one, `LM4VE_DATA_PARALLEL=1`, runs every collective).
    fn is_joined(&self) -> bool {
        true
    }
    /// The element-wise sum over ranks of an f32 tensor, on the tensor's device.
    fn all_reduce_sum(&self, t: &Tensor) -> Result<Tensor>;
    /// Rank `root`'s values of `t`, on every rank.
    fn broadcast(&self, t: &Tensor, root: usize) -> Result<Tensor>;
    /// Sums host values over ranks in place (metrics, counts).
    fn all_reduce_sum_host(&self, values: &mut [f64]) -> Result<()>;
    /// Rank 0's `value`, on every rank (also a synchronisation point: no rank returns before
    /// rank 0 has called it).
    fn broadcast_u64(&self, value: u64) -> Result<u64>;
}

/// The job of one process.
pub struct Single;

impl Collective for Single {
    fn rank(&self) -> usize {
        0
    }
    fn world_size(&self) -> usize {
        1
    }
    fn backend(&self) -> &'static str {
        "none"
    }
    fn is_joined(&self) -> bool {
        false
    }
    fn all_reduce_sum(&self, t: &Tensor) -> Result<Tensor> {
        Ok(t.clone())
    }
    fn broadcast(&self, t: &Tensor, _root: usize) -> Result<Tensor> {
        Ok(t.clone())
    }
    fn all_reduce_sum_host(&self, _values: &mut [f64]) -> Result<()> {
        Ok(())
    }
    fn broadcast_u64(&self, value: u64) -> Result<u64> {
        Ok(value)
    }
}
