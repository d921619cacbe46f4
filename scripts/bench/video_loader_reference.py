#!/usr/bin/env python3
"""Python anchor benchmark: the paper's reference SSv2 loader, timed per clip.

Times the reference implementation (LM4VisualEncoding, video_understanding/) of the
SSv2 fine-tuning data path, so the Rust loader can be compared against it side by side.
Nothing of the reference is copied here: its modules are imported from the checkout
named by $LM4VE_REF, and the dataset is built through its own
`datasets.build_dataset(...)` with the arguments of `scripts/ssv2_vits_llama.sh` and
the `run_class_finetuning.py` defaults:

  data_set SSV2, num_frames 16 (-> num_segment 16, clip_len 1), input_size 224,
  short_side_size 224, aa 'rand-m7-n4-mstd0.5-inc1', train_interpolation 'bicubic',
  reprob 0.25, remode 'pixel', recount 1, num_sample 2, test_num_segment 2,
  test_num_crop 3.

The clips given on the command line are written to a temporary train.csv / test.csv
(the "<path> <label>" format `SSVideoClsDataset.__init__` reads with pandas) and the
dataset's own `__getitem__` is timed:

  train  `SSVideoClsDataset.__getitem__` in mode 'train': `loadvideo_decord` (decord
         VideoReader, num_threads=1, 16 random segment indices, get_batch) followed by
         `_aug_frame` twice (num_sample 2: RandAugment on PIL frames, ToTensor,
         normalize, random resized crop to 224 by bilinear interpolate, random erasing).
         Reported per clip (both samples) and per augmented sample (/2); the time spent
         in `loadvideo_decord` and in each `_aug_frame` is recorded too (by wrapping the
         bound methods on the instance, the reference code is not touched).
  test   mode 'test', all 2 temporal x 3 spatial views of a clip (6 `__getitem__`
         calls; each one decodes the 32 test indices again, resizes short side to 224
         with cv2 bilinear, takes its temporal half and spatial crop, ClipToTensor,
         normalize), as the reference's test loop does.

Everything runs single-threaded in this process: torch.set_num_threads(1) (and
OMP/MKL threads 1, as the launch script's OMP_NUM_THREADS=1), cv2.setNumThreads(1),
decord num_threads=1 (hard-coded in the reference's loadvideo_decord). Each clip gets
--warmup untimed iterations, then --iters timed ones; medians are reported per clip
and over all timed iterations of all clips pooled. Python's, numpy's and torch's RNGs
are seeded (--seed) so that the RandAugment ops drawn are the same from run to run.

Usage:
  LM4VE_REF=/path/to/LM4VisualEncoding \\
      python scripts/bench/video_loader_reference.py CLIP.webm [CLIP ...] \\
      [--iters 10] [--warmup 1] [--seed 0] [--skip-test] [--out result.json]

Prints one JSON object (also written to --out when given):
  {"impl": "reference-python", "train_ms_per_clip_median": ..,
   "train_ms_per_sample_median": .., "test_ms_per_clip_6_views_median": .., "clips": [..],
   "versions": {..}, "stubs": [..], "machine": {..}, ...}

Needs (a virtualenv outside the repo is fine): torch, torchvision (the one matching
torch), numpy, Pillow, decord (PyPI decord==0.6.0 ships a py3-none manylinux wheel),
opencv-python-headless (the reference's functional.py imports cv2) and pandas
(SSVideoClsDataset.__init__ reads the CSV with it). A CPU-only torch is enough;
nothing here touches CUDA. For example:
  python3 -m venv /tmp/refvenv
  /tmp/refvenv/bin/pip install torch torchvision numpy Pillow decord \\
      opencv-python-headless pandas

Stubs: only `numpy.lib.function_base`, and only where numpy >= 2 no longer has it: the
reference's kinetics.py (imported by datasets.py) does
`from numpy.lib.function_base import disp` and never uses `disp`.
"""

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import types

# Single-threaded, as the reference's launch script (OMP_NUM_THREADS=1); set before
# torch / cv2 load their thread pools.
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

STUBS = []


def _import_reference():
    ref = os.environ.get("LM4VE_REF")
    if not ref:
        sys.exit("set LM4VE_REF to the LM4VisualEncoding checkout (the folder holding "
                 "video_understanding/)")
    video_dir = os.path.join(os.path.abspath(ref), "video_understanding")
    if not os.path.isfile(os.path.join(video_dir, "ssv2.py")):
        sys.exit(f"no ssv2.py under {video_dir}: is LM4VE_REF the LM4VisualEncoding checkout?")
    # The reference's modules import each other by bare name (`import video_transforms`,
    # `from transforms import *`), so its folder goes first on the path.
    sys.path.insert(0, video_dir)

    try:
        import numpy.lib.function_base  # noqa: F401
    except ImportError:
        # Stub: numpy >= 2 removed numpy.lib.function_base. kinetics.py (imported by
        # datasets.py) does `from numpy.lib.function_base import disp` and never uses it.
        stub = types.ModuleType("numpy.lib.function_base")
        stub.disp = print
        sys.modules["numpy.lib.function_base"] = stub
        STUBS.append("numpy.lib.function_base (removed in numpy 2; kinetics.py imports "
                     "its unused `disp`)")

    import datasets as ref_datasets  # the reference's datasets.py
    import ssv2 as ref_ssv2
    return video_dir, ref_datasets, ref_ssv2


def _reference_args(csv_dir):
    """The args the reference's build_dataset and SSVideoClsDataset read, with the values
    of scripts/ssv2_vits_llama.sh over run_class_finetuning.py's defaults."""
    return argparse.Namespace(
        data_set="SSV2",             # ssv2_vits_llama.sh
        data_path=csv_dir,           # build_dataset reads <data_path>/train.csv, test.csv
        num_frames=16,               # ssv2_vits_llama.sh (-> num_segment 16)
        input_size=224,              # ssv2_vits_llama.sh
        short_side_size=224,         # ssv2_vits_llama.sh
        num_sample=2,                # ssv2_vits_llama.sh
        test_num_segment=2,          # ssv2_vits_llama.sh
        test_num_crop=3,             # ssv2_vits_llama.sh
        aa="rand-m7-n4-mstd0.5-inc1",  # run_class_finetuning.py default
        train_interpolation="bicubic",  # run_class_finetuning.py default
        reprob=0.25,                 # run_class_finetuning.py default
        remode="pixel",              # run_class_finetuning.py default
        recount=1,                   # run_class_finetuning.py default
        nb_classes=174,
    )


class _Timed:
    """Wraps a bound method on the instance, recording each call's wall time (ms)."""

    def __init__(self, fn):
        self.fn = fn
        self.ms = []

    def __call__(self, *a, **kw):
        t0 = time.perf_counter()
        out = self.fn(*a, **kw)
        self.ms.append((time.perf_counter() - t0) * 1e3)
        return out


def _median(xs):
    return round(statistics.median(xs), 3) if xs else None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("clips", nargs="+", help="video files (e.g. SSv2 .webm)")
    ap.add_argument("--iters", type=int, default=10, help="timed iterations per clip")
    ap.add_argument("--warmup", type=int, default=1, help="untimed iterations per clip")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-test", action="store_true", help="time the train path only")
    ap.add_argument("--out", help="also write the JSON here")
    opts = ap.parse_args()

    clips = [os.path.abspath(c) for c in opts.clips]
    for c in clips:
        if not os.path.isfile(c):
            sys.exit(f"no such clip: {c}")
        if " " in c:
            sys.exit(f"clip path has a space (the reference's CSV is space-delimited): {c}")

    video_dir, ref_datasets, ref_ssv2 = _import_reference()

    import random

    import cv2
    import decord
    import numpy as np
    import PIL
    import torch
    import torchvision

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    random.seed(opts.seed)
    np.random.seed(opts.seed)
    torch.manual_seed(opts.seed)

    load_before = os.getloadavg()
    t_start = time.time()
    with tempfile.TemporaryDirectory(prefix="lm4ve_ref_csv_") as csv_dir:
        # "<path> <label>" per line, as SSVideoClsDataset.__init__ reads it; absolute
        # paths, so build_dataset's hard-coded data_path drops out of os.path.join.
        for name in ("train.csv", "test.csv"):
            with open(os.path.join(csv_dir, name), "w") as f:
                for c in clips:
                    f.write(f"{c} 0\n")
        args = _reference_args(csv_dir)
        # build_dataset prints "Number of the class"; keep stdout for the JSON alone.
        with contextlib.redirect_stdout(sys.stderr):
            train_ds, nb_classes = ref_datasets.build_dataset(
                is_train=True, test_mode=False, args=args)
            test_ds = None
            if not opts.skip_test:
                test_ds, _ = ref_datasets.build_dataset(is_train=False, test_mode=True, args=args)
    assert isinstance(train_ds, ref_ssv2.SSVideoClsDataset) and nb_classes == 174

    load = _Timed(train_ds.loadvideo_decord)
    aug = _Timed(train_ds._aug_frame)
    train_ds.loadvideo_decord = load
    train_ds._aug_frame = aug

    n = len(clips)
    views = args.test_num_segment * args.test_num_crop
    results = []
    all_train, all_load, all_aug, all_test = [], [], [], []
    train_shape = test_shape = None
    for i, path in enumerate(clips):
        vr = decord.VideoReader(path, num_threads=1, ctx=decord.cpu(0))
        h, w = vr[0].shape[:2]
        meta = {"frames": len(vr), "fps": round(vr.get_avg_fps(), 3), "width": w, "height": h}
        del vr

        train_ms, clip_load, clip_aug = [], [], []
        for it in range(opts.warmup + opts.iters):
            load.ms.clear()
            aug.ms.clear()
            t0 = time.perf_counter()
            frames, labels, idxs, _ = train_ds[i]
            dt = (time.perf_counter() - t0) * 1e3
            assert len(frames) == args.num_sample
            train_shape = list(frames[0].shape)
            if it >= opts.warmup:
                train_ms.append(dt)
                clip_load.extend(load.ms)
                clip_aug.extend(aug.ms)
        all_train.extend(train_ms)
        all_load.extend(clip_load)
        all_aug.extend(clip_aug)
        rec = {
            "path": path,
            **meta,
            "train_ms_per_clip_median": _median(train_ms),
            "train_ms_per_clip_min": round(min(train_ms), 3),
            "train_load_ms_median": _median(clip_load),
            "train_aug_ms_per_sample_median": _median(clip_aug),
            "train_ms": [round(x, 3) for x in train_ms],
        }

        if test_ds is not None:
            # The 6 views of clip i: test_dataset is laid out (segment, crop, clip).
            view_idx = [v * n + i for v in range(views)]
            test_ms = []
            for it in range(opts.warmup + opts.iters):
                t0 = time.perf_counter()
                for j in view_idx:
                    out = test_ds[j]
                dt = (time.perf_counter() - t0) * 1e3
                test_shape = list(out[0].shape)
                if it >= opts.warmup:
                    test_ms.append(dt)
            all_test.extend(test_ms)
            rec["test_ms_per_clip_6_views_median"] = _median(test_ms)
            rec["test_ms_per_clip_6_views_min"] = round(min(test_ms), 3)
            rec["test_ms"] = [round(x, 3) for x in test_ms]
        results.append(rec)

    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = None
    report = {
        "impl": "reference-python",
        "decoder": "decord",
        "train_ms_per_clip_median": _median(all_train),
        "train_ms_per_sample_median": (round(statistics.median(all_train) / args.num_sample, 3)
                                       if all_train else None),
        "train_load_ms_median": _median(all_load),
        "train_aug_ms_per_sample_median": _median(all_aug),
        "test_ms_per_clip_6_views_median": _median(all_test) if all_test else None,
        "medians_over": "all timed iterations of all clips, pooled",
        "iters_per_clip": opts.iters,
        "warmup_per_clip": opts.warmup,
        "seed": opts.seed,
        "threads": {"torch": torch.get_num_threads(), "cv2": cv2.getNumThreads(),
                    "decord": 1},
        "output_shapes": {"train_sample": train_shape, "test_view": test_shape},
        "config": {k: v for k, v in vars(args).items() if k != "data_path"},
        "clips": results,
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "decord": decord.__version__,
            "PIL": PIL.__version__,
            "numpy": np.__version__,
            "cv2": cv2.__version__,
            "pandas": __import__("pandas").__version__,
        },
        "stubs": STUBS,
        "reference": video_dir,
        "machine": {
            "cpus": os.cpu_count(),
            "cpus_usable": affinity,
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
            "wall_s": round(time.time() - t_start, 1),
        },
    }
    text = json.dumps(report, indent=1)
    print(text)
    if opts.out:
        with open(opts.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
