"""Training throughput: the reference path against the fast path, same model, same batch.

Reference (pytorch-ddpm / CBDM style): fp32 eager, contiguous layout, plain Adam, a Python-loop
EMA, one forward pass per label set. Fast: bf16 autocast, channels-last, torch.compile, fused
Adam, a multi-tensor EMA, every label set in one batched forward. Both train the CBDM objective
(two label sets per step) unless --losses says otherwise.

    python benchmarks/bench_train.py                        # paper-size UNet on the GPU
    python benchmarks/bench_train.py --size small --device cpu --steps 3 --no-compile
"""
from __future__ import annotations

import copy

import torch

from cbdm.acceleration import autocast, ema_update, prepare_network, to_layout
from cbdm.diffusion import NoiseSchedule
from cbdm.losses import get_loss
from cbdm.objective import Objective

import harness

LOSSES = {"ddpm": [{"name": "eps_mse"}], "cbdm": [{"name": "eps_mse"}, {"name": "cbdm"}]}


def resolved(losses):
    return [{"name": t["name"], "weight": 1.0, "options": get_loss(t["name"]).options({})} for t in losses]


def training_step(model, path: dict, x0, y, device, terms):
    schedule = NoiseSchedule.linear(1000, 1e-4, 0.02).to(device)
    prior = torch.full((10,), 0.1, device=device)
    objective = Objective(terms, schedule, prior, model.null_label, {"policy": "batch", "probability": 0.0},
                          path["batched_forward"])
    network = prepare_network(model, channels_last=path["channels_last"], compile=path["compile"])
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-4, fused=path["fused_adam"] or None)
    ema = [p.detach().clone() for p in model.parameters()]
    params = list(model.parameters())
    x0 = to_layout(x0, path["channels_last"])
    generator, coins = torch.Generator(device).manual_seed(0), torch.Generator().manual_seed(0)
    losses = []

    def step():
        with autocast(device, path["precision"]):
            loss, _ = objective(network, x0, y, generator, coins)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        ema_update(ema, params, 0.9999, path["ema_update"])
        losses.append(loss.detach())

    return step, losses


def main():
    parser = harness.arguments(__doc__, steps=20, batch=128)
    parser.add_argument("--losses", choices=LOSSES, default="cbdm")
    args = parser.parse_args()
    device = torch.device(args.device)
    base, spec = harness.build_model(args.size, device)
    shape = (args.batch, spec["image_channels"], spec["image_size"], spec["image_size"])
    x0 = torch.rand(shape, generator=torch.Generator().manual_seed(1)).to(device) * 2 - 1
    y = torch.randint(0, 10, (args.batch,), generator=torch.Generator().manual_seed(2)).to(device)
    paths = {
        "reference": dict(precision="fp32", channels_last=False, compile=False, fused_adam=False,
                          ema_update="loop", batched_forward=False),
        "fast": dict(precision="bf16", channels_last=True, compile=not args.no_compile, fused_adam=True,
                     ema_update="foreach", batched_forward=True),
    }
    rows, first_losses = [], {}
    for name, path in paths.items():
        model = copy.deepcopy(base)
        harness.reset_peak_memory(device)
        step, losses = training_step(model, path, x0, y, device, resolved(LOSSES[args.losses]))
        seconds = harness.time_it(step, device, args.steps, args.warmup)
        first_losses[name] = losses[0].item()
        rows.append(harness.result_row(name, args.batch / seconds, device,
                                       ", ".join(f"{k}={v}" for k, v in path.items())))
    title = f"Training ({args.losses} objective, batch {args.batch}, {harness.parameters_line(base)})"
    harness.print_comparison(title, rows, "images/s", args,
                     {"first-step loss, reference vs fast": f"{first_losses['reference']:.5f} vs "
                                                            f"{first_losses['fast']:.5f}"})


if __name__ == "__main__":
    main()
