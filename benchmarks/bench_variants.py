"""Cost per training step of each field variant relative to DDPM: the pipeline's own Objective
(cbdm.objective) with its network extras, backward, gradient clipping, Adam and the EMA, as
cbdm/train.py runs them, on a long-tailed class prior.

Variants are timed in interleaved blocks (every block times each variant once, in a rotated
order), so a change in the machine's load spreads over all of them; each variant's figure is
the min / median / max over blocks of the seconds per step, and its ratio is median / DDPM's
median. Forward passes per step are counted with a hook on the network, not assumed.

    python benchmarks/bench_variants.py --size small --device cpu --threads 1
    python benchmarks/bench_variants.py                          # paper-size UNet on the GPU
"""
from __future__ import annotations

import os
import statistics
import time

import torch
import yaml

from cbdm.acceleration import ema_update
from cbdm.diffusion import NoiseSchedule
from cbdm.losses import get_loss
from cbdm.networks import build_unet
from cbdm.objective import Objective, network_extras

import harness

FIELD_CONFIG = os.path.join(os.path.dirname(__file__), "..", "config", "field.yaml")


def field_config() -> dict:
    with open(FIELD_CONFIG) as f:
        return yaml.safe_load(f)


def field_variants() -> dict[str, list[dict]]:
    """The loss terms of every variant of the field suite, options resolved."""
    variants = field_config()["variants"]
    return {name: [{"name": t["name"], "weight": float(t.get("weight", 1.0)),
                    "options": get_loss(t["name"]).options({k: v for k, v in t.items() if k not in ("name", "weight")})}
                   for t in spec["losses"]] for name, spec in variants.items()}


def long_tailed_prior(num_classes: int, imbalance_factor: float = 100.0) -> torch.Tensor:
    counts = imbalance_factor ** (-torch.arange(num_classes, dtype=torch.float64) / (num_classes - 1))
    return (counts / counts.sum()).float()


def training_step(terms: list[dict], spec: dict, x0, y, device):
    """A closure taking one training step of `terms`, and a counter of the network's forward
    calls and images."""
    torch.manual_seed(0)
    model = build_unet(spec["network"], image_channels=spec["image_channels"], image_size=spec["image_size"],
                       num_classes=spec["num_classes"], num_timesteps=1000, **network_extras(terms)).to(device)
    objective = Objective(terms, NoiseSchedule.linear(1000, 1e-4, 0.02).to(device),
                          long_tailed_prior(spec["num_classes"]).to(device), model.null_label,
                          {"policy": "batch", "probability": 0.0}, batched_forward=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-4)
    params = list(model.parameters())
    ema = [p.detach().clone() for p in params]
    generator, coins = torch.Generator(device).manual_seed(0), torch.Generator().manual_seed(0)
    counted = {"calls": 0, "images": 0}

    def count(module, args):
        counted["calls"] += 1
        counted["images"] += len(args[0])

    model.register_forward_pre_hook(count)

    def step():
        loss, _ = objective(model, x0, y, generator, coins)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        ema_update(ema, params, 0.9999, "foreach")

    return step, counted, sum(p.numel() for p in params)


def interleaved_seconds(steps: dict, device, blocks: int, per_block: int, warmup: int) -> dict[str, list[float]]:
    """Seconds per step of every closure, one figure per block, the order rotated each block."""
    names = list(steps)
    for name in names:
        for _ in range(warmup):
            steps[name]()
    seconds = {name: [] for name in names}
    for block in range(blocks):
        for name in names[block % len(names):] + names[:block % len(names)]:
            harness.synchronize(device)
            started = time.perf_counter()
            for _ in range(per_block):
                steps[name]()
            harness.synchronize(device)
            seconds[name].append((time.perf_counter() - started) / per_block)
    return seconds


def main():
    parser = harness.arguments(__doc__, steps=5, warmup=2, batch=64)
    parser.add_argument("--blocks", type=int, default=7, help="interleaved timing blocks (--steps steps each)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (CPU), pinned to as many cores")
    parser.add_argument("--field", action="store_true", help="the field suite's own network (config/field.yaml)")
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
        if hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:args.threads])
    spec = harness.SIZES[args.size]
    if args.field:
        args.size = "field"
        spec = dict(spec, network=field_config()["network"], image_channels=1, image_size=8, num_classes=10)
    shape = (args.batch, spec["image_channels"], spec["image_size"], spec["image_size"])
    x0 = (torch.rand(shape, generator=torch.Generator().manual_seed(1)) * 2 - 1).to(device)
    y = torch.multinomial(long_tailed_prior(spec["num_classes"]), args.batch, replacement=True,
                          generator=torch.Generator().manual_seed(2)).to(device)
    built = {name: training_step(terms, spec, x0, y, device) for name, terms in field_variants().items()}
    seconds = interleaved_seconds({n: b[0] for n, b in built.items()}, device, args.blocks, args.steps, args.warmup)
    for _, counted, _ in built.values():
        counted.update(calls=0, images=0)
    for name, (step, _, _) in built.items():
        step()  # one counted step per variant
    reference = statistics.median(seconds["ddpm"])
    rows = []
    for name, (_, counted, n_params) in built.items():
        s = seconds[name]
        rows.append({"path": name, "rate": 1 / statistics.median(s), "peak_mb": harness.peak_memory_mb(device),
                     "machine": harness.machine(device),
                     "detail": f"median {statistics.median(s) * 1e3:.1f} ms/step (min {min(s) * 1e3:.1f}, max "
                               f"{max(s) * 1e3:.1f}) x{statistics.median(s) / reference:.2f} of ddpm; "
                               f"{counted['calls']} forward call(s), {counted['images'] // args.batch} x batch images; "
                               f"{n_params:,} parameters",
                     "seconds": s, "cost_vs_ddpm": statistics.median(s) / reference,
                     "forward_calls": counted["calls"], "forward_images": counted["images"]})
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    harness.print_comparison(f"Training step per variant, batch {args.batch}, {args.blocks} interleaved blocks of "
                             f"{args.steps} steps", rows, "steps/s", args,
                             {"load average at the end": load})


if __name__ == "__main__":
    main()
