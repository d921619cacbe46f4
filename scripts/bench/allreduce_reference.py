"""PyTorch's anchor for `lm4ve bench-allreduce`: torch.distributed all_reduce (gloo on CPU,
NCCL on CUDA) of the same 25 MB gradient buckets, averaged, timed per step the same way.

Run under torchrun (2 processes on one CPU machine, as benches/run.sh allreduce does):
    torchrun --nproc-per-node 2 scripts/bench/allreduce_reference.py --buckets 26214400,1048576
`--buckets` lists the bucket sizes in bytes (lm4ve's JSON: bytes per bucket). Rank 0 prints
one JSON line. lm4ve also copies gradients into and out of each bucket (as DDP does without
gradient_as_bucket_view); this side times the collective and the division only.
"""

import argparse
import json
import os
import time

import torch
import torch.distributed as dist


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--buckets", required=True, help="bytes per bucket, comma-separated")
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--model", default="")
    a = ap.parse_args()
    cuda = torch.cuda.is_available()
    dist.init_process_group("nccl" if cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if cuda else torch.device("cpu")
    sizes = [int(b) // 4 for b in a.buckets.split(",") if b]
    buckets = [torch.ones(n, dtype=torch.float32, device=device) for n in sizes]
    times = []
    for i in range(a.warmup + a.iters):
        t0 = time.perf_counter()
        for b in buckets:
            dist.all_reduce(b)
            b.div_(world)
        if cuda:
            torch.cuda.synchronize()
        if i >= a.warmup:
            times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    if rank == 0:
        print(json.dumps({
            "impl": "pytorch",
            "model": a.model,
            "backend": dist.get_backend(),
            "ranks": world,
            "threads": torch.get_num_threads(),
            "bytes": sum(sizes) * 4,
            "buckets": len(sizes),
            "ms_median": times[len(times) // 2],
            "torch": torch.__version__,
        }))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
