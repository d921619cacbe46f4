//! Joining a data-parallel job: a command started by torchrun, srun or mpirun (or with
//! `LM4VE_DATA_PARALLEL=1`) joins its job before it runs.

use anyhow::Result;
use lm4ve_pipeline::DataParallel;
use lm4ve_stages::train::dist::{self, launch::Launch};

/// Started by torchrun, srun or mpirun with more than one process (or with
/// LM4VE_DATA_PARALLEL=1): joins the job. The guard is held until the command ends (its drop
/// finalises MPI).
pub fn join_job() -> Result<(Option<dist::JobGuard>, Option<DataParallel>)> {
    let launch = Launch::from_process_env()?;
    let alone = std::env::var(dist::FORCE_ENV).is_ok_and(|v| v.trim() == "1");
    if !launch.is_distributed() && !alone {
        return Ok((None, None));
    }
    lm4ve_stages::train::device::set_ordinal(launch.local_rank);
    let cuda = lm4ve_stages::train::device::would_use_cuda();
    let job = dist::join(&launch, cuda, alone)?;
    let dp = DataParallel {
        rank: launch.rank,
        world: launch.world_size,
    };
    Ok((Some(job), Some(dp)))
}
