"""CPU levers for the default suite's training step: the pipeline's own step (cbdm.train.TrainStep,
via bench_train.training_step) with the config's settings in fp32 with a plain Adam ('fp32'), then
with `training.precision: bf16` alone ('bf16'), then bf16 with Adam's fused kernel ('bf16+fused'),
and that with the channels-last layout ('bf16+fused+nhwc', oneDNN's preferred layout), and bf16 +
fused Adam with static shapes ('bf16+fused+static': a step whose whole batch is dropped still runs
every term's passes and masks them, as torch.compile needs and as the eager trainer did before it
skipped them), timed in alternating blocks on pinned threads (harness.alternate); ratio = median
rate / fp32's median rate. `--drop P` sets the label-drop probability (the config's: 0.1; 1.0 times
dropped steps only).

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
    fp32["training"].update(compile=False, precision="fp32", fused_adam=False)  # the default's CPU path: eager
    if args.drop is not None:
        fp32["training"]["label_drop"]["probability"] = args.drop
    bf16 = copy.deepcopy(fp32)
    bf16["training"]["precision"] = "bf16"
    fused = copy.deepcopy(bf16)
    fused["training"]["fused_adam"] = True
    nhwc = copy.deepcopy(fused)
    nhwc["training"]["channels_last"] = True
    settings = {"fp32": fp32, "bf16": bf16, "bf16+fused": fused, "bf16+fused+nhwc": nhwc, "bf16+fused+static": fused}
    base = harness.build_model(config, "paper", device)
    data = pool(config, "paper", device)
    steps = {name: training_step(config, s, base, data, device) for name, s in settings.items()}
    steps["bf16+fused+static"][1]["state"].train_step.objective.static_shapes = True
    paths = {name: call for name, (call, _) in steps.items()}
    timings = harness.alternate(paths, device, args.blocks, args.calls, args.budget, args.warmup)
    batch = fp32["training"]["batch_size"]
    rows = [harness.path_row(name, timings[name], batch, None, device, harness.describe(s["training"], PATH_KEYS))
            for name, s in settings.items()]
    drop = fp32["training"]["label_drop"]
    title = (f"Training step of {args.config} variant {args.variant}: CPU levers (batch {batch}, label drop "
             f"{drop['probability']} per {drop['policy']})")
    return harness.print_table(title, rows, "images/s", device, args, {"timed calls per block": args.calls})


def parser():
    """The command line of this benchmark (the default config's training on this CPU)."""
    p = harness.arguments(__doc__, variant="cbdm_overlap", blocks=8, calls=10)
    p.add_argument("--drop", type=float, default=None, help="label-drop probability (default: the config's)")
    p.set_defaults(config="../config/config.yaml", device="cpu")
    return p


if __name__ == "__main__":
    run(parser().parse_args())
