//! The GPU backend: NCCL collectives through cudarc (as candle's multi-process examples use
//! them), on the stream of the candle device that trains, so they queue behind the step's
//! kernels. Rank 0 makes the NCCL id and hands it out at the rendezvous
//! (`MASTER_ADDR:MASTER_PORT`, `rendezvous`).

use super::collective::Collective;
use anyhow::{Context, Result};
use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{DeviceRepr, ValidAsZeroBits};
use candle_core::cuda_backend::cudarc::nccl::safe::{Comm, Id, NcclType, ReduceOp};
use candle_core::cuda_backend::{CudaDType, CudaStorage};
use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Shape, Tensor};
use std::sync::Mutex;
use std::time::Duration;

pub struct NcclCollective {
    comm: Mutex<Comm>,
    device: Device,
    rank: usize,
    world: usize,
}

// SAFETY: an NCCL communicator may be used from any thread as long as calls on it do not
// overlap; the mutex serialises them.
unsafe impl Send for NcclCollective {}
unsafe impl Sync for NcclCollective {}

impl NcclCollective {
    /// Joins the job: the NCCL id from rank 0 over the rendezvous, then the communicator on
    /// `device`'s stream (the GPU of this process's local rank).
    pub fn init(
        device: &Device,
        rank: usize,
        world: usize,
        addr: &str,
        port: u16,
        timeout: Duration,
    ) -> Result<Self> {
        let Device::Cuda(cuda) = device else {
            anyhow::bail!("NCCL needs a CUDA device");
        };
        let id = if rank == 0 {
            let id = Id::new().map_err(|e| anyhow::anyhow!("ncclGetUniqueId: {e:?}"))?;
            let bytes: Vec<u8> = id.internal().iter().map(|&c| c as u8).collect();
            super::rendezvous::exchange(0, world, addr, port, Some(&bytes), timeout)?;
            id
        } else {
            let bytes = super::rendezvous::exchange(rank, world, addr, port, None, timeout)?;
            anyhow::ensure!(
                bytes.len() == 128,
                "the NCCL id from rank 0 has {} bytes, not 128",
                bytes.len()
            );
            let mut internal = [0 as std::ffi::c_char; 128];
            for (d, s) in internal.iter_mut().zip(&bytes) {
                *d = *s as std::ffi::c_char;
            }
            Id::uninit(internal)
        };
        let comm = Comm::from_rank(cuda.cuda_stream(), rank, world, id)
            .map_err(|e| anyhow::anyhow!("ncclCommInitRank (rank {rank} of {world}): {e:?}"))
            .context("NCCL could not form the job")?;
        Ok(NcclCollective {
            comm: Mutex::new(comm),
            device: device.clone(),
            rank,
            world,
        })
    }

    fn run(&self, t: &Tensor, op: Op) -> Result<Tensor> {
        let comm = self
            .comm
            .lock()
            .map_err(|_| anyhow::anyhow!("NCCL lock poisoned"))?;
        let t = t.to_device(&self.device)?.contiguous()?;
        Ok(t.apply_op1_no_bwd(&NcclOp { comm: &comm, op })?)
    }
}

#[derive(Clone, Copy)]
enum Op {
    Sum,
    Broadcast(usize),
}

/// One NCCL call as a candle op: reads the input's device memory, writes a fresh output.
struct NcclOp<'a> {
    comm: &'a Comm,
    op: Op,
}

impl NcclOp<'_> {
    fn call<T: NcclType + CudaDType + DeviceRepr + ValidAsZeroBits>(
        &self,
        s: &CudaStorage,
        l: &Layout,
    ) -> candle_core::Result<CudaStorage> {
        let (start, end) = l
            .contiguous_offsets()
            .ok_or_else(|| candle_core::Error::msg("NCCL needs a contiguous tensor"))?;
        let src = s.as_cuda_slice::<T>()?.slice(start..end);
        let mut dst = s.device.alloc_zeros::<T>(end - start)?;
        let r = match self.op {
            Op::Sum => self.comm.all_reduce(&src, &mut dst, &ReduceOp::Sum),
            Op::Broadcast(root) => self.comm.broadcast(Some(&src), &mut dst, root as i32),
        };
        r.map_err(|e| candle_core::Error::msg(format!("NCCL: {e:?}")))?;
        Ok(CudaStorage::wrap_cuda_slice(dst, s.device.clone()))
    }
}

impl CustomOp1 for NcclOp<'_> {
    fn name(&self) -> &'static str {
        "nccl"
    }
    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        Err(candle_core::Error::msg("NCCL works on CUDA tensors"))
    }
    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
        let out = match s.dtype() {
            DType::F32 => self.call::<f32>(s, l)?,
            DType::F64 => self.call::<f64>(s, l)?,
            d => return Err(candle_core::Error::msg(format!("NCCL op on {d:?}"))),
        };
        Ok((out, l.shape().clone()))
    }
}

impl Collective for NcclCollective {
    fn rank(&self) -> usize {
        self.rank
    }
    fn world_size(&self) -> usize {
        self.world
    }
    fn backend(&self) -> &'static str {
        "nccl"
    }
    fn all_reduce_sum(&self, t: &Tensor) -> Result<Tensor> {
        self.run(t, Op::Sum)
    }
    fn broadcast(&self, t: &Tensor, root: usize) -> Result<Tensor> {
        self.run(t, Op::Broadcast(root))
    }
    fn all_reduce_sum_host(&self, values: &mut [f64]) -> Result<()> {
        let t = Tensor::from_slice(values, values.len(), &self.device)?;
        let sum = self.run(&t, Op::Sum)?.to_vec1::<f64>()?;
        values.copy_from_slice(&sum);
        Ok(())
    }
    fn broadcast_u64(&self, value: u64) -> Result<u64> {
        // Exact for the values sent (unit numbers, steps): below 2^53.
        let t = Tensor::new(&[value as f64], &self.device)?;
        let v = self.run(&t, Op::Broadcast(0))?.to_vec1::<f64>()?;
        Ok(v[0] as u64)
    }
}
