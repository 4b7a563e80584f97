"""Cost per training step of each variant relative to DDPM: the pipeline's own step
(cbdm.train.TrainStep, through bench_train.training_step) with each variant's Objective and the
network extras its losses declare, on a long-tailed pool (IF 100) and its class prior.

Every variant starts from the same weights and is timed in alternating blocks on pinned threads
(harness.alternate: the variants in order, then reversed, ...), so a change of the machine's
load spreads over all of them; each variant's figure is the min / median / max over blocks, its
cost the ratio of its median seconds per step to DDPM's. Label drop is 0, so every step runs
the same label sets. Forward calls and images per step are counted with a hook on the network
in one step before the timing (which also counts its FLOPs where the step is not compiled).

    python benchmarks/bench_variants.py --size small --field --device cpu --threads 1
    python benchmarks/bench_variants.py                     # the paper config's UNet on the GPU
"""
from __future__ import annotations

import argparse
import os
import statistics

import torch
from bench_train import POOL_PER_CLASS, pool, training_step

from cbdm.dataset import longtail_counts, select_longtail
from cbdm.objective import network_extras

import harness

FIELD_CONFIG = str(harness.REPO / "config/field.yaml")
IMBALANCE_FACTOR = 100.0


def long_tailed_pool(config: dict, size: str, device: torch.device):
    """bench_train's class-structured pool cut to an exponential long tail (IF 100), as the
    suites train on; the objective's class prior is then long-tailed too."""
    images, labels = pool(config, size, device)
    counts = longtail_counts(int(labels.max()) + 1, POOL_PER_CLASS, IMBALANCE_FACTOR, "exponential")
    keep = torch.from_numpy(select_longtail(labels.cpu().numpy(), counts, seed=0)).to(device)
    return images[keep], labels[keep]


def variant_step(config: dict, settings: dict, size: str, data, device: torch.device, counter: dict):
    """A callable taking one TrainStep of the variant (label drop 0), and the variant's model."""
    base = harness.build_model(config, size, device, **network_extras(settings["losses"]))

    def count(module, args):
        counter["calls"] += 1
        counter["images"] += len(args[0])

    base.register_forward_pre_hook(count)  # bench_train's copies of the model keep the hook
    call, _ = training_step(config, settings, base, data, device)
    return call, base


def counted_step(call, counter: dict, compiled: bool) -> dict:
    """Forward calls and images of one step, and its FLOPs where the step is eager."""
    counter.update(calls=0, images=0)
    flops = None
    if compiled:  # FLOPs are counted on eager steps only, as bench_train does
        call()
    else:
        flops = harness.count_flops(call)
    return {**counter, "flops": flops}


def variant_settings(config_path: str, name: str, batch: int | None) -> dict:
    """The variant's resolved settings (fast path) at `batch`, label drop 0."""
    _, settings = harness.variant_settings(config_path, name, reference=False)
    cfg = settings["training"]
    cfg["batch_size"] = batch or cfg["batch_size"]
    cfg["label_drop"] = dict(cfg["label_drop"], probability=0.0)  # every step runs the same label sets
    return settings


def run(args) -> dict:
    """Time one training step of every variant against ddpm's; returns the printed figures."""
    harness.pin_threads(args.threads)
    device = torch.device(args.device)
    config_path, size = (FIELD_CONFIG, "paper") if args.field else (args.config, args.size)
    config, _ = harness.variant_settings(config_path, "ddpm", reference=False)
    names = ["ddpm"] + [name for name in config["variants"] if name != "ddpm"]  # the reference first
    data = long_tailed_pool(config, size, device)
    load_before = load_average()
    paths, counts, models, settings = {}, {}, {}, {}
    for name in names:
        settings[name] = variant_settings(config_path, name, args.batch)
        counter = {"calls": 0, "images": 0}
        paths[name], models[name] = variant_step(config, settings[name], size, data, device, counter)
        counts[name] = counted_step(paths[name], counter, settings[name]["training"]["compile"])
    harness.reset_peak_memory(device)
    timings = harness.alternate(paths, device, args.blocks, args.calls, args.budget, args.warmup)
    rows = [variant_row(name, timings[name], timings["ddpm"], counts[name], models[name], settings[name], device)
            for name in names]
    cfg = settings["ddpm"]["training"]
    title = (f"Training step per variant of {os.path.relpath(config_path, harness.REPO)} (cbdm.train.TrainStep, batch "
             f"{cfg['batch_size']}, label drop 0, long-tailed pool IF {IMBALANCE_FACTOR:g}, size "
             f"{'field' if args.field else size}): steps/s; ratio = ddpm's time / the variant's")
    return harness.print_table(title, rows, "steps/s", device, args, {
        "timed steps per block": args.calls, "untimed warm-up steps per variant": args.warmup,
        "load average (1, 5, 15 min) before / after": f"{load_before} / {load_average()}"})


def load_average() -> str:
    """The machine's 1, 5 and 15 minute load averages, for the table's notes."""
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def variant_row(name: str, timing: dict, ddpm: dict, counted: dict, model, settings: dict, device) -> dict:
    """harness.path_row plus the seconds per block, the cost against ddpm and the counted forwards."""
    seconds, batch = timing["block_s"], settings["training"]["batch_size"]
    cost = statistics.median(seconds) / statistics.median(ddpm["block_s"])
    gflop = f"{counted['flops'] / 1e9:.2f} GFLOP/step" if counted["flops"] is not None else "FLOPs not counted"
    detail = (f"median {statistics.median(seconds) * 1e3:.1f} ms/step (min {min(seconds) * 1e3:.1f}, max "
              f"{max(seconds) * 1e3:.1f}), x{cost:.2f} ddpm's cost; {counted['calls']} forward call(s), "
              f"{counted['images'] // batch} x batch images; {gflop}; {harness.parameters_line(model)}")
    return {**harness.path_row(name, timing, 1, counted["flops"], device, detail), "seconds": seconds,
            "cost_vs_ddpm": cost, "forward_calls": counted["calls"], "forward_images": counted["images"]}


def parser() -> argparse.ArgumentParser:
    """The command line of this benchmark."""
    p = harness.arguments(__doc__, variant="ddpm", blocks=7, calls=5)
    p.add_argument("--steps", dest="calls", type=int, default=argparse.SUPPRESS,
                   help="timed steps per block (the same as --calls)")
    p.add_argument("--field", action="store_true",
                   help="the field suite (config/field.yaml) with its own network; --config and --size are ignored")
    return p


if __name__ == "__main__":
    run(parser().parse_args())
