#!/usr/bin/env python3
"""Reads an lm4ve artifact (manifest + shards, SHARDS.md) with numpy + zstandard only.

    import read_shards
    for sample in read_shards.samples("cache/artifacts/<key>/manifest.json", split="train"):
        sample["centers"]  # numpy array

    python3 scripts/read_shards.py MANIFEST            # prints {"samples": N, "fields": {...}}
    python3 scripts/read_shards.py --verify MANIFEST   # also checks every object's blake3
                                                       # (needs the `blake3` package)

A manifest or shard may come from a shared cache, so it is checked like the Rust reader
checks it (pipeline/src/trust.rs, pipeline/src/shard.rs): object paths must be the standard
`../../objects/ab/<hash>` inside the cache, sizes must agree with the file, the offset
index must fit in the file, and no sample decompresses to more than its schema says.
Anything else raises ValueError naming the file.
"""
import json
import os
import re
import struct
import sys

import numpy as np
import zstandard

HASH = re.compile(r"[0-9a-f]{64}")
MAX_SAMPLE_BYTES = 1 << 30  # as pipeline/src/shard.rs
MAX_RECORD_BYTES = 64 << 20  # as pipeline/src/trust.rs
DTYPES = {"uint8", "int32", "int64", "float16", "float32"}


def _fields(path, header):
    fields, total = [], 0
    for fl in header["fields"]:
        if fl["dtype"] not in DTYPES or not all(isinstance(d, int) and d >= 0 for d in fl["shape"]):
            raise ValueError(f"{path}: bad field {fl!r}")
        dtype = np.dtype(fl["dtype"]).newbyteorder("<")
        count = 1
        for d in fl["shape"]:
            count *= d  # Python ints do not overflow; the cap below bounds them
        total += count * dtype.itemsize
        if total > MAX_SAMPLE_BYTES:
            raise ValueError(f"{path}: a sample would be over {MAX_SAMPLE_BYTES} bytes")
        fields.append((fl["name"], dtype, tuple(fl["shape"]), count))
    return fields, total


def read_shard(path, samples=None):
    """Yields each sample of one shard file as a dict of numpy arrays. `samples`: the
    count the manifest announces (checked when given)."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        if f.read(8) != b"LM4VSHRD":
            raise ValueError(f"{path}: not an lm4ve shard")
        pre = f.read(8)
        if len(pre) != 8:
            raise ValueError(f"{path}: shorter than the 16-byte preamble")
        version, header_len = struct.unpack("<II", pre)
        if version != 1:
            raise ValueError(f"{path}: shard version {version}, this reader knows 1")
        if 16 + header_len > size:
            raise ValueError(f"{path}: header runs past the end of the file")
        header = json.loads(f.read(header_len))
        if header.get("format") != "lm4ve-shard":
            raise ValueError(f"{path}: header format is not lm4ve-shard")
        n = header["samples"]
        if not isinstance(n, int) or n < 0 or 16 + header_len + 8 * (n + 1) > size:
            raise ValueError(f"{path}: offset index runs past the end of the file")
        if samples is not None and n != samples:
            raise ValueError(f"{path}: {n} samples, the manifest says {samples}")
        offsets = np.frombuffer(f.read(8 * (n + 1)), dtype="<u8")
        data_start = 16 + header_len + 8 * (n + 1)
        if offsets[0] != 0 or np.any(offsets[1:] < offsets[:-1]) or data_start + int(offsets[-1]) != size:
            raise ValueError(f"{path}: offset index does not match the file size")
        fields, total = _fields(path, header)
        dctx = zstandard.ZstdDecompressor()
        for i in range(n):
            f.seek(data_start + int(offsets[i]))
            frame = f.read(int(offsets[i + 1] - offsets[i]))
            # Refuse a frame that announces more than the schema before allocating for it;
            # max_output_size caps a frame that announces nothing.
            if zstandard.frame_content_size(frame) not in (-1, total):
                raise ValueError(f"{path}: sample {i}: frame size is not the schema's {total}")
            raw = dctx.decompress(frame, max_output_size=total)
            if len(raw) != total:
                raise ValueError(f"{path}: sample {i}: {len(raw)} bytes, schema says {total}")
            sample, at = {}, 0
            for name, dtype, shape, count in fields:
                sample[name] = np.frombuffer(raw, dtype, count, at).reshape(shape)
                at += count * dtype.itemsize
            yield sample


def load_manifest(manifest_path):
    """The manifest, with every object path checked to be the standard one inside the
    cache (so `path` cannot point anywhere else on the machine)."""
    if os.path.getsize(manifest_path) > MAX_RECORD_BYTES:
        raise ValueError(f"{manifest_path}: too large for a manifest")
    with open(manifest_path) as f:
        manifest = json.load(f)
    for entry in manifest["shards"] + manifest.get("files", []):
        h = entry["blake3"]
        if not HASH.fullmatch(h) or entry["path"] != f"../../objects/{h[:2]}/{h}":
            raise ValueError(f"{manifest_path}: bad object reference {entry['path']!r}")
    return manifest


def _object(manifest_path, entry):
    base = os.path.dirname(os.path.abspath(manifest_path))
    path = os.path.normpath(os.path.join(base, entry["path"]))
    if os.path.islink(path) or os.path.getsize(path) != entry["bytes"]:
        raise ValueError(f"{path}: a link, or not the {entry['bytes']} bytes the manifest says")
    return path


def samples(manifest_path, split=None):
    """Yields every sample of the artifact (optionally of one split), in manifest order."""
    manifest = load_manifest(manifest_path)
    for shard in manifest["shards"]:
        if split is None or shard["split"] == split:
            yield from read_shard(_object(manifest_path, shard), shard["samples"])


def jpeg_frames(sample):
    """The JPEG files of an `ssv2.tokens` sample in the `frames` layout (SHARDS.md), as a
    list of bytes objects, frame order; decode each with e.g. PIL.Image.open(io.BytesIO(b))."""
    jpeg, ends, n = sample["jpeg"], sample["jpeg_ends"], int(sample["frames"][0])
    if not 0 < n <= len(ends):
        raise ValueError(f"a sample with {n} stored frames")
    out, start = [], 0
    for k in range(n):
        end = int(ends[k])
        if not start < end <= len(jpeg):
            raise ValueError(f"frame {k}: JPEG end offset {end} out of order or range")
        out.append(jpeg[start:end].tobytes())
        start = end
    return out


def verify(manifest_path):
    """Checks that every object of the artifact hashes to its name (blake3). Returns the
    number of objects checked; raises ValueError on the first bad one."""
    import blake3  # PyPI `blake3`; only this check needs it

    manifest = load_manifest(manifest_path)
    entries = manifest["shards"] + manifest.get("files", [])
    for entry in entries:
        path = _object(manifest_path, entry)
        h = blake3.blake3()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        if h.hexdigest() != entry["blake3"]:
            raise ValueError(f"{path}: its bytes do not hash to its name")
    return len(entries)


def main(argv):
    args = argv[1:]
    check = "--verify" in args
    args = [a for a in args if a != "--verify"]
    if len(args) != 1:
        sys.exit("usage: read_shards.py [--verify] MANIFEST")
    try:
        checked = verify(args[0]) if check else None
        n, fields = 0, {}
        for s in samples(args[0]):
            n += 1
            fields = {k: {"dtype": str(v.dtype), "shape": list(v.shape)} for k, v in s.items()}
    except (ValueError, KeyError, OSError, zstandard.ZstdError) as e:
        sys.exit(f"read_shards.py: {e}")
    out = {"samples": n, "fields": fields}
    if checked is not None:
        out["verified_objects"] = checked
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv)
