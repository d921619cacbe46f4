#!/usr/bin/env python3
"""The Markdown table of benches/gpu.sh's results: per model, lm4ve beside each PyTorch
setting, step time, samples/s, peak memory and the ratio lm4ve / PyTorch.

Usage: python3 benches/gpu_table.py benches/work/gpu.jsonl
"""
import json
import sys


def main(path):
    rows = [json.loads(l) for l in open(path) if l.strip()]
    head = [r for r in rows if "gpu" in r]
    if head:
        print(f"GPU: {head[0]['gpu']} ({head[0]['date']})")
    torch_v = next((r for r in rows if r.get("impl") == "pytorch"), None)
    if torch_v:
        print(f"PyTorch {torch_v['torch']}, CUDA {torch_v['cuda']}")
    print()
    print("| model | impl | setting | batch | ms/step | samples/s | peak MiB (reserved) | lm4ve / this |")
    print("|---|---|---|---|---|---|---|---|")
    labels = []
    for r in rows:
        if "label" in r and r["label"] not in labels:
            labels.append(r["label"])
    for label in labels:
        group = [r for r in rows if r.get("label") == label]
        ours = next((r for r in group if r.get("impl") == "lm4ve" and not r.get("failed")), None)
        for r in group:
            if r.get("failed"):
                print(f"| {label} | — | failed | | | | | |")
                continue
            if r["impl"] == "lm4ve":
                setting = "f32 encoder, bf16 block" if "model" in r else "bf16 block"
                if r.get("attention") == "chunked":
                    setting += ", chunked attn"
                if r.get("checkpoint_blocks"):
                    setting += ", ckpt blocks"
            else:
                setting = f"{r.get('precision', 'bf16 block')}, {r['attn']}"
            ms = r["ms_per_step_median"]
            sps = r.get("samples_per_s") or r["batch"] * 1e3 / ms
            mem = r.get("peak_mem_mib")
            res = r.get("peak_reserved_mib")
            mem_s = f"{mem:.0f} ({res:.0f})" if mem else "—"
            ratio = f"{ours['ms_per_step_median'] / ms:.2f}x" if ours and r is not ours else ""
            print(f"| {label} | {r['impl']} | {setting} | {r['batch']} | {ms:.1f} | {sps:.1f} | {mem_s} | {ratio} |")


if __name__ == "__main__":
    main(sys.argv[1])
