//! Data-parallel training across processes (issue 15): who this process is in the job
//! (`launch`: torchrun's, Slurm's and Open MPI's environment conventions), the collectives
//! behind one interface (`collective`; NCCL on CUDA, MPI on CPUs), the NCCL id handshake
//! (`rendezvous`), and what a step communicates (`grads`).
//!
//! The binary joins the job once (`join`) before any stage runs; the trainer asks `current()`
//! for the collectives (the job of one process when nothing was joined).

pub mod collective;
pub mod grads;
pub mod launch;
#[cfg(feature = "mpi")]
pub mod mpi;
#[cfg(feature = "nccl")]
pub mod nccl;
pub mod rendezvous;

use anyhow::Result;
use collective::{Collective, Single};
use launch::Launch;
use std::sync::{Arc, OnceLock};

static JOB: OnceLock<Arc<dyn Collective>> = OnceLock::new();

/// Set to 1, a process started without a launcher joins a job of one through the backend
/// (NCCL on CUDA, MPI on the CPU) instead of skipping the collectives.
pub const FORCE_ENV: &str = "LM4VE_DATA_PARALLEL";

/// How long ranks wait for each other at the rendezvous (a big job's nodes start unevenly).
pub const RENDEZVOUS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(900);

/// This process's collectives: the joined job's, or the job of one.
pub fn current() -> Arc<dyn Collective> {
    JOB.get().cloned().unwrap_or_else(|| Arc::new(Single))
}

/// Ends the job when dropped (MPI must be finalised by every rank before it exits).
#[derive(Default)]
pub struct JobGuard {
    #[cfg(feature = "mpi")]
    mpi: Option<Arc<mpi::MpiCollective>>,
}

impl Drop for JobGuard {
    fn drop(&mut self) {
        #[cfg(feature = "mpi")]
        if let Some(m) = self.mpi.take() {
            m.finalize();
        }
    }
}

/// Joins the job `launch` describes: on CUDA through NCCL (rendezvous at MASTER_ADDR /
/// MASTER_PORT), on the CPU through MPI. A job of one joins nothing unless `even_alone`
/// (then every collective runs, over one rank: how a single GPU checks the NCCL path).
pub fn join(launch: &Launch, cuda: bool, even_alone: bool) -> Result<JobGuard> {
    if !launch.is_distributed() && !even_alone {
        return Ok(JobGuard::default());
    }
    let (rank, world) = (launch.rank, launch.world_size);
    if cuda {
        #[cfg(feature = "nccl")]
        {
            let device = super::device::device()?;
            let c = nccl::NcclCollective::init(
                &device,
                rank,
                world,
                &launch.master_addr,
                launch.master_port,
                RENDEZVOUS_TIMEOUT,
            )?;
            set(Arc::new(c))?;
            return Ok(JobGuard::default());
        }
        #[cfg(not(feature = "nccl"))]
        anyhow::bail!(
            "rank {rank} of {world}: training on CUDA across processes needs NCCL: rebuild with `cargo build --release --features nccl` (see README, Training on many GPUs), or train on the CPU over MPI with --device cpu"
        );
    }
    #[cfg(feature = "mpi")]
    {
        let c = Arc::new(mpi::MpiCollective::init((rank, world))?);
        set(c.clone())?;
        Ok(JobGuard { mpi: Some(c) })
    }
    #[cfg(not(feature = "mpi"))]
    anyhow::bail!(
        "rank {rank} of {world}: training on the CPU across processes needs MPI: this lm4ve was built without the `mpi` feature"
    )
}

#[cfg_attr(not(any(feature = "mpi", feature = "nccl")), allow(dead_code))]
fn set(c: Arc<dyn Collective>) -> Result<()> {
    tracing::info!(
        "data-parallel rank {} of {} over {}",
        c.rank(),
        c.world_size(),
        c.backend()
    );
    JOB.set(c)
        .map_err(|_| anyhow::anyhow!("the data-parallel job was joined twice"))
}
