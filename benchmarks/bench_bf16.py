"""bf16 autocast against fp32 for the default suite's training step on a CPU: the pipeline's own
step (cbdm.train.TrainStep, via bench_train.training_step) with the config's settings as they
are (fp32) and with `training.precision: bf16`, nothing else changed, timed in alternating
blocks on pinned threads (harness.alternate); ratio = bf16 median / fp32 median rate.

    python benchmarks/bench_bf16.py --variant cbdm_overlap --threads 1 --blocks 8 --calls 10
"""
from __future__ import annotations

import copy

import torch
from bench_train import PATH_KEYS, pool, training_step

import harness


def run(args) -> dict:
    harness.pin_threads(args.threads)
    device = torch.device(args.device)
    config, fp32 = harness.variant_settings(args.config, args.variant, reference=False)
    fp32["training"]["compile"] = False  # the default's CPU path: eager
    bf16 = copy.deepcopy(fp32)
    bf16["training"]["precision"] = "bf16"
    base = harness.build_model(config, "paper", device)
    data = pool(config, "paper", device)
    paths = {name: training_step(config, s, base, data, device)[0] for name, s in (("fp32", fp32), ("bf16", bf16))}
    timings = harness.alternate(paths, device, args.blocks, args.calls, args.budget)
    batch = fp32["training"]["batch_size"]
    rows = [harness.path_row(name, timings[name], batch, None, device, harness.describe(s["training"], PATH_KEYS))
            for name, s in (("fp32", fp32), ("bf16", bf16))]
    title = f"Training step of {args.config} variant {args.variant}, fp32 vs bf16 autocast (batch {batch})"
    return harness.print_table(title, rows, "images/s", device, args, {"timed calls per block": args.calls})


if __name__ == "__main__":
    parser = harness.arguments(__doc__, variant="cbdm_overlap", blocks=8, calls=10)
    parser.set_defaults(config="../config/config.yaml", device="cpu")
    run(parser.parse_args())
