#!/usr/bin/env python3
"""Writes N tiny ScanObjectNN raw objects (.bin: float32 count, then 11 float32 per point)
under ROOT/<category>/ plus ROOT/split_new.txt — the tree for the no-op benchmark."""
import os
import struct
import sys

CATEGORIES = ["bag", "bin", "box", "cabinet", "chair", "desk", "display", "door",
              "shelf", "table", "bed", "pillow", "sink", "sofa", "toilet"]


def main(root, n, points=64):
    lines = []
    for c in CATEGORIES:
        os.makedirs(os.path.join(root, c), exist_ok=True)
    for i in range(n):
        cat = CATEGORIES[i % len(CATEGORIES)]
        name = f"{i // 1000:03d}_{i:07d}.bin"
        vals = []
        for p in range(points):
            # distinct, deterministic points on a small grid
            vals += [float((p * 7 + i) % 13), float((p * 5) % 11), float(p % 9)] + [0.0] * 8
        with open(os.path.join(root, cat, name), "wb") as f:
            f.write(struct.pack("<f", float(points)))
            f.write(struct.pack(f"<{len(vals)}f", *vals))
        lines.append(f"{name}\t{cat}\t{'t' if i % 5 == 0 else ''}\n")
    with open(os.path.join(root, "split_new.txt"), "w") as f:
        f.writelines(lines)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
