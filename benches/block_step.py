#!/usr/bin/env python3
"""PyTorch reference for `lm4ve llm bench-step`: one training step through a randomly
initialised LLaMA decoder block used as in "Frozen Transformers in Language Models Are
Effective Visual Encoder Layers":

    h = x + Wo . Attn(RMSNorm(x))        q,k,v,o bias-free, no RoPE, no mask,
                                         softmax in f32, scale 1/sqrt(head_dim)
    y = h + W2 . (SiLU(W1 . n) * W3 . n), n = RMSNorm(h)   (eps 1e-5, learned weights)
    out = RMSNorm(y)                     all-ones weight, eps 1e-6

loss = sum(out * r) for a fixed random r. x requires grad; in --mode frozen (default) the
block does not (requires_grad_(False)), so backward computes the gradient to the input only.
--mode naive makes the block weights trainable too (weight gradients computed), like
`lm4ve ... bench-step --mode naive`.

Prints one JSON line with the keys of the Rust command (impl "pytorch").
"""

import argparse
import json
import math
import os
import time

import torch
from torch import nn
import torch.nn.functional as F


class RMSNorm(nn.Module):
    def __init__(self, d, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x):
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(x.dtype)


class Block(nn.Module):
    def __init__(self, hidden, heads, kv_heads, ffn, eps=1e-5, final_eps=1e-6, sdpa=False):
        super().__init__()
        self.heads, self.kv_heads, self.hd = heads, kv_heads, hidden // heads
        self.sdpa = sdpa
        self.input_layernorm = RMSNorm(hidden, eps)
        self.q_proj = nn.Linear(hidden, heads * self.hd, bias=False)
        self.k_proj = nn.Linear(hidden, kv_heads * self.hd, bias=False)
        self.v_proj = nn.Linear(hidden, kv_heads * self.hd, bias=False)
        self.o_proj = nn.Linear(heads * self.hd, hidden, bias=False)
        self.post_attention_layernorm = RMSNorm(hidden, eps)
        self.gate_proj = nn.Linear(hidden, ffn, bias=False)  # W1
        self.up_proj = nn.Linear(hidden, ffn, bias=False)  # W3
        self.down_proj = nn.Linear(ffn, hidden, bias=False)  # W2
        self.final_norm = RMSNorm(hidden, final_eps)  # stays all ones
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.02)

    def attn(self, x):
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.heads, self.hd).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.kv_heads, self.hd).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.kv_heads, self.hd).transpose(1, 2)
        rep = self.heads // self.kv_heads
        if rep > 1:
            k = k.repeat_interleave(rep, dim=1)
            v = v.repeat_interleave(rep, dim=1)
        if self.sdpa:
            o = F.scaled_dot_product_attention(q, k, v, is_causal=False)
        else:
            # transformers' eager LlamaAttention, minus RoPE and mask.
            s = torch.matmul(q, k.transpose(2, 3)) / math.sqrt(self.hd)
            p = F.softmax(s, dim=-1, dtype=torch.float32).to(q.dtype)
            o = torch.matmul(p, v)
        o = o.transpose(1, 2).reshape(b, t, self.heads * self.hd)
        return self.o_proj(o)

    def forward(self, x):
        h = x + self.attn(self.input_layernorm(x))
        n = self.post_attention_layernorm(h)
        y = h + self.down_proj(F.silu(self.gate_proj(n)) * self.up_proj(n))
        return self.final_norm(y)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hidden", type=int, default=4096)
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--kv-heads", type=int, default=None)
    ap.add_argument("--ffn", type=int, default=11008)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--mode", choices=["frozen", "naive"], default="frozen")
    ap.add_argument("--attn", choices=["eager", "sdpa"], default="eager",
                    help="eager: matmul/softmax/matmul as transformers' eager path (default)")
    ap.add_argument("--check", action="store_true",
                    help="after timing, profile one step and report the backward's matmuls")
    a = ap.parse_args()
    kv = a.kv_heads or a.heads
    if a.heads <= 0 or a.hidden % a.heads or kv <= 0 or a.heads % kv:
        ap.error("--hidden must be a multiple of --heads, and --heads of --kv-heads")

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    block = Block(a.hidden, a.heads, kv, a.ffn, sdpa=a.attn == "sdpa")
    block.requires_grad_(a.mode == "naive")
    x = torch.randn(a.batch, a.tokens, a.hidden, requires_grad=True)
    r = torch.randn(a.batch, a.tokens, a.hidden)

    def step():
        x.grad = None
        for p in block.parameters():
            p.grad = None
        loss = (block(x) * r).sum()
        loss.backward()
        return float(x.grad.sum())  # reads the result, like the Rust side

    times = []
    for i in range(a.iters + 1):
        t0 = time.perf_counter()
        step()
        if i > 0:
            times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    median = times[len(times) // 2] if times else 0.0
    out = {
        "impl": "pytorch", "mode": a.mode, "autocast": False, "device": "Cpu",
        "hidden": a.hidden, "heads": a.heads, "kv_heads": kv, "ffn": a.ffn,
        "batch": a.batch, "tokens": a.tokens, "threads": torch.get_num_threads(),
        "ms_per_step_median": median, "ms_per_step": times,
        "torch": torch.__version__, "attn": a.attn,
        "weight_grads": any(p.grad is not None for p in block.parameters()),
    }
    if a.check:
        from torch.profiler import profile, ProfilerActivity
        with profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof:
            step()
        fwd = bwd = 0.0
        n_bwd = 0
        for e in prof.events():
            if e.name not in {"aten::mm", "aten::bmm", "aten::addmm"}:
                continue
            if _in_backward(e):
                bwd += e.flops
                n_bwd += 1
            else:
                fwd += e.flops
        out["check"] = {"fwd_gflop": fwd / 1e9, "bwd_gflop": bwd / 1e9, "bwd_mm_calls": n_bwd}
    print(json.dumps(out))


def _in_backward(e):
    p = e.cpu_parent
    while p is not None:
        if "Backward" in p.name or "backward" in p.name:
            return True
        p = p.cpu_parent
    return False


if __name__ == "__main__":
    main()
