#!/usr/bin/env python3
"""PyTorch counterpart of `lm4ve bench-train` and `lm4ve llm bench-step` on a GPU: one
training step of the paper's models, built from the reference code's own model definitions
(ziqipang/LM4VisualEncoding: `pointcloud_classification/models/Point_BERT.py` with its
`llama.py`, `video_understanding/modeling_finetune_llama.py`), at the sizes lm4ve uses.

The reference is imported from a checkout the user points at (--ref or LM4VE_REF); nothing of
it is copied into lm4ve. Its CUDA-extension imports (knn_cuda, pointnet2_ops, the chamfer/EMD
losses) are stubbed: they serve only the point grouping and the pre-training losses, which
the timed step does not run (lm4ve's step starts from grouped tokens too, so the grouper is
replaced by one that passes the grouped tokens through).

A step = forward (train mode: dropout, drop path), cross-entropy, backward, gradient-norm
clipping where the reference clips (PointBERT: 10), AdamW (wd 0.05 on matrices). Inputs are
random and already on the GPU. The LLaMA block is frozen (requires_grad False), as in the
reference.

--precision:
  matched    encoder in f32, the LLaMA block under bf16 autocast: what lm4ve runs today.
  reference  what the reference trains with: PointBERT all f32; video under fp16 autocast
             with a GradScaler (VideoMAE's engine).
--attn eager (the reference's q@kᵀ/softmax/@v) or sdpa (F.scaled_dot_product_attention
patched into the reference's attention modules; same math, flash/mem-efficient kernels).

Prints one JSON line (impl "pytorch"): median ms/step, samples/s, peak allocated and reserved
memory (torch.cuda.max_memory_allocated / max_memory_reserved, weights included).
"""

import argparse
import json
import math
import os
import sys
import time
import types

import torch
import torch.nn as nn
import torch.nn.functional as F


def stub(name, **attrs):
    m = types.ModuleType(name)
    for k, v in attrs.items():
        setattr(m, k, v)
    sys.modules[name] = m
    return m


def no_ext(*_a, **_k):
    raise RuntimeError("stubbed CUDA extension: not used by the timed step")


class NoExtModule:
    """A stubbed extension class: constructing it works (the reference builds its KNN in
    __init__), calling it does not."""

    def __init__(self, *_a, **_k):
        pass

    def __call__(self, *_a, **_k):
        no_ext()


def import_pointbert(ref):
    root = os.path.join(ref, "pointcloud_classification")
    stub("knn_cuda", KNN=NoExtModule)
    p2 = stub("pointnet2_ops")
    p2.pointnet2_utils = stub("pointnet2_ops.pointnet2_utils", furthest_point_sample=no_ext,
                              gather_operation=no_ext)
    stub("extensions")
    stub("extensions.chamfer_dist", ChamferDistanceL1=NoExtModule, ChamferDistanceL2=NoExtModule)
    stub("extensions.emd", emd=no_ext)
    for name, attrs in (("termcolor", {"colored": lambda s, *a, **k: s}),
                        ("easydict", {"EasyDict": dict})):
        try:
            __import__(name)
        except ImportError:
            stub(name, **attrs)
    sys.path.insert(0, root)
    from models.Point_BERT import PointTransformer  # noqa: E402
    return PointTransformer


def import_video(ref):
    sys.path.insert(0, os.path.join(ref, "video_understanding"))
    import modeling_finetune_llama as m  # noqa: E402
    return m


class Cfg(dict):
    """Attribute access like the reference's EasyDict; a missing key is an AttributeError, so
    the reference's `hasattr(config, ...)` checks work."""

    def __getattr__(self, k):
        try:
            return self[k]
        except KeyError as e:
            raise AttributeError(k) from e


class PassGrouped(nn.Module):
    """Stands in for the reference's Group (FPS + kNN): the input already is (groups, centers)."""

    def forward(self, pts):
        return pts


def sdpa_patch(module_cls, kind):
    """Replace a reference attention module's forward with the same math through SDPA."""
    if kind == "vit":
        def forward(self, x):
            b, n, c = x.shape
            if getattr(self, "q_bias", None) is not None:  # VideoMAE: q and v biases only
                qkv_bias = torch.cat((self.q_bias, torch.zeros_like(self.v_bias, requires_grad=False),
                                      self.v_bias))
                qkv = F.linear(x, self.qkv.weight, qkv_bias)
            else:
                qkv = self.qkv(x)
            qkv = qkv.reshape(b, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
            q, k, v = qkv[0], qkv[1], qkv[2]
            o = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
            return self.proj_drop(self.proj(o.transpose(1, 2).reshape(b, n, -1)))
    else:  # the reference LLaMA attention (no RoPE, no mask)
        def forward(self, x):
            b, n, _ = x.shape
            q = self.wq(x).view(b, n, self.n_local_heads, self.head_dim).transpose(1, 2)
            k = self.wk(x).view(b, n, self.n_local_heads, self.head_dim).transpose(1, 2)
            v = self.wv(x).view(b, n, self.n_local_heads, self.head_dim).transpose(1, 2)
            o = F.scaled_dot_product_attention(q, k, v)
            return self.wo(o.transpose(1, 2).reshape(b, n, -1))
    module_cls.forward = forward


def block_autocast(llama, dtype):
    """Run only the LLaMA block (and its final norm) under autocast: lm4ve's split."""
    inner = llama.forward

    def forward(h):
        with torch.autocast("cuda", dtype=dtype):
            return inner(h)
    llama.forward = forward


def llama_cfg(first_layer, n_layers):
    return {"dim": 4096, "multiple_of": 256, "n_heads": 32, "n_layers": n_layers,
            "norm_eps": 1e-6, "vocab_size": -1, "first_layer": first_layer}


def adamw(model, lr=1e-4, wd=0.05):
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return torch.optim.AdamW([{"params": decay, "weight_decay": wd},
                              {"params": no_decay, "weight_decay": 0.0}], lr=lr)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, choices=["pointbert", "vit-s", "vit-b", "block"])
    ap.add_argument("--batch", type=int)
    ap.add_argument("--tokens", type=int, default=65, help="block only: tokens per sample")
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--precision", choices=["matched", "reference"], default="matched")
    ap.add_argument("--attn", choices=["eager", "sdpa"], default="eager")
    ap.add_argument("--ref", default=os.environ.get("LM4VE_REF"),
                    help="LM4VisualEncoding checkout (or env LM4VE_REF)")
    a = ap.parse_args()
    if not a.ref or not os.path.isdir(a.ref):
        ap.error("--ref (or LM4VE_REF) must name a checkout of ziqipang/LM4VisualEncoding")
    dev = torch.device("cuda")
    torch.manual_seed(0)
    clip = 0.0
    scaler = None
    amp = None  # autocast dtype for the whole step (reference video precision)

    if a.model == "pointbert":
        PointTransformer = import_pointbert(a.ref)
        import models.llama as ref_llama
        if a.attn == "sdpa":
            import models.Point_BERT as pb
            sdpa_patch(pb.Attention, "vit")
            sdpa_patch(ref_llama.Attention, "llama")
        b = a.batch or 32
        cfg = Cfg(trans_dim=384, depth=12, drop_path_rate=0.1, cls_dim=15, num_heads=6,
                  group_size=32, num_group=64, encoder_dims=256, use_llama=True,
                  llama_cfg=llama_cfg(31, 32))
        model = PointTransformer(cfg).to(dev)
        model.group_divider = PassGrouped()
        x = (torch.randn(b, 64, 32, 3, device=dev) * 0.1, torch.randn(b, 64, 3, device=dev))
        y = torch.arange(b, device=dev) * 7 % 15
        clip = 10.0
        sizes = {"groups": 64, "group_size": 32, "trans_dim": 384, "depth": 12, "heads": 6}
        if a.precision == "matched":
            block_autocast(model.llama, torch.bfloat16)
    elif a.model in ("vit-s", "vit-b"):
        m = import_video(a.ref)
        if a.attn == "sdpa":
            sdpa_patch(m.Attention, "vit")
            sdpa_patch(sys.modules["llama"].Attention, "llama")
        make = m.vit_llama_small_patch16_224 if a.model == "vit-s" else m.vit_llama_base_patch16_224
        model = make(num_classes=174, all_frames=16, tubelet_size=2, drop_path_rate=0.1,
                     use_mean_pooling=True, init_scale=0.001).to(dev)
        b = a.batch or 8
        x = torch.randn(b, 3, 16, 224, 224, device=dev)
        y = torch.arange(b, device=dev) * 7 % 174
        sizes = {"tokens": 1568, "embed_dim": model.embed_dim, "depth": len(model.blocks)}
        if a.precision == "matched":
            block_autocast(model.llama, torch.bfloat16)
        else:
            amp = torch.float16
            scaler = torch.amp.GradScaler("cuda")
    else:  # the frozen block alone: the reference's LLaMA layer 31 + its final RMSNorm
        sys.path.insert(0, os.path.join(a.ref, "video_understanding"))
        import llama as ref_llama
        if a.attn == "sdpa":
            sdpa_patch(ref_llama.Attention, "llama")
        model = ref_llama.LLaMATransformer(llama_cfg(31, 32)).to(dev)
        model.requires_grad_(False)
        b = a.batch or 32
        xin = torch.randn(b, a.tokens, 4096, device=dev, requires_grad=True)
        r = torch.randn(b, a.tokens, 4096, device=dev)
        sizes = {"tokens": a.tokens, "hidden": 4096, "heads": 32, "ffn": 11008}

        def step():
            xin.grad = None
            with torch.autocast("cuda", dtype=torch.bfloat16):
                out = model(xin)
            loss = (out.float() * r).sum()
            loss.backward()
            return loss
        opt = None

    if a.model != "block":
        for p in model.llama.parameters():
            p.requires_grad = False
        model.train()
        opt = adamw(model)

        def step():
            opt.zero_grad(set_to_none=True)
            with torch.autocast("cuda", dtype=amp or torch.float32, enabled=amp is not None):
                out = model(x)
                loss = F.cross_entropy(out.float(), y)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.unscale_(opt)
            else:
                loss.backward()
            if clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            if scaler is not None:
                scaler.step(opt)
                scaler.update()
            else:
                opt.step()
            return loss

    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(a.warmup + a.iters):
        t0 = time.perf_counter()
        loss = step()
        lv = float(loss)  # waits for the GPU, like lm4ve's read of the loss
        if not math.isfinite(lv):
            raise SystemExit(f"loss became {lv}")
        if i >= a.warmup:
            times.append((time.perf_counter() - t0) * 1e3)
    med = sorted(times)[len(times) // 2]
    n_all = sum(p.numel() for p in model.parameters())
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(json.dumps({
        "impl": "pytorch", "model": a.model, "precision": a.precision, "attn": a.attn,
        "batch": b, "sizes": sizes, "params": {"all": n_all, "trainable": n_train},
        "ms_per_step_median": med, "samples_per_s": b * 1e3 / med, "ms_per_step": times,
        "peak_mem_mib": torch.cuda.max_memory_allocated() / 2**20,
        "peak_reserved_mib": torch.cuda.max_memory_reserved() / 2**20,
        "torch": torch.__version__, "gpu": torch.cuda.get_device_name(),
        "cuda": torch.version.cuda,
    }))


if __name__ == "__main__":
    main()
