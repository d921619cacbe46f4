#!/usr/bin/env python3
"""image.tokens benchmark helper (benches/image_tokens.sh).

gen DIR N   writes an ImageFolder tree DIR/val/<class>/*.JPEG of N JPEGs (Pillow, quality 90):
            80% at 500x375 (ImageNet's typical size), 20% at 800x600 (re-encoded at max_side 512)
pil DIR S   times the reference's eval path on every file, one process:
            PIL.Image.open(f).convert('RGB') → torchvision Resize(int(256/224*S), bicubic)
            → CenterCrop(S) → numpy array (torchvision's arithmetic reproduced with Pillow's
            resize, as in scripts/fixtures/make_image_fixtures.py); prints images/s
"""
import os
import sys
import time

import numpy as np
from PIL import Image


def scene(w, h, seed):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    a = np.stack([128 + 90 * np.sin(x / (9.0 + seed % 7) + seed), 128 + 90 * np.cos(y / 13.0),
                  (x * 0.7 + y * 0.4 + seed) % 256], -1)
    a += rng.normal(0, 6, (h, w, 3))
    k = seed % 5
    a[h // 4: h // 2, w // 3: w // 3 + w // 5] = [40 * k, 255 - 40 * k, 120]
    return np.clip(a, 0, 255).astype(np.uint8)


def gen(d, n):
    for i in range(n):
        c = f"n{i % 10:08d}"
        os.makedirs(os.path.join(d, "val", c), exist_ok=True)
        w, h = (800, 600) if i % 5 == 4 else (500, 375)
        Image.fromarray(scene(w, h, i)).save(os.path.join(d, "val", c, f"img_{i:06d}.JPEG"), quality=90)


def pil(d, s):
    files = sorted(os.path.join(r, f) for r, _, fs in os.walk(d) for f in fs)
    size = int((256 / 224) * s)
    t0 = time.perf_counter()
    for f in files:
        img = Image.open(f).convert("RGB")
        w, h = img.size
        short, long = (w, h) if w <= h else (h, w)
        nl = int(size * long / short)
        nw, nh = (size, nl) if w <= h else (nl, size)
        if (nw, nh) != (w, h):
            img = img.resize((nw, nh), Image.BICUBIC)
        top, left = int(round((nh - s) / 2.0)), int(round((nw - s) / 2.0))
        np.asarray(img.crop((left, top, left + s, top + s)))
    dt = time.perf_counter() - t0
    print(f"{len(files) / dt:.1f}")


if __name__ == "__main__":
    {"gen": lambda: gen(sys.argv[2], int(sys.argv[3])), "pil": lambda: pil(sys.argv[2], int(sys.argv[3]))}[sys.argv[1]]()
