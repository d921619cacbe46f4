#!/usr/bin/env python3
"""numpy reference of the `pc.tokens` per-cloud processing (PAPER.md section 3).

The same steps as stages/src/pointcloud/geometry.rs::tokenize, written the way a numpy
user would (one vectorized pass over the cloud per FPS iteration):

  1. skip clouds with a non-finite coordinate or fewer than --num-points points;
  2. with --normalize (the stage's `normalize = true`, its default for bin and LAS; h5 clouds
     are used as they are, as the reference does): subtract the centroid, divide by the max
     norm (in float64, then float32);
  3. farthest point sampling to --num-points, starting at index 0, first index on ties;
  4. farthest point sampling of --num-groups centers among the sampled points;
  5. the --group-size nearest sampled points of each center (stable: ties by index),
     expressed relative to their center.

Squared distances are written as dx*dx + dy*dy + dz*dz rather than
`((a - b) ** 2).sum(-1)`: numpy's sum over a length-3 axis adds in another order, which
changes the last bit now and then and with it, on near-ties, which point FPS picks. Written
this way the output matches the Rust stage bit for bit, so --out can be compared exactly.

Usage:
  python3 scripts/bench/pc_reference.py FILE.h5 --num-points 1024 --num-groups 64 \
      --group-size 32 [--normalize] [--limit N] [--out out.npz]

  python3 scripts/bench/pc_reference.py FILE.h5 --check MANIFEST [--limit N] [--normalize]

With --check (the bench's "same numbers?"), the first N clouds of FILE.h5 are tokenized
with the sizes the stage ran with (from the manifest: its schema and meta.num_points) and
compared bit for bit with the artifact's `train` samples (centers, neighborhoods, label,
and the kept `points` when the stage kept them). Any difference, a reject, or an
exception exits non-zero; a match prints {"checked": N, "identical": true}.

Prints one JSON line: {"clouds": N, "seconds": S, "clouds_per_s": R, "skipped": K}, where
S covers reading the file and processing every cloud. --out saves `centers` [N,G,3],
`neighborhoods` [N,G,K,3] and `labels` [N] of the processed clouds (float32 / int64).
Needs only numpy and h5py.
"""

import argparse
import json
import sys
import time

import h5py
import numpy as np


def normalize_unit_sphere(points):
    """Centroid to the origin, farthest point at distance 1; float64 inside."""
    p = points.astype(np.float64)
    c = p.sum(axis=0) / len(p)
    p = p - c
    sq = p[:, 0] * p[:, 0] + p[:, 1] * p[:, 1] + p[:, 2] * p[:, 2]
    m = np.sqrt(sq.max())
    if m > 0:
        p = p / m
    return p.astype(np.float32)


def farthest_point_sample(points, n):
    """Indices of n points by FPS from index 0 (as the pointnet2 CUDA op)."""
    x = np.ascontiguousarray(points[:, 0])
    y = np.ascontiguousarray(points[:, 1])
    z = np.ascontiguousarray(points[:, 2])
    mind = np.full(len(points), 1e10, dtype=np.float32)
    idx = np.zeros(n, dtype=np.int64)
    last = 0
    for i in range(1, n):
        dx = x - x[last]
        dy = y - y[last]
        dz = z - z[last]
        np.minimum(mind, dx * dx + dy * dy + dz * dz, out=mind)
        last = int(np.argmax(mind))  # argmax returns the first maximum
        idx[i] = last
    return idx


def knn(points, centers, k):
    """[G, k] indices of the k nearest points of each center, ties by lower index."""
    diff = points[None, :, :] - centers[:, None, :]
    d = diff[..., 0] * diff[..., 0] + diff[..., 1] * diff[..., 1] + diff[..., 2] * diff[..., 2]
    return np.argsort(d, axis=1, kind="stable")[:, :k]


def tokenize(points, num_points, num_groups, group_size, normalize=False):
    """(centers [G,3], neighborhoods [G,K,3]) or None when the cloud is skipped."""
    if len(points) < num_points or not np.isfinite(points).all():
        return None
    pts = normalize_unit_sphere(points) if normalize else points.astype(np.float32)
    sampled = pts[farthest_point_sample(pts, num_points)]
    centers = sampled[farthest_point_sample(sampled, num_groups)]
    nn = knn(sampled, centers, group_size)
    neighborhoods = sampled[nn] - centers[:, None, :]
    return centers, neighborhoods


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("file", help="ScanObjectNN-format h5 (`data` [N,P,3], `label` [N])")
    ap.add_argument("--num-points", type=int, default=1024)
    ap.add_argument("--num-groups", type=int, default=64)
    ap.add_argument("--group-size", type=int, default=32)
    ap.add_argument("--normalize", action="store_true", help="unit-sphere normalization first")
    ap.add_argument("--limit", type=int, default=None, help="process only the first N clouds")
    ap.add_argument("--out", default=None, help="save centers/neighborhoods/labels to this .npz")
    ap.add_argument("--check", default=None, help="a pc.tokens manifest.json to compare with")
    args = ap.parse_args(argv)
    if args.check:
        return check(args)
    if not 0 < args.num_groups <= args.num_points or not 0 < args.group_size <= args.num_points:
        ap.error("need 0 < num_groups <= num_points and 0 < group_size <= num_points")

    t0 = time.perf_counter()
    with h5py.File(args.file, "r") as f:
        sel = slice(None) if args.limit is None else slice(0, args.limit)
        data = np.asarray(f["data"][sel], dtype=np.float32)
        labels = np.asarray(f["label"][sel]).reshape(len(data), -1)[:, 0].astype(np.int64)

    centers, neighborhoods, kept = [], [], []
    for i, cloud in enumerate(data):
        t = tokenize(cloud, args.num_points, args.num_groups, args.group_size, args.normalize)
        if t is None:
            continue
        centers.append(t[0])
        neighborhoods.append(t[1])
        kept.append(labels[i])
    seconds = time.perf_counter() - t0

    n = len(kept)
    print(json.dumps({
        "clouds": n,
        "seconds": round(seconds, 6),
        "clouds_per_s": round(n / seconds, 3) if seconds > 0 else None,
        "skipped": len(data) - n,
    }))
    if args.out:
        g, k = args.num_groups, args.group_size
        np.savez(
            args.out,
            centers=np.stack(centers) if n else np.zeros((0, g, 3), np.float32),
            neighborhoods=np.stack(neighborhoods) if n else np.zeros((0, g, k, 3), np.float32),
            labels=np.asarray(kept, dtype=np.int64),
        )
    return 0


def check(args):
    """Exit status 0 only when the artifact's first clouds are the reference's, bit for bit."""
    import os
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    import read_shards

    with open(args.check) as f:
        manifest = json.load(f)
    schema = manifest.get("schema") or {}
    fields = schema.get("fields", []) if isinstance(schema, dict) else schema
    shapes = {fl["name"]: fl["shape"] for fl in fields}
    num_points = (manifest.get("meta") or {}).get("num_points")
    if "neighborhoods" not in shapes or not isinstance(num_points, int):
        sys.exit(f"{args.check}: not a pc.tokens manifest (no neighborhoods field or meta.num_points)")
    num_groups, group_size = shapes["neighborhoods"][0], shapes["neighborhoods"][1]
    limit = args.limit or 100
    with h5py.File(args.file, "r") as f:
        data = np.asarray(f["data"][:limit], dtype=np.float32)
        labels = np.asarray(f["label"][:limit]).reshape(len(data), -1)[:, 0].astype(np.int64)
    n = 0
    for i, got in enumerate(read_shards.samples(args.check, split="train")):
        if i >= len(data):
            break
        t = tokenize(data[i], num_points, num_groups, group_size, args.normalize)
        if t is None:
            sys.exit(f"cloud {i}: the reference skips it, the stage kept it")
        want = {"centers": t[0], "neighborhoods": t[1], "label": labels[i]}
        if "points" in shapes:
            if shapes["points"][0] != data.shape[1]:
                sys.exit(f"keep_points = {shapes['points'][0]} differs from the file's "
                         f"{data.shape[1]} points: this check compares kept clouds as they are")
            want["points"] = normalize_unit_sphere(data[i]) if args.normalize else data[i]
        for k, v in want.items():
            if not np.array_equal(np.asarray(v), got[k]):
                diff = float(np.abs(np.asarray(v, np.float64) - got[k]).max())
                sys.exit(f"cloud {i}: field {k} differs (max abs diff {diff})")
        n += 1
    if n < min(limit, len(data)):
        sys.exit(f"the artifact has {n} train samples, fewer than the {min(limit, len(data))} checked")
    print(json.dumps({"checked": n, "identical": True}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
