#!/usr/bin/env python3
"""The anchors of `bash benches/run.sh video`: the frames the ssv2_tokens stage stores,
produced by the ffmpeg CLI and by Python loaders, on the same clips and cores.

    video_bench.py plan ROOT OUTDIR [--num-frames 16 --short-side 224 --crop 224]
        Untimed preparation: per clip of ROOT's train list, the decoded frame count
        (ffprobe -count_frames), the VideoMAE test-view indices (views = 1, the stage's rule),
        the short-side size and the crop. Writes OUTDIR/plan.json and OUTDIR/ffmpeg.args
        (one ffmpeg argument line per clip, for `xargs -P 2 -L 1 ffmpeg`).
    video_bench.py pyav PLAN [--procs 2]
    video_bench.py decord PLAN [--procs 2]
        Timed: a process pool decodes every clip, keeps the planned frames, resizes them
        (bilinear) and center-crops, stacks [T, C, C, 3] uint8 and reshapes to tubelets.
        Prints JSON {clips, frames_decoded, seconds, clips_per_s, frames_per_s, mismatches}.
"""
import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import time

import numpy as np


def seq_indices(n, t, view=0, views=1):
    # VideoMAE SSVideoClsDataset._get_seq_frames, test mode.
    seg = max(0.0, float(n - 1) / t)
    duration = seg / (views + 1)
    return [min(int(np.round(seg * i)) + int(duration * (view + 1)), n - 1) for i in range(t)]


def scaled(w, h, s):
    if w == h:
        return s, s
    if w > h:
        return (2 * w * s + h) // (2 * h), s
    return s, (2 * h * s + w) // (2 * w)


def probe(path):
    out = subprocess.check_output(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-count_frames",
         "-show_entries", "stream=width,height,nb_read_frames", "-of", "json", path])
    s = json.loads(out)["streams"][0]
    return int(s["width"]), int(s["height"]), int(s["nb_read_frames"])


def plan(args):
    labels = os.path.join(args.root, "labels", "something-something-v2-train.json")
    videos = os.path.join(args.root, "20bn-something-something-v2")
    clips = []
    for a in json.load(open(labels)):
        path = os.path.join(videos, f"{a['id']}.webm")
        w, h, n = probe(path)
        sw, sh = scaled(w, h, args.short_side)
        clips.append({
            "path": path, "n": n, "w": w, "h": h, "indices": seq_indices(n, args.num_frames),
            "sw": sw, "sh": sh, "x0": (sw - args.crop) // 2, "y0": (sh - args.crop) // 2,
            "crop": args.crop, "tubelet": 2, "patch": 16,
        })
    os.makedirs(args.outdir, exist_ok=True)
    with open(os.path.join(args.outdir, "plan.json"), "w") as f:
        json.dump(clips, f)
    with open(os.path.join(args.outdir, "ffmpeg.args"), "w") as f:
        for c in clips:
            sel = "+".join(f"eq(n,{i})" for i in sorted(set(c["indices"])))
            vf = (f"select='{sel}',scale={c['sw']}:{c['sh']}:flags=bilinear,"
                  f"crop={c['crop']}:{c['crop']}:{c['x0']}:{c['y0']}")
            f.write(f"-nostdin -v error -i {c['path']} -vf \"{vf}\" -vsync 0 "
                    f"-pix_fmt rgb24 -f rawvideo -y /dev/null\n")
    print(json.dumps({"clips": len(clips), "frames": sum(c["n"] for c in clips)}))


def tubelets(frames, c):
    T, C = len(frames), c["crop"]
    t, p = c["tubelet"], c["patch"]
    g = C // p
    x = np.stack(frames)  # [T, C, C, 3]
    return np.ascontiguousarray(
        x.reshape(T // t, t, g, p, g, p, 3).transpose(0, 2, 4, 1, 3, 5, 6).reshape(-1, t * p * p * 3))


def crop(img, c):
    return img[c["y0"]:c["y0"] + c["crop"], c["x0"]:c["x0"] + c["crop"]]


def load_pyav(c):
    import av
    with av.open(c["path"]) as container:
        stream = container.streams.video[0]
        stream.thread_type = "NONE"
        decoded = list(container.decode(stream))  # every frame, as the stage does
    keep = {}
    for i in sorted(set(c["indices"])):
        if i < len(decoded):
            rgb = decoded[i].reformat(width=c["sw"], height=c["sh"], format="rgb24",
                                      interpolation="BILINEAR").to_ndarray()
            keep[i] = crop(rgb, c)
    frames = [keep.get(i, np.zeros((c["crop"], c["crop"], 3), np.uint8)) for i in c["indices"]]
    return tubelets(frames, c), len(decoded)


def load_decord(c):
    import decord
    vr = decord.VideoReader(c["path"], num_threads=1, width=c["sw"], height=c["sh"])
    n = len(vr)
    idx = [min(i, n - 1) for i in c["indices"]]
    batch = vr.get_batch(idx).asnumpy()
    frames = [crop(f, c) for f in batch]
    return tubelets(frames, c), n


def run(args):
    clips = json.load(open(args.plan))
    fn = {"pyav": load_pyav, "decord": load_decord}[args.loader]
    # Spawned workers, not forked ones: a child forked after the parent decoded (PyAV's
    # warm-up) could inherit a lock held by the parent's threads; on real footage the PyAV
    # pool hung that way. Each worker imports and warms up before the clock starts.
    with mp.get_context("spawn").Pool(args.procs) as pool:
        pool.map(fn, clips[: args.procs], chunksize=1)
        t0 = time.perf_counter()
        results = pool.map(fn, clips, chunksize=1)
        seconds = time.perf_counter() - t0
    decoded = sum(n for _, n in results)
    mismatches = sum(1 for c, (_, n) in zip(clips, results) if n != c["n"])
    print(json.dumps({
        "loader": args.loader, "clips": len(clips), "frames_decoded": decoded,
        "seconds": round(seconds, 3), "clips_per_s": round(len(clips) / seconds, 1),
        "frames_per_s": round(decoded / seconds, 1), "frame_count_mismatches": mismatches,
    }))


def main(argv):
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("plan")
    p.add_argument("root")
    p.add_argument("outdir")
    p.add_argument("--num-frames", type=int, default=16)
    p.add_argument("--short-side", type=int, default=224)
    p.add_argument("--crop", type=int, default=224)
    for name in ("pyav", "decord"):
        q = sub.add_parser(name)
        q.add_argument("plan")
        q.add_argument("--procs", type=int, default=2)
        q.set_defaults(loader=name)
    args = ap.parse_args(argv[1:])
    if args.cmd == "plan":
        plan(args)
    else:
        run(args)


if __name__ == "__main__":
    main(sys.argv)
