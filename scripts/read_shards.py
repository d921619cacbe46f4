#!/usr/bin/env python3
"""Reads an lm4ve artifact (manifest + shards, SHARDS.md) with numpy + zstandard only.

    import read_shards
    for sample in read_shards.samples("cache/artifacts/<key>/manifest.json", split="train"):
        sample["centers"]  # numpy array

    python3 scripts/read_shards.py MANIFEST   # prints {"samples": N, "fields": {...}}
"""
import json
import os
import struct
import sys

import numpy as np
import zstandard


def read_shard(path):
    """Yields each sample of one shard file as a dict of numpy arrays."""
    with open(path, "rb") as f:
        if f.read(8) != b"LM4VSHRD":
            raise ValueError(f"{path}: not an lm4ve shard")
        version, header_len = struct.unpack("<II", f.read(8))
        if version != 1:
            raise ValueError(f"{path}: shard version {version}, this reader knows 1")
        header = json.loads(f.read(header_len))
        n = header["samples"]
        offsets = np.frombuffer(f.read(8 * (n + 1)), dtype="<u8")
        data_start = 16 + header_len + 8 * (n + 1)
        fields = [(fl["name"], np.dtype(fl["dtype"]).newbyteorder("<"), tuple(fl["shape"]))
                  for fl in header["fields"]]
        dctx = zstandard.ZstdDecompressor()
        for i in range(n):
            f.seek(data_start + int(offsets[i]))
            raw = dctx.decompress(f.read(int(offsets[i + 1] - offsets[i])))
            sample, at = {}, 0
            for name, dtype, shape in fields:
                count = int(np.prod(shape, dtype=np.int64))
                sample[name] = np.frombuffer(raw, dtype, count, at).reshape(shape)
                at += count * dtype.itemsize
            yield sample


def samples(manifest_path, split=None):
    """Yields every sample of the artifact (optionally of one split), in manifest order."""
    with open(manifest_path) as f:
        manifest = json.load(f)
    base = os.path.dirname(os.path.abspath(manifest_path))
    for shard in manifest["shards"]:
        if split is None or shard["split"] == split:
            yield from read_shard(os.path.join(base, shard["path"]))


def main(argv):
    if len(argv) != 2:
        sys.exit("usage: read_shards.py MANIFEST")
    n, fields = 0, {}
    for s in samples(argv[1]):
        n += 1
        fields = {k: {"dtype": str(v.dtype), "shape": list(v.shape)} for k, v in s.items()}
    print(json.dumps({"samples": n, "fields": fields}))


if __name__ == "__main__":
    main(sys.argv)
