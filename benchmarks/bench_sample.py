"""Sampling throughput of the pipeline's own sampler (cbdm.sample.generate) on a paper config's
settings: the config's fast path (bf16, compile, both guidance branches in one forward pass)
against the reference path (config/overrides/reference-path.yaml: fp32, eager, a separate forward for
the unconditional branch), same model, same batch (the config's), same seeds, the variant's
first guidance scale, the config's sampler. One call samples a batch over a schedule of --steps
timesteps, whose every step costs what a step of the full run costs; images/s are given for the
full run (the config's number of steps), MFU from the network's FLOP count.

    python benchmarks/bench_sample.py                                # paper UNet, batch 2000, GPU
    python benchmarks/bench_sample.py --size ci --device cpu --batch 8 --steps 2 --blocks 2 --calls 1 --no-compile
"""
from __future__ import annotations

import numpy as np
import torch

from cbdm.diffusion import NoiseSchedule
from cbdm.sample import generate

import harness

PATH_KEYS = ("precision", "compile", "compile_mode", "batched_guidance", "tf32", "cudnn_benchmark")


def forward_flops(model: torch.nn.Module, device: torch.device) -> int:
    """FLOPs of one forward pass of one image."""
    cfg = model.cfg
    x = torch.zeros(1, cfg.image_channels, cfg.image_size, cfg.image_size, device=device)
    t = torch.zeros(1, dtype=torch.long, device=device)
    with torch.no_grad():
        return harness.count_flops(lambda: model(x, t, t))


def sampling_call(config: dict, settings: dict, model: torch.nn.Module, device: torch.device, steps: int,
                  images: dict, name: str):
    """A callable sampling one batch (the settings' batch size, the variant's first guidance scale)
    with cbdm.sample.generate over a schedule of `steps` timesteps, each of which costs what a step
    of the full run costs; it leaves the images in `images[name]`."""
    section = {**settings["sampling"], "steps": steps}
    diffusion = config["diffusion"]
    schedule = NoiseSchedule.linear(steps, diffusion["beta_start"], diffusion["beta_end"]).to(device)
    labels = np.arange(section["batch_size"]) % model.cfg.num_classes
    seeds = np.arange(section["batch_size"])

    def call():
        images[name] = generate(model, schedule, labels, seeds, section, settings["guidance"][0], device, desc=name)
    return call


def run(args) -> dict:
    """Time the sampler's reference and fast paths; returns the printed figures."""
    harness.pin_threads(args.threads)
    device = torch.device(args.device)
    config, fast, reference = harness.fast_and_reference(args, "sampling")
    sampling = fast["sampling"]
    batch, guidance = sampling["batch_size"], fast["guidance"][0]
    full_steps = config["diffusion"]["num_timesteps"] if sampling["sampler"] == "ancestral" else sampling["steps"]
    model = harness.build_model(config, args.size, device).eval()
    images = {}
    paths = {name: sampling_call(config, s, model, device, args.steps, images, name)
             for name, s in (("reference", reference), ("fast", fast))}
    harness.reset_peak_memory(device)
    timings = harness.alternate(paths, device, args.blocks, args.calls, args.budget, args.warmup)
    flops_per_call = 2 * args.steps * batch * forward_flops(model, device)  # two guidance branches per step
    scale = args.steps / full_steps  # images/s of a full run = images per call * steps per call / full steps
    rows = [harness.path_row(name, timings[name], batch * scale, flops_per_call, device,
                             harness.describe(s["sampling"], PATH_KEYS))
            for name, s in (("reference", reference), ("fast", fast))]
    difference = np.abs(images["reference"].astype(int) - images["fast"].astype(int)).mean()
    title = (f"Sampling with cbdm.sample.generate ({sampling['sampler']}, {full_steps}-step runs timed over "
             f"{args.steps} steps per call, guidance {guidance}, batch {batch}, {harness.parameters_line(model)}, "
             f"size {args.size})")
    return harness.print_table(title, rows, "images/s", device, args, {
        "GFLOP per image of a full run": round(2 * full_steps * forward_flops(model, device) / 1e9, 1),
        "mean |reference - fast| on the same seeds (of 255 grey levels)": f"{difference:.2f}",
        "timed calls per block": args.calls})


def parser():
    """The command line of this benchmark."""
    p = harness.arguments(__doc__, variant="cbdm", blocks=3, calls=1)
    p.add_argument("--steps", type=int, default=10, help="reverse steps per timed call")
    p.add_argument("--no-compile", action="store_true", help="leave torch.compile out of the fast path")
    return p


if __name__ == "__main__":
    run(parser().parse_args())
