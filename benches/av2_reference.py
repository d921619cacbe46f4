#!/usr/bin/env python3
"""The av2.tokens vectorization in Python, reading each scenario the way the av2 package does:
`load_argoverse_scenario_parquet` (pandas) for the tracks and `ArgoverseStaticMap.from_json` +
`get_lane_segment_centerline` (av2's map API) for the map; numpy for the rest. The anchor of
`av2.tokens`' throughput in BENCHMARKS.md (`bash benches/av2_tokens.sh`).

    python3 benches/av2_reference.py --data SPLIT_DIR --workers 2
    python3 benches/av2_reference.py --data SPLIT_DIR --check MANIFEST --split train --limit 200

Needs the av2 package (`pip install av2`). Prints a JSON line: scenarios, seconds, scenarios
per second (and per CPU-second: user + system time of the workers); with --check, the largest
difference to lm4ve's shards.
"""
import argparse
import json
import math
import os
import resource
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from av2.datasets.motion_forecasting.scenario_serialization import load_argoverse_scenario_parquet
from av2.map.map_api import ArgoverseStaticMap

TYPES = ["vehicle", "pedestrian", "motorcyclist", "cyclist", "bus", "static", "background",
         "construction", "riderless_bicycle", "unknown"]
LANE_TYPES = ["VEHICLE", "BIKE", "BUS"]
MARKS = ["DASH_SOLID_YELLOW", "DASH_SOLID_WHITE", "DASHED_WHITE", "DASHED_YELLOW", "DOUBLE_SOLID_YELLOW",
         "DOUBLE_SOLID_WHITE", "DOUBLE_DASH_YELLOW", "DOUBLE_DASH_WHITE", "SOLID_YELLOW", "SOLID_WHITE",
         "SOLID_DASH_WHITE", "SOLID_DASH_YELLOW", "SOLID_BLUE", "NONE", "UNKNOWN"]


def wrap(a):
    a = math.fmod(a, 2 * math.pi)
    if a <= -math.pi:
        a += 2 * math.pi
    elif a > math.pi:
        a -= 2 * math.pi
    return a


def resample(pts, n):
    if len(pts) <= n:
        return np.concatenate([pts, np.repeat(pts[-1:], n - len(pts), axis=0)])
    seg = np.hypot(*(pts[1:] - pts[:-1]).T)
    cum = np.concatenate([[0.0], np.cumsum(seg)])
    out = np.empty((n, 2))
    j = 0
    for k in range(n - 1):
        s = cum[-1] * k / (n - 1)
        while j + 2 < len(pts) and cum[j + 1] < s:
            j += 1
        ln = cum[j + 1] - cum[j]
        f = (s - cum[j]) / ln if ln > 0 else 0.0
        out[k] = pts[j] + f * (pts[j + 1] - pts[j])
    out[n - 1] = pts[-1]
    return out


def sq_dist_to_polyline(p):
    if len(p) == 1:
        return float((p[0] ** 2).sum())
    a, b = p[:-1], p[1:]
    d = b - a
    len2 = (d * d).sum(1)
    t = np.where(len2 > 0, -(a * d).sum(1) / np.where(len2 > 0, len2, 1), 0.0).clip(0, 1)
    q = a + t[:, None] * d
    return float((q[:, 0] * q[:, 0] + q[:, 1] * q[:, 1]).min())


def vectorize(folder, a):
    sid = os.path.basename(folder)
    scn = load_argoverse_scenario_parquet(Path(folder) / f"scenario_{sid}.parquet")
    amap = ArgoverseStaticMap.from_json(Path(folder) / f"log_map_archive_{sid}.json")
    steps, obs, A = a.obs + a.pred, a.obs, a.max_actors
    tracks = []
    for t in scn.tracks:
        pos = np.full((steps, 2), np.nan)
        for s in t.object_states:
            if 0 <= s.timestep < steps:
                pos[s.timestep] = s.position
        tracks.append((t, pos))
    focal = next(i for i, (t, _) in enumerate(tracks) if t.track_id == scn.focal_track_id)
    fp = tracks[focal][1]
    o = fp[obs - 1]
    heading = None
    for k in range(obs - 2, -1, -1):
        d = o - fp[k]
        if not np.isnan(d).any() and math.hypot(*d) > 1e-6:
            heading = d
            break
    theta = float(np.float32(wrap(math.atan2(heading[1], heading[0]) - math.pi / 2))) if heading is not None else 0.0
    origin = o.astype(np.float32).astype(np.float64)
    c, s = math.cos(theta), math.sin(theta)
    rot = np.array([[c, -s], [s, c]])

    def local(w):
        return (w - origin) @ rot  # R(-theta)·(w - origin), row vectors

    others = []
    for i, (t, pos) in enumerate(tracks):
        if i == focal or np.isnan(pos[obs - 1]).any():
            continue
        q = local(pos[obs - 1])
        scored = t.category.value == 2
        if scored or (abs(q[0]) <= a.radius and abs(q[1]) <= a.radius):
            others.append((not scored, float(q @ q), t.track_id, i))
    others.sort()
    chosen = [focal] + [x[3] for x in others][: A - 1]
    nv = obs - 1
    actors = np.zeros((A, nv, 7), np.float32)
    mask = np.zeros(A, np.uint8)
    futures = np.zeros((A, a.pred, 2), np.float32)
    fmask = np.zeros((A, a.pred), np.uint8)
    for k, i in enumerate(chosen):
        t, pos = tracks[i]
        mask[k] = 1
        p = local(pos[:obs])
        ok = ~np.isnan(p).any(1)
        both = ok[:-1] & ok[1:]
        actors[k, :, 0:2] = np.where(both[:, None], p[:-1], 0)
        actors[k, :, 2:4] = np.where(both[:, None], p[1:] - p[:-1], 0)
        actors[k, :, 4] = both
        actors[k, :, 5] = np.arange(nv) / nv
        actors[k, :, 6] = TYPES.index(t.object_type.value)
        f = local(pos[obs:])
        okf = ~np.isnan(f).any(1)
        futures[k] = np.where(okf[:, None], f, 0)
        fmask[k] = okf
    polys = []
    for lid in sorted(amap.vector_lane_segments):
        ls = amap.vector_lane_segments[lid]
        cl = amap.get_lane_segment_centerline(lid)[:, :2]
        attrs = [0, LANE_TYPES.index(ls.lane_type.value), float(ls.is_intersection),
                 MARKS.index(ls.left_mark_type.value), MARKS.index(ls.right_mark_type.value)]
        polys.append(((0, lid, 0), cl, attrs))
    for cid in sorted(amap.vector_pedestrian_crossings):
        pc = amap.vector_pedestrian_crossings[cid]
        for e, edge in enumerate([pc.edge1, pc.edge2]):
            polys.append(((1, cid, e), edge.xyz[:, :2], [1, 0, 0, 0, 0]))
    near = [p for p in polys if np.isfinite(p[1]).all() and (np.abs(p[1] - origin) <= a.radius).all()]
    if len(near) > a.max_lanes:
        near.sort(key=lambda p: (sq_dist_to_polyline(p[1] - origin), p[0]))
        near = near[: a.max_lanes]
    near.sort(key=lambda p: p[0])
    lanes = np.zeros((a.max_lanes, a.lane_points - 1, 9), np.float32)
    lmask = np.zeros(a.max_lanes, np.uint8)
    for k, (_, pts, attrs) in enumerate(near):
        q = local(resample(pts, a.lane_points))
        lanes[k, :, 0:2] = q[:-1]
        lanes[k, :, 2:4] = q[1:] - q[:-1]
        lanes[k, :, 4:] = attrs
        lmask[k] = 1
    return {"actors": actors, "actor_mask": mask, "lanes": lanes, "lane_mask": lmask,
            "target": futures[0], "actor_futures": futures, "actor_future_mask": fmask}


_ARGS = None


def init(args):
    global _ARGS
    _ARGS = args


def work(folder):
    try:
        vectorize(folder, _ARGS)
        return None
    except Exception as e:  # a reject, as lm4ve's
        return f"{folder}: {e}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="a split folder of <scenario_id>/ folders")
    ap.add_argument("--obs", type=int, default=50)
    ap.add_argument("--pred", type=int, default=60)
    ap.add_argument("--radius", type=float, default=100.0)
    ap.add_argument("--max-actors", type=int, default=64)
    ap.add_argument("--max-lanes", type=int, default=256)
    ap.add_argument("--lane-points", type=int, default=10)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--check", help="an av2.tokens manifest.json: compare its samples")
    ap.add_argument("--split", default="train")
    a = ap.parse_args()
    folders = sorted(str(p) for p in Path(a.data).iterdir() if p.is_dir())
    if a.limit:
        folders = folders[: a.limit]
    if a.check:
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts"))
        import read_shards
        # The sizes the stage ran with, from its manifest's schema (actors [A, obs-1, 7],
        # lanes [L, P-1, 9], actor_futures [A, pred, 2]), so the check follows the stage's defaults rather than this
        # script's (as av_reference.py does since issue 28).
        with open(a.check) as f:
            schema = json.load(f).get("schema") or {}
        fields = schema.get("fields", []) if isinstance(schema, dict) else schema
        shapes = {fld["name"]: fld["shape"] for fld in fields}
        if "actors" in shapes:
            a.max_actors, a.obs = shapes["actors"][0], shapes["actors"][1] + 1
        if "lanes" in shapes:
            a.max_lanes, a.lane_points = shapes["lanes"][0], shapes["lanes"][1] + 1
        if "actor_futures" in shapes:
            a.pred = shapes["actor_futures"][1]
        n, worst = 0, 0.0
        for got, folder in zip(read_shards.samples(a.check, split=a.split), folders):
            sid = bytes(got["scenario_id"]).hex()
            if sid != os.path.basename(folder).replace("-", ""):
                sys.exit(f"sample {n}: scenario {sid}, expected {folder}")
            want = vectorize(folder, a)
            for k, v in want.items():
                if v.dtype == np.uint8:
                    if not np.array_equal(v, got[k]):
                        sys.exit(f"{folder}: field {k} differs")
                else:
                    worst = max(worst, float(np.abs(v.astype(np.float64) - got[k]).max()))
            n += 1
        print(json.dumps({"checked": n, "max_abs_diff": worst}))
        if worst > 1e-3:
            sys.exit(f"largest difference {worst} > 1e-3")
        return
    t0 = time.time()
    with Pool(a.workers, initializer=init, initargs=(a,)) as pool:
        errors = [e for e in pool.map(work, folders, chunksize=8) if e]
    dt = time.time() - t0
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = ru.ru_utime + ru.ru_stime
    print(json.dumps({"scenarios": len(folders), "rejects": len(errors), "seconds": round(dt, 3),
                      "per_second": round(len(folders) / dt, 1),
                      "per_cpu_second": round(len(folders) / cpu, 1) if cpu else None,
                      "errors": errors[:3]}))


if __name__ == "__main__":
    main()
