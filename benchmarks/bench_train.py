"""Training throughput of the pipeline's own step (cbdm.train.TrainStep) on a paper config's
settings: the config's fast path against the reference path (config/overrides/reference-path.yaml:
fp32, eager, contiguous layout, plain Adam, a Python-loop EMA, one forward pass per label set).
Same initial weights, same batches (the config's batch size and label drop 0.1), the two paths
timed in alternating blocks on pinned threads; the first call (compile + warm-up) is reported
apart, MFU from the step's FLOP count (torch.utils.flop_counter).

    python benchmarks/bench_train.py                                 # paper UNet, CBDM (batch 48), GPU
    python benchmarks/bench_train.py --variant ddpm                  # DDPM (batch 64)
    python benchmarks/bench_train.py --size ci --device cpu --blocks 2 --calls 2 --no-compile
"""
from __future__ import annotations

import copy

import torch

from cbdm.dataset import images_to_model_range
from cbdm.train import setup_training

import harness

PATH_KEYS = ("precision", "compile", "compile_mode", "channels_last", "group_norm", "fused_adam", "ema_update",
             "batched_forward", "tf32", "cudnn_benchmark")
POOL_PER_CLASS = 256


def training_step(config: dict, settings: dict, base: torch.nn.Module, data, device: torch.device):
    """The trainer's own setup (cbdm.train.setup_training) of `settings` on a copy of `base`, and
    a callable taking its next step."""
    images, labels = data
    model = copy.deepcopy(base).train()
    state = setup_training(settings, model, config["diffusion"], images, labels, int(labels.max()) + 1, device,
                           seed=0)
    state.step = settings["training"]["warmup_steps"]  # past warm-up: the full learning rate
    losses = []

    def call():
        losses.append(state.advance()[1])

    return call, {"losses": losses, "state": state}


def labelled_step(config: dict, settings: dict, base: torch.nn.Module, data, device: torch.device):
    """`training_step` of `settings` run eagerly and with every batch keeping its labels, as 90 % of
    the paper configs' batches do: the step whose FLOPs and shapes the benchmarks report, whatever
    the label-drop coin would have said on the step they happen to take."""
    settings = copy.deepcopy(settings)
    settings["training"].update(compile=False, label_drop={**settings["training"]["label_drop"], "probability": 0.0})
    return training_step(config, settings, base, data, device)


def step_flops(config: dict, settings: dict, base: torch.nn.Module, data, device: torch.device) -> int:
    """FLOPs of one training step of `settings` (forward and backward on every label set)."""
    return harness.count_flops(labelled_step(config, settings, base, data, device)[0])


def pool(config: dict, size: str, device: torch.device):
    """Class-structured training images (model range) and labels of the config's shape, on `device`."""
    channels, side, classes = harness.image_shape(config, size)
    images, labels = harness.class_structured_images(POOL_PER_CLASS * classes, channels, side, classes)
    return images_to_model_range(images).to(device), labels.to(device)


def run(args) -> dict:
    """Time the training step's reference and fast paths; returns the printed figures."""
    harness.pin_threads(args.threads)
    device = torch.device(args.device)
    config, fast, reference = harness.fast_and_reference(args, "training")
    for settings in (fast, reference):
        if args.compile_mode:
            settings["training"]["compile_mode"] = args.compile_mode
    batch = fast["training"]["batch_size"]
    base = harness.build_model(config, args.size, device)
    data = pool(config, args.size, device)
    paths, states = {}, {}
    for name, settings in (("reference", reference), ("fast", fast)):
        paths[name], states[name] = training_step(config, settings, base, data, device)
    flops = step_flops(config, reference, base, data, device)  # the fast path does the same math
    harness.reset_peak_memory(device)
    timings = harness.alternate(paths, device, args.blocks, args.calls, args.budget, args.warmup)
    rows = [harness.path_row(name, timings[name], batch, flops, device,
                             harness.describe(s["training"], PATH_KEYS))
            for name, s in (("reference", reference), ("fast", fast))]
    first = {name: f"{states[name]['losses'][0].item():.5f}" for name in paths}  # same weights, same batch
    cfg = fast["training"]
    title = (f"Training step of {args.config} variant {args.variant} (cbdm.train.TrainStep; {len(fast['losses'])} "
             f"loss term(s), batch {batch}, label drop {cfg['label_drop']['probability']} per "
             f"{cfg['label_drop']['policy']}, {harness.parameters_line(base)}, size {args.size})")
    return harness.print_table(title, rows, "images/s", device, args, {
        "GFLOP per step (forward + backward, all label sets)": round(flops / 1e9, 2),
        "first-step loss on the same batch, reference vs fast": f"{first['reference']} vs {first['fast']}",
        "timed calls per block": args.calls})


def parser():
    """The command line of this benchmark."""
    p = harness.arguments(__doc__, variant="cbdm", blocks=5, calls=10)
    p.add_argument("--no-compile", action="store_true", help="leave torch.compile out of the fast path")
    p.add_argument("--compile-mode", choices=["default", "reduce-overhead", "max-autotune"],
                   help="override the config's training.compile_mode")
    return p


if __name__ == "__main__":
    run(parser().parse_args())
