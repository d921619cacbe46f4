#!/usr/bin/env python3
"""numpy counterpart of `lm4ve bench-resample`: Point-BERT's per-step views of a batch.

The steps of LM4VisualEncoding's point-cloud fine-tuning, per cloud, the way a numpy user
would write them on the CPU (the reference runs 2-3 and 5 with its CUDA ops on the GPU):

  1. shuffle the cloud's points (the dataset's np.random.shuffle);
  2. farthest point sampling to the pool (1200 for 1024 points), from index 0;
  3. a random --num-points of the pool without replacement (np.random.choice);
  4. per-axis scale in [2/3, 3/2] and shift in [-0.2, 0.2] (PointcloudScaleAndTranslate);
  5. FPS --num-groups centers, the --group-size nearest points of each, relative to it.

Usage:
  python3 scripts/bench/pc_resample_reference.py FILE.h5 [--batch 32] [--num-points 1024]
      [--num-groups 64] [--group-size 32] [--iters 20]

Prints one JSON line like `lm4ve bench-resample`: the median ms per batch (one thread).
Needs numpy and h5py.
"""

import argparse
import json
import sys
import time

import h5py
import numpy as np

POOL = {1024: 1200, 2048: 2400, 4096: 4800, 8192: 8192}


def fps(points, n):
    mind = np.full(len(points), 1e10, dtype=np.float32)
    idx = np.zeros(n, dtype=np.int64)
    last = 0
    for i in range(1, n):
        d = points - points[last]
        np.minimum(mind, (d * d).sum(-1), out=mind)
        last = int(np.argmax(mind))
        idx[i] = last
    return idx


def view(cloud, pool, num_points, num_groups, group_size, rng):
    pts = cloud[rng.permutation(len(cloud))]
    pts = pts[fps(pts, pool)]
    pts = pts[rng.choice(pool, num_points, replace=False)]
    pts = pts * rng.uniform(2.0 / 3.0, 1.5, size=3).astype(np.float32) + rng.uniform(
        -0.2, 0.2, size=3
    ).astype(np.float32)
    centers = pts[fps(pts, num_groups)]
    d = ((pts[None, :, :] - centers[:, None, :]) ** 2).sum(-1)
    nn = np.argpartition(d, group_size - 1, axis=1)[:, :group_size]
    return centers, pts[nn] - centers[:, None, :]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("file")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--num-points", type=int, default=1024)
    ap.add_argument("--num-groups", type=int, default=64)
    ap.add_argument("--group-size", type=int, default=32)
    ap.add_argument("--iters", type=int, default=20)
    a = ap.parse_args(argv)
    with h5py.File(a.file, "r") as f:
        data = np.asarray(f["data"][: a.batch * (a.iters + 1)], dtype=np.float32)
    pool = min(POOL.get(a.num_points, -(-a.num_points * 1200 // 1024)), data.shape[1])
    rng = np.random.default_rng(0)

    def batch(b):
        for i in range(a.batch):
            view(data[(b * a.batch + i) % len(data)], pool, a.num_points, a.num_groups,
                 a.group_size, rng)

    batch(0)
    ms = []
    for b in range(1, a.iters + 1):
        t0 = time.perf_counter()
        batch(b)
        ms.append((time.perf_counter() - t0) * 1e3)
    ms.sort()
    med = ms[len(ms) // 2]
    print(json.dumps({
        "impl": "numpy", "threads": 1, "batch": a.batch, "pool": pool,
        "num_points": a.num_points, "num_groups": a.num_groups, "group_size": a.group_size,
        "ms_per_batch_median": round(med, 3), "clouds_per_s": round(a.batch / med * 1e3),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
