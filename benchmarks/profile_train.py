"""Where the fast training step's GPU time goes: torch.profiler over a few of the pipeline's own
steps (bench_train.training_step: cbdm.train.TrainStep on the paper config's fast path), kernels
grouped by kind (matrix products and convolutions, normalisation, element-wise, attention,
optimizer and EMA, copies) with their share of device time, and each kernel under the chain of
operators that launched it (e.g. `aten::copy_ < aten::contiguous < aten::cudnn_convolution`, with
the innermost operator's input shapes), which tells a layout copy inside a convolution from a dtype
cast or an optimizer's copy. It explains the MFU that bench_train.py measures: only the
matrix-product kernels run on the tensor cores.

    python benchmarks/profile_train.py --batch 192            # GPU: after the compile, 10 steps
    python benchmarks/profile_train.py --size ci --device cpu --no-compile --batch 8 --calls 2
"""
from __future__ import annotations

import json

import bench_train
import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

import harness

# Kernel kinds by substrings of their names (first match wins; CUDA kernel and aten op names).
# Triton kernels come first: inductor names a fused point-wise kernel after every op it absorbed
# ("triton_poi_fused_..._convolution_..._silu"), which is not a convolution. Before them, what
# their names would misfile: a fused softmax is attention, not a normalisation ("triton_per"), and
# a random draw's kernel ("normal_and_transform") is not a GroupNorm.
KINDS = [("random numbers", ("distribution_", "philox", "curand")),
         ("attention", ("softmax",)),
         ("normalisation", ("triton_red", "triton_per")),
         ("element-wise (fused)", ("triton_poi",)),
         ("matmul/conv", ("gemm", "conv", "cutlass", "sm90", "sm80", "xmma", "mm_", "::mm", "addmm", "bmm", "wgrad",
                          "dgrad")),
         ("attention", ("flash", "attention", "fmha", "softmax")),
         ("normalisation", ("norm", "welford", "reduction", "red_")),
         ("optimizer/EMA", ("adam", "foreach", "multi_tensor", "lerp")),
         ("copy/layout", ("copy", "memcpy", "memset", "transpose", "cat")),
         ("element-wise (fused)", ("triton", "elementwise", "vectorized", "silu", "add", "mul"))]


CHAIN_DEPTH = 5  # operators shown per launching chain: enough to reach the convolution or module call


def kind(name: str) -> str:
    """The kind of a kernel, from its name (see KINDS); 'other' when nothing matches."""
    lowered = name.lower()
    return next((k for k, keys in KINDS if any(s in lowered for s in keys)), "other")


def profile_steps(call, calls: int, device: torch.device):
    """The profiler's record of `calls` steps, after one untimed step (operators' input shapes kept)."""
    call()
    # Operators are recorded only with the CPU activity; without them, no kernel has a launcher.
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities, record_shapes=True) as prof:
        for _ in range(calls):
            call()
        if device.type == "cuda":
            torch.cuda.synchronize()
    return prof


def kernel_times(prof, device: torch.device) -> list[tuple[str, float]]:
    """(kernel name, device microseconds) per kernel name; on a CPU, operators' self CPU time."""
    if device.type != "cuda":
        return [(e.key, e.self_cpu_time_total) for e in prof.key_averages() if e.self_cpu_time_total > 0]
    # The operators that launched the kernels carry their device time too, and so do the device-side
    # spans of annotated regions (inductor's "## Call CompiledFxGraph ##", the optimizer's step),
    # which cover kernels: count the time once, by kernel.
    return [(e.key, e.self_device_time_total) for e in prof.key_averages()
            if e.device_type != DeviceType.CPU and not getattr(e, "is_user_annotation", False)
            and e.self_device_time_total > 0]


def operator_chain(event, depth: int = CHAIN_DEPTH) -> str:
    """'innermost [its input shapes] < parent < ...': the operator and up to `depth` - 1 callers."""
    shapes = [list(s) for s in (getattr(event, "input_shapes", None) or []) if s]
    names, parent = [f"{event.name} {shapes[:2]}" if shapes else event.name], event.cpu_parent
    while parent is not None and len(names) < depth:
        names.append(parent.name)
        parent = parent.cpu_parent
    return " < ".join(names)


def launches(prof, device: torch.device) -> list[tuple[str, str, float]]:
    """(kernel, the operator chain that launched it, microseconds), one row per launch; on a CPU,
    where nothing is launched, (operator, its callers' chain, self CPU time) per operator call."""
    rows = []
    for event in prof.events():
        if event.device_type != DeviceType.CPU:
            continue
        if device.type == "cuda":
            rows += [(k.name, operator_chain(event), k.duration) for k in event.kernels]
        elif event.self_cpu_time_total > 0:
            rows.append((event.name, operator_chain(event.cpu_parent) if event.cpu_parent else "(top level)",
                         event.self_cpu_time_total))
    return rows


def by_launcher(rows: list[tuple[str, str, float]], total_us: float, top: int) -> list[dict]:
    """The `top` (kernel, launching chain) pairs by time, with their share of `total_us` and launch count."""
    grouped: dict[tuple[str, str], list[float]] = {}
    for kernel, chain, us in rows:
        grouped.setdefault((kernel, chain), []).append(us)
    ranked = sorted(grouped.items(), key=lambda kv: -sum(kv[1]))[:top]
    return [{"kernel": kernel, "launched by": chain, "launches": len(times),
             "share %": round(100 * sum(times) / (total_us or 1.0), 1)} for (kernel, chain), times in ranked]


def summarise(kernels: list[tuple[str, float]], top: int) -> dict:
    """Share of device time per kind and the `top` kernels (full names)."""
    total = sum(t for _, t in kernels) or 1.0
    kinds: dict[str, float] = {}
    for name, t in kernels:
        kinds[kind(name)] = kinds.get(kind(name), 0.0) + t
    ranked = sorted(kernels, key=lambda k: -k[1])[:top]
    return {"total_ms": total / 1e3,
            "kinds": {k: round(100 * t / total, 1) for k, t in sorted(kinds.items(), key=lambda kv: -kv[1])},
            "top": [{"kernel": n, "kind": kind(n), "share %": round(100 * t / total, 1)} for n, t in ranked]}


def report(prof, device: torch.device, title: str, top: int, json_path: str | None) -> dict:
    """Print (and write to `json_path`) the profile's summary: device time per kind, the `top`
    kernels, and the kernels under the operators that launched them."""
    summary = summarise(kernel_times(prof, device), top)
    summary["by launcher"] = by_launcher(launches(prof, device), summary["total_ms"] * 1e3, top)
    print(f"{title}: {summary['total_ms']:.1f} ms of device time")
    for k, share in summary["kinds"].items():
        print(f"  {k:22s} {share:5.1f} %")
    for row in summary["top"]:
        print(f"  {row['share %']:5.1f} %  {row['kind']:20s} {row['kernel'][:160]}")
    print("kernels by the operators that launched them (innermost first, with its input shapes):")
    for row in summary["by launcher"]:
        print(f"  {row['share %']:5.1f} %  {row['launches']:5d} x  {row['kernel'][:100]}\n"
              f"{'':20s}launched by {row['launched by'][:300]}")
    if json_path:
        with open(json_path, "w") as f:
            json.dump(summary, f, indent=1)
    return summary


def profile_arguments(description: str, calls: int):
    """The command line of a profile script: the benchmarks' own, --no-compile and --top."""
    p = harness.arguments(description, variant="cbdm", calls=calls)
    p.add_argument("--no-compile", action="store_true", help="leave torch.compile out of the fast path")
    p.add_argument("--top", type=int, default=15, help="kernels listed")
    return p


def main():
    args = profile_arguments(__doc__, calls=10).parse_args()
    harness.pin_threads(args.threads)
    device = torch.device(args.device)
    config, fast, _ = harness.fast_and_reference(args, "training")
    base = harness.build_model(config, args.size, device)
    call, _ = bench_train.training_step(config, fast, base, bench_train.pool(config, args.size, device), device)
    prof = profile_steps(call, args.calls, device)
    report(prof, device, f"fast path, variant {args.variant}, batch {fast['training']['batch_size']}, {args.calls} "
                         f"steps on {harness.machine(device)}", args.top, args.json)


if __name__ == "__main__":
    main()
