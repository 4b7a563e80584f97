"""Sampling throughput: the reference path against the fast path, same model, same steps.

Reference (pytorch-ddpm / CBDM style): fp32 eager, a separate forward pass for the unconditional
branch of classifier-free guidance, batch --batch. Fast: bf16 autocast, torch.compile, both
guidance branches in one forward pass, batch --fast-batch. Both run ancestral steps on the same
model; the figure is images per second for a full 1,000-step sampling run (the timed steps are
scaled up), so the ratio holds for DDIM at the same number of steps too.

    python benchmarks/bench_sample.py                       # paper-size UNet on the GPU
    python benchmarks/bench_sample.py --size small --device cpu --steps 2 --no-compile
"""
from __future__ import annotations

import numpy as np
import torch

from cbdm.acceleration import autocast, prepare_network
from cbdm.diffusion import NoiseSchedule
from cbdm.samplers import sample_ancestral

import harness

FULL_RUN_STEPS = 1000


def main():
    parser = harness.arguments(__doc__, steps=10, warmup=2, batch=256)
    parser.add_argument("--fast-batch", type=int, default=1024)
    parser.add_argument("--guidance", type=float, default=1.6)
    args = parser.parse_args()
    device = torch.device(args.device)
    model, spec = harness.build_model(args.size, device)
    model.eval()
    # A schedule of --steps timesteps: one timed call is --steps reverse steps of the same cost.
    schedule = NoiseSchedule.linear(args.steps, 1e-4, 0.02).to(device)
    paths = {
        "reference": dict(precision="fp32", compile=False, batched_guidance=False, batch=args.batch),
        "fast": dict(precision="bf16", compile=not args.no_compile, batched_guidance=True, batch=args.fast_batch),
    }
    rows, images = [], {}
    for name, path in paths.items():
        network = prepare_network(model, compile=path["compile"])
        labels = torch.arange(path["batch"], device=device) % spec["num_classes"]
        seeds = np.arange(path["batch"])

        def run():
            with autocast(device, path["precision"]):
                images[name] = sample_ancestral(network, schedule, labels, seeds, guidance=args.guidance,
                                                batched_guidance=path["batched_guidance"])

        harness.reset_peak_memory(device)
        seconds = harness.time_it(run, device, 1, args.warmup)
        rate = path["batch"] / (seconds * FULL_RUN_STEPS / args.steps)
        rows.append(harness.result_row(name, rate, device, ", ".join(f"{k}={v}" for k, v in path.items())))
    n = min(args.batch, args.fast_batch)
    difference = (images["reference"][:n] - images["fast"][:n]).abs().mean().item()
    title = f"Sampling ({harness.parameters_line(model)}, {FULL_RUN_STEPS}-step runs, guidance {args.guidance})"
    harness.print_comparison(title, rows, "images/s", args,
                     {"mean |reference - fast| on shared seeds (images in [-1, 1])": f"{difference:.4f}"})


if __name__ == "__main__":
    main()
