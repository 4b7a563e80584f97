"""Shared set-up of the benchmark scripts: model sizes, timing, peak memory, printing."""
from __future__ import annotations

import argparse
import json
import resource
import time

import torch

from cbdm.networks import build_unet, count_parameters

# "paper": the pytorch-ddpm UNet at the CIFAR setting; "small": a CPU smoke-test size.
SIZES = {
    "paper": dict(network=dict(base_channels=128, channel_mult=[1, 2, 2, 2], attention_levels=[1],
                               num_res_blocks=2, dropout=0.1, norm_groups=32),
                  image_channels=3, image_size=32, num_classes=10),
    "small": dict(network=dict(base_channels=16, channel_mult=[1, 2], attention_levels=[1],
                               num_res_blocks=1, dropout=0.0, norm_groups=4),
                  image_channels=1, image_size=8, num_classes=10),
}


def arguments(description: str, **defaults) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--size", choices=SIZES, default="paper")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=defaults.get("steps", 20), help="timed iterations")
    parser.add_argument("--warmup", type=int, default=defaults.get("warmup", 3), help="untimed iterations first")
    parser.add_argument("--batch", type=int, default=defaults.get("batch", 128))
    parser.add_argument("--no-compile", action="store_true", help="leave torch.compile out of the fast path")
    parser.add_argument("--json", help="also write the figures to this file")
    return parser


def build_model(size: str, device, seed: int = 0):
    """A UNet of the given size whose output depends on its input and label (the freshly
    initialised network outputs about zero, which would make any comparison of outputs vacuous)."""
    spec = SIZES[size]
    torch.manual_seed(seed)
    model = build_unet(spec["network"], image_channels=spec["image_channels"], image_size=spec["image_size"],
                       num_classes=spec["num_classes"], num_timesteps=1000)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return model.to(device), spec


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: torch.device) -> float:
    """GPU: peak allocated by torch since the last reset; CPU: the process's peak resident size."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def time_it(step, device: torch.device, steps: int, warmup: int) -> float:
    """Seconds per call of `step()`, after `warmup` untimed calls."""
    for _ in range(warmup):
        step()
    synchronize(device)
    started = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    return (time.perf_counter() - started) / steps


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU, {torch.get_num_threads()} threads"


def result_row(path: str, rate: float, device: torch.device, detail: str) -> dict:
    """One path's figures, taken right after it ran (peak memory included)."""
    return {"path": path, "rate": rate, "peak_mb": peak_memory_mb(device), "machine": machine(device),
            "detail": detail}


def print_comparison(title: str, rows: list[dict], unit: str, args, extra: dict | None = None) -> None:
    """rows: [{'path': ..., 'rate': units per second, 'peak_mb': ...}], the reference first."""
    reference = rows[0]["rate"]
    size = f"size {args.size}, " if getattr(args, "size", None) else ""
    print(f"{title} on {rows[0]['machine']} ({size}torch {torch.__version__})")
    for row in rows:
        print(f"  {row['path']:<10} {row['rate']:12.1f} {unit}  x{row['rate'] / reference:5.2f}  "
              f"peak memory {row['peak_mb']:9.1f} MB   [{row['detail']}]")
    for key, value in (extra or {}).items():
        print(f"  {key}: {value}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"title": title, "unit": unit, "size": getattr(args, "size", None), "rows": rows,
                       **(extra or {})}, f, indent=2)


def parameters_line(model) -> str:
    return f"{count_parameters(model) / 1e6:.2f} M parameters"
