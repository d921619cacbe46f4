#!/usr/bin/env python3
"""The av.tokens vectorization written the way common Python VectorNet preprocessing does it
(pandas per scenario CSV, numpy per actor and lane, a brute-force lane search over every lane
of the city per scenario), for the side-by-side benchmark in BENCHMARKS.md (## av_tokens).

Same conventions as lm4ve's stages/src/argoverse/vectorize.rs (SHARDS.md, av.tokens): frame
at the AGENT's last observed step turned so its heading is +y; actors observed then within
+-radius, AGENT first, then by distance (ties: TRACK_ID); lanes entirely within +-radius along
the world axes (the reference's box), in lane-id order, the nearest kept over max_lanes (squared
distances; ties: lane id); edge-pad / arc-length resample to lane_points.

    python3 benches/av_reference.py --data train/data --map map_files --workers 2
    python3 benches/av_reference.py --data train/data --map map_files --check MANIFEST --split train

--prefilter query (default) takes lane candidates as the VectorNet reference does (Argoverse
API bbox overlap with +-2*radius), --prefilter tight only those inside the +-radius box;
the output is the same.

Prints one JSON line: scenarios, rejects, seconds, scenarios_per_s, cpu_seconds (the workers'
user + system time) (and, with --check, how
many samples of the lm4ve artifact it compared and the largest difference).
"""
import argparse
import glob
import json
import math
import os
import resource
import sys
import time
import xml.etree.ElementTree as ET
from multiprocessing import Pool

import numpy as np
import pandas as pd

TURN = {"NONE": 0, "LEFT": 1, "RIGHT": 2}


def load_map(path):
    """Lanes of one city: (ids, centerlines, attrs, bboxes) from the vector-map XML."""
    root = ET.parse(path).getroot()
    nodes = {}
    for child in root:
        if child.tag == "node":
            nodes[int(child.attrib["id"])] = (float(child.attrib["x"]), float(child.attrib["y"]))
    ids, lines, attrs = [], [], []
    for child in root:
        if child.tag != "way":
            continue
        tags, refs = {}, []
        for el in child:
            if el.tag == "nd":
                refs.append(int(el.attrib["ref"]))
            elif el.tag == "tag":
                tags[el.attrib["k"]] = el.attrib["v"]
        ids.append(int(child.attrib["lane_id"]))
        lines.append(np.array([nodes[r] for r in refs], dtype=np.float64))
        attrs.append((
            TURN[tags.get("turn_direction", "NONE").upper()],
            1.0 if tags.get("is_intersection") == "True" else 0.0,
            1.0 if tags.get("has_traffic_control") == "True" else 0.0,
        ))
    bboxes = np.array([[l[:, 0].min(), l[:, 1].min(), l[:, 0].max(), l[:, 1].max()] for l in lines])
    return {"ids": ids, "lines": lines, "attrs": attrs, "bboxes": bboxes}


def find_maps(map_dir):
    maps = {}
    for p in sorted(glob.glob(os.path.join(map_dir, "pruned_argoverse_*_vector_map.xml"))):
        city = os.path.basename(p)[len("pruned_argoverse_"):].split("_")[0]
        maps[city] = p
    return maps


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
    a, b = p[:-1], p[1:]
    d = b - a
    len2 = (d * d).sum(1)
    t = np.where(len2 > 0, -(a * d).sum(1) / np.where(len2 > 0, len2, 1), 0.0).clip(0, 1)
    q = a + t[:, None] * d
    return float((q[:, 0] * q[:, 0] + q[:, 1] * q[:, 1]).min())


def vectorize(path, maps, a):
    """One scenario → dict of arrays (the av.tokens fields), or raises ValueError(reason)."""
    obs, pred, r = a.obs, a.pred, a.radius
    total = obs + pred
    df = pd.read_csv(path)
    for c in ("TIMESTAMP", "TRACK_ID", "OBJECT_TYPE", "X", "Y", "CITY_NAME"):
        if c not in df.columns:
            raise ValueError(f"missing column {c}")
    if not np.isfinite(df[["TIMESTAMP", "X", "Y"]].to_numpy(dtype=np.float64)).all():
        raise ValueError("non-finite value")
    city = df["CITY_NAME"].iloc[0]
    if city not in maps:
        raise ValueError(f"unknown city {city}")
    agents = df[df["OBJECT_TYPE"] == "AGENT"]["TRACK_ID"].unique()
    if len(agents) != 1:
        raise ValueError("missing AGENT" if len(agents) == 0 else "several AGENTs")
    agent_id = agents[0]
    agent = df[df["TRACK_ID"] == agent_id].sort_values("TIMESTAMP", kind="stable")
    ts = agent["TIMESTAMP"].to_numpy()
    if len(np.unique(ts)) != len(ts):
        raise ValueError("duplicate timestamp")
    if len(ts) < obs:
        raise ValueError("too few observed steps")
    if len(ts) < total:
        raise ValueError(f"needs {total} steps")
    step_of = {t: i for i, t in enumerate(ts[:total])}

    tracks = {}
    for tid, g in df.groupby("TRACK_ID", sort=False):
        pts = np.full((total, 2), np.nan)
        have = np.zeros(total, bool)
        for t, x, y in zip(g["TIMESTAMP"].to_numpy(), g["X"].to_numpy(), g["Y"].to_numpy()):
            k = step_of.get(t)
            if k is None:
                continue
            if have[k]:
                raise ValueError("duplicate timestamp")
            have[k] = True
            pts[k] = (x, y)
        tracks[tid] = (pts, have)

    apts, _ = tracks[agent_id]
    o = apts[obs - 1]
    heading = None
    for k in range(obs - 2, -1, -1):
        d = o - apts[k]
        if math.hypot(d[0], d[1]) > 1e-6:
            heading = d
            break
    theta = 0.0 if heading is None else wrap(math.atan2(heading[1], heading[0]) - math.pi / 2)
    theta = float(np.float32(theta))
    origin = np.array([float(np.float32(o[0])), float(np.float32(o[1]))])
    c, s = math.cos(theta), math.sin(theta)

    def local(w):
        d = w - origin
        return np.stack([c * d[..., 0] + s * d[..., 1], -s * d[..., 0] + c * d[..., 1]], -1)

    # Actors
    cands = []
    for tid, (pts, have) in tracks.items():
        if tid == agent_id or not have[obs - 1]:
            continue
        q = local(pts[obs - 1])
        if abs(q[0]) <= r and abs(q[1]) <= r:
            cands.append((q[0] * q[0] + q[1] * q[1], tid))
    cands.sort()
    chosen = [agent_id] + [t for _, t in cands][: a.max_actors - 1]
    nv = obs - 1
    actors = np.zeros((a.max_actors, nv, 6), np.float32)
    actor_mask = np.zeros(a.max_actors, np.uint8)
    for i, tid in enumerate(chosen):
        pts, have = tracks[tid]
        q = local(pts[:obs])
        ok = have[:-1][:nv] & have[1:obs]
        feat = np.zeros((nv, 6))
        feat[:, 0:2] = q[:-1]
        feat[:, 2:4] = q[1:] - q[:-1]
        feat[:, 4] = 1.0
        feat[~ok, :5] = 0.0
        feat[:, 5] = np.arange(nv) / nv
        actors[i] = feat
        actor_mask[i] = 1

    # Lanes: brute force over every lane of the city (all bounding boxes at once, then each
    # candidate). "query": what the VectorNet reference does through the Argoverse API,
    # get_lane_ids_in_xy_bbox(x, y, city, 200): bounding boxes overlapping a +-200 m box (the
    # radius plus the radius). "tight": only boxes inside the +-radius world-axis box (what
    # lm4ve's R-tree asks).
    m = maps[city]
    bb = m["bboxes"]
    if a.prefilter == "query":
        q = 2 * r
        inside = np.nonzero((bb[:, 2] >= origin[0] - q) & (bb[:, 3] >= origin[1] - q)
                            & (bb[:, 0] <= origin[0] + q) & (bb[:, 1] <= origin[1] + q))[0]
    else:
        inside = np.nonzero((bb[:, 0] >= origin[0] - r) & (bb[:, 1] >= origin[1] - r)
                            & (bb[:, 2] <= origin[0] + r) & (bb[:, 3] <= origin[1] + r))[0]
    # The reference's test (VecMapReader.get_lane_data): the centerline minus the origin, in
    # WORLD axes, inside +-radius; kept in lane-id order. Over max_lanes: the nearest.
    near = []
    for i in inside:
        d = m["lines"][i] - origin
        if np.abs(d).max() <= r:
            near.append((sq_dist_to_polyline(d), m["ids"][i], i))
    if len(near) > a.max_lanes:
        near = sorted(near)[: a.max_lanes]
    near.sort(key=lambda n: n[1])
    lv = a.lane_points - 1
    lanes = np.zeros((a.max_lanes, lv, 7), np.float32)
    lane_mask = np.zeros(a.max_lanes, np.uint8)
    for k, (_, _, i) in enumerate(near[: a.max_lanes]):
        q = local(resample(m["lines"][i], a.lane_points))
        lanes[k, :, 0:2] = q[:-1]
        lanes[k, :, 2:4] = q[1:] - q[:-1]
        lanes[k, :, 4:7] = m["attrs"][i]
        lane_mask[k] = 1

    target = local(apts[obs:total]).astype(np.float32)
    stem = os.path.splitext(os.path.basename(path))[0]
    return {
        "actors": actors, "actor_mask": actor_mask, "lanes": lanes, "lane_mask": lane_mask,
        "target": target, "frame": np.array([origin[0], origin[1], theta], np.float32),
        "scenario_id": np.array([int(stem)], np.int64),
    }


_MAPS, _ARGS = None, None


def init(map_dir, args):
    global _MAPS, _ARGS
    _MAPS = {c: load_map(p) for c, p in find_maps(map_dir).items()}
    _ARGS = args


def work(path):
    try:
        vectorize(path, _MAPS, _ARGS)
        return None
    except ValueError as e:
        return f"{path}: {e}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="folder of <seq_id>.csv")
    ap.add_argument("--map", required=True, help="folder of pruned_argoverse_*_vector_map.xml")
    ap.add_argument("--obs", type=int, default=20)
    ap.add_argument("--pred", type=int, default=30)
    ap.add_argument("--radius", type=float, default=100.0)
    ap.add_argument("--max-actors", type=int, default=64)
    ap.add_argument("--max-lanes", type=int, default=512)
    ap.add_argument("--lane-points", type=int, default=10)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--prefilter", choices=["query", "tight"], default="query",
                    help="lane candidates: the reference's +-2*radius bbox query, or the tight box")
    ap.add_argument("--limit", type=int, default=0, help="only the first N files")
    ap.add_argument("--check", help="an av.tokens manifest.json: compare its samples")
    ap.add_argument("--split", default="train", help="with --check: the split --data holds")
    a = ap.parse_args()

    files = sorted(glob.glob(os.path.join(a.data, "*.csv")),
                   key=lambda p: int(os.path.splitext(os.path.basename(p))[0]))
    if a.limit:
        files = files[: a.limit]

    if a.check:
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts"))
        import read_shards
        # The sizes the stage ran with, from its manifest's schema (actors [A, O-1, 6], lanes
        # [L, P-1, 7]), so the comparison follows the stage's current defaults and never pads
        # to a stale cap (issue 28: this padded to 128 lanes while the stage kept 512).
        with open(a.check) as f:
            schema = json.load(f).get("schema") or {}
        fields = schema.get("fields", []) if isinstance(schema, dict) else schema
        shapes = {fld["name"]: fld["shape"] for fld in fields}
        if "actors" in shapes:
            a.max_actors, a.obs = shapes["actors"][0], shapes["actors"][1] + 1
        if "lanes" in shapes:
            a.max_lanes, a.lane_points = shapes["lanes"][0], shapes["lanes"][1] + 1
        maps = {c: load_map(p) for c, p in find_maps(a.map).items()}
        n, worst = 0, 0.0
        for got in read_shards.samples(a.check, split=a.split):
            sid = int(got["scenario_id"][0])
            want = vectorize(os.path.join(a.data, f"{sid}.csv"), maps, a)
            for k, v in want.items():
                if v.dtype == np.uint8 or v.dtype == np.int64:
                    if not np.array_equal(v, got[k]):
                        sys.exit(f"scenario {sid}: field {k} differs")
                else:
                    worst = max(worst, float(np.abs(v.astype(np.float64) - got[k]).max()))
            n += 1
            if a.limit and n >= a.limit:
                break
        print(json.dumps({"checked": n, "max_abs_diff": worst}))
        if worst > 1e-3:
            sys.exit(f"largest difference {worst} > 1e-3")
        return

    t0 = time.perf_counter()
    pool = Pool(a.workers, initializer=init, initargs=(a.map, a))
    rejects = [r for r in pool.imap(work, files, chunksize=16) if r]
    pool.close()
    pool.join()
    dt = time.perf_counter() - t0
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(json.dumps({
        "scenarios": len(files) - len(rejects), "rejects": len(rejects), "workers": a.workers,
        "prefilter": a.prefilter,
        "seconds": round(dt, 3), "scenarios_per_s": round((len(files) - len(rejects)) / dt, 1),
        "cpu_seconds": round(ru.ru_utime + ru.ru_stime, 3),
    }))


if __name__ == "__main__":
    main()
