#!/usr/bin/env python3
"""The Python side of benches/image_loader.sh: DeiT's training loader as the reference runs it,
on one core, over an ImageNet-layout folder; prints one JSON line.

    python3 image_loader_timm.py timm DIR [--passes 2] [--crop 224]
    python3 image_loader_timm.py fast DIR [--passes 2] [--crop 224]

- `timm`: the reference's loader (LM4VisualEncoding image_classification/datasets.py →
  DeiT's build_transform): torchvision `ImageFolder` (PIL open + convert RGB) with timm's
  `create_transform(224, is_training=True, auto_augment='rand-m9-mstd0.5-inc1',
  re_prob=0.25, re_mode='pixel', re_count=1, interpolation='bicubic')`, through a
  `DataLoader(num_workers=1, batch_size=64)`, `torch.set_num_threads(1)`.
- `fast`: the fastest loader that can be installed here for the same recipe: simplejpeg
  (libjpeg-turbo) decode, OpenCV's bicubic resize of timm's RandomResizedCrop box and flip on
  numpy, then timm's own RandAugment (there is no faster one of the same ops; it needs PIL
  images), numpy normalization and timm's RandomErasing; same DataLoader settings.

CPU seconds are the process's and its worker's (resource.getrusage), so a loaded machine
changes the wall time but hardly the CPU time.
"""

import argparse
import json
import math
import random
import resource
import time

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset


def pillow_posterize_zero_bits():
    """timm's PosterizeIncreasing reaches 0 bits at magnitude 10 (m9 + mstd 0.5 gets there);
    Pillow >= 13 refuses 0 where older Pillow (the reference's) returned a black image. Give
    Pillow its old answer so the reference's recipe runs unchanged."""
    from PIL import Image, ImageOps

    orig = ImageOps.posterize

    def posterize(img, bits):
        return Image.new(img.mode, img.size) if bits <= 0 else orig(img, bits)

    ImageOps.posterize = posterize


def cpu_s():
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def timm_dataset(root, crop):
    from timm.data import create_transform
    from torchvision.datasets import ImageFolder

    t = create_transform(
        crop,
        is_training=True,
        auto_augment="rand-m9-mstd0.5-inc1",
        re_prob=0.25,
        re_mode="pixel",
        re_count=1,
        interpolation="bicubic",
    )
    return ImageFolder(root, transform=t)


class FastSet(Dataset):
    """simplejpeg + OpenCV for decode, crop, resize and flip; timm for RandAugment and erasing."""

    def __init__(self, root, crop):
        import cv2
        from PIL import Image
        from timm.data.auto_augment import rand_augment_transform
        from timm.data.random_erasing import RandomErasing
        from torchvision.datasets import ImageFolder

        cv2.setNumThreads(1)
        self.cv2, self.Image = cv2, Image
        self.samples = ImageFolder(root).samples
        self.crop = crop
        mean = (0.485, 0.456, 0.406)
        self.ra = rand_augment_transform(
            "rand-m9-mstd0.5-inc1",
            dict(translate_const=int(crop * 0.45), img_mean=tuple(round(255 * m) for m in mean),
                 interpolation=Image.BICUBIC),
        )
        self.erase = RandomErasing(0.25, mode="pixel", max_count=1, device="cpu")
        self.mean = np.array(mean, np.float32) * 255
        self.std = np.array((0.229, 0.224, 0.225), np.float32) * 255

    def __len__(self):
        return len(self.samples)

    def box(self, h, w):
        # timm's RandomResizedCropAndInterpolation.get_params.
        area = h * w
        for _ in range(10):
            a = random.uniform(0.08, 1.0) * area
            r = math.exp(random.uniform(math.log(3 / 4), math.log(4 / 3)))
            cw, ch = int(round(math.sqrt(a * r))), int(round(math.sqrt(a / r)))
            if cw <= w and ch <= h:
                return random.randint(0, h - ch), random.randint(0, w - cw), ch, cw
        s = min(h, w)
        return (h - s) // 2, (w - s) // 2, s, s

    def __getitem__(self, i):
        import simplejpeg

        path, label = self.samples[i]
        with open(path, "rb") as f:
            img = simplejpeg.decode_jpeg(f.read(), colorspace="RGB")
        y, x, h, w = self.box(*img.shape[:2])
        img = self.cv2.resize(img[y : y + h, x : x + w], (self.crop, self.crop),
                              interpolation=self.cv2.INTER_CUBIC)
        if random.random() < 0.5:
            img = img[:, ::-1]
        img = np.asarray(self.ra(self.Image.fromarray(np.ascontiguousarray(img))), np.float32)
        t = torch.from_numpy(((img - self.mean) / self.std).transpose(2, 0, 1).copy())
        return self.erase(t), label


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("variant", choices=["timm", "fast"])
    ap.add_argument("dir")
    ap.add_argument("--passes", type=int, default=2)
    ap.add_argument("--crop", type=int, default=224)
    ap.add_argument("--workers", type=int, default=1, help="DataLoader workers (0: in-process)")
    a = ap.parse_args()
    torch.set_num_threads(1)
    pillow_posterize_zero_bits()
    random.seed(0)
    torch.manual_seed(0)
    ds = timm_dataset(a.dir, a.crop) if a.variant == "timm" else FastSet(a.dir, a.crop)

    def epoch():
        dl = DataLoader(ds, batch_size=64, num_workers=a.workers, shuffle=False)
        for x, _ in dl:
            assert x.shape[1:] == (3, a.crop, a.crop)

    epoch()  # warm-up: page cache, imports in the worker
    t0, c0 = time.perf_counter(), cpu_s()
    for _ in range(a.passes):
        epoch()
    wall, cpu = time.perf_counter() - t0, cpu_s() - c0
    n = len(ds) * a.passes
    print(json.dumps({
        "impl": a.variant,
        "images": len(ds),
        "passes": a.passes,
        "crop": a.crop,
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "images_per_s_wall": round(n / wall, 3),
        "images_per_cpu_s": round(n / cpu, 3),
    }))


if __name__ == "__main__":
    main()
