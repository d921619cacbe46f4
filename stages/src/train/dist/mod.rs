//! Data-parallel training across processes (issue 15). So far: who this process is in the
//! job (`launch`: torchrun's and Slurm's environment conventions). The collective backends
//! (NCCL on CUDA, MPI on CPU) and the trainer's use of them are not built yet.

pub mod launch;
