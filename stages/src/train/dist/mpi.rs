//! The CPU backend: MPI collectives (Open MPI from Debian through the `mpi` crate), for tests
//! and CPU clusters. Processes are started by `mpirun -np N lm4ve ...` or by Slurm's
//! `srun --mpi=pmix lm4ve ...`.

use super::collective::Collective;
use anyhow::{Context, Result};
use candle_core::{DType, Tensor};
use mpi::collective::{CommunicatorCollectives, Root, SystemOperation};
use mpi::environment::Universe;
use mpi::topology::Communicator;
use mpi::Threading;
use std::sync::Mutex;

/// MPI's world communicator. MPI is initialised at the `Serialized` threading level and every
/// call holds the mutex, so any thread may call, one at a time.
pub struct MpiCollective {
    universe: Mutex<Option<Universe>>,
    rank: usize,
    world: usize,
}

// SAFETY: the Universe only stands for MPI's global state (its world communicator is a
// process-wide handle); calls are serialised by the mutex, as `Threading::Serialized` allows.
unsafe impl Send for MpiCollective {}
unsafe impl Sync for MpiCollective {}

impl MpiCollective {
    /// Initialises MPI. `expect`: the (rank, world size) the launcher's variables say, checked
    /// against MPI's own view (a launcher MPI does not know, e.g. torchrun, gives every
    /// process a world of one).
    pub fn init(expect: (usize, usize)) -> Result<Self> {
        let (universe, _level) = mpi::initialize_with_threading(Threading::Serialized)
            .context("MPI is already initialised in this process")?;
        let world = universe.world();
        let (rank, size) = (world.rank() as usize, world.size() as usize);
        anyhow::ensure!(
            (rank, size) == expect,
            "MPI sees rank {rank} of {size}, the launcher's variables say rank {} of {}: the CPU backend is MPI, so start the job with `mpirun -np N` or Slurm's `srun --mpi=pmix` (torchrun starts processes MPI does not know; it is for GPUs)",
            expect.0,
            expect.1
        );
        Ok(MpiCollective {
            universe: Mutex::new(Some(universe)),
            rank,
            world: size,
        })
    }

    /// Finalises MPI (every rank must call it; later collectives fail).
    pub fn finalize(&self) {
        if let Ok(mut u) = self.universe.lock() {
            u.take();
        }
    }

    fn with_world<T>(&self, f: impl FnOnce(&mpi::topology::SimpleCommunicator) -> T) -> Result<T> {
        let guard = self
            .universe
            .lock()
            .map_err(|_| anyhow::anyhow!("MPI lock poisoned"))?;
        let u = guard.as_ref().context("MPI is finalised")?;
        Ok(f(&u.world()))
    }
}

fn host_f32(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
}

impl Collective for MpiCollective {
    fn rank(&self) -> usize {
        self.rank
    }
    fn world_size(&self) -> usize {
        self.world
    }
    fn backend(&self) -> &'static str {
        "mpi"
    }
    fn all_reduce_sum(&self, t: &Tensor) -> Result<Tensor> {
        let send = host_f32(t)?;
        let mut recv = vec![0f32; send.len()];
        self.with_world(|w| w.all_reduce_into(&send[..], &mut recv[..], SystemOperation::sum()))?;
        Ok(Tensor::from_vec(recv, t.shape(), t.device())?.to_dtype(t.dtype())?)
    }
    fn broadcast(&self, t: &Tensor, root: usize) -> Result<Tensor> {
        let mut buf = host_f32(t)?;
        self.with_world(|w| w.process_at_rank(root as i32).broadcast_into(&mut buf[..]))?;
        Ok(Tensor::from_vec(buf, t.shape(), t.device())?.to_dtype(t.dtype())?)
    }
    fn all_reduce_sum_host(&self, values: &mut [f64]) -> Result<()> {
        let send = values.to_vec();
        self.with_world(|w| w.all_reduce_into(&send[..], values, SystemOperation::sum()))
    }
    fn broadcast_u64(&self, value: u64) -> Result<u64> {
        let mut v = value;
        self.with_world(|w| w.process_at_rank(0).broadcast_into(&mut v))?;
        Ok(v)
    }
}
