"""Where the fast training step's GPU time goes: torch.profiler over a few of the pipeline's own
steps (bench_train.training_step: cbdm.train.TrainStep on the paper config's fast path), kernels
grouped by kind (matrix products and convolutions, normalisation, element-wise, attention,
optimizer and EMA, copies) with their share of device time. It explains the MFU that
bench_train.py measures: only the matrix-product kernels run on the tensor cores.

    python benchmarks/profile_train.py --batch 192            # GPU: after the compile, 10 steps
    python benchmarks/profile_train.py --size ci --device cpu --no-compile --batch 8 --calls 2
"""
from __future__ import annotations

import json

import bench_train
import torch
from torch.profiler import ProfilerActivity, profile

import harness

# Kernel kinds by substrings of their names (first match wins; CUDA kernel and aten op names).
# Triton kernels come first: inductor names a fused point-wise kernel after every op it absorbed
# ("triton_poi_fused_..._convolution_..._silu"), which is not a convolution.
KINDS = [("normalisation", ("triton_red", "triton_per")),
         ("element-wise (fused)", ("triton_poi",)),
         ("matmul/conv", ("gemm", "conv", "cutlass", "sm90", "sm80", "xmma", "mm_", "::mm", "addmm", "bmm", "wgrad",
                          "dgrad")),
         ("attention", ("flash", "attention", "fmha", "softmax")),
         ("normalisation", ("norm", "welford", "reduction", "red_")),
         ("optimizer/EMA", ("adam", "foreach", "multi_tensor", "lerp")),
         ("copy/layout", ("copy", "memcpy", "memset", "transpose", "cat")),
         ("element-wise (fused)", ("triton", "elementwise", "vectorized", "silu", "add", "mul"))]


def kind(name: str) -> str:
    """The kind of a kernel, from its name (see KINDS); 'other' when nothing matches."""
    lowered = name.lower()
    return next((k for k, keys in KINDS if any(s in lowered for s in keys)), "other")


def profile_steps(call, calls: int, device: torch.device) -> list[tuple[str, float]]:
    """(kernel name, device microseconds) over `calls` steps, after one untimed step."""
    call()
    activities = [ProfilerActivity.CUDA] if device.type == "cuda" else [ProfilerActivity.CPU]
    with profile(activities=activities) as prof:
        for _ in range(calls):
            call()
        if device.type == "cuda":
            torch.cuda.synchronize()
    attribute = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return [(e.key, getattr(e, attribute)) for e in prof.key_averages() if getattr(e, attribute) > 0]


def summarise(kernels: list[tuple[str, float]], top: int) -> dict:
    """Share of device time per kind and the `top` kernels."""
    total = sum(t for _, t in kernels) or 1.0
    kinds: dict[str, float] = {}
    for name, t in kernels:
        kinds[kind(name)] = kinds.get(kind(name), 0.0) + t
    ranked = sorted(kernels, key=lambda k: -k[1])[:top]
    return {"total_ms": total / 1e3,
            "kinds": {k: round(100 * t / total, 1) for k, t in sorted(kinds.items(), key=lambda kv: -kv[1])},
            "top": [{"kernel": n[:90], "kind": kind(n), "share %": round(100 * t / total, 1)} for n, t in ranked]}


def main():
    p = harness.arguments(__doc__, variant="cbdm", calls=10)
    p.add_argument("--no-compile", action="store_true", help="leave torch.compile out of the fast path")
    p.add_argument("--top", type=int, default=15, help="kernels listed")
    args = p.parse_args()
    harness.pin_threads(args.threads)
    device = torch.device(args.device)
    config, fast, _ = harness.fast_and_reference(args, "training")
    base = harness.build_model(config, args.size, device)
    call, _ = bench_train.training_step(config, fast, base, bench_train.pool(config, args.size, device), device)
    summary = summarise(profile_steps(call, args.calls, device), args.top)
    print(f"fast path, variant {args.variant}, batch {fast['training']['batch_size']}, {args.calls} steps on "
          f"{harness.machine(device)}: {summary['total_ms']:.1f} ms of device time")
    for k, share in summary["kinds"].items():
        print(f"  {k:22s} {share:5.1f} %")
    for row in summary["top"]:
        print(f"  {row['share %']:5.1f} %  {row['kind']:20s} {row['kernel']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=1)


if __name__ == "__main__":
    main()
